//! Downloading a model into the cache: into `NAME.part` beside the final name, resumed with HTTP Range requests when
//! a transfer breaks off (in this run or an earlier one), checked against the size the server announced and, when a
//! sha256 is known, against that digest, and only then renamed to its final name, so a half-written or corrupt file
//! never passes for a model.
//!
//! A sha256 is known when webr1's catalogue gives one for the URL, or else when one of the server's answers offers one:
//! Hugging Face's resolve URLs answer for a large (LFS) file with a redirect whose `X-Linked-Etag` header is the file's
//! sha256, and an `ETag` of 64 hex digits is taken as one too. The digest is computed while the bytes arrive; a `.part`
//! file left by an earlier run is read once to hash what it already holds. A file whose digest differs is deleted.

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use ureq::http::HeaderMap;
use webr1::{err, Error, Result};

/// Connection attempts in a row that may fail without any byte arriving before we give up.
const ATTEMPTS_WITHOUT_PROGRESS: u32 = 4;

/// Redirects followed at most for one request (ureq's default too).
const MAX_REDIRECTS: u32 = 10;

/// A sha256 digest a download must have, and who says so (for the message when it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub digest: [u8; 32],
    /// E.g. "webr1's catalogue" or "the server's X-Linked-Etag header".
    pub source: String,
}

/// 64 hex digits (either case) → the digest they spell.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(digest)
}

/// A digest as 64 lowercase hex digits.
pub fn sha256_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 an `ETag` or `X-Linked-Etag` value names: `"<64 hex>"`, also weak (`W/"<64 hex>"`, as a proxy may make
/// it) or unquoted; any other entity tag (a git blob's 40-digit sha1, an S3 `md5-N`, a server's own token) names none.
pub fn etag_sha256(value: &str) -> Option<[u8; 32]> {
    let tag = value.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag);
    parse_sha256(tag)
}

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
    agent_with_redirects(MAX_REDIRECTS)
}

