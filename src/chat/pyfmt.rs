//! Python's text forms of template values, so that what a template prints matches jinja2.
//!
//! jinja2 prints a value with Python's `str()`: `True`, `False`, `None`, floats in `repr` form (`1.0`, `1e+16`,
//! `1e-07`), lists and dicts in `repr` form (`['a', 1]`). minijinja 3 comes close but writes large and small floats in
//! fixed notation (`10000000000000000.0`), so the chat template's formatter and `string` filter use [`py_str`], which
//! writes every value the Python way.
//!
//! Limits: Python's `repr` of a string escapes every character that Unicode does not call printable; this module
//! knows the ASCII and Latin-1 control characters and a short list of invisible and separator code points, not the
//! whole Unicode database (unassigned code points are printed as they are). Printing whole lists is rare in chat
//! templates; strings, numbers and booleans are exact.

use minijinja::value::{Value, ValueKind};
use std::fmt::Write;

/// Python's `str(x)` for a template value (strings unchanged, undefined as the empty string).
pub(crate) fn py_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        ValueKind::Undefined => String::new(),
        _ => py_repr(value, 0),
    }
}

/// Nesting deeper than this prints `...` (Python would print it all; this keeps a hostile value from exhausting the
/// stack).
const MAX_REPR_DEPTH: usize = 64;

/// Python's `repr(x)` for a template value.
fn py_repr(value: &Value, depth: usize) -> String {
    if depth > MAX_REPR_DEPTH {
        return "...".to_string();
    }
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".to_string(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::Number => py_number(value),
        ValueKind::String => py_str_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => py_seq_repr(value, depth),
        ValueKind::Map => py_map_repr(value, depth),
        _ => value.to_string(),
    }
}

/// An integer in decimal, a float as Python's `str(float)` (`inf`, `nan` included).
pub(crate) fn py_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) if f.is_nan() => "nan".to_string(),
        Ok(f) if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.to_string(),
        Ok(f) => py_float_repr(f),
        Err(_) => value.to_string(),
    }
}

fn py_seq_repr(value: &Value, depth: usize) -> String {
    let items: Vec<String> = match value.try_iter() {
        Ok(iter) => iter.map(|item| py_repr(&item, depth + 1)).collect(),
        Err(_) => return value.to_string(),
    };
    if value.is_tuple() {
        let trailing = if items.len() == 1 { "," } else { "" };
        format!("({}{trailing})", items.join(", "))
    } else {
        format!("[{}]", items.join(", "))
    }
}

fn py_map_repr(value: &Value, depth: usize) -> String {
    let Ok(keys) = value.try_iter() else {
        return value.to_string();
    };
    let pairs: Vec<String> = keys
        .map(|key| {
            let item = value.get_item(&key).unwrap_or_default();
            format!("{}: {}", py_repr(&key, depth + 1), py_repr(&item, depth + 1))
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Python's `repr(float)` for a finite float: the shortest digits that round-trip, in fixed notation when the
/// decimal exponent is in `-4..16` (with `.0` when there is no fractional part), otherwise as `1.5e+16` / `1e-05`.
pub(crate) fn py_float_repr(f: f64) -> String {
    // Rust's `{:e}` gives the same shortest round-trip digits as Python's repr, e.g. `-1.5e-5`.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exponent) {
        fixed_notation(&digits, exponent)
    } else {
        exponent_notation(&digits, exponent)
    };
    format!("{sign}{body}")
}

fn fixed_notation(digits: &str, exponent: i32) -> String {
    let point = exponent + 1; // digits before the decimal point
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        return format!("0.{zeros}{digits}");
    }
    let point = point as usize;
    if digits.len() <= point {
        let zeros = "0".repeat(point - digits.len());
        format!("{digits}{zeros}.0")
    } else {
        format!("{}.{}", &digits[..point], &digits[point..])
    }
}

fn exponent_notation(digits: &str, exponent: i32) -> String {
    let sign = if exponent < 0 { '-' } else { '+' };
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let mantissa = if rest.is_empty() { first.to_string() } else { format!("{first}.{rest}") };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`, with backslash escapes.
pub(crate) fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn push_escaped(out: &mut String, c: char) {
    let code = u32::from(c);
    // Writing to a String cannot fail.
    let _ = match code {
        0..=0xff => write!(out, "\\x{code:02x}"),
        0x100..=0xffff => write!(out, "\\u{code:04x}"),
        _ => write!(out, "\\U{code:08x}"),
    };
}

/// An approximation of Python's `str.isprintable` for one character (see the module docs).
fn is_printable(c: char) -> bool {
    let code = u32::from(c);
    !matches!(code,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x206f | 0x3000 | 0xd800..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (1e300, "1e+300"),
            (123456.789, "123456.789"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0 / 3.0, "0.3333333333333333"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "repr({f:e})");
        }
    }

    #[test]
    fn strings_repr_with_python_quotes() {
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("say \"hi\" it's"), "'say \"hi\" it\\'s'");
        assert_eq!(py_str_repr("a\nb\t\u{1}é\u{a0}"), "'a\\nb\\t\\x01é\\xa0'");
    }

    #[test]
    fn values_print_as_python_str() {
        let list = Value::from(minijinja::value::Serde(serde_json::json!([1, "a", true, null, 2.0, {"k": [false]}])));
        assert_eq!(py_str(&list), "[1, 'a', True, None, 2.0, {'k': [False]}]");
        assert_eq!(py_str(&Value::from(true)), "True");
        assert_eq!(py_str(&Value::from(())), "None");
        assert_eq!(py_str(&Value::UNDEFINED), "");
        assert_eq!(py_str(&Value::from("x'")), "x'");
    }
}
