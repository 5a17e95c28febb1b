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
    for args in [&["info", "--no-such-flag"][..], &["run", "model.gguf"], &["serve", "--port", "http"]] {
        let usage = webr1(args, b"");
        assert_eq!(usage.status.code(), Some(2), "{args:?}: a usage error exits with 2");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_closed_standard_output_is_one_line_and_exit_code_1_not_a_panic() {
    // The read end of the pipe is closed before webr1 starts, so its first print fails.
    let script = r#"
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE)
sys.stdout.write("%d\n%s" % (p.returncode, p.stderr.decode()))
"#;
    let out = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_webr1"), "info", &r1_header()])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (code, stderr) = text.split_once('\n').unwrap();
    assert_eq!(code, "1", "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("webr1: ") && stderr.contains("[io.write]"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

/// `webr1 run` with the given arguments on smol135; `None` (after a loud skip) without the model.
fn run_smol(args: &[&str]) -> Option<Output> {
    let smol = common::model("smol135")?;
    let mut all = vec!["run", smol.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = webr1(&all, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("webgpu.unavailable") && !common::in_ci() {
        eprintln!("SKIP: no GPU adapter: {stderr}");
        return None;
    }
    assert!(out.status.success(), "webr1 run failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Some(out)
}

fn run_json(args: &[&str]) -> Option<serde_json::Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run_smol(&all)?;
    Some(serde_json::from_slice(&out.stdout).expect("stdout holds exactly one JSON object"))
}

/// The generated ids agree with llama.cpp's greedy ids up to the first difference, and a difference only comes where
/// llama.cpp's own top two logits are within 0.05 (a near-tie that f32 rounding may break either way).
fn assert_greedy_prefix(got: &[serde_json::Value], rec: &serde_json::Value, at_least: usize) {
    let want = rec["greedy_ids"].as_array().unwrap();
    assert!(got.len() >= at_least.min(want.len()), "only {} tokens: {got:?}", got.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let top = &rec["steps"][i]["top"];
            let margin = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            assert!(margin < 0.05, "token {i}: got {g}, llama.cpp {w} with margin {margin} (not a near-tie)");
            return;
        }
    }
}

#[test]
fn run_json_is_one_chat_completion_with_llama_cpps_greedy_tokens() {
    let rec = &common::jsonl("greedy-f32.smol135.jsonl")[2];
    assert_eq!(rec["messages"].as_array().unwrap().len(), 1, "a one-message record");
    let prompt = rec["messages"][0]["content"].as_str().unwrap();
    let Some(v) = run_json(&["-p", prompt, "--temperature", "0", "--f32", "--max-tokens", "4"]) else { return };
    assert_eq!(v["object"], "chat.completion");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string() && choice["message"]["reasoning_content"].is_string(), "{v}");
    assert_eq!(choice["finish_reason"], "length", "4 tokens at most: {v}");
    let usage = &v["usage"];
    assert_eq!(usage["prompt_tokens"], rec["prompt_ids"].as_array().unwrap().len(), "the chat template's prompt: {v}");
    assert_eq!(usage["completion_tokens"], 4);
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + 4);
    let ids = v["token_ids"].as_array().expect("top-level token_ids");
    assert_eq!(ids.len(), 4);
    assert_greedy_prefix(ids, rec, 4);
    // The text is the detokenised ids: llama.cpp's greedy text starts with it.
    let text = choice["message"]["content"].as_str().unwrap();
    if ids[..] == rec["greedy_ids"].as_array().unwrap()[..4] {
        assert!(rec["greedy_text"].as_str().unwrap().starts_with(text), "{text:?} vs {}", rec["greedy_text"]);
    }
}

#[test]
fn run_raw_takes_the_prompt_as_given_with_turn_markers_parsed() {
    let rec = &common::jsonl("greedy-f32.smol135.jsonl")[0];
    let prompt = rec["prompt"].as_str().unwrap();
    let Some(v) = run_json(&["--raw", "-p", prompt, "--temperature", "0", "--f32", "--max-tokens", "3"]) else {
        return;
    };
    // Turn markers as text would take several tokens each: the same count as llama.cpp's ids means they were parsed.
    assert_eq!(v["usage"]["prompt_tokens"], rec["prompt_ids"].as_array().unwrap().len(), "{v}");
    assert_greedy_prefix(v["token_ids"].as_array().unwrap(), rec, 3);
}

#[test]
fn run_piped_prints_the_answer_alone_and_the_reasoning_on_stderr() {
    let rec = &common::jsonl("greedy-f32.smol135.jsonl")[0];
    // A raw prompt that opens a reasoning block; the thinking budget closes it after 3 tokens and an answer follows.
    let prompt = format!("{}<think>\n", rec["prompt"].as_str().unwrap());
    let args = ["--raw", "-p", &prompt, "--temperature", "0", "--think-budget", "3", "--max-tokens", "12"];
    let Some(v) = run_json(&args) else { return };
    let reasoning = v["choices"][0]["message"]["reasoning_content"].as_str().unwrap().to_string();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!reasoning.trim().is_empty() && !content.trim().is_empty(), "both parts are needed for this test: {v}");
    let out = run_smol(&args).unwrap();
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert_eq!(stdout.trim(), content.trim(), "stdout holds the answer alone");
    assert!(stderr.contains(reasoning.trim()), "the reasoning goes to stderr: {stderr:?} lacks {reasoning:?}");
    assert!(!stdout.contains("\x1b["), "no terminal escapes in a pipe: {stdout:?}");
}

/// `run --json-schema`: the answer is JSON valid for the schema; a schema webr1 cannot use, a bad grammar or an
/// unreadable file is one line ending in its code (exit 1).
#[test]
fn run_json_schema_constrains_the_answer_and_bad_ones_are_one_coded_line() {
    let Some(smol) = common::model("smol135") else { return };
    let dir = std::env::temp_dir().join(format!("webr1-cli-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = file(
        "good.json",
        r#"{"type":"object","properties":{"n":{"type":"integer","minimum":1,"maximum":9}},"required":["n"],"additionalProperties":false}"#,
    );
    if let Some(answer) =
        run_json(&["-p", "Pick a number.", "--json-schema", &good, "--temperature", "0", "--max-tokens", "20"])
    {
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        let value: serde_json::Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{content:?}: {e}"));
        let n = value["n"].as_i64().unwrap();
        assert!((1..=9).contains(&n) && value.as_object().unwrap().len() == 1, "{content}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    }
    let cases = [
        (
            vec!["--json-schema".to_string(), file("bad.json", r#"{"type":"object","dependentSchemas":{}}"#)],
            "structured.schema",
        ),
        (vec!["--json-schema".to_string(), file("notjson.json", "{type: object")], "structured.schema"),
        (vec!["--grammar".to_string(), file("bad.lark", "start: missing_rule")], "structured.grammar"),
        (vec!["--json-schema".to_string(), dir.join("absent.json").display().to_string()], "io.read"),
    ];
    for (extra, code) in cases {
        let mut args = vec!["run", smol.to_str().unwrap(), "-p", "x", "--max-tokens", "4"];
        args.extend(extra.iter().map(String::as_str));
        let out = webr1(&args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("webgpu.unavailable") && !common::in_ci() {
            return;
        }
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("webr1: ") && last.ends_with(&format!("[{code}]")), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