/// An agent that follows at most `redirects` redirects itself; with 0 it hands back the redirect response.
fn agent_with_redirects(redirects: u32) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(redirects)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!("webr1/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Downloads `url` to `dest`; `dest` exists afterwards only if the whole file arrived, of the announced size and, when
/// a sha256 is known (`expected`, else one the server offers), of that digest.
pub fn download(url: &str, dest: &Path, expected: Option<Expected>) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| err!(IoWrite, "cannot create {}: {e}", parent.display()))?;
    let part = part_path(dest);
    eprintln!("webr1: downloading {url}\nwebr1:   into {}", dest.display());
    let agent = agent_with_redirects(0); // redirects are followed by hand, to see what each answer says
    let mut check = Check { given: expected, offered: None, hash: None };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut failures = 0;
    let total = loop {
        match fetch_once(&agent, url, &part, &bar, &mut check) {
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
    // The whole file's digest: kept while the bytes arrived when one was expected, else read once now. It is
    // recorded beside the file, so that a later change to the cached file is noticed (see super::cache).
    let hash = check.hash.get_or_insert_with(PartHash::new);
    hash.catch_up(&part, None).map_err(|e| err!(IoRead, "cannot read {}: {e}", part.display()))?;
    let digest = hash.digest();
    if let Some(want) = check.expected().cloned() {
        if digest != want.digest {
            std::fs::remove_file(&part).ok();
            return Err(err!(
                DownloadVerify,
                "{url}: the downloaded file's sha256 is {}, but {} gives {}; the download was deleted: run the \
                 command again to download it afresh, and if this repeats, download the file yourself and pass its \
                 path as MODEL",
                sha256_hex(&digest),
                want.source,
                sha256_hex(&want.digest)
            ));
        }
        eprintln!("webr1: sha256 {} verified", sha256_hex(&digest));
    }
    std::fs::rename(&part, dest).map_err(|e| err!(IoWrite, "cannot rename {} into place: {e}", part.display()))?;
    super::cache::record(dest, url, &sha256_hex(&digest))?;
    eprintln!("webr1: downloaded {got} bytes");
    Ok(())
}

/// The sha256 of a whole file, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hash = PartHash::new();
    hash.catch_up(path, None).map_err(|e| err!(IoRead, "cannot read {}: {e}", path.display()))?;
    Ok(sha256_hex(&hash.digest()))
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

/// What a download is checked against, and the running digest of its `.part` file.
struct Check {
    /// The caller's digest (from webr1's catalogue); when there is one, what the server says is not used.
    given: Option<Expected>,
    /// The digest the server's answers offered.
    offered: Option<Expected>,
    /// The digest of the `.part` file's first bytes, kept from the moment a digest is expected.
    hash: Option<PartHash>,
}

impl Check {
    fn expected(&self) -> Option<&Expected> {
        self.given.as_ref().or(self.offered.as_ref())
    }
}

/// The sha256 of the first `len` bytes of a `.part` file.
struct PartHash {
    hasher: Sha256,
    len: u64,
}

impl PartHash {
    fn new() -> Self {
        PartHash { hasher: Sha256::new(), len: 0 }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Hashes the bytes of `part` not hashed yet: those an earlier run left (read once, before the transfer goes on),
    /// or all of them when the file is shorter than what was hashed.
    fn catch_up(&mut self, part: &Path, bar: Option<&ProgressBar>) -> std::io::Result<()> {
        let on_disk = file_len(part);
        if on_disk < self.len {
            *self = PartHash::new();
        }
        if on_disk == self.len {
            return Ok(());
        }
        let todo = on_disk - self.len;
        if let Some(bar) = bar {
            bar.suspend(|| eprintln!("webr1: reading the {todo} bytes already downloaded to check their sha256"));
        }
        let mut file = File::open(part)?;
        file.seek(SeekFrom::Start(self.len))?;
        let mut reader = file.take(on_disk - self.len);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.len != on_disk {
            return Err(std::io::Error::other("the file changed while it was read"));
        }
        Ok(())
    }

    fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

enum Attempt {
    /// Worth retrying: the connection failed or broke off; `progressed` when some bytes arrived first.
    Broken { progressed: bool, error: String },
    /// Not worth retrying (an HTTP error status, a full disk).
    Fatal(Error),
}

/// GETs `url` from byte `from` on, following redirects by hand; returns the final response and the sha256 the answers
/// offered: the first `X-Linked-Etag` of 64 hex digits along the way (Hugging Face puts it on its redirect to the
/// CDN), else the first such `ETag`.
fn get(
    agent: &ureq::Agent,
    url: &str,
    from: u64,
) -> Result<(ureq::http::Response<ureq::Body>, Option<Expected>), Attempt> {
    let mut current = url.to_string();
    let (mut linked, mut etag) = (None, None);
    for _ in 0..=MAX_REDIRECTS {
        let mut request = agent.get(&current);
        if from > 0 {
            request = request.header("Range", format!("bytes={from}-"));
        }
        let response = request.call().map_err(|e| Attempt::Broken { progressed: false, error: e.to_string() })?;
        let offered = |name: &str| response.headers().get(name)?.to_str().ok().and_then(etag_sha256);
        linked = linked.or_else(|| offered("x-linked-etag"));
        etag = etag.or_else(|| offered("etag"));
        let status = response.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            let offered = match (linked, etag) {
                (Some(digest), _) => Some(Expected { digest, source: "the server's X-Linked-Etag header".into() }),
                (None, Some(digest)) => Some(Expected { digest, source: "the server's ETag header".into() }),
                (None, None) => None,
            };
            return Ok((response, offered));
        }
        let location = header_str(response.headers(), "location").unwrap_or_default();
        current = join_location(&current, &location).ok_or_else(|| {
            Attempt::Fatal(err!(DownloadHttp, "{url}: HTTP {status} redirects to {location:?}, not to an http(s) URL"))
        })?;
    }
    Err(Attempt::Fatal(err!(DownloadHttp, "{url}: more than {MAX_REDIRECTS} redirects")))
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Where a `Location` header sends a request for `base`: an absolute http(s) URL, `//host/path`, `/path` or a path
/// relative to `base`'s directory.
fn join_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Some(location.to_string());
    }
    if location.is_empty() || location.split(['/', '?', '#']).next().is_some_and(|head| head.contains(':')) {
        return None; // another scheme (ftp:, file:, ...)
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(net_path) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{net_path}"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = &base[..scheme.len() + 3 + authority_end];
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = rest[authority_end..].split(['?', '#']).next().unwrap_or_default();
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{origin}{dir}{location}"))
}

/// One request from where the `.part` file ends; returns the file's full size when the server announced it.
fn fetch_once(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    bar: &ProgressBar,
    check: &mut Check,
) -> Result<Option<u64>, Attempt> {
    let have = file_len(part);
    let broken = |error: String| Attempt::Broken { progressed: false, error };
    let (mut response, offered) = get(agent, url, have)?;
    if check.given.is_none() {
        if let Some(offered) = offered {
            let changed = check.offered.as_ref().is_some_and(|o| o.digest != offered.digest);
            check.offered = Some(offered);
            if changed && have > 0 {
                // The server now offers another file than the one the `.part` file began.
                std::fs::remove_file(part).ok();
                check.hash = None;
                return Err(broken("the file changed on the server; starting again".into()));
            }
        }
    }
    let status = response.status().as_u16();
    let header = |name: &str| header_str(response.headers(), name);
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
    if check.expected().is_some() {
        let hash = check.hash.get_or_insert_with(PartHash::new);
        if start == 0 {
            *hash = PartHash::new();
        } else {
            hash.catch_up(part, Some(bar))
                .map_err(|e| Attempt::Fatal(err!(IoRead, "cannot read {}: {e}", part.display())))?;
        }
    }
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
        if let Err(e) = file.write_all(&buf[..n]).and_then(|()| file.flush()) {
            // A full disk or a size limit: what was written cannot be trusted to resume from.
            drop(file);
            std::fs::remove_file(part).ok();
            return Err(Attempt::Fatal(err!(
                IoWrite,
                "cannot write {}: {e}; the partial download was removed (free some disk space and run the command \
                 again)",
                part.display()
            )));
        }
        if let Some(hash) = &mut check.hash {
            hash.update(&buf[..n]);
        }
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

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // sha256("abc")

    #[test]
    fn sha256_hex_round_trips() {
        let digest = parse_sha256(ABC).unwrap();
        assert_eq!(digest[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(sha256_hex(&digest), ABC);
        assert_eq!(parse_sha256(&ABC.to_ascii_uppercase()), Some(digest));
        assert_eq!(parse_sha256(&ABC[1..]), None);
        assert_eq!(parse_sha256(&format!("{ABC}0")), None);
        assert_eq!(parse_sha256(&ABC.replace('b', "g")), None);
        assert_eq!(parse_sha256(&format!("+{}", &ABC[1..])), None);
    }

    #[test]
    fn etags_of_64_hex_digits_name_a_sha256_and_others_are_ignored() {
        let abc = parse_sha256(ABC);
        for value in [
            format!("\"{ABC}\""),
            format!("W/\"{ABC}\""),
            format!("  \"{ABC}\" "),
            ABC.to_string(),
            format!("\"{}\"", ABC.to_ascii_uppercase()),
        ] {
            assert_eq!(etag_sha256(&value), abc, "{value}");
        }
        for value in [
            String::new(),
            "\"\"".to_string(),
            "W/\"\"".to_string(),
            format!("\"{}\"", &ABC[..40]),                   // a git blob's sha1
            "\"9b2cf535f27731c974343645a3985328-2\"".into(), // an S3 multipart etag
            "\"5f3c1a2b-1d4e\"".into(),                      // nginx: mtime-size
            format!("\"{}\"", ABC.replace('a', "z")),
            format!("\"{ABC}0\""),
            format!("\"{ABC}"),
            format!("w/\"{ABC}x\""),
        ] {
            assert_eq!(etag_sha256(&value), None, "{value}");
        }
    }

    #[test]
    fn the_part_hash_reads_the_bytes_on_disk_once_and_then_only_what_was_added() {
        let path = std::env::temp_dir().join(format!("webr1-parthash-{}.part", std::process::id()));
        let bar = ProgressBar::hidden();
        std::fs::write(&path, b"ab").unwrap();
        let mut hash = PartHash::new();
        hash.catch_up(&path, Some(&bar)).unwrap();
        assert_eq!(hash.len, 2);
        // Bytes that arrive are hashed as they are written; the file is not read again.
        hash.update(b"c");
        std::fs::write(&path, b"XYc").unwrap(); // a changed prefix goes unseen: it was read once
        hash.catch_up(&path, Some(&bar)).unwrap();
        assert_eq!(hash.len, 3);
        assert_eq!(sha256_hex(&hash.digest()), ABC);
        // A longer file: only the tail is read.
        std::fs::write(&path, b"XYcdef").unwrap();
        hash.catch_up(&path, Some(&bar)).unwrap();
        let want: [u8; 32] = Sha256::digest(b"abcdef").into();
        assert_eq!((hash.len, hash.digest()), (6, want));
        // A shorter file than what was hashed: hashed afresh.
        std::fs::write(&path, b"abc").unwrap();
        hash.catch_up(&path, Some(&bar)).unwrap();
        assert_eq!((hash.len, sha256_hex(&hash.digest())), (3, ABC.to_string()));
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn redirect_locations_resolve_against_the_url() {
        let base = "https://huggingface.co/o/r/resolve/main/m.gguf?download=true";
        let cases = [
            ("https://cdn.example/x/y?sig=1", "https://cdn.example/x/y?sig=1"),
            ("HTTP://cdn.example/x", "HTTP://cdn.example/x"),
            ("//cdn.example/x", "https://cdn.example/x"),
            (
                "/api/resolve-cache/models/o/r/abc/m.gguf",
                "https://huggingface.co/api/resolve-cache/models/o/r/abc/m.gguf",
            ),
            ("other.gguf", "https://huggingface.co/o/r/resolve/main/other.gguf"),
            ("sub/x.gguf?a=b:c", "https://huggingface.co/o/r/resolve/main/sub/x.gguf?a=b:c"),
        ];
        for (location, want) in cases {
            assert_eq!(join_location(base, location).as_deref(), Some(want), "{location}");
        }
        assert_eq!(join_location("http://h:8", "x").as_deref(), Some("http://h:8/x"));
        for location in ["", "ftp://h/x", "file:///etc/passwd", "javascript:alert(1)"] {
            assert_eq!(join_location(base, location), None, "{location}");
        }
    }

    #[test]
    fn part_files_sit_beside_the_final_name() {
        assert_eq!(part_path(Path::new("/c/h/m.gguf")), PathBuf::from("/c/h/m.gguf.part"));
    }
}
