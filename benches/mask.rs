//! The CPU cost of constrained decoding at R1's 152K vocabulary (README.md, "Structured output"): for each schema of
//! `tests/fixtures/schemas.json`, a walk of up to 64 steps through its grammar (each step: llguidance's mask, copied
//! into the mask words, and uploaded to a GPU buffer as the engine does; then a pseudo-random allowed token), and the
//! p50 / p95 / p99 / max of the per-step time over all steps. R1's tokenizer comes from the header fixture
//! (`tests/fixtures/r1-distill-qwen-7b.header.gguf`); no model weights are needed.
//!
//! Wall time per step, on one thread: on a machine shared with other work the numbers include its waits.
//!
//! `cargo bench --bench mask`. Without a GPU adapter the upload is left out (and said so).

use std::sync::Arc;
use std::time::Instant;
use webr1::engine::{Compiler, ConstraintRun, OutputFormat};
use webr1::gpu::{DType, Gpu, GpuOptions, Tensor};

const STEPS: usize = 64;

/// p50, p95, p99 and max of `times` (seconds), in ms.
fn summary(times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1e3;
    format!("p50 {:.3} ms · p95 {:.3} ms · p99 {:.3} ms · max {:.3} ms", at(0.5), at(0.95), at(0.99), at(1.0))
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let gguf =
        webr1::gguf::Gguf::read_file(root.join("tests/fixtures/r1-distill-qwen-7b.header.gguf")).expect("header");
    let tokenizer = Arc::new(webr1::tokenizer::Tokenizer::from_metadata(&gguf.metadata).expect("tokenizer"));
    let n_vocab = tokenizer.n_vocab();
    let started = Instant::now();
    let compiler = Compiler::new(tokenizer.clone()).expect("compiler");
    println!(
        "R1 vocabulary: {n_vocab} tokens; trie and grammar factory built in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).ok();
    let buffer =
        gpu.as_ref().map(|g| Tensor::new(g, "mask", &[webr1::gpu::ops::mask_words(n_vocab)], DType::U32).unwrap());
    match &gpu {
        Some(g) => println!("upload: queue.write_buffer on {}", g.adapter().name),
        None => println!("upload: no GPU adapter, mask computation only"),
    }
    let text = std::fs::read_to_string(root.join("tests/fixtures/schemas.json")).expect("schemas");
    let schemas: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
    let mut all = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for entry in &schemas {
        let compile = Instant::now();
        let matcher = compiler.compile(&OutputFormat::JsonSchema(entry["schema"].clone())).expect("compiles");
        let compile_ms = compile.elapsed().as_secs_f64() * 1e3;
        let mut run = ConstraintRun::new(matcher, &compiler, n_vocab);
        let mut times = Vec::new();
        for _ in 0..STEPS {
            let t = Instant::now();
            let words = run.mask().expect("a mask").to_vec();
            if let (Some(g), Some(b)) = (&gpu, &buffer) {
                g.write_buffer(b.buffer(), 0, bytemuck::cast_slice(&words)).unwrap();
            }
            times.push(t.elapsed().as_secs_f64());
            let allowed: Vec<u32> =
                (0..n_vocab as u32).filter(|&i| words[i as usize / 32] >> (i % 32) & 1 == 1).collect();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let token = allowed[(rng % allowed.len() as u64) as usize];
            if tokenizer.is_eog(token) {
                break;
            }
            run.advance(token).expect("an allowed token advances");
        }
        let worst = times.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<18} compile {compile_ms:>6.1} ms · {:>2} steps · max {:.3} ms",
            entry["name"].as_str().unwrap(),
            times.len(),
            worst * 1e3
        );
        all.extend(times);
    }
    println!("{} steps over {} schemas, mask + upload per step:", all.len(), schemas.len());
    println!("  {}", summary(&mut all));
}
