//! The `webr1` binary at the edges, as a careless user meets them: a prompt longer than the context, `--max-tokens 0`,
//! sampling values out of range, a context larger than the model's, a device, FIFO or directory given as a model, and
//! Ctrl-C during `run`. Each is a one-line error with its code and exit code 1 (130 for Ctrl-C), never a silent
//! success, a clamp, a hang or a panic. The checks that need no GPU refuse before a model is loaded.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn webr1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webr1")).args(args).stdin(Stdio::null()).output().expect("webr1 runs")
}

/// Exit code 1 and one line on standard error that ends in `[code]` and contains every one of `says`.
fn assert_error(out: &Output, code: &str, says: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.ends_with(&format!("[{code}]")), "{what}: the last line should end in [{code}]: {stderr}");
    for s in says {
        assert!(last.contains(s), "{what}: {last:?} should mention {s:?}");
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{what}: {stderr}");
}

#[test]
fn sampling_values_the_server_refuses_are_refused_by_run_before_loading() {
    // A model path that does not exist: the values are checked first, so the error is theirs, not io.not_found.
    let cases: [(&[&str], &str); 8] = [
        (&["--temperature=-1"], "temperature"),
        (&["--temperature=NaN"], "temperature"),
        (&["--temperature=inf"], "temperature"),
        (&["--temperature=2.5"], "temperature"),
        (&["--top-p=7"], "top_p"),
        (&["--top-p=0"], "top_p"),
        (&["--min-p=5"], "min_p"),
        (&["--max-tokens=0"], "max_tokens"),
    ];
    for (flags, name) in cases {
        let mut args = vec!["run", "/nonexistent/model.gguf", "-p", "hi"];
        args.extend_from_slice(flags);
        assert_error(&webr1(&args), "usage", &[name], &format!("run {flags:?}"));
        let mut args = vec!["chat", "/nonexistent/model.gguf"];
        args.extend_from_slice(flags);
        assert_error(&webr1(&args), "usage", &[name], &format!("chat {flags:?}"));
    }
}

#[test]
fn devices_fifos_and_directories_given_as_a_model_get_io_codes() {
    let dir = std::env::temp_dir().join(format!("webr1-edges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.gguf");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let dir_arg = dir.display().to_string();
    let fifo_arg = fifo.display().to_string();
    let cases = [
        ("/dev/urandom", "io.not_a_file"),
        ("/dev/null", "io.not_a_file"),
        (fifo_arg.as_str(), "io.not_a_file"),
        (dir_arg.as_str(), "io.is_directory"),
    ];
    for (path, code) in cases {
        for command in ["info", "tokenize"] {
            let started = Instant::now();
            let out = webr1(&[command, path]);
            assert_error(&out, code, &[path], &format!("{command} {path}"));
            assert!(started.elapsed() < Duration::from_secs(10), "{command} {path} must not wait on the file");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `webr1 run` on smol135; `None` (after a loud skip) without the model or a GPU.
fn run_smol(args: &[&str]) -> Option<Output> {
    let smol = common::model("smol135")?;
    let mut all = vec!["run", smol.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = webr1(&all);
    if String::from_utf8_lossy(&out.stderr).contains("webgpu.unavailable") && !common::in_ci() {
        eprintln!("SKIP: no GPU adapter");
        return None;
    }
    Some(out)
}

#[test]
fn a_prompt_longer_than_the_context_is_a_context_full_error() {
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let Some(out) = run_smol(&["-p", &prompt, "--ctx", "64", "--temperature", "0"]) else { return };
    assert_error(&out, "context.full", &["64"], "run --ctx 64 with a long prompt");
    assert!(out.stdout.is_empty(), "nothing was generated: {:?}", String::from_utf8_lossy(&out.stdout));
    let Some(out) = run_smol(&["-p", &prompt, "--ctx", "8", "--raw"]) else { return };
    assert_error(&out, "context.full", &["8"], "run --ctx 8 --raw");
}

#[test]
fn a_context_above_the_models_own_is_an_error_naming_both_numbers() {
    // smol135's own context is 8192 tokens (its metadata).
    let Some(out) = run_smol(&["-p", "hi", "--ctx", "100000000"]) else { return };
    assert_error(&out, "usage", &["100000000", "8192"], "run --ctx 100000000");
    let Some(out) = run_smol(&["-p", "hi", "--ctx", "0"]) else { return };
    assert_error(&out, "usage", &["8192"], "run --ctx 0");
}

#[test]
fn ctrl_c_stops_run_with_what_it_has_the_usage_line_and_exit_code_130() {
    let Some(smol) = common::model("smol135") else { return };
    let prompt = "Count from 1 to 1000, separated by commas.";
    let mut child = Command::new(env!("CARGO_BIN_EXE_webr1"))
        .args(["run", smol.to_str().unwrap(), "-p", prompt, "--temperature", "0", "--max-tokens", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("webr1 starts");
    // Wait for the first generated bytes, then press Ctrl-C.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while seen.len() < 8 {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("webgpu.unavailable") && !common::in_ci() {
                eprintln!("SKIP: no GPU adapter");
                return;
            }
            panic!("run ended before it was interrupted: {stderr}");
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let pressed = Instant::now();
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    stdout.read_to_end(&mut seen).unwrap();
    let out = child.wait_with_output().unwrap();
    let stopped_in = pressed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&seen);
    eprintln!("stopped after {stopped_in:.1?}: {text:?}\n{stderr}");
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(text.len() >= 8 && text.ends_with('\n'), "what it had, and a newline: {text:?}");
    assert!(text.len() < 2000, "it stopped early: {} bytes", text.len());
    let usage = stderr.lines().find(|l| l.contains("prompt tokens")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(usage.contains("finish: abort"), "{usage}");
    assert!(stderr.trim_end().ends_with("[aborted]"), "{stderr}");
    assert!(stopped_in < Duration::from_secs(30), "Ctrl-C took {stopped_in:?}");
}
