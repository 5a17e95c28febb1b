//! Perplexity against llama.cpp's `llama-perplexity` on `ppl.txt` (ctx 512), as the fixtures README gives it.
//!
//! CI scores smol135's first 2 windows: the running estimate after each must be within 1 % of llama.cpp's.
//! `WEBR1_SLOW=1` scores 8 windows of all three models: within 0.2 % of llama.cpp on the F32-dequantised weights (what
//! an implementation with f32 activations should reproduce) and within 1 % of llama.cpp as users run it.

mod common;

use std::time::Instant;
use webr1::engine::{perplexity, EngineOptions, PerplexityOptions};
use webr1::gpu::GpuOptions;

/// llama.cpp's figures from the fixtures README: running estimates after each chunk, and the final PPL on the same
/// weights dequantised to F32.
struct Reference {
    running: [f64; 8],
    f32_ppl: f64,
}

fn reference(model: &str) -> Reference {
    match model {
        "smol135" => Reference {
            running: [16.3211, 17.7185, 16.3002, 18.2554, 18.2631, 18.0903, 18.0917, 18.3800],
            f32_ppl: 18.3411,
        },
        "qwen05" => {
            Reference { running: [4.8351, 4.6871, 5.7909, 6.1921, 6.1481, 5.8201, 5.9451, 5.9020], f32_ppl: 5.9001 }
        }
        "qwen15" => {
            Reference { running: [1.5760, 1.5656, 1.6827, 1.7682, 1.7675, 1.7616, 1.8074, 1.8063], f32_ppl: 1.7951 }
        }
        other => panic!("no reference for {other}"),
    }
}

fn run(model: &str, chunks: usize) {
    let text_path = common::fixture("ppl.txt");
    let text = std::fs::read_to_string(&text_path).unwrap_or_else(|e| panic!("{}: {e}", text_path.display()));
    let want = reference(model);
    pollster::block_on(async {
        let options = EngineOptions {
            gpu: GpuOptions { force_f32: true, ..GpuOptions::default() },
            context_length: Some(512),
            ..EngineOptions::default()
        };
        let Some(mut engine) = common::engine(model, options).await else { return };
        let start = Instant::now();
        let options = PerplexityOptions { ctx: 512, chunks: Some(chunks) };
        let result = perplexity(&mut engine, &text, options, |chunk, ppl| {
            eprintln!("  {model} [{chunk}]{ppl:.4} ({:.0} s)", start.elapsed().as_secs_f64());
        })
        .await
        .unwrap();
        eprintln!(
            "{model}: {} tokens, {} windows of {}, {} scored: PPL = {:.4} +/- {:.5} ({:.0} s)",
            result.n_tokens,
            result.running.len(),
            result.ctx,
            result.scored,
            result.ppl,
            result.error,
            start.elapsed().as_secs_f64()
        );
        assert_eq!(result.running.len(), chunks);
        assert_eq!(result.scored, chunks * 255, "llama.cpp scores 255 tokens per window of 512");
        for (i, (&ours, &theirs)) in result.running.iter().zip(&want.running).enumerate() {
            let rel = (ours / theirs - 1.0).abs();
            assert!(
                rel <= 0.01,
                "{model} after window {}: {ours:.4} but llama.cpp {theirs:.4} ({:.2} %)",
                i + 1,
                rel * 100.0
            );
        }
        if chunks == 8 {
            let rel = (result.ppl / want.f32_ppl - 1.0).abs();
            assert!(
                rel <= 0.002,
                "{model}: PPL {:.4} but llama.cpp on F32 weights {:.4} ({:.3} %)",
                result.ppl,
                want.f32_ppl,
                rel * 100.0
            );
        }
    });
}

#[test]
fn smol135_matches_llama_perplexity() {
    run("smol135", if common::slow() { 8 } else { 2 });
}

#[test]
fn qwen05_matches_llama_perplexity() {
    if !common::slow() {
        eprintln!("SKIP: qwen05 perplexity runs with WEBR1_SLOW=1");
        return;
    }
    run("qwen05", 8);
}

#[test]
fn qwen15_matches_llama_perplexity() {
    run("qwen15", 8);
}

/// `webr1 perplexity` prints llama.cpp's shape: `[1]x,[2]y,` then `Final estimate: PPL = z +/- e`, with z equal to
/// the last running estimate; a text shorter than one window is a one-line error with exit code 1.
#[test]
fn the_cli_prints_llama_perplexitys_output_shape() {
    let Some(model) = common::model("smol135") else { return };
    let model = model.display().to_string();
    let text = common::fixture("ppl.txt").display().to_string();
    let webr1 = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_webr1")).args(args).output().unwrap();
    // Small windows keep this quick on a software GPU.
    let out = webr1(&["perplexity", &model, "-f", &text, "--ctx", "64", "--chunks", "2", "--f32"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two lines on stdout: {stdout:?}");
    let running: Vec<f64> = lines[0]
        .strip_suffix(',')
        .expect("the running line ends with a comma")
        .split(',')
        .enumerate()
        .map(|(i, item)| {
            let value = item.strip_prefix(&format!("[{}]", i + 1)).unwrap_or_else(|| panic!("{item:?} in {stdout:?}"));
            assert_eq!(value.split('.').nth(1).map(str::len), Some(4), "4 decimals: {item}");
            value.parse().unwrap()
        })
        .collect();
    assert_eq!(running.len(), 2);
    let rest = lines[1].strip_prefix("Final estimate: PPL = ").expect("the final line");
    let (ppl, error) = rest.split_once(" +/- ").expect("PPL +/- error");
    assert_eq!(ppl.parse::<f64>().unwrap(), running[1], "the final estimate is the last running one");
    let error: f64 = error.parse().unwrap();
    assert!(running.iter().all(|p| (1.0..1000.0).contains(p)) && error > 0.0, "{stdout}");

    let short = std::env::temp_dir().join(format!("webr1-short-{}.txt", std::process::id()));
    std::fs::write(&short, "Too short to score.\n").unwrap();
    let out = webr1(&["perplexity", &model, "-f", &short.display().to_string(), "--f32"]);
    std::fs::remove_file(&short).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at least one window of 512") && stderr.contains("[usage]"), "{stderr}");
}
