//! A `webr1 serve` on smol135 for the tests that drive it from outside (`tests/hardening.rs`), and raw HTTP/1.1
//! requests whose every header the test chooses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A running `webr1 serve`, killed when dropped; its standard error is collected line by line.
pub struct Server {
    child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on smol135 on a free port with `extra` arguments; `None` (after a loud skip) without the
    /// model or a GPU.
    pub fn start(extra: &[&str]) -> Option<Server> {
        let smol = super::model("smol135")?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_webr1"))
            .args(["serve", smol.to_str().unwrap(), "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("webr1 serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if let Some(at) = line.find("http://") {
                    let addr = line[at + 7..].split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = log.lock().unwrap().join("\n");
                if text.contains("webgpu.unavailable") && !super::in_ci() {
                    eprintln!("SKIP: no GPU adapter: {text}");
                    return None;
                }
                panic!("webr1 serve did not start:\n{text}");
            }
        };
        Some(Server { child, addr, log })
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    /// Resident memory of the server process in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// A request with the usual headers (Host, JSON content type for a POST) plus `headers` ([`request`]).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(&self.addr, method, path, headers, body)
    }

    pub fn post_json(&self, body: &serde_json::Value) -> Response {
        self.request("POST", "/v1/chat/completions", &[], body.to_string().as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response: status, head (lower-cased) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| serde_json::json!(String::from_utf8_lossy(&self.body)))
    }

    /// The body is OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`; returns the error.
    pub fn openai_error(&self) -> serde_json::Value {
        let value = self.json();
        let error = &value["error"];
        let keys: Vec<&str> = error.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(keys, ["message", "type", "param", "code"], "not an OpenAI error body ({}): {value}", self.status);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
        assert!(self.head.contains("content-type: application/json"), "{}", self.head);
        error.clone()
    }
}

/// A request to `addr` with the usual headers (Host, JSON content type for a POST) plus `headers`, which replace
/// the usual ones of the same name.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut all: Vec<(&str, &str)> = vec![("Host", addr)];
    if method == "POST" {
        all.push(("Content-Type", "application/json"));
    }
    for (name, _) in headers {
        all.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    all.extend_from_slice(headers);
    raw(addr, method, path, &all, body)
}

/// One request on its own connection with exactly `headers` (and `Content-Length`, `Connection: close`).
pub fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) and close before a large body is all sent.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Response { status, head, body }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&bytes[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || bytes.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&bytes[end + 2..end + 2 + size]);
        bytes = &bytes[(end + 4 + size).min(bytes.len())..];
    }
    out
}

/// A chat request for `content` at temperature 0.
pub fn ask(content: &str, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({"model": "smol135", "messages": [{"role": "user", "content": content}], "temperature": 0,
                       "max_tokens": max_tokens})
}
