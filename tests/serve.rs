//! `webr1 serve` on smol135 (lavapipe in CI), driven from outside as clients would: the official `openai` Python
//! client streaming and not, 16 clients at once served first in, first out with the answers they get alone, a client
//! that disconnects mid-stream freeing the engine, a full queue answering 429, malformed requests answering 400 while
//! the server keeps serving, and the API key and CORS switches. Answers are kept to a few tokens: lavapipe is slow.

mod common;

use common::server::{ask, Response, Server};

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const KEY: &str = "sk-webr1-test";

/// Starts `webr1 serve` on smol135 with a context of 512 tokens and `extra` arguments (`tests/common/server.rs`).
fn start(extra: &[&str]) -> Option<Server> {
    Server::start(&[&["--ctx", "512"], extra].concat())
}

/// What these tests ask of the server besides what `common::server` gives.
trait Client {
    /// Requests running or waiting, from `GET /health`.
    fn pending(&self) -> u64;
    fn post(&self, body: &str) -> (u16, Value);
    /// A whole chat completion that must succeed.
    fn chat(&self, request: &Value) -> Value;
}

impl Client for Server {
    fn pending(&self) -> u64 {
        http(&self.addr, "GET", "/health", &[], b"").json()["pending"].as_u64().unwrap()
    }

    fn post(&self, body: &str) -> (u16, Value) {
        let response = http(&self.addr, "POST", "/v1/chat/completions", &[], body.as_bytes());
        (response.status, response.json())
    }

    fn chat(&self, request: &Value) -> Value {
        let (status, value) = self.post(&request.to_string());
        assert_eq!(status, 200, "{request} → {value}");
        value
    }
}

