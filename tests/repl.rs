//! `webr1 chat` in a pseudo-terminal (Python's `pty`), on smol135: two turns where the second computes only its new
//! tokens (the first turn's prompt is reused from the cache), Ctrl-C stopping an answer without leaving the program,
//! `/reset` and `/exit`.

mod common;

use serde_json::Value;
use std::process::Command;

#[test]
fn chat_reuses_the_prefix_and_ctrl_c_stops_only_the_answer() {
    let Some(smol) = common::model("smol135") else { return };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/repl/drive_chat.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([env!("CARGO_BIN_EXE_webr1"), smol.to_str().unwrap()])
        .args(["--temperature", "0", "--max-tokens", "300", "--ctx", "1024", "--f32"])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("webgpu.unavailable") && !common::in_ci() {
        eprintln!("SKIP: no GPU adapter: {stderr}");
        return;
    }
    assert!(out.status.success(), "the terminal session failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let transcript = seen["transcript"].as_str().unwrap();
    eprintln!("{transcript}");
    let (one, two) = (&seen["turns"][0], &seen["turns"][1]);
    eprintln!("turn 1: {one}\nturn 2: {two}\nstopped: {}", seen["stopped"]);
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(n(one, "cached"), 0, "nothing is cached before the first turn");
    assert_eq!(n(one, "new"), n(one, "prompt"));
    assert!(n(two, "cached") >= n(one, "prompt"), "turn 2 reuses at least all of turn 1's prompt: {two}");
    assert_eq!(n(two, "new") + n(two, "cached"), n(two, "prompt"));
    assert!(n(two, "new") < n(two, "prompt") / 2, "turn 2 computes only its new tokens: {two}");
    assert!(transcript.contains("Paris"), "the first answer names Paris");
    assert_eq!(seen["stopped"]["finish"], "abort", "Ctrl-C aborts the answer");
    assert!(transcript.contains("left out of the conversation"));
    assert!(transcript.contains("a new conversation"), "/reset answers");
    assert_eq!(seen["exit"], 0, "/exit leaves cleanly after Ctrl-C: the program was not interrupted");
    assert!(!transcript.contains("panicked"));
}
