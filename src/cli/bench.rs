//! `webr1 bench MODEL [-p 512] [-n 128] [-r 3]`: prompt processing (`ppN`: N tokens in one prefill) and text
//! generation (`tgN`: N decode steps of one token) speeds, mean ± standard deviation over the repetitions after one
//! warm-up run, in a table shaped like llama-bench's (or `--json`, with llama-bench's field names for the numbers).
//!
//! `--shape NAME` measures a synthetic model instead of a file: the weights `webr1 synth NAME` would write (same
//! quantisation, seed and vocabulary options), made on the fly and streamed to the GPU, so no file is needed and the
//! dispatch lists are those of the file. `--dispatches` prints those lists instead of measuring, `--profile` a profile
//! of the decode steps and the prefill ([`profile`]).

mod profile;

use clap::Args;
use serde_json::json;
use web_time::Instant;
use webr1::engine::Engine;
use webr1::gpu::ops::SamplingParams;
use webr1::quant::GgmlType;
use webr1::synth::{SynthModel, SynthSource};
use webr1::{err, Result};

#[derive(Args)]
pub struct BenchArgs {
    /// A GGUF file, an https:// URL or hf:OWNER/REPO/FILE.gguf (default: DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M).
    model: Option<String>,
    /// Measure random weights at the shape of an R1 distill (r1-qwen-7b, ...; see `webr1 synth`) instead of a file.
    #[arg(long, conflicts_with = "model")]
    shape: Option<String>,
    #[command(flatten)]
    synth: super::synth::SynthModelArgs,
    /// Print the dispatch lists of a decode step and of a prefill of -p tokens (kernel, grid, parameters), one
    /// dispatch a line, instead of measuring.
    #[arg(long)]
    dispatches: bool,
    /// Profile -n decode steps and a prefill of -p tokens instead of timing them: per op kind and weight type, calls,
    /// GPU time (timestamp queries, where the adapter has them), share and GB/s per token; dispatches, bytes read
    /// (weights, KV, activations) and CPU waits per token; the prefill by GEMM, attention and the rest. -r does not
    /// apply. With --json, one object.
    #[arg(long, conflicts_with = "dispatches")]
    profile: bool,
    /// Prompt tokens processed in one prefill (0 skips the test); several sizes separated by commas
    /// (`-p 512,4096`) give a test each.
    #[arg(short = 'p', long = "n-prompt", default_value = "512", value_delimiter = ',')]
    n_prompt: Vec<usize>,
    /// Tokens generated one at a time (0 skips the test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repetitions: u32,
    /// Skip the untimed warm-up run of each test.
    #[arg(long)]
    no_warmup: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Use only f32 shaders (no shader-f16, no subgroups).
    #[arg(long)]
    f32: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
}

/// One test's result.
struct Row {
    test: String,
    n_prompt: usize,
    n_gen: usize,
    samples: Vec<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let prompts: Vec<usize> = args.n_prompt.iter().copied().filter(|&n| n > 0).collect();
    if prompts.is_empty() && args.n_gen == 0 {
        return Err(err!(Usage, "nothing to measure: -p and -n are both 0"));
    }
    let ctx = prompts.iter().copied().max().unwrap_or(0).max(args.n_gen) + 1;
    let options = super::engine_options(args.f32, Some(ctx), &args.device);
    let (mut engine, describe) = match &args.shape {
        Some(name) => {
            let model = args.synth.model(name)?;
            let mut source = SynthSource::new(model);
            let engine = super::load_source(&mut source, options)?;
            let describe = Description::of_synth(source.model(), &engine);
            (engine, describe)
        }
        None => {
            let path = super::model::resolve(args.model.as_deref())?;
            let engine = super::load_engine(&path, options)?;
            let describe = Description::of(&path, &engine)?;
            (engine, describe)
        }
    };
    if engine.context_length() < ctx {
        return Err(err!(Usage, "the model's context of {} tokens is shorter than the test", engine.context_length()));
    }
    if args.dispatches {
        return print_dispatches(&mut engine, prompts.first().copied().unwrap_or(0));
    }
    if args.profile {
        return profile::run(&mut engine, &describe, args, &prompts);
    }
    let mut rows = Vec::new();
    for &n in &prompts {
        let samples = measure(args, || prompt_speed(&mut engine, n))?;
        rows.push(Row { test: format!("pp{n}"), n_prompt: n, n_gen: 0, samples });
    }
    if args.n_gen > 0 {
        let samples = measure(args, || generation_speed(&mut engine, args.n_gen))?;
        rows.push(Row { test: format!("tg{}", args.n_gen), n_prompt: 0, n_gen: args.n_gen, samples });
    }
    if args.json {
        print_json(&describe, args, &rows);
    } else {
        print_table(&describe, &rows);
    }
    Ok(())
}

/// A warm-up run unless switched off, then the timed repetitions (tokens per second each).
fn measure(args: &BenchArgs, mut once: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    if !args.no_warmup {
        once()?;
    }
    (0..args.repetitions).map(|_| once()).collect()
}

/// Deterministic token ids spread over the vocabulary (llama-bench feeds random tokens too).
fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n_vocab as u64) as u32
        })
        .collect()
}

fn greedy(step: u32) -> SamplingParams {
    SamplingParams::new(0.0, 1, 1.0, 0.0, 0, step)
}

