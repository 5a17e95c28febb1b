//! Shared helpers for the integration tests: where the fixtures and test models are, and the skip-or-fail rule.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};

/// A fixture file copied from llama.cpp's golden outputs into `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The lines of a `.jsonl` fixture, parsed.
pub fn jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// Where Debian's base-files keeps the license texts the cross-checks score (`tests/paths.rs`, `tests/browser.rs`).
pub const LICENSES: &str = "/usr/share/common-licenses";

/// The text at `path`, or `None` after a loud SKIP when it cannot be read, which under `CI=true` fails instead.
pub fn text(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            assert!(!in_ci(), "{}: {e} (Debian's base-files ships it)", path.display());
            eprintln!("SKIP: {}: {e}", path.display());
            None
        }
    }
}

/// The first `n` tokens of `text` as a fresh sequence: BOS first when the vocabulary adds it, as perplexity does.
pub fn leading_tokens(tokenizer: &webr1::tokenizer::Tokenizer, text: &str, n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = tokenizer.bos.filter(|_| tokenizer.add_bos).into_iter().collect();
    ids.extend(tokenizer.encode(text).unwrap());
    ids.truncate(n);
    ids
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn slow() -> bool {
    std::env::var("WEBR1_SLOW").is_ok_and(|v| v == "1")
}

/// The directory of the test models (`$WEBR1_MODELS`, else `~/.cache/webr1-test-models`).
pub fn models_dir() -> PathBuf {
    match std::env::var_os("WEBR1_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/webr1-test-models"),
    }
}

/// The path of test model `name` (`smol135`, `qwen05`, `qwen15`), or `None` when the test should skip. A missing
/// model skips loudly, except under `CI=true`, where it fails. `qwen15` is only used with `WEBR1_SLOW=1`.
pub fn model(name: &str) -> Option<PathBuf> {
    if name == "qwen15" && !slow() {
        eprintln!("SKIP: {name} tests run only with WEBR1_SLOW=1");
        return None;
    }
    let path = models_dir().join(format!("{name}.gguf"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "test model {} is missing (run ../shared/scripts/fetch-test-models.sh {name}, or set WEBR1_MODELS)",
        path.display()
    );
    assert!(!in_ci(), "{why}; under CI=true a missing model is a failure");
    eprintln!("SKIP: {why}");
    None
}

/// The GGUF of a fixture vocabulary: `r1-qwen` is the header-only R1 file in `tests/fixtures/`, the others are test models.
pub fn vocab_gguf(name: &str) -> Option<PathBuf> {
    match name {
        "r1-qwen" => Some(fixture("r1-distill-qwen-7b.header.gguf")),
        other => model(other),
    }
}

/// llama.cpp's tokenizer suite file `ggml-vocab-NAME.gguf[.inp|.out]` in `$WEBR1_VOCAB_TESTS` (default
/// `~/.cache/webr1-vocab-tests`), or `None` after a loud SKIP when it is missing, which under `CI=true` fails instead.
pub fn vocab_suite_file(file: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("WEBR1_VOCAB_TESTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/webr1-vocab-tests"),
    };
    let path = dir.join(file);
    if path.exists() {
        return Some(path);
    }
    assert!(!in_ci(), "{} is missing (../shared/scripts/fetch-vocab-tests.sh)", path.display());
    eprintln!("SKIP: {} is missing (fetch it with ../shared/scripts/fetch-vocab-tests.sh)", path.display());
    None
}

/// Test model `name` loaded with `options`, or `None` when the test should skip: the model is missing (see
/// [`model`]) or there is no GPU adapter, which under `CI=true` fails instead.
pub async fn engine(name: &str, options: webr1::engine::EngineOptions) -> Option<webr1::engine::Engine> {
    let path = model(name)?;
    match webr1::engine::Engine::load_file(&path, options, |_| {}).await {
        Ok(engine) => Some(engine),
        Err(e) if e.code == webr1::ErrorCode::WebgpuUnavailable && !in_ci() => {
            eprintln!("SKIP: no GPU adapter ({e}); install mesa-vulkan-drivers for lavapipe");
            None
        }
        Err(e) => panic!("{name} does not load: {e}"),
    }
}
