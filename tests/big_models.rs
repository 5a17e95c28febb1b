//! The large R1 shapes natively (README: "Big models"): synthetic `r1-qwen-7b`, `r1-llama-8b` (Llama-3 vocabulary and
//! Llama-3.1 rope scaling with `rope_freqs`) and `r1-qwen-14b` files load and generate greedy tokens, and for 7B and 8B
//! the teacher-forced top-1 equals llama.cpp CPU's on the same file wherever llama.cpp's top-1 margin is at least 0.5.
//!
//! The files are gigabytes, and the reference comes from llama.cpp, so this runs only with `WEBR1_SLOW=1` and
//! `WEBR1_BIG_MODELS=DIR` holding what `scripts/big-models.sh DIR` makes there: `NAME.gguf` (`webr1 synth NAME`),
//! `NAME.ids` (the token ids fed), `NAME.llamacpp.jsonl` (llama.cpp's logits at each position on that file, from
//! `scripts/llamacpp-logits.c`) and `NAME.llamacpp-f16.jsonl` (the same on a copy converted to F16). It skips loudly
//! otherwise; CI does not make these files.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;
use webr1::engine::{teacher_forced, Engine, EngineOptions, Event, Input, Request, Sampling};

/// The top-1 margin from which llama.cpp's choice must be ours (its CPU backend quantizes activations to 8 bits,
/// which moves logits by up to a few tenths).
const MARGIN: f64 = 0.5;
/// Positions with at least that margin each model must have.
const MIN_COMPARED: usize = 8;

fn dir() -> Option<PathBuf> {
    if !common::slow() {
        eprintln!("SKIP: the big-model checks run only with WEBR1_SLOW=1");
        return None;
    }
    match std::env::var_os("WEBR1_BIG_MODELS") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("SKIP: WEBR1_BIG_MODELS is not set (scripts/big-models.sh DIR makes the files it names)");
            None
        }
    }
}

fn file(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    eprintln!("SKIP: {} is missing (scripts/big-models.sh {})", path.display(), dir.display());
    None
}

/// Loads `path` with a context of 256 tokens, reporting the load time and the plan.
fn load(path: &Path) -> Engine {
    let options = EngineOptions { context_length: Some(256), ..EngineOptions::default() };
    let started = Instant::now();
    let engine = pollster::block_on(Engine::load_file(path, options, |_| {})).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let plan = engine.memory_plan();
    eprintln!(
        "{}: loaded in {seconds:.1} s ({:.0} MB/s) on {}\n    {}",
        path.display(),
        plan.weight_bytes() as f64 / 1e6 / seconds,
        engine.gpu().adapter(),
        plan.summary().replace('\n', "\n    ")
    );
    engine
}

/// Greedy tokens after a short prompt, with the decode speed.
fn greedy(engine: &mut Engine, n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = engine.tokenizer().bos.into_iter().collect();
    ids.extend(engine.tokenizer().encode("The quick brown fox").unwrap());
    let mut request = Request::new(Input::Tokens { ids, starts_in_reasoning: false });
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(n);
    let finish = pollster::block_on(async {
        let mut generation = engine.generate(request).unwrap();
        let mut finish = None;
        while let Some(event) = generation.next().await {
            if let Event::Done(f) = event.unwrap() {
                finish = Some(f);
            }
        }
        finish.unwrap()
    });
    eprintln!(
        "    greedy {:?}: prefill {:.2} tok/s, decode {:.2} tok/s",
        finish.token_ids, finish.usage.prefill_tokens_per_second, finish.usage.decode_tokens_per_second
    );
    finish.token_ids
}

/// llama.cpp's logits per position: each position's top entries, highest first.
fn read_reference(path: &Path) -> Vec<Vec<(u32, f64)>> {
    let text = std::fs::read_to_string(path).unwrap();
    let top = |line: &str| -> Vec<(u32, f64)> {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let entries = v["top"].as_array().unwrap().iter();
        entries.map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap())).collect()
    };
    text.lines().map(top).collect()
}

/// Compares our top-1 with a reference's wherever its top-1 margin is at least [`MARGIN`] and `usable(position)`:
/// (positions compared, failures, largest |our top logit - its|).
fn compare(
    got: &[webr1::engine::TopLogits],
    want: &[Vec<(u32, f64)>],
    usable: impl Fn(usize) -> bool,
) -> (usize, Vec<String>, f64) {
    let (mut compared, mut failures, mut largest_gap) = (0, Vec::new(), 0f64);
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        let ((best, best_logit), (_, second)) = (w[0], w[1]);
        largest_gap = largest_gap.max((f64::from(g.top[0].1) - best_logit).abs());
        if best_logit - second < MARGIN || !usable(pos) {
            continue;
        }
        compared += 1;
        if g.top[0].0 != best {
            let margin = best_logit - second;
            failures.push(format!(
                "position {pos}: top-1 {:?}, llama.cpp {best} ({best_logit:.3}, margin {margin:.3})",
                g.top[0]
            ));
        }
    }
    (compared, failures, largest_gap)
}

