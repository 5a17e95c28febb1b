//! MODEL as a URL: `webr1 info http://…` downloads into `$WEBR1_CACHE` from a local HTTP server that supports Range
//! requests, resumes when the connection drops halfway (in the same run, and from a `.part` file an earlier run left),
//! verifies the size and, when the server offers one as an entity tag (as Hugging Face does), the sha256, and never
//! leaves a partial or corrupt file under the final name; an unreachable URL fails in one line that names the URL and
//! says how to pass a local file. Faults injected into the cache: a cached file cut short or with a bit flipped is found
//! on the next load and downloaded again; a write that fails (a file size limit) is an `io.write` error that leaves no
//! partial file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// How the test server misbehaves.
#[derive(Clone, Copy)]
enum Mode {
    /// The first response stops after half the file and closes the connection.
    DropHalfwayOnce,
    /// Every response closes before sending any of the body.
    AlwaysDrop,
    /// Well-behaved.
    Honest,
}

/// A tiny HTTP/1.1 file server on 127.0.0.1 that honours `Range: bytes=N-`; records the Range header of each request.
fn serve(file: Vec<u8>, mode: Mode) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    serve_with(file, mode, String::new())
}

/// [`serve`], with `headers` (whole lines, each ending in `\r\n`) added to every response.
fn serve_with(file: Vec<u8>, mode: Mode, headers: String) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(conn) = conn else { continue };
            let range = read_range(&conn);
            log.lock().unwrap().push(range.clone());
            respond(conn, &file, range.as_deref(), mode, i, &headers);
        }
    });
    (addr, seen)
}

fn read_range(conn: &TcpStream) -> Option<String> {
    read_request(conn).1
}

/// The path and the Range header of a request.
fn read_request(conn: &TcpStream) -> (String, Option<String>) {
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap_or(0);
    let path = first.split(' ').nth(1).unwrap_or_default().to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return (path, range);
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(value.trim().to_string());
        }
    }
}

fn respond(mut conn: TcpStream, file: &[u8], range: Option<&str>, mode: Mode, i: usize, headers: &str) {
    let start: usize = range.and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()).unwrap_or(0);
    let head = if range.is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\n{headers}Connection: close\r\n\r\n",
            file.len() - start,
            file.len() - 1,
            file.len()
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n", file.len())
    };
    let _ = conn.write_all(head.as_bytes());
    let end = match mode {
        Mode::DropHalfwayOnce if i == 0 => file.len() / 2,
        Mode::AlwaysDrop => start,
        _ => file.len(),
    };
    let _ = conn.write_all(&file[start..end]);
    let _ = conn.flush();
}

fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webr1-dl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn info(url: &str, cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webr1")).args(["info", url]).env("WEBR1_CACHE", cache).output().unwrap()
}

