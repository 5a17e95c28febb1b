//! Synthetic weights on the GPU (lavapipe here): the residual stream stays near RMS 1 layer after layer, with no
//! inf/NaN on the f16 path; the logits have clear top-1 margins and the f16 and f32 paths agree on them; and a
//! synthetic model streamed straight to the GPU (`bench --shape`) is the model its file holds: the same dispatch lists
//! and bit-identical logits.

mod common;
#[path = "common/gpu.rs"]
mod gpu_common;

use webr1::config::ModelConfig;
use webr1::engine::{Engine, EngineOptions, Session};
use webr1::gguf::split::SplitGguf;
use webr1::gguf::GgufParser;
use webr1::gpu::ops::SamplingParams;
use webr1::gpu::{Gpu, GpuOptions};
use webr1::model::WeightLoader;
use webr1::synth::{SynthModel, SynthQuant, SynthShape, SynthSource, Vocabulary};

/// R1-Distill-Qwen-1.5B's depth, vocabulary and head size at a third of its width: quick on lavapipe.
fn narrow_shape() -> SynthShape {
    SynthShape {
        name: "narrow",
        n_embd: 512,
        n_head: 4,
        n_head_kv: 1,
        n_ff: 1536,
        ..SynthShape::named("r1-qwen-1.5b").unwrap().clone()
    }
}

fn narrow_model(seed: u64) -> SynthModel {
    SynthModel::new(&narrow_shape(), SynthQuant::Q4_K_M, seed, Vocabulary::r1_qwen().unwrap()).unwrap()
}

/// The model's first `n_layer` layers on `gpu`, loaded chunk by chunk as a file would be.
fn session(gpu: Gpu, model: &SynthModel, n_layer: u32) -> Session {
    let mut parser = GgufParser::new();
    let gguf = parser.push(model.header()).unwrap().expect("the header is complete");
    let split = SplitGguf::new(vec![gguf]).unwrap();
    let tensors: Vec<_> = split.tensors().map(|(_, t)| t.clone()).collect();
    let mut config = ModelConfig::new(split.metadata(), &tensors).unwrap();
    config.n_layer = n_layer;
    let mut loader = WeightLoader::new(&gpu, &config, &split).unwrap();
    for chunk in model.chunks() {
        let mut bytes = vec![0u8; chunk.len as usize];
        model.fill(&chunk, &mut bytes);
        loader.push(&gpu, 0, chunk.offset, &bytes).unwrap();
    }
    gpu.flush_writes().unwrap();
    let weights = loader.finish().unwrap();
    Session::new(gpu, config, weights, 64, 16).unwrap()
}

fn greedy(step: u32) -> SamplingParams {
    SamplingParams::new(0.0, 1, 1.0, 0.0, 0, step)
}

fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
}

/// The gap between the largest logit and the next.
fn margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            (a, b) = (x, a);
        } else if x > b {
            b = x;
        }
    }
    a - b
}

const PROMPT: [u32; 8] = [151646, 9707, 11, 1246, 525, 498, 30, 151645];

#[test]
fn the_residual_stream_stays_near_rms_one_in_every_layer() {
    let model = narrow_model(11);
    for n_layer in [1, 2, 4, 7, 14, 21, 28] {
        let Some(gpu) = gpu_common::gpu() else { return };
        let mut s = session(gpu, &model, n_layer);
        s.set_sampling(&greedy(0)).unwrap();
        s.feed(&PROMPT).unwrap();
        let x = pollster::block_on(s.hidden_state()).unwrap();
        let e = model.shape.n_embd as usize;
        for (t, row) in x.chunks(e).enumerate() {
            let (r, peak) = (rms(row), row.iter().fold(0f32, |m, v| m.max(v.abs())));
            eprintln!("layers {n_layer:2} token {t}: rms {r:.3} max |x| {peak:.2}");
            assert!(row.iter().all(|v| v.is_finite()), "layer {n_layer} token {t}: not finite");
            // The embedding alone has RMS 1; each layer adds about 1.36 / (2 n_layer) to the variance.
            assert!((0.7..2.0).contains(&r), "after {n_layer} layers, token {t}: RMS {r}");
            assert!(peak < 20.0, "after {n_layer} layers, token {t}: max |x| {peak}");
        }
    }
}

/// Greedy decoding from PROMPT: the tokens and each step's logits.
fn decode(gpu: Gpu, model: &SynthModel, steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut s = session(gpu, model, model.shape.n_layer);
    s.set_sampling(&greedy(0)).unwrap();
    s.feed(&PROMPT).unwrap();
    let (mut tokens, mut logits) = (Vec::new(), Vec::new());
    for step in 0..steps {
        logits.push(pollster::block_on(s.logits()).unwrap());
        let token = pollster::block_on(s.sampled()).unwrap();
        tokens.push(token);
        s.set_sampling(&greedy(step as u32 + 1)).unwrap();
        s.feed(&[token]).unwrap();
    }
    (tokens, logits)
}

