//! The two GPU paths keep each other honest: the f32 path (no `shader-f16`, no subgroups: what Chromium's SwiftShader
//! and many phones and Linux GPUs run) and the default path (f16 KV cache and subgroup reductions where the adapter
//! offers them, as lavapipe does) must score the same texts the same, and both as llama.cpp does.
//!
//! - Perplexity of smol135 over the license texts Debian ships in `/usr/share/common-licenses` (and the fixtures'
//!   `ppl.txt`), 2 windows of 512 tokens each, window by window: the paths within 0.2 % of each other, the f32 path
//!   within 0.1 % and the default path within 0.2 % of llama.cpp's `llama-perplexity` on the same weights
//!   dequantised to F32 (measured: at most 0.03 % apart on every text) (see [`LLAMA_CPP_F32`]). CI scores GFDL-1.3, the text on which the f32 path was once reported
//!   to score a second window ~80× too high; `WEBR1_SLOW=1` scores every text.
//! - Teacher-forced logits over the first tokens of a long text: at every position, each of the f32 path's top-10
//!   logits within 0.1 of the default path's (its f16 keys and values round the attention inputs) and the same top-1
//!   wherever the f32 path's leader is ahead by at least 0.1.

mod common;

use std::path::{Path, PathBuf};
use webr1::engine::{perplexity, teacher_forced, Engine, EngineOptions, PerplexityOptions, TopLogits};
use webr1::gpu::GpuOptions;

const CTX: usize = 512;
const WINDOWS: usize = 2;

/// llama.cpp b11312's `llama-perplexity -f TEXT -c 512 --chunks 2` (CPU build, the fixtures' build) on smol135's
/// weights dequantised to F32 (`llama-quantize --allow-requantize smol135.gguf F32`): its running estimates after
/// windows 1 and 2. That is what an implementation that dequantises in registers and computes in f32 should
/// reproduce; llama.cpp on the quantised weights rounds activations to Q8 and differs by up to ~1.7 % a window (and by
/// the machine's SIMD). Texts of fewer than two windows (BSD) are not listed.
const LLAMA_CPP_F32: &[(&str, [f64; 2])] = &[
    ("Apache-2.0", [14.1599, 13.2145]),
    ("Artistic", [18.6131, 16.3716]),
    ("CC0-1.0", [22.4283, 20.5082]),
    ("GFDL-1.2", [18.1313, 18.4003]),
    ("GFDL-1.3", [18.7183, 19.0672]),
    ("GPL-1", [15.0430, 16.2209]),
    ("GPL-2", [14.9324, 15.7314]),
    ("GPL-3", [16.2628, 17.6855]),
    ("LGPL-2", [14.9809, 16.1044]),
    ("LGPL-2.1", [16.8338, 17.4612]),
    ("LGPL-3", [13.7866, 15.3278]),
    ("MPL-1.1", [10.9786, 14.0884]),
    ("MPL-2.0", [10.4811, 12.4324]),
    // The fixtures README's figures for ppl.txt.
    ("ppl.txt", [16.2628, 17.6855]),
];

/// The texts to score: GFDL-1.3 in CI, every text of [`LLAMA_CPP_F32`] with `WEBR1_SLOW=1`.
fn texts() -> Vec<(&'static str, PathBuf)> {
    let path = |name: &str| match name {
        "ppl.txt" => common::fixture(name),
        _ => Path::new(common::LICENSES).join(name),
    };
    let names: Vec<&'static str> = match common::slow() {
        true => LLAMA_CPP_F32.iter().map(|(name, _)| *name).collect(),
        false => vec!["GFDL-1.3"],
    };
    names.into_iter().map(|name| (name, path(name))).collect()
}