/// Teacher-forced top-1 against llama.cpp on the same file (`NAME.llamacpp.jsonl`) and, when present, against
/// llama.cpp on a copy converted to F16 (`NAME.llamacpp-f16.jsonl`, `llama-quantize --allow-requantize ... F16`).
/// On the quantised file llama.cpp's CPU backend rounds the activations to 8 bits before each product, which moves
/// logits of ~100 (the synthetic models' scale) by up to ~0.8; where its two runs disagree about the top-1, that
/// rounding decided it, so such positions judge nothing on the quantised run and are judged on the F16 run instead.
fn teacher_forced_matches_llama_cpp(name: &str) {
    let Some(dir) = dir() else { return };
    let (Some(model), Some(ids), Some(reference)) = (
        file(&dir, &format!("{name}.gguf")),
        file(&dir, &format!("{name}.ids")),
        file(&dir, &format!("{name}.llamacpp.jsonl")),
    ) else {
        return;
    };
    let ids: Vec<u32> = std::fs::read_to_string(ids).unwrap().split_whitespace().map(|t| t.parse().unwrap()).collect();
    let quantised = read_reference(&reference);
    assert_eq!(quantised.len(), ids.len(), "one reference line per position");
    let f16 = file(&dir, &format!("{name}.llamacpp-f16.jsonl")).map(|p| read_reference(&p));
    let mut engine = load(&model);
    let started = Instant::now();
    let got = pollster::block_on(teacher_forced(&mut engine, &ids, 5)).unwrap();
    eprintln!("    teacher-forced logits of {} positions in {:.1} s", ids.len(), started.elapsed().as_secs_f64());
    // Ours beside llama.cpp's, for a closer look at any difference.
    let ours: Vec<String> = got.iter().map(|t| serde_json::to_string(t).unwrap()).collect();
    std::fs::write(dir.join(format!("{name}.webr1.jsonl")), ours.join("\n") + "\n").unwrap();

    let settled = |pos: usize| f16.as_ref().is_none_or(|f| f[pos][0].0 == quantised[pos][0].0);
    let (compared, failures, gap) = compare(&got, &quantised, settled);
    let unsettled = (0..ids.len()).filter(|&p| !settled(p)).collect::<Vec<_>>();
    eprintln!(
        "    {name} against llama.cpp on the same file: top-1 equal at {}/{compared} positions with its margin >= \
         {MARGIN} ({} positions in all; left out, where llama.cpp on F16 weights has another top-1: {unsettled:?}); \
         largest |top logit - llama.cpp's| {gap:.3}",
        compared - failures.len(),
        ids.len()
    );
    assert!(failures.is_empty(), "{name}: {}", failures.join("\n"));
    assert!(compared >= MIN_COMPARED, "{name}: only {compared} positions with a margin of {MARGIN}");
    if let Some(f16) = &f16 {
        assert_eq!(f16.len(), ids.len(), "one F16 reference line per position");
        let (compared, failures, gap) = compare(&got, f16, |_| true);
        eprintln!(
            "    {name} against llama.cpp on F16 weights: top-1 equal at {}/{compared} positions with its margin >= \
             {MARGIN}; largest |top logit - llama.cpp's| {gap:.3}",
            compared - failures.len()
        );
        assert!(failures.is_empty(), "{name} (F16 reference): {}", failures.join("\n"));
        assert!(compared >= MIN_COMPARED, "{name}: only {compared} positions with a margin of {MARGIN} (F16)");
    }
    let tokens = greedy(&mut engine, 4);
    assert_eq!(tokens.len(), 4);
}

#[test]
fn r1_qwen_7b_matches_llama_cpp() {
    teacher_forced_matches_llama_cpp("r1-qwen-7b");
}

#[test]
fn r1_llama_8b_matches_llama_cpp() {
    teacher_forced_matches_llama_cpp("r1-llama-8b");
}

#[test]
fn r1_qwen_14b_loads_and_generates() {
    let Some(dir) = dir() else { return };
    let Some(model) = file(&dir, "r1-qwen-14b.gguf") else { return };
    let mut engine = load(&model);
    assert_eq!(greedy(&mut engine, 4).len(), 4);
}