#[test]
fn logits_have_clear_top_one_margins_on_the_f16_and_f32_paths() {
    let model = narrow_model(5);
    let (Some(f16), Some(f32)) = (gpu_common::gpu(), gpu_common::gpu_f32()) else { return };
    let (tokens16, logits16) = decode(f16, &model, 12);
    let (tokens32, logits32) = decode(f32, &model, 12);
    let mut margins: Vec<f32> = logits32.iter().map(|l| margin(l)).collect();
    for (step, (l16, l32)) in logits16.iter().zip(&logits32).enumerate() {
        assert!(l16.iter().chain(l32).all(|v| v.is_finite()), "step {step}: logits not finite");
        let sd = rms(l32);
        let diff = l16.iter().zip(l32).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!(
            "step {step}: token {} / {}, margin {:.3}, logit rms {sd:.2}, max |f16 - f32| {diff:.3}",
            tokens16[step], tokens32[step], margins[step]
        );
        assert!((4.0..40.0).contains(&sd), "step {step}: logit RMS {sd}");
        if margins[step] > 2.0 * diff {
            assert_eq!(tokens16[step], tokens32[step], "step {step}: f16 and f32 pick different tokens");
        }
    }
    margins.sort_by(f32::total_cmp);
    // With Gaussian logits of RMS 12 over 152k tokens the median gap would be about 1.5; the LM head's loud rows
    // widen it several times.
    let median = margins[margins.len() / 2];
    assert!(median >= 3.0, "median top-1 margin {median}: {margins:?}");
}

#[test]
fn a_streamed_synthetic_model_is_the_model_its_file_holds() {
    let Some(_) = gpu_common::gpu() else { return };
    let model = narrow_model(3);
    let path = std::env::temp_dir().join(format!("webr1-synth-gpu-{}.gguf", std::process::id()));
    webr1::synth::write_file(&model, &path, false, 2, &|_, _| {}).unwrap();
    let options = EngineOptions { gpu: GpuOptions::default(), context_length: Some(64), ..EngineOptions::default() };
    let from_file = pollster::block_on(Engine::load_file(&path, options.clone(), |_| {}));
    std::fs::remove_file(&path).unwrap();
    let mut from_file = from_file.unwrap();
    let mut streamed = pollster::block_on(Engine::load(&mut SynthSource::new(model), options, |_| {})).unwrap();
    for batch in [1, 8, 16] {
        let (a, b) =
            (from_file.session().dispatch_list(batch).unwrap(), streamed.session().dispatch_list(batch).unwrap());
        // At least 9 dispatches for each of the 28 layers (the decode step's count, src/model/forward.rs).
        assert!(a.len() >= 28 * 9, "batch {batch}: {} dispatches", a.len());
        assert_eq!(a, b, "batch {batch}: the dispatch lists differ");
    }
    let mut logits = Vec::new();
    for engine in [&mut from_file, &mut streamed] {
        let s = engine.session();
        s.set_sampling(&greedy(0)).unwrap();
        s.feed(&PROMPT).unwrap();
        logits.push(pollster::block_on(s.logits()).unwrap());
    }
    assert!(logits[0] == logits[1], "the file and the stream give different logits");
}

#[test]
fn the_full_r1_qwen_1_5b_shape_is_well_scaled() {
    if !common::slow() {
        eprintln!("SKIP: the full r1-qwen-1.5b shape (1.1 GB of weights) runs with WEBR1_SLOW=1");
        return;
    }
    let Some(_) = gpu_common::gpu() else { return };
    let shape = SynthShape::named("r1-qwen-1.5b").unwrap();
    let model = SynthModel::new(shape, SynthQuant::Q4_K_M, 0, Vocabulary::r1_qwen().unwrap()).unwrap();
    let options = EngineOptions { context_length: Some(64), ..EngineOptions::default() };
    let mut engine = pollster::block_on(Engine::load(&mut SynthSource::new(model), options, |_| {})).unwrap();
    let s = engine.session();
    s.set_sampling(&greedy(0)).unwrap();
    s.feed(&PROMPT).unwrap();
    let x = pollster::block_on(s.hidden_state()).unwrap();
    for (t, row) in x.chunks(shape.n_embd as usize).enumerate() {
        let r = rms(row);
        eprintln!("token {t}: rms {r:.3}");
        assert!(row.iter().all(|v| v.is_finite()) && (0.7..2.0).contains(&r), "token {t}: RMS {r}");
    }
    let logits = pollster::block_on(s.logits()).unwrap();
    let (sd, m) = (rms(&logits), margin(&logits));
    eprintln!("logit rms {sd:.2}, top-1 margin {m:.3}");
    assert!(logits.iter().all(|v| v.is_finite()) && (4.0..40.0).contains(&sd), "logit RMS {sd}");
}
