//! Runs the browser tests (`tests/browser/`, node's test runner driving Debian's Chromium through playwright-core) as
//! part of `cargo test`. They need `scripts/build-web.sh` to have built `pkg/`, `npm ci` in `tests/browser/`, Chromium
//! at `/usr/bin/chromium` and the smol135 model; when something is missing they say so and skip, except under
//! `CI=true`, where that fails.
//!
//! Before node starts, the native engine computes the reference one browser test compares with: smol135's
//! teacher-forced logits on the forced-f32 path over the first [`TEACHER_FORCED_TOKENS`] tokens of Debian's
//! GFDL-1.3 text (see `tests/paths.rs`), written to a JSON file named by `WEBR1_NATIVE_TEACHER_FORCED`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use webr1::engine::{teacher_forced, EngineOptions};
use webr1::gpu::GpuOptions;

/// Tokens of the teacher-forced comparison between the browser and native f32.
const TEACHER_FORCED_TOKENS: usize = 128;

/// Writes the native f32 reference of the teacher-forced browser test; `None` (after saying why) without the text,
/// the model or a GPU adapter, which under `CI=true` fail instead.
fn native_teacher_forced() -> Option<PathBuf> {
    let text_path = Path::new(common::LICENSES).join("GFDL-1.3");
    let text = common::text(&text_path)?;
    pollster::block_on(async {
        let options = EngineOptions {
            gpu: GpuOptions { force_f32: true, ..GpuOptions::default() },
            context_length: Some(TEACHER_FORCED_TOKENS),
            ..EngineOptions::default()
        };
        let mut engine = common::engine("smol135", options).await?;
        let ids = common::leading_tokens(engine.tokenizer(), &text, TEACHER_FORCED_TOKENS);
        let started = std::time::Instant::now();
        let rows = teacher_forced(&mut engine, &ids, 10).await.unwrap();
        eprintln!("native f32 teacher-forced logits of {} tokens in {:.1?}", ids.len(), started.elapsed());
        let json = serde_json::json!({ "text": text_path, "ids": ids, "steps": rows });
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("native-teacher-forced.smol135.json");
        std::fs::write(&path, json.to_string()).unwrap();
        Some(path)
    })
}

#[test]
fn browser_tests_pass_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node is not installed".to_string());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        missing.push("tests/browser has no node_modules (npm ci there)".to_string());
    }
    if !root.join("pkg/webr1_bg.wasm").exists() {
        missing.push("pkg/ is not built (scripts/build-web.sh)".to_string());
    }
    if !missing.is_empty() {
        assert!(!common::in_ci(), "browser tests cannot run under CI=true: {}", missing.join("; "));
        eprintln!("SKIP: browser tests: {}", missing.join("; "));
        return;
    }
    let reference = native_teacher_forced();
    let started = std::time::Instant::now();
    let mut node = Command::new("node");
    // The native binary, for the browser tests that drive a local `webr1 serve`.
    node.env("WEBR1_BIN", env!("CARGO_BIN_EXE_webr1"));
    if let Some(path) = &reference {
        node.env("WEBR1_NATIVE_TEACHER_FORCED", path);
    }
    let status = node
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec", "."])
        .current_dir(&dir)
        .status()
        .expect("node runs");
    eprintln!("browser tests took {:.0} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "the browser tests failed (their output is above)");
}