/// smol135 on the forced-f32 path and on the default path, with a context of one window.
async fn engines() -> Option<[(&'static str, Engine); 2]> {
    let options = |force_f32| EngineOptions {
        gpu: GpuOptions { force_f32, ..GpuOptions::default() },
        context_length: Some(CTX),
        ..EngineOptions::default()
    };
    let f32_path = common::engine("smol135", options(true)).await?;
    let default_path = common::engine("smol135", options(false)).await?;
    let features = default_path.gpu().features();
    eprintln!("default path: {features}");
    if !features.shader_f16 && !features.subgroups {
        eprintln!("NOTE: this adapter offers neither shader-f16 nor subgroups: both paths are the f32 path here");
    }
    Some([("f32", f32_path), ("default", default_path)])
}

/// Each window's own perplexity, from the running estimates (every window scores the same number of tokens).
fn per_window(running: &[f64]) -> Vec<f64> {
    (0..running.len())
        .map(|i| match i {
            0 => running[0],
            _ => ((i + 1) as f64 * running[i].ln() - i as f64 * running[i - 1].ln()).exp(),
        })
        .collect()
}

fn relative(a: f64, b: f64) -> f64 {
    (a / b - 1.0).abs()
}

#[test]
fn both_paths_score_every_window_as_llama_cpp_does() {
    pollster::block_on(async {
        let Some(mut engines) = engines().await else { return };
        let mut failures = Vec::new();
        for (name, path) in texts() {
            let Some(text) = common::text(&path) else { continue };
            let reference = LLAMA_CPP_F32.iter().find(|(n, _)| *n == name).map(|(_, r)| per_window(r));
            let mut windows = Vec::new();
            for (which, engine) in &mut engines {
                let options = PerplexityOptions { ctx: CTX, chunks: Some(WINDOWS) };
                let result = perplexity(engine, &text, options, |_, _| {}).await.unwrap();
                assert_eq!(result.running.len(), WINDOWS, "{name}: fewer than {WINDOWS} windows of {CTX} tokens");
                let own = per_window(&result.running);
                eprintln!("{name} {which}: running {:.4?}, per window {own:.4?}", result.running);
                if let Some(reference) = &reference {
                    for (w, (&ours, &theirs)) in own.iter().zip(reference).enumerate() {
                        let bound = if *which == "f32" { 0.001 } else { 0.002 };
                        if relative(ours, theirs) > bound {
                            failures.push(format!(
                                "{name} window {} on the {which} path: {ours:.4} but llama.cpp (F32 weights) {theirs:.4}",
                                w + 1
                            ));
                        }
                    }
                }
                windows.push(own);
            }
            for (w, (&a, &b)) in windows[0].iter().zip(&windows[1]).enumerate() {
                if relative(a, b) > 0.002 {
                    failures.push(format!("{name} window {}: the f32 path {a:.4} but the default path {b:.4}", w + 1));
                }
            }
        }
        assert!(failures.is_empty(), "{} windows disagree:\n{}", failures.len(), failures.join("\n"));
    });
}

/// The f32 path's logits at one position against the default path's: each of its top-10 must be among the default
/// path's top-40 and within `max_delta`, and the top-1 must agree where the f32 path's leader leads by `margin`.
fn compare(at: usize, f32_path: &TopLogits, default_path: &TopLogits, failures: &mut Vec<String>) -> f32 {
    let (max_delta, margin) = (0.1, 0.1);
    let mut worst = 0f32;
    for &(id, logit) in f32_path.top.iter().take(10) {
        match default_path.top.iter().find(|(other, _)| *other == id) {
            Some(&(_, other)) => {
                worst = worst.max((logit - other).abs());
                if (logit - other).abs() > max_delta {
                    failures.push(format!("position {at}: token {id}'s logit {logit:.4} (f32) but {other:.4}"));
                }
            }
            None => failures.push(format!("position {at}: the f32 path's token {id} is not in the other's top 40")),
        }
    }
    let lead = f32_path.top[0].1 - f32_path.top[1].1;
    if f32_path.top[0].0 != default_path.top[0].0 && lead >= margin {
        failures.push(format!(
            "position {at}: top-1 {} on the f32 path (ahead by {lead:.3}) but {} on the default path",
            f32_path.top[0].0, default_path.top[0].0
        ));
    }
    worst
}

#[test]
fn both_paths_give_the_same_teacher_forced_logits() {
    let n = if common::slow() { CTX } else { 256 };
    let Some(text) = common::text(&Path::new(common::LICENSES).join("GFDL-1.3")) else { return };
    pollster::block_on(async {
        let Some(mut engines) = engines().await else { return };
        let tokens = common::leading_tokens(engines[0].1.tokenizer(), &text, n);
        let f32_top = teacher_forced(&mut engines[0].1, &tokens, 10).await.unwrap();
        let default_top = teacher_forced(&mut engines[1].1, &tokens, 40).await.unwrap();
        assert_eq!((f32_top.len(), default_top.len()), (n, n));
        let mut failures = Vec::new();
        let mut worst = 0f32;
        for (at, (a, b)) in f32_top.iter().zip(&default_top).enumerate() {
            worst = worst.max(compare(at, a, b, &mut failures));
            if (a.lse - b.lse).abs() > 0.1 {
                failures.push(format!("position {at}: log-sum-exp {:.4} (f32) but {:.4}", a.lse, b.lse));
            }
        }
        eprintln!("{n} positions: largest top-10 |Δlogit| between the paths {worst:.4}");
        assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
    });
}