/// A request with the API key ([`common::server::request`]).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let bearer = format!("Bearer {KEY}");
    let mut all = vec![("Authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    common::server::request(addr, method, path, &all, body)
}

/// Opens a streamed request and reads until a chunk with generated text arrives; the connection stays open.
fn open_stream(addr: &str, request: &Value) -> TcpStream {
    let body = request.to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"") || count(&seen, "data: {") < 2 {
        let n = stream.read(&mut buf).expect("stream read");
        assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

fn count(bytes: &[u8], needle: &str) -> usize {
    String::from_utf8_lossy(bytes).matches(needle).count()
}

/// A request that would run for minutes: only an abort ends it early.
fn long_stream() -> Value {
    json!({"model": "smol135", "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
           "temperature": 0, "max_tokens": 400, "stream": true})
}

#[test]
fn the_openai_python_client_streams_and_not_with_the_same_answer() {
    let Some(server) = start(&["--f32"]) else { return };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_client.py");
    let base = format!("http://{}/v1", server.addr);
    let out = Command::new("python3").arg(&script).args([&base, "smol135.gguf"]).output().expect("python3 runs");
    if out.status.code() == Some(3) && !common::in_ci() {
        eprintln!("SKIP: {}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    assert!(out.status.success(), "the openai client failed: {}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    eprintln!("openai client saw: {seen}");
    assert_eq!(seen["models"], json!(["smol135.gguf"]));
    let (whole, stream) = (&seen["whole"], &seen["stream"]);
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(stream["content"], whole["content"], "streamed content equals the whole answer at temperature 0");
    // llama.cpp's greedy answer to this prompt on the same weights (f32 path): "The capital of France is Paris."
    let rec = &common::jsonl("greedy-f32.smol135.jsonl")[0];
    assert_eq!(rec["messages"][0]["content"], "What is the capital of France?");
    let text = whole["content"].as_str().unwrap();
    assert!(!text.is_empty() && rec["greedy_text"].as_str().unwrap().starts_with(text), "{text:?}");
    assert_eq!(whole["finish_reason"], "length", "six tokens at most");
    assert_eq!(stream["finish_reason"], "length");
    let prompt_tokens = rec["prompt_ids"].as_array().unwrap().len();
    for usage in [&whole["usage"], &stream["usage"]] {
        assert_eq!(usage["prompt_tokens"], prompt_tokens, "{usage}");
        assert_eq!(usage["completion_tokens"], 6, "{usage}");
        assert_eq!(usage["total_tokens"], prompt_tokens + 6, "{usage}");
    }
    assert!(stream["chunks"].as_u64().unwrap() >= 4, "streamed in pieces: {stream}");
}

/// Tool calls and structured output through the official `openai` client (tests/serve/tools_client.py), on smol135,
/// whose template knows no tools (webr1's generic format): a required call and a named one parse into `tool_calls`
/// with arguments valid for their schemas, the stream carries the same call in pieces, a round trip with a `tool`
/// message answers in text, and `parse` with a pydantic model gives the parsed object.
#[test]
fn the_openai_client_gets_tool_calls_and_parsed_json() {
    let Some(server) = start(&["--f32"]) else { return };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/tools_client.py");
    let base = format!("http://{}/v1", server.addr);
    let started = Instant::now();
    let out = Command::new("python3").arg(&script).args([&base, "smol135.gguf"]).output().expect("python3 runs");
    if out.status.code() == Some(3) && !common::in_ci() {
        eprintln!("SKIP: {}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    assert!(out.status.success(), "the openai client failed: {}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    eprintln!("openai client saw ({:.0}s): {seen:#}", started.elapsed().as_secs_f64());
    let required = &seen["required"];
    assert_eq!(required["finish_reason"], "tool_calls");
    assert_eq!(required["content"], Value::Null);
    let calls = required["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "parallel_tool_calls false: one call");
    assert_eq!(calls[0]["type"], "function");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    let stream = &seen["stream"];
    assert_eq!(stream["finish_reason"], "tool_calls");
    assert_eq!(stream["names"], json!([calls[0]["name"]]), "the stream calls the same function at temperature 0");
    assert_eq!(stream["arguments"], json!([calls[0]["arguments"]]));
    assert!(stream["argument_pieces"].as_u64().unwrap() >= 2, "arguments stream in pieces: {stream}");
    let round_trip = &seen["round_trip"];
    assert!(round_trip["finish_reason"] == "length" || round_trip["finish_reason"] == "stop", "{round_trip}");
    assert!(!round_trip["content"].as_str().unwrap_or_default().is_empty(), "{round_trip}");
    assert_eq!(seen["named"]["finish_reason"], "tool_calls");
    assert_eq!(seen["named"]["calls"], json!([["get_time", "{}"]]), "get_time takes no arguments");
    let parse = &seen["parse"];
    assert_eq!(parse["type"], "City", "{parse}");
    assert_eq!(parse["finish_reason"], "stop");
    let city = &parse["parsed"];
    assert!(city["name"].is_string() && city["country"].is_string() && city["population_millions"].is_number());
}

/// Bad structured-output requests: a 400 with an OpenAI-style error and webr1's code, each in under a second, and the
/// server still serves.
#[test]
fn bad_schemas_and_tools_get_400_at_once() {
    let Some(server) = start(&[]) else { return };
    let user = r#"[{"role":"user","content":"hi"}]"#;
    let tool = r#"{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}"#;
    let schema = |s: &str| {
        format!(
            r#"{{"messages":{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"x","schema":{s}}}}}}}"#
        )
    };
    let deep = format!("{}{{}}{}", r#"{"type":"array","items":"#.repeat(10_000), "}".repeat(10_000));
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        (schema(r#"{"type":"strin"}"#), "strin", Some("structured.schema")),
        (schema(r#"{"type":"object","dependentSchemas":{"a":{}}}"#), "dependentSchemas", Some("structured.schema")),
        (schema(r##"{"$ref":"#"}"##), "admits no value", Some("structured.schema")),
        (schema(&deep), "recursion limit", None),
        (schema(&format!(r#"{{"enum":[{}]}}"#, (0..2000).map(|i| i.to_string()).collect::<Vec<_>>().join(","))), "enum", Some("structured.schema")),
        (format!(r#"{{"messages":{user},"grammar":"start: nope"}}"#), "nope", Some("structured.grammar")),
        (format!(r#"{{"messages":{user},"regex":"(open"}}"#), "regex", Some("structured.grammar")),
        (format!(r#"{{"messages":{user},"tools":[{tool}],"tool_choice":{{"type":"function","function":{{"name":"g"}}}}}}"#), "\"g\"", Some("tools.invalid")),
        (format!(r#"{{"messages":{user},"tools":{{"f":1}}}}"#), "tools must be an array", Some("tools.invalid")),
        (format!(r#"{{"messages":{user},"tools":[{{"type":"function","function":{{"name":"a b"}}}}]}}"#), "function.name", Some("tools.invalid")),
        (format!(r#"{{"messages":{user},"tools":[{tool}],"tool_choice":"sometimes"}}"#), "sometimes", Some("tools.invalid")),
        (r#"{"messages":[{"role":"user","content":"hi"},{"role":"tool","content":"42"}]}"#.into(), "tool_call_id", Some("tools.invalid")),
        (r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}]}"#.into(), "id", Some("tools.invalid")),
    ];
    for (body, says, code) in &cases {
        let started = Instant::now();
        let (status, value) = server.post(body);
        let took = started.elapsed();
        assert_eq!(status, 400, "{} → {value}", &body[..body.len().min(200)]);
        let message = value["error"]["message"].as_str().unwrap_or_else(|| panic!("an OpenAI error body: {value}"));
        assert!(message.contains(says), "{message:?} should mention {says:?}");
        assert_eq!(value["error"]["type"], "invalid_request_error");
        if let Some(code) = code {
            assert_eq!(value["error"]["code"], *code, "{value}");
        }
        assert!(took < Duration::from_secs(1), "{says}: {took:?}");
        eprintln!("{:>6.1} ms  400 {message}", took.as_secs_f64() * 1e3);
    }
    let after = server.chat(&ask("Hi", 1));
    assert_eq!(after["usage"]["completion_tokens"], 1, "still serving: {after}");
}

#[test]
fn sixteen_clients_are_served_in_order_with_the_answers_they_get_alone() {
    let Some(server) = start(&["--queue", "16"]) else { return };
    let prompt = "Name three colours.";
    server.chat(&ask(prompt, 3)); // the first prefill; afterwards every request reuses the same cached prefix
    let alone: Vec<Value> = (1..=3).map(|n| server.chat(&ask(prompt, n))["choices"][0]["message"].clone()).collect();
    let start = Instant::now();
    let addr = Arc::new(server.addr.clone());
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                // Staggered so that the order of arrival is known.
                std::thread::sleep(Duration::from_millis(150 * i as u64));
                let body = ask(prompt, 1 + i % 3).to_string();
                let response = http(&addr, "POST", "/v1/chat/completions", &[], body.as_bytes());
                let done = Instant::now();
                (response.status, serde_json::from_slice::<Value>(&response.body).unwrap_or(Value::Null), done)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    eprintln!("16 clients took {:.1}s", start.elapsed().as_secs_f64());
    for (i, (status, value, _)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "client {i}: {value}");
        let n = 1 + i % 3;
        assert_eq!(value["choices"][0]["message"], alone[n - 1], "client {i} (max_tokens {n})");
        assert_eq!(value["usage"]["completion_tokens"], n, "client {i}");
    }
    for pair in results.windows(2) {
        assert!(pair[0].2 <= pair[1].2, "the clients finished out of order");
    }
}

#[test]
fn disconnects_free_the_engine_a_full_queue_refuses_and_bad_requests_get_400() {
    let Some(server) = start(&["--queue", "1", "--api-key", KEY, "--cors"]) else { return };
    malformed_requests_get_400(&server);
    api_key_and_cors(&server);

    // A client that leaves mid-stream: its generation is aborted and the next request is served at once.
    let stream = open_stream(&server.addr, &long_stream());
    drop(stream);
    let start = Instant::now();
    let next = server.chat(&ask("Hi", 2));
    assert_eq!(next["usage"]["completion_tokens"], 2);
    let waited = start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    let aborted = log.iter().find(|l| l.contains(" abort: ")).unwrap_or_else(|| panic!("no abort logged: {log:#?}"));
    let generated: usize = aborted.split(", ").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap();
    assert!(generated < 60, "the abandoned generation went on for {generated} tokens: {aborted}");
    eprintln!("after a disconnect the next request waited {:.1}s; {aborted}", waited.as_secs_f64());

    // One running, one waiting (--queue 1): the third is refused with 429 at once.
    let running = open_stream(&server.addr, &long_stream());
    let (tx, rx) = mpsc::channel();
    let addr = server.addr.clone();
    let waiting = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        let body = long_stream().to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap();
        tx.send(String::from_utf8_lossy(&buf[..n]).to_string()).unwrap();
        stream // held open while queued
    });
    let head = rx.recv_timeout(Duration::from_secs(60)).expect("the second stream is admitted");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let refused = Instant::now();
    let (status, value) = server.post(&ask("Hi", 1).to_string());
    assert_eq!(status, 429, "{value}");
    assert!(refused.elapsed() < Duration::from_secs(5), "a full queue answers at once");
    assert_eq!(value["error"]["code"], "queue_full", "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("busy"), "{value}");
    drop(running);
    drop(waiting.join().unwrap());
    // Both clients left: the running generation aborts at its next token and the waiting one is skipped.
    let drained = Instant::now();
    while server.pending() > 0 {
        assert!(drained.elapsed() < Duration::from_secs(120), "the queue did not drain: {:#?}", server.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("the queue drained {:.1}s after its clients left", drained.elapsed().as_secs_f64());
    let after = server.chat(&ask("Hi", 1));
    assert_eq!(after["usage"]["completion_tokens"], 1, "served again once the queue drained: {after}");
}

fn malformed_requests_get_400(server: &Server) {
    let user = r#"[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not valid JSON"),
        ("".into(), "not valid JSON"),
        ("[1, 2]".into(), "JSON object"),
        (r#"{"model":"m"}"#.into(), "messages is required"),
        (r#"{"messages":"hello"}"#.into(), "array"),
        (r#"{"messages":[]}"#.into(), "at least one"),
        (r#"{"messages":[{"content":"hi"}]}"#.into(), "role"),
        (r#"{"messages":[{"role":"wizard","content":"hi"}]}"#.into(), "wizard"),
        (r#"{"messages":[{"role":"user","content":42}]}"#.into(), "content"),
        (format!(r#"{{"messages":{user},"temperature":"warm"}}"#), "temperature"),
        (format!(r#"{{"messages":{user},"temperature":9}}"#), "temperature"),
        (format!(r#"{{"messages":{user},"top_p":1.5}}"#), "top_p"),
        (format!(r#"{{"messages":{user},"max_tokens":-3}}"#), "max_tokens"),
        (format!(r#"{{"messages":{user},"seed":"abc"}}"#), "seed"),
        (format!(r#"{{"messages":{user},"stop":[1]}}"#), "stop"),
        (format!(r#"{{"messages":{user},"stream":"please"}}"#), "stream"),
        (format!(r#"{{"messages":{user},"n":3}}"#), "n must be 1"),
        (format!(r#"{{"messages":{user},"tools":[{{"type":"function"}}]}}"#), "tools[0]"),
    ];
    for (body, says) in &cases {
        let (status, value) = server.post(body);
        assert_eq!(status, 400, "{body} → {value}");
        let message = value["error"]["message"].as_str().unwrap_or_else(|| panic!("an OpenAI error body: {value}"));
        assert!(message.contains(says), "{body}: {message:?} should mention {says:?}");
        assert_eq!(value["error"]["type"], "invalid_request_error");
    }
    let response = http(&server.addr, "GET", "/v1/nothing", &[], b"");
    assert_eq!(response.status, 404, "{}", String::from_utf8_lossy(&response.body));
    let response = http(&server.addr, "GET", "/health", &[], b"");
    let status: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!((response.status, status["status"].clone()), (200, json!("ok")));
    eprintln!("{} malformed requests answered 400", cases.len());
}

fn api_key_and_cors(server: &Server) {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    let head = format!("GET /v1/models HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 401"), "no key, no service: {raw}");
    assert!(raw.contains("invalid_api_key"), "{raw}");
    let response = http(&server.addr, "GET", "/v1/models", &[("Origin", "http://example.com")], b"");
    assert_eq!(response.status, 200);
    assert!(response.head.contains("access-control-allow-origin: *"), "{}", response.head);
    let response = http(&server.addr, "OPTIONS", "/v1/chat/completions", &[], b"");
    assert_eq!(response.status, 204, "{}", response.head);
    assert!(response.head.contains("access-control-allow-headers: authorization"), "{}", response.head);
}
