//! The `webr1` binary's text commands, driven as a user (or an outside checker) would: `info`, `tokenize`, `template`.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn webr1(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_webr1"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("webr1 starts");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child.wait_with_output().expect("webr1 runs")
}

fn r1_header() -> String {
    common::fixture("r1-distill-qwen-7b.header.gguf").display().to_string()
}

#[test]
fn tokenize_json_prints_llama_cpps_ids() {
    let header = r1_header();
    for rec in common::jsonl("tokenize.r1-qwen.jsonl").iter().take(12) {
        let out = webr1(&["tokenize", &header, "--json"], rec["text"].as_str().unwrap().as_bytes());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ids: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exactly one JSON array on stdout");
        assert_eq!(ids, rec["ids"], "text {:?}", rec["text"]);
    }
}

#[test]
fn tokenize_special_and_bos_flags() {
    let header = r1_header();
    let ids = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["tokenize", &header, "-", "--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&webr1(&all, "<｜User｜>hi".as_bytes()).stdout).unwrap()
    };
    let plain = ids(&[]);
    assert!(plain.as_array().unwrap().len() > 2, "the marker is plain text by default: {plain}");
    assert_eq!(ids(&["--special"])[0], 151644, "--special parses <｜User｜>");
    assert_eq!(ids(&["--special", "--bos"])[0], 151646, "--bos puts BOS first");
}

#[test]
fn template_prints_the_rendering_exactly() {
    let header = r1_header();
    let dir = std::env::temp_dir().join(format!("webr1-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, rec) in common::jsonl("chat.r1-qwen.jsonl").iter().enumerate() {
        let path = dir.join(format!("messages-{i}.json"));
        std::fs::write(&path, serde_json::to_vec(&rec["messages"]).unwrap()).unwrap();
        let mut args = vec!["template", &header, path.to_str().unwrap()];
        if rec["add_generation_prompt"] == false {
            args.push("--no-generation-prompt");
        }
        let out = webr1(&args, b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), rec["rendered"].as_str().unwrap(), "record {i}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn info_describes_a_model() {
    let out = webr1(&["info", &r1_header()], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in
        ["DeepSeek R1 Distill Qwen 7B (qwen2)", "pre deepseek-r1-qwen", "152064 tokens", "chat template  present"]
    {
        assert!(text.contains(want), "info output lacks {want:?}:\n{text}");
    }
    let Some(smol) = common::model("smol135") else { return };
    let out = webr1(&["info", smol.to_str().unwrap()], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    for want in ["30 layers", "Q4_1", "Q8_0", "tied to the embedding", "8192 tokens"] {
        assert!(text.contains(want), "info output lacks {want:?}:\n{text}");
    }
}

#[test]
fn bad_files_fail_with_one_line_and_exit_code_1() {
    let dir = std::env::temp_dir().join(format!("webr1-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_gguf = dir.join("notes.gguf");
    std::fs::write(&not_gguf, b"hello, this is not a model").unwrap();
    let truncated = dir.join("cut.gguf");
    std::fs::write(&truncated, &std::fs::read(common::fixture("r1-distill-qwen-7b.header.gguf")).unwrap()[..100_000])
        .unwrap();
    for (path, code) in
        [(dir.join("missing.gguf"), "io.not_found"), (not_gguf, "gguf.bad_magic"), (truncated, "gguf.truncated")]
    {
        let out = webr1(&["info", path.to_str().unwrap()], b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(err.contains(code), "{}: stderr should name {code}: {err}", path.display());
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let usage = webr1(&["info"], b"");
    assert_eq!(usage.status.code(), Some(2), "a usage error exits with 2");
    std::fs::remove_dir_all(&dir).ok();
}
