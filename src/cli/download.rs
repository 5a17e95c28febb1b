//! Downloading a model into the cache: into `NAME.part` beside the final name, resumed with HTTP Range requests when
//! a transfer breaks off (in this run or an earlier one), checked against the size the server announced, and only
//! then renamed to its final name, so a half-written file never passes for a model.

use indicatif::{ProgressBar, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use webr1::{err, Error, Result};

/// Connection attempts in a row that may fail without any byte arriving before we give up.
const ATTEMPTS_WITHOUT_PROGRESS: u32 = 4;

/// The file names in a Hugging Face model repository, from `ENDPOINT/api/models/OWNER/REPO`.
pub fn list_hf_files(endpoint: &str, owner: &str, repo: &str) -> Result<Vec<String>> {
    let url = format!("{endpoint}/api/models/{owner}/{repo}");
    let fail = |why: String| {
        err!(
            DownloadFailed,
            "cannot list the files of {url}: {why}. Name the file instead (hf:{owner}/{repo}/FILE.gguf) or pass the \
             path of a local file"
        )
    };
    let mut response = agent().get(&url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(err!(DownloadHttp, "{url}: the server answered HTTP {status}"));
    }
    let text = response.body_mut().read_to_string().map_err(|e| fail(e.to_string()))?;
    let listing: serde_json::Value = serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let siblings = listing["siblings"].as_array().ok_or_else(|| fail("no 'siblings' list in the answer".into()))?;
    Ok(siblings.iter().filter_map(|s| s["rfilename"].as_str().map(str::to_string)).collect())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!("webr1/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Downloads `url` to `dest`; `dest` exists afterwards only if the whole file arrived.
pub fn download(url: &str, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| err!(IoWrite, "cannot create {}: {e}", parent.display()))?;
    let part = part_path(dest);
    eprintln!("webr1: downloading {url}\nwebr1:   into {}", dest.display());
    let agent = agent();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut failures = 0;
    let total = loop {
        match fetch_once(&agent, url, &part, &bar) {
            Ok(total) => break total,
            Err(Attempt::Fatal(e)) => {
                bar.abandon();
                return Err(e);
            }
            Err(Attempt::Broken { progressed, error }) => {
                failures = if progressed { 0 } else { failures + 1 };
                if failures >= ATTEMPTS_WITHOUT_PROGRESS {
                    bar.abandon();
                    return Err(offline_error(url, &error));
                }
                bar.println(format!("webr1: the transfer broke off ({error}); resuming"));
                std::thread::sleep(Duration::from_millis(200 * u64::from(failures)));
            }
        }
    };
    bar.finish_and_clear();
    let got = file_len(&part);
    if total.is_some_and(|t| t != got) {
        let want = total.unwrap_or_default();
        if got > want {
            std::fs::remove_file(&part).ok();
        }
        return Err(err!(DownloadVerify, "{url}: received {got} bytes, the server announced {want}"));
    }
    std::fs::rename(&part, dest).map_err(|e| err!(IoWrite, "cannot rename {} into place: {e}", part.display()))?;
    eprintln!("webr1: downloaded {got} bytes");
    Ok(())
}

/// `model.gguf` → `model.gguf.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

enum Attempt {
    /// Worth retrying: the connection failed or broke off; `progressed` when some bytes arrived first.
    Broken { progressed: bool, error: String },
    /// Not worth retrying (an HTTP error status, a full disk).
    Fatal(Error),
}

/// One request from where the `.part` file ends; returns the file's full size when the server announced it.
fn fetch_once(agent: &ureq::Agent, url: &str, part: &Path, bar: &ProgressBar) -> Result<Option<u64>, Attempt> {
    let have = file_len(part);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let broken = |error: String| Attempt::Broken { progressed: false, error };
    let mut response = request.call().map_err(|e| broken(e.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (start, total) = match status {
        206 => {
            let range = header("content-range").unwrap_or_default();
            match parse_content_range(&range) {
                Some((start, total)) if start == have => (start, total),
                _ => return Err(Attempt::Fatal(err!(DownloadHttp, "{url}: unexpected Content-Range {range:?}"))),
            }
        }
        200 => (0, response.body().content_length()),
        416 if have > 0 => {
            // The range starts at or past the end: the part file may already be whole, or the file changed.
            let total = header("content-range").and_then(|r| r.strip_prefix("bytes */").and_then(|t| t.parse().ok()));
            if total == Some(have) {
                return Ok(total);
            }
            std::fs::remove_file(part).ok();
            return Err(broken("the server refused to resume; starting again".into()));
        }
        _ => return Err(Attempt::Fatal(err!(DownloadHttp, "{url}: the server answered HTTP {status}"))),
    };
    let mut file = if start == 0 { File::create(part) } else { OpenOptions::new().append(true).open(part) }
        .map_err(|e| Attempt::Fatal(err!(IoWrite, "cannot write {}: {e}", part.display())))?;
    if let Some(total) = total {
        bar.set_length(total);
    }
    bar.set_position(start);
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(Attempt::Broken { progressed: received > 0, error: e.to_string() });
            }
        };
        file.write_all(&buf[..n]).map_err(|e| Attempt::Fatal(err!(IoWrite, "cannot write {}: {e}", part.display())))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    file.flush().map_err(|e| Attempt::Fatal(err!(IoWrite, "cannot write {}: {e}", part.display())))?;
    if let Some(total) = total {
        if start + received < total {
            return Err(Attempt::Broken { progressed: received > 0, error: "the connection closed early".into() });
        }
    }
    Ok(total)
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn offline_error(url: &str, error: &str) -> Error {
    err!(
        DownloadFailed,
        "cannot download {url}: {error}. Without a network, download the file elsewhere and pass its path as MODEL \
         (or put it at the cache path above)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn part_files_sit_beside_the_final_name() {
        assert_eq!(part_path(Path::new("/c/h/m.gguf")), PathBuf::from("/c/h/m.gguf.part"));
    }
}
