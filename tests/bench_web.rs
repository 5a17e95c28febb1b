//! `webr1 bench` on smol135 (a llama-bench-shaped table and its JSON, and `--profile`) and `webr1 web` (the demo site and the package
//! with the MIME types browsers require, and nothing outside them).

mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn bench(args: &[&str]) -> Option<String> {
    let smol = common::model("smol135")?;
    let out = Command::new(env!("CARGO_BIN_EXE_webr1"))
        .args(["bench", smol.to_str().unwrap()])
        .args(args)
        .output()
        .expect("webr1 bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("webgpu.unavailable") && !common::in_ci() {
        eprintln!("SKIP: no GPU adapter: {stderr}");
        return None;
    }
    assert!(out.status.success(), "{stderr}");
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn bench_prints_a_table_and_json() {
    let Some(table) = bench(&["-p", "16", "-n", "4", "-r", "2"]) else { return };
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "header, rule, pp16 and tg4:\n{table}");
    let header: Vec<&str> = lines[0].split('|').map(str::trim).filter(|s| !s.is_empty()).collect();
    assert_eq!(header, ["model", "size", "params", "backend", "adapter", "shaders", "test", "t/s"]);
    for (line, test) in lines[2..].iter().zip(["pp16", "tg4"]) {
        let cells: Vec<&str> = line.split('|').map(str::trim).filter(|s| !s.is_empty()).collect();
        assert_eq!(cells.len(), 8, "{line}");
        assert!(cells[0].starts_with("llama 135M"), "architecture and size: {line}");
        assert!(cells[0].ends_with("Q8_0") || cells[0].ends_with("Q4_1"), "main quant type: {line}");
        assert_eq!(cells[6], test);
        let (mean, sd) = cells[7].split_once(" ± ").unwrap_or_else(|| panic!("mean ± sd: {line}"));
        let (mean, sd): (f64, f64) = (mean.parse().unwrap(), sd.parse().unwrap());
        assert!(mean > 0.0 && sd >= 0.0 && mean.is_finite(), "{line}");
    }

    let Some(json) = bench(&["-p", "8", "-n", "2", "-r", "2", "--no-warmup", "--json", "--f32"]) else { return };
    let rows: Value = serde_json::from_str(&json).expect("one JSON array");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["test"].as_str(), rows[0]["n_prompt"].as_u64()), (Some("pp8"), Some(8)));
    assert_eq!((rows[1]["test"].as_str(), rows[1]["n_gen"].as_u64()), (Some("tg2"), Some(2)));
    for row in rows {
        let samples: Vec<f64> = row["samples_ts"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(samples.len(), 2);
        let mean = samples.iter().sum::<f64>() / 2.0;
        assert!((row["avg_ts"].as_f64().unwrap() - mean).abs() < 1e-9 * mean.max(1.0), "{row}");
        let sd = ((samples[0] - mean).powi(2) + (samples[1] - mean).powi(2)).sqrt();
        assert!((row["stddev_ts"].as_f64().unwrap() - sd).abs() < 1e-6 * sd.max(1.0), "{row}");
        assert_eq!(row["shaders"], "f32", "--f32 is honoured");
        assert!(row["model_size"].as_u64().unwrap() > 50_000_000, "{row}");
    }
}

#[test]
fn bench_profile_prints_one_object_and_a_table() {
    let Some(json) = bench(&["-p", "8", "-n", "2", "--no-warmup", "--profile", "--json"]) else { return };
    let p: Value = serde_json::from_str(&json).expect("one JSON object");
    for field in [
        "n_layer",
        "dispatches_per_token",
        "dispatches_per_layer",
        "waits_per_token",
        "bytes_read_per_token",
        "weight_bytes",
    ] {
        assert!(p[field].as_f64().is_some_and(|v| v > 0.0), "{field} is a positive number: {p}");
    }
    let (gguf, _) = webr1::gguf::split::open_files(&common::model("smol135").unwrap()).unwrap();
    let n_layer = gguf.tensors().filter(|(_, t)| t.name.ends_with(".attn_norm.weight")).count();
    assert_eq!(p["n_layer"].as_u64(), Some(n_layer as u64));
    // The decode step's dispatch list, as --dispatches prints it: each runs once a token.
    let list = bench(&["-p", "8", "--dispatches"]).unwrap();
    let decode = list.lines().next().unwrap();
    let n: f64 = decode.split(", ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert_eq!(p["dispatches_per_token"].as_f64(), Some(n), "{decode}");
    assert_eq!(p["waits_per_token"].as_f64(), Some(1.0));
    assert!(p["ops"].as_array().unwrap().iter().any(|o| o["op"].as_str().unwrap().starts_with("matmul_vec ")));
    let prefill = &p["prefill"];
    assert_eq!((prefill["phase"].as_str(), prefill["tokens"].as_u64()), (Some("prefill"), Some(8)), "{prefill}");
    let classes: Vec<&str> =
        prefill["classes"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(classes, ["gemm", "attention", "other"]);

    let Some(table) = bench(&["-p", "0", "-n", "1", "--no-warmup", "--profile"]) else { return };
    println!("{table}");
    assert!(
        table.lines().any(|l| l.starts_with("| op ") && l.contains("GPU ms/token") && l.contains("GB/s")),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("| matmul_vec ")), "{table}");
    assert!(table.contains(&format!("dispatches per token: {n:.1} = {n_layer} layers")), "{table}");
    assert!(table.contains("CPU waits per token: 1.00"), "{table}");
}

fn get(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

#[test]
fn web_serves_the_site_and_the_package_with_their_mime_types() {
    let root = std::env::temp_dir().join(format!("webr1-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::create_dir_all(root.join("pkg")).unwrap();
    std::fs::write(root.join("www/index.html"), "<!doctype html><title>demo</title>").unwrap();
    std::fs::write(root.join("www/app.js"), "import '../pkg/webr1.js';").unwrap();
    std::fs::write(root.join("pkg/webr1.js"), "export {};").unwrap();
    std::fs::write(root.join("pkg/webr1_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(root.join("secret.txt"), "not for the web").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_webr1"))
        .args(["web", "--root", root.to_str().unwrap(), "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).expect("the address").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "localhost only: {line}");
    let cases = [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/pkg/webr1.js", "text/javascript"),
        ("/pkg/webr1_bg.wasm", "application/wasm"),
    ];
    for (path, mime) in cases {
        let (status, head, _) = get(&addr, path);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains(&format!("content-type: {mime}")), "{path}: {head}");
    }
    assert_eq!(get(&addr, "/pkg/webr1_bg.wasm").2, b"\0asm\x01\0\0\0");
    for path in ["/../secret.txt", "/pkg/../secret.txt", "/%2e%2e/secret.txt", "/missing.js", "/.hidden"] {
        let (status, _, body) = get(&addr, path);
        assert_eq!(status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("not for the web"), "{path}");
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&root).ok();
}