/// Prefill of `n` tokens on an empty cache.
fn prompt_speed(engine: &mut Engine, n: usize) -> Result<f64> {
    let ids = tokens(n, engine.tokenizer().n_vocab());
    let session = engine.session();
    session.rewind(0);
    session.set_sampling(&greedy(0))?;
    let start = Instant::now();
    session.feed(&ids)?;
    pollster::block_on(session.sampled())?;
    Ok(n as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// `n` decode steps of one token each, from an empty cache, as generation runs them (each step is submitted before
/// the previous step's token is read: [`webr1::engine::Session::decode_greedy`]).
fn generation_speed(engine: &mut Engine, n: usize) -> Result<f64> {
    let first = tokens(1, engine.tokenizer().n_vocab())[0];
    let session = engine.session();
    session.rewind(0);
    let start = Instant::now();
    pollster::block_on(session.decode_greedy(first, n))?;
    Ok(n as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// What was measured on what.
struct Description {
    model: String,
    size: u64,
    params: u64,
    backend: String,
    adapter: String,
    shaders: &'static str,
}

impl Description {
    fn of(path: &std::path::Path, engine: &Engine) -> Result<Description> {
        let gguf = super::open_model(path)?;
        let arch = gguf.metadata().get_str("general.architecture")?.unwrap_or("?");
        Ok(Self::new(arch, gguf.tensors().map(|(_, t)| (t.ty, t.n_bytes, t.n_elements())), engine))
    }

    fn of_synth(model: &SynthModel, engine: &Engine) -> Description {
        let tensors = model.tensors.iter().zip(&model.sizes);
        let tensors = tensors.map(|(t, &bytes)| (t.ty, bytes, t.dims.iter().product()));
        Self::new(model.shape.arch.name(), tensors, engine)
    }

    /// From the architecture and each tensor's (type, bytes, elements).
    fn new(arch: &str, tensors: impl Iterator<Item = (GgmlType, u64, u64)>, engine: &Engine) -> Description {
        let mut by_type = std::collections::BTreeMap::new();
        let (mut size, mut params) = (0u64, 0u64);
        for (ty, bytes, elements) in tensors {
            *by_type.entry(ty).or_insert(0u64) += bytes;
            size += bytes;
            params += elements;
        }
        let main_type = by_type.iter().max_by_key(|(_, &b)| b).map_or("?", |(ty, _)| ty.name());
        let adapter = engine.gpu().adapter();
        let features = engine.gpu().features();
        Description {
            model: format!("{arch} {} {main_type}", short_count(params)),
            size,
            params,
            backend: format!("{:?}", adapter.backend),
            adapter: adapter.name.clone(),
            shaders: if features.shader_f16 { "f16" } else { "f32" },
        }
    }
}

/// `--dispatches`: the decode step's list, then the prefill's (batch `n_prompt`, at most one prefill chunk).
fn print_dispatches(engine: &mut Engine, n_prompt: usize) -> Result<()> {
    let session = engine.session();
    for (what, batch) in [("decode", 1), ("prefill", n_prompt.clamp(1, session.prefill_batch()))] {
        let list = session.dispatch_list(batch)?;
        println!("# {what}: batch {batch}, {} dispatches", list.len());
        for line in list {
            println!("{line}");
        }
    }
    Ok(())
}

fn short_count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{}M", (n as f64 / 1e6).round())
    }
}

/// Mean and sample standard deviation.
fn mean_sd(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n.max(1.0);
    let var = if samples.len() > 1 { samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

fn print_table(d: &Description, rows: &[Row]) {
    println!(
        "| {:<24} | {:>10} | {:>8} | {:<8} | {:<32} | {:<7} | {:>8} | {:>18} |",
        "model", "size", "params", "backend", "adapter", "shaders", "test", "t/s"
    );
    println!(
        "| {:-<24} | {:->9}: | {:->7}: | {:-<8} | {:-<32} | {:-<7} | {:->7}: | {:->17}: |",
        "", "", "", "", "", "", "", ""
    );
    for row in rows {
        let (mean, sd) = mean_sd(&row.samples);
        println!(
            "| {:<24} | {:>10} | {:>8} | {:<8} | {:<32} | {:<7} | {:>8} | {:>18} |",
            d.model,
            super::info::human_bytes(d.size),
            short_count(d.params),
            d.backend,
            d.adapter.chars().take(32).collect::<String>(),
            d.shaders,
            row.test,
            format!("{mean:.2} ± {sd:.2}")
        );
    }
}

fn print_json(d: &Description, args: &BenchArgs, rows: &[Row]) {
    let list: Vec<_> = rows
        .iter()
        .map(|row| {
            let (mean, sd) = mean_sd(&row.samples);
            json!({
                "model_type": d.model,
                "model_size": d.size,
                "model_n_params": d.params,
                "backends": d.backend,
                "gpu_info": d.adapter,
                "shaders": d.shaders,
                "test": row.test,
                "n_prompt": row.n_prompt,
                "n_gen": row.n_gen,
                "repetitions": args.repetitions,
                "avg_ts": mean,
                "stddev_ts": sd,
                "samples_ts": row.samples,
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(list));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_deviation() {
        let (m, s) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - 2.138_089_935).abs() < 1e-6, "{s}");
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
    }

    #[test]
    fn bench_tokens_stay_in_the_vocabulary() {
        let t = tokens(1000, 49152);
        assert!(t.iter().all(|&id| id < 49152));
        assert!(t.iter().collect::<std::collections::HashSet<_>>().len() > 900, "spread out");
    }
}