fn header_bytes() -> Vec<u8> {
    std::fs::read(common::fixture("r1-distill-qwen-7b.header.gguf")).unwrap()
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request_and_the_file_verifies() {
    let file = header_bytes();
    let (addr, seen) = serve(file.clone(), Mode::DropHalfwayOnce);
    let cache = cache_dir("resume");
    let out = info(&format!("http://{addr}/models/r1.gguf"), &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DeepSeek R1 Distill Qwen 7B"), "info read the download");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests, vec![None, Some(format!("bytes={}-", file.len() / 2))], "resumed where the first broke off");
    let cached = cache.join(format!("127.0.0.1_{}", addr.rsplit(':').next().unwrap())).join("models/r1.gguf");
    assert_eq!(std::fs::read(&cached).unwrap(), file, "the cached file is the served file, byte for byte");
    assert!(!cached.with_file_name("r1.gguf.part").exists(), "no .part file is left");
    // The second use reads the cache: no request at all.
    let out = info(&format!("http://{addr}/models/r1.gguf"), &cache);
    assert!(out.status.success());
    assert_eq!(seen.lock().unwrap().len(), 2, "a cached model is not downloaded again");
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_part_file_from_an_earlier_run_is_resumed() {
    let file = header_bytes();
    let (addr, seen) = serve(file.clone(), Mode::Honest);
    let cache = cache_dir("part");
    let dir = cache.join(format!("127.0.0.1_{}", addr.rsplit(':').next().unwrap()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.gguf.part"), &file[..1_000_000]).unwrap();
    let out = info(&format!("http://{addr}/m.gguf"), &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(seen.lock().unwrap().clone(), vec![Some("bytes=1000000-".to_string())]);
    assert_eq!(std::fs::read(dir.join("m.gguf")).unwrap(), file);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_transfer_that_never_completes_fails_in_one_line_without_a_final_file() {
    let (addr, seen) = serve(header_bytes(), Mode::AlwaysDrop);
    let cache = cache_dir("fail");
    let url = format!("http://{addr}/m.gguf");
    let out = info(&url, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(last.contains("download.failed") && last.contains(&url) && last.contains("path"), "{last}");
    assert!(seen.lock().unwrap().len() >= 2, "it retried");
    let dir = cache.join(format!("127.0.0.1_{}", addr.rsplit(':').next().unwrap()));
    assert!(!dir.join("m.gguf").exists(), "nothing under the final name");
    assert_cache_empty(&cache);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn an_unreachable_url_names_itself_and_the_way_out() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache = cache_dir("offline");
    let url = format!("http://127.0.0.1:{port}/m.gguf");
    let out = info(&url, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&url) && stderr.contains("download.failed") && stderr.contains("pass its path"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert_cache_empty(&cache);
    std::fs::remove_dir_all(&cache).ok();
}

/// A failed download leaves no empty `.part` file and no empty folder behind it.
fn assert_cache_empty(cache: &Path) {
    let left: Vec<_> = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "a failed download left {left:?} in the cache");
}

#[test]
fn bad_model_names_are_one_line_errors() {
    for name in ["hf:owner-only", "hf:a/b:", "hf:a/b:Q4/x", "https://host/../x.gguf"] {
        let out = Command::new(env!("CARGO_BIN_EXE_webr1")).args(["info", name]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("[usage]") && stderr.trim_end().lines().count() == 1, "{name}: {stderr}");
    }
}

#[test]
fn an_hf_quant_name_finds_its_file_in_the_listing_of_hf_endpoint() {
    let file = header_bytes();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            reader.read_line(&mut request_line).unwrap();
            while reader.read_line(&mut String::new()).is_ok_and(|n| n > 2) {}
            let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
            seen.lock().unwrap().push(path.clone());
            let body = if path == "/api/models/org/R1-GGUF" {
                br#"{"id":"org/R1-GGUF","siblings":[{"rfilename":"README.md"},{"rfilename":"R1-Q4_K_M.gguf"},
                    {"rfilename":"R1-Q8_0.gguf"}]}"#
                    .to_vec()
            } else if path == "/org/R1-GGUF/resolve/main/R1-Q8_0.gguf" {
                file.clone()
            } else {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    let cache = cache_dir("hfquant");
    let run = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_webr1"))
            .args(["info", name])
            .env("WEBR1_CACHE", &cache)
            .env("HF_ENDPOINT", format!("http://{addr}/"))
            .output()
            .unwrap()
    };
    let out = run("hf:org/R1-GGUF:q8_0");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DeepSeek R1 Distill Qwen 7B"));
    assert_eq!(
        paths.lock().unwrap().clone(),
        vec!["/api/models/org/R1-GGUF".to_string(), "/org/R1-GGUF/resolve/main/R1-Q8_0.gguf".to_string()]
    );
    let out = run("hf:org/R1-GGUF:Q2_K");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no Q2_K file") && stderr.contains("R1-Q4_K_M.gguf, R1-Q8_0.gguf"), "{stderr}");
    std::fs::remove_dir_all(&cache).ok();
}

/// The sha256 of `bytes` as 64 lowercase hex digits.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory the cache keeps a download from the server at `addr` in.
fn host_dir(cache: &Path, addr: &str) -> PathBuf {
    cache.join(format!("127.0.0.1_{}", addr.rsplit(':').next().unwrap()))
}

/// Asserts that a run succeeded, said it verified `digest`, and left `file` under `dest`; returns its stderr.
fn assert_verified(out: &Output, digest: &str, dest: &Path, file: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("sha256 {digest} verified")), "{stderr}");
    assert_eq!(std::fs::read(dest).unwrap(), file);
    stderr
}

/// Asserts that a run failed with `download.verify` in one line naming the URL and both digests, leaving no file
/// under the final name and no `.part` file; returns that line.
fn assert_verify_failure(out: &Output, url: &str, want: &str, got: &str, dest: &Path) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("[download.verify]")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let line = errors[0];
    assert_eq!(stderr.trim_end().lines().last(), Some(line), "the error is the last line: {stderr}");
    for needed in [url, want, got, "sha256", "again"] {
        assert!(line.contains(needed), "{needed:?} in {line}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dest.exists(), "nothing under the final name");
    assert!(!dest.with_file_name(format!("{}.part", dest.file_name().unwrap().to_string_lossy())).exists(), "no .part");
    line.to_string()
}

#[test]
fn a_download_whose_server_offers_its_sha256_as_etag_verifies_and_lands() {
    let file = header_bytes();
    let digest = sha256_hex(&file);
    let (addr, _) = serve_with(file.clone(), Mode::Honest, format!("ETag: \"{digest}\"\r\n"));
    let cache = cache_dir("sha-ok");
    let out = info(&format!("http://{addr}/m.gguf"), &cache);
    let stderr = assert_verified(&out, &digest, &host_dir(&cache, &addr).join("m.gguf"), &file);
    assert!(!stderr.contains("already downloaded"), "hashed as it arrived, never read back: {stderr}");
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_download_whose_sha256_differs_fails_in_one_line_and_leaves_no_file() {
    let file = header_bytes();
    let wrong = sha256_hex(b"another file");
    // A weak entity tag names the digest as well.
    let (addr, _) = serve_with(file.clone(), Mode::Honest, format!("ETag: W/\"{}\"\r\n", wrong.to_uppercase()));
    let cache = cache_dir("sha-bad");
    let url = format!("http://{addr}/m.gguf");
    let out = info(&url, &cache);
    let line = assert_verify_failure(&out, &url, &wrong, &sha256_hex(&file), &host_dir(&cache, &addr).join("m.gguf"));
    assert!(line.contains("ETag"), "it says where the expected digest came from: {line}");
    assert_cache_empty(&cache);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn entity_tags_that_are_no_sha256_leave_the_download_as_it_was() {
    let file = header_bytes();
    for etag in ["\"5f3c1a2b-1d4e\"", "\"da39a3ee5e6b4b0d3255bfef95601890afd80709\""] {
        let (addr, seen) = serve_with(file.clone(), Mode::Honest, format!("ETag: {etag}\r\n"));
        let cache = cache_dir("sha-none");
        let out = info(&format!("http://{addr}/m.gguf"), &cache);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{etag}: {stderr}");
        assert!(!stderr.contains("verified"), "no digest is checked: {stderr}");
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(std::fs::read(host_dir(&cache, &addr).join("m.gguf")).unwrap(), file);
        std::fs::remove_dir_all(&cache).ok();
    }
}

#[test]
fn a_download_resumed_after_a_dropped_connection_verifies_the_whole_files_sha256() {
    let file = header_bytes();
    let digest = sha256_hex(&file);
    let (addr, seen) = serve_with(file.clone(), Mode::DropHalfwayOnce, format!("ETag: \"{digest}\"\r\n"));
    let cache = cache_dir("sha-resume");
    let out = info(&format!("http://{addr}/m.gguf"), &cache);
    let stderr = assert_verified(&out, &digest, &host_dir(&cache, &addr).join("m.gguf"), &file);
    assert!(!stderr.contains("already downloaded"), "the first half was hashed as it arrived: {stderr}");
    assert_eq!(seen.lock().unwrap().clone(), vec![None, Some(format!("bytes={}-", file.len() / 2))]);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn the_part_file_an_earlier_run_left_is_hashed_from_disk() {
    let file = header_bytes();
    let digest = sha256_hex(&file);
    let (addr, seen) = serve_with(file.clone(), Mode::Honest, format!("ETag: \"{digest}\"\r\n"));
    let cache = cache_dir("sha-part");
    let dir = host_dir(&cache, &addr);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("http://{addr}/m.gguf");

    // A sound prefix: only the rest is fetched, and the whole file verifies.
    std::fs::write(dir.join("m.gguf.part"), &file[..1_000_000]).unwrap();
    let stderr = assert_verified(&info(&url, &cache), &digest, &dir.join("m.gguf"), &file);
    assert!(stderr.contains("reading the 1000000 bytes already downloaded"), "{stderr}");
    assert_eq!(seen.lock().unwrap().clone(), vec![Some("bytes=1000000-".to_string())]);

    // A prefix with one byte wrong (the server's bytes after it are right): the digest catches it, and the .part
    // file is deleted so that the next run starts clean and succeeds.
    std::fs::remove_file(dir.join("m.gguf")).unwrap();
    let mut corrupt = file[..1_000_000].to_vec();
    corrupt[123_456] ^= 0x40;
    std::fs::write(dir.join("m.gguf.part"), &corrupt).unwrap();
    let bad = [corrupt.as_slice(), &file[1_000_000..]].concat();
    assert_verify_failure(&info(&url, &cache), &url, &digest, &sha256_hex(&bad), &dir.join("m.gguf"));
    seen.lock().unwrap().clear();
    let out = info(&url, &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(seen.lock().unwrap().clone(), vec![None], "a fresh download, from the first byte");
    assert_eq!(std::fs::read(dir.join("m.gguf")).unwrap(), file);
    std::fs::remove_dir_all(&cache).ok();
}

/// The path and Range header of each request a server received.
type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// As Hugging Face serves a large file: its resolve URL answers with a redirect to a CDN that carries the sha256 as
/// `X-Linked-Etag` (its own `ETag` is another tag); the CDN's answer has no digest. `linked` is the digest announced;
/// the CDN's first answer stops halfway.
fn serve_like_hugging_face(file: Vec<u8>, linked: String) -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut cdn_answers = 0;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (path, range) = read_request(&conn);
            log.lock().unwrap().push((path.clone(), range.clone()));
            if path == "/org/R1-GGUF/resolve/main/m.gguf" {
                let head = format!(
                    "HTTP/1.1 302 Found\r\nLocation: /cdn/xyz/m.gguf?sig=1\r\nX-Linked-Etag: \"{linked}\"\r\n\
                     ETag: \"da39a3ee5e6b4b0d3255bfef95601890afd80709\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
            } else if path == "/cdn/xyz/m.gguf?sig=1" {
                respond(conn, &file, range.as_deref(), Mode::DropHalfwayOnce, cdn_answers, "");
                cdn_answers += 1;
            } else {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    (addr, seen)
}

#[test]
fn a_hugging_face_redirect_announces_the_sha256_in_x_linked_etag() {
    let file = header_bytes();
    let digest = sha256_hex(&file);
    let run = |addr: &str, cache: &Path| {
        Command::new(env!("CARGO_BIN_EXE_webr1"))
            .args(["info", "hf:org/R1-GGUF/m.gguf"])
            .env("WEBR1_CACHE", cache)
            .env("HF_ENDPOINT", format!("http://{addr}"))
            .output()
            .unwrap()
    };

    let (addr, seen) = serve_like_hugging_face(file.clone(), digest.clone());
    let cache = cache_dir("sha-hf");
    let dest = host_dir(&cache, &addr).join("org/R1-GGUF/resolve/main/m.gguf");
    assert_verified(&run(&addr, &cache), &digest, &dest, &file);
    let resolve = "/org/R1-GGUF/resolve/main/m.gguf".to_string();
    let cdn = "/cdn/xyz/m.gguf?sig=1".to_string();
    let half = Some(format!("bytes={}-", file.len() / 2));
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(resolve.clone(), None), (cdn.clone(), None), (resolve, half.clone()), (cdn, half)],
        "each attempt goes through the redirect, the Range header with it"
    );
    std::fs::remove_dir_all(&cache).ok();

    let wrong = sha256_hex(b"another file");
    let (addr, _) = serve_like_hugging_face(file.clone(), wrong.clone());
    let cache = cache_dir("sha-hf-bad");
    let url = format!("http://{addr}/org/R1-GGUF/resolve/main/m.gguf");
    let dest = host_dir(&cache, &addr).join("org/R1-GGUF/resolve/main/m.gguf");
    let line = assert_verify_failure(&run(&addr, &cache), &url, &wrong, &digest, &dest);
    assert!(line.contains("X-Linked-Etag"), "{line}");
    std::fs::remove_dir_all(&cache).ok();
}

/// The cached file of `url` and its record.
fn cached(cache: &Path, addr: &str) -> (PathBuf, serde_json::Value) {
    let file = host_dir(cache, addr).join("m.gguf");
    let record = std::fs::read(host_dir(cache, addr).join("m.gguf.webr1.json")).expect("a record beside the file");
    (file, serde_json::from_slice(&record).unwrap())
}

#[test]
fn a_cached_file_cut_short_or_with_a_flipped_bit_is_downloaded_again() {
    let file = header_bytes();
    let (addr, seen) = serve(file.clone(), Mode::Honest);
    let cache = cache_dir("faults");
    let url = format!("http://{addr}/m.gguf");
    assert!(info(&url, &cache).status.success());
    let (path, record) = cached(&cache, &addr);
    assert_eq!(record["size"], file.len());
    assert_eq!(record["sha256"], sha256_hex(&file));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Unchanged: used as it is, nothing fetched.
    assert!(info(&url, &cache).status.success());
    assert_eq!(seen.lock().unwrap().len(), 1, "an intact cached file is not fetched again");

    // Cut short.
    std::fs::write(&path, &file[..file.len() / 3]).unwrap();
    let out = info(&url, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("downloading it again"), "{stderr}");
    assert_eq!(seen.lock().unwrap().len(), 2, "fetched again");
    assert_eq!(std::fs::read(&path).unwrap(), file);

    // One bit flipped in place, the size unchanged.
    let mut flipped = file.clone();
    flipped[file.len() / 2] ^= 0x10;
    std::thread::sleep(std::time::Duration::from_millis(20)); // a later modification time
    std::fs::write(&path, &flipped).unwrap();
    let out = info(&url, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("sha256"), "{stderr}");
    assert_eq!(seen.lock().unwrap().len(), 3, "fetched again");
    assert_eq!(std::fs::read(&path).unwrap(), file);

    // Touched but unchanged: hashed once, found intact, not fetched.
    std::fs::write(&path, &file).unwrap();
    assert!(info(&url, &cache).status.success());
    assert_eq!(seen.lock().unwrap().len(), 3, "an unchanged file is kept");
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_write_that_fails_is_an_io_write_error_and_leaves_no_partial_file() {
    let (addr, _) = serve(header_bytes(), Mode::Honest);
    let cache = cache_dir("full");
    let url = format!("http://{addr}/m.gguf");
    // A file size limit of 1 MiB (bash counts in KiB) with SIGXFSZ ignored: writes past it fail with EFBIG, as on a
    // full disk.
    let script = format!("trap '' XFSZ; ulimit -f 1024; exec '{}' info '{url}'", env!("CARGO_BIN_EXE_webr1"));
    let out = Command::new("bash").args(["-c", &script]).env("WEBR1_CACHE", &cache).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(last.contains("io.write") && last.contains("partial download was removed"), "{last}");
    assert_cache_empty(&cache);
    std::fs::remove_dir_all(&cache).ok();
}
