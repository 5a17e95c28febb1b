//! The forward pass against llama.cpp, teacher-forced: each record's `prompt_ids` then its `greedy_ids` are fed through
//! the same replayed dispatch lists that generation uses (prefill for the prompt, one decode step per token), and the
//! logits after each are compared on the reference's top-10 ids (see "What agreement to expect" in the fixtures
//! README). Then free-running greedy generation is compared token by token.
//!
//! CI runs every smol135 record and the first qwen05 record of each reference file (2 records); `WEBR1_SLOW=1` runs
//! every qwen05 and qwen15 record (on lavapipe a qwen05 step takes seconds).

mod common;

use std::time::Instant;
use webr1::engine::{Engine, EngineOptions, Event, Input, Request, Sampling};
use webr1::gpu::GpuOptions;

struct Step {
    top: Vec<(u32, f32)>,
}

struct Record {
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    steps: Vec<Step>,
}

fn records(file: &str) -> Vec<Record> {
    common::jsonl(file)
        .iter()
        .map(|r| Record {
            prompt_ids: r["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            greedy_ids: r["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            steps: r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Step {
                    top: s["top"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// Agreement thresholds for one reference file.
struct Bounds {
    /// Largest |Δlogit| allowed on the reference's top-10 ids.
    max_delta: f32,
    /// Top-1 must agree wherever the reference's top-1 leads top-2 by at least this much.
    margin: f32,
}

#[derive(Default)]
struct Tally {
    steps: usize,
    top1_equal: usize,
    sum_delta: f64,
    n_delta: usize,
    max_delta: f32,
    failures: Vec<String>,
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn compare(tally: &mut Tally, what: &str, logits: &[f32], step: &Step, bounds: &Bounds) {
    tally.steps += 1;
    let ours = argmax(logits);
    let (top1, l1) = step.top[0];
    let margin = l1 - step.top[1].1;
    if ours == top1 {
        tally.top1_equal += 1;
    } else if margin >= bounds.margin {
        tally.failures.push(format!("{what}: top-1 {ours} but llama.cpp {top1} leads by {margin:.3}"));
    }
    for &(id, want) in &step.top {
        let delta = (logits[id as usize] - want).abs();
        tally.sum_delta += f64::from(delta);
        tally.n_delta += 1;
        tally.max_delta = tally.max_delta.max(delta);
        if delta > bounds.max_delta {
            tally.failures.push(format!("{what}: logit of {id} is {} but llama.cpp {want}", logits[id as usize]));
        }
    }
}

async fn teacher_forced(engine: &mut Engine, rec: &Record, which: &str, bounds: &Bounds, tally: &mut Tally) {
    let session = engine.session();
    session.rewind(0);
    session.set_sampling(&webr1::gpu::ops::SamplingParams::new(0.0, 1, 1.0, 0.0, 0, 0)).unwrap();
    session.feed(&rec.prompt_ids).unwrap();
    for (i, step) in rec.steps.iter().enumerate() {
        let logits = session.logits().await.unwrap();
        let sampled = session.sampled().await.unwrap();
        assert_eq!(sampled, argmax(&logits), "{which} step {i}: the GPU's greedy pick is the logits' argmax");
        compare(tally, &format!("{which} step {i}"), &logits, step, bounds);
        if i + 1 < rec.steps.len() {
            session.feed(&[rec.greedy_ids[i]]).unwrap();
        }
    }
}

/// Free-running greedy generation: how many of llama.cpp's greedy tokens are reproduced before the first difference.
async fn free_running(engine: &mut Engine, rec: &Record) -> usize {
    let mut request = Request::new(Input::Tokens { ids: rec.prompt_ids.clone(), starts_in_reasoning: false });
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(rec.greedy_ids.len());
    let mut generation = engine.generate(request).unwrap();
    let mut ids = Vec::new();
    while let Some(event) = generation.next().await {
        if let Event::Done(finish) = event.unwrap() {
            ids = finish.token_ids;
        }
    }
    // The reference includes its end-of-generation token; ours stops before it.
    rec.greedy_ids.iter().zip(ids.iter().chain(std::iter::repeat(&u32::MAX))).take_while(|(a, b)| a == b).count()
}

fn run_model(model: &str, n_records: usize) {
    pollster::block_on(async {
        let options = EngineOptions {
            gpu: GpuOptions { force_f32: true, ..GpuOptions::default() },
            context_length: Some(1024),
            ..EngineOptions::default()
        };
        let start = Instant::now();
        let Some(mut engine) = common::engine(model, options).await else { return };
        eprintln!("{model}: loaded in {:.1} s on {}", start.elapsed().as_secs_f64(), engine.gpu().summary());
        let files = [
            ("greedy-f32", Bounds { max_delta: 0.05, margin: 0.05 }),
            ("greedy", Bounds { max_delta: if model == "smol135" { 1.5 } else { 0.5 }, margin: 0.3 }),
        ];
        for (file, bounds) in files {
            let mut tally = Tally::default();
            let mut matched = Vec::new();
            let start = Instant::now();
            for (i, rec) in records(&format!("{file}.{model}.jsonl")).iter().take(n_records).enumerate() {
                let t = Instant::now();
                teacher_forced(&mut engine, rec, &format!("{file}.{model} record {i}"), &bounds, &mut tally).await;
                matched.push(format!("{}/{}", free_running(&mut engine, rec).await, rec.greedy_ids.len()));
                eprintln!(
                    "  {file}.{model} record {i}: {} prompt tokens, {} steps, {:.1} s",
                    rec.prompt_ids.len(),
                    rec.steps.len(),
                    t.elapsed().as_secs_f64()
                );
            }
            eprintln!(
                "{file}.{model}: {} steps, top-1 equal {}, |Δlogit| mean {:.4} max {:.4}; free-running greedy tokens \
                 matched per prompt: {}; {:.1} s",
                tally.steps,
                tally.top1_equal,
                tally.sum_delta / tally.n_delta.max(1) as f64,
                tally.max_delta,
                matched.join(" "),
                start.elapsed().as_secs_f64()
            );
            assert!(tally.failures.is_empty(), "{file}.{model}:\n{}", tally.failures.join("\n"));
        }
    });
}

#[test]
fn smol135_matches_llama_cpp() {
    run_model("smol135", usize::MAX);
}

/// qwen05 records per reference file that CI runs (all of them with `WEBR1_SLOW=1`).
const QWEN05_CI_RECORDS: usize = 1;

#[test]
fn qwen05_matches_llama_cpp() {
    run_model("qwen05", if common::slow() { usize::MAX } else { QWEN05_CI_RECORDS });
}

#[test]
fn qwen15_matches_llama_cpp() {
    run_model("qwen15", usize::MAX);
}
