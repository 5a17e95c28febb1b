//! Runs the browser tests (`tests/browser/`, node's test runner driving Debian's Chromium through playwright-core) as
//! part of `cargo test`. They need `scripts/build-web.sh` to have built `pkg/`, `npm ci` in `tests/browser/`, Chromium
//! at `/usr/bin/chromium` and the smol135 model; when something is missing they say so and skip, except under
//! `CI=true`, where that fails.

mod common;

use std::path::Path;
use std::process::Command;

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
    let started = std::time::Instant::now();
    let status = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec", "."])
        .current_dir(&dir)
        .status()
        .expect("node runs");
    eprintln!("browser tests took {:.0} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "the browser tests failed (their output is above)");
}
