//! `strftime_now(format)`, the clock that HF transformers gives chat templates (Llama 3.x templates print
//! "Today Date: 26 Jul 2024" with `strftime_now("%d %b %Y")`).
//!
//! transformers calls `datetime.now().strftime(format)`, the local time. Rust's standard library knows no time zones,
//! so webr1 formats UTC. The directives are those of C's `strftime` in the C locale: `%Y %y %m %d %e %H %I %M %S %p
//! %b %h %B %a %A %j %%`, and glibc's `%-d` form without padding; any other directive is copied unchanged.
//!
//! On `wasm32-unknown-unknown` there is no system clock (`SystemTime::now` panics there), so the chat template only
//! defines `strftime_now` when the caller supplies the time ([`super::ChatTemplate::set_now`]); a template then sees it
//! undefined, and Llama's template falls back to its own default date.

/// Seconds since the Unix epoch, now, when the platform has a clock.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn system_now() -> Option<i64> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs()).ok()
}

/// `wasm32-unknown-unknown` has no clock that webr1 can read without `js-sys`: the caller supplies one.
#[cfg(target_arch = "wasm32")]
pub(crate) fn system_now() -> Option<i64> {
    None
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday
    pub weekday: u32,
    /// 1..=366
    pub day_of_year: u32,
}

impl DateTime {
    /// The UTC time `unix_seconds` after 1970-01-01T00:00:00Z (negative: before).
    pub fn from_unix(unix_seconds: i64) -> DateTime {
        let days = unix_seconds.div_euclid(86_400);
        let secs = unix_seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            weekday: (days + 4).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
            day_of_year: (days - days_from_civil(year, 1, 1)) as u32 + 1,
        }
    }
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Howard Hinnant's `days_from_civil`, the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// C's `strftime` for the directives listed in the module docs.
pub(crate) fn strftime(format: &str, t: &DateTime) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let pad = directive != Some('-');
        if !pad {
            directive = chars.next();
        }
        match directive.and_then(|d| expand(d, t, pad)) {
            Some(text) => out.push_str(&text),
            None => {
                out.push('%');
                if !pad {
                    out.push('-');
                }
                out.extend(directive);
            }
        }
    }
    out
}

/// The text of one directive, `None` when webr1 does not know it.
fn expand(directive: char, t: &DateTime, pad: bool) -> Option<String> {
    let num = |n: u32, width: usize| if pad { format!("{n:0width$}") } else { n.to_string() };
    let month = MONTHS[(t.month.clamp(1, 12) - 1) as usize];
    let weekday = WEEKDAYS[(t.weekday % 7) as usize];
    let hour12 = if t.hour % 12 == 0 { 12 } else { t.hour % 12 };
    Some(match directive {
        'Y' => t.year.to_string(),
        'y' => num(t.year.rem_euclid(100) as u32, 2),
        'm' => num(t.month, 2),
        'd' => num(t.day, 2),
        'e' => {
            if pad {
                format!("{:2}", t.day)
            } else {
                t.day.to_string()
            }
        }
        'H' => num(t.hour, 2),
        'I' => num(hour12, 2),
        'M' => num(t.minute, 2),
        'S' => num(t.second, 2),
        'j' => num(t.day_of_year, 3),
        'p' => if t.hour < 12 { "AM" } else { "PM" }.to_string(),
        'b' | 'h' => month[..3].to_string(),
        'B' => month.to_string(),
        'a' => weekday[..3].to_string(),
        'A' => weekday.to_string(),
        '%' => "%".to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_known_dates() {
        // 2024-07-26T13:05:09Z, a Friday, day 208 (checked with Python's datetime).
        let t = DateTime::from_unix(1_721_999_109);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2024, 7, 26, 13, 5, 9));
        assert_eq!((t.weekday, t.day_of_year), (5, 208));
        let epoch = DateTime::from_unix(0);
        assert_eq!((epoch.year, epoch.month, epoch.day, epoch.weekday, epoch.day_of_year), (1970, 1, 1, 4, 1));
        let before = DateTime::from_unix(-1);
        assert_eq!((before.year, before.month, before.day, before.hour), (1969, 12, 31, 23));
        let leap = DateTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day, leap.day_of_year), (2000, 2, 29, 60));
        let end = DateTime::from_unix(1_735_689_599); // 2024-12-31T23:59:59Z
        assert_eq!((end.month, end.day, end.day_of_year, end.weekday), (12, 31, 366, 2));
    }

    #[test]
    fn formats_like_c_strftime() {
        let t = DateTime::from_unix(1_720_000_000); // 2024-07-03T09:46:40Z, a Wednesday
        assert_eq!(strftime("%d %b %Y", &t), "03 Jul 2024");
        assert_eq!(strftime("%A, %B %-d, %y %H:%M:%S %p %j %a %%", &t), "Wednesday, July 3, 24 09:46:40 AM 185 Wed %");
        assert_eq!(strftime("%I %e|%-m|%q|%", &t), "09  3|7|%q|%");
        assert_eq!(strftime("", &t), "");
    }
}
