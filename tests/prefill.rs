//! One prefill graph for prompts of every length (ARCHITECTURE.md §5): a prompt fed in one go, in chunks of the
//! prefill batch through the graph that reads its token count from the step's inputs, gives the same logits and
//! first token as the same prompt fed one token at a time through the decode graph, the scoring graph gives one NLL per
//! token (the last equal to the one-at-a-time logits'), and no graph is built after a session's first prompt.
//!
//! CI: smol135 with chunks of 64 tokens, prompts of 1, 63, 64, 65 and 66 tokens (one chunk short of, at, and past a
//! chunk and a 64-token tile; a final chunk of one token and one of two). `WEBR1_SLOW=1` adds prompts of 511, 513 and
//! 1500 tokens with the default batch, on smol135 and qwen05.

mod common;

use std::path::Path;
use webr1::engine::{Engine, EngineOptions};
use webr1::gpu::GpuOptions;

/// The largest |Δlogit| allowed between the two ways of computing a position: the bounds the golden tests hold
/// against llama.cpp (tests/golden.rs), here between two of our own paths.
fn bound(model: &str, force_f32: bool) -> f32 {
    match (force_f32, model) {
        (true, _) => 0.05,
        (false, "smol135") => 1.5,
        (false, _) => 0.5,
    }
}

/// The logits after each prompt length in `lengths` (ascending), feeding `tokens` one at a time.
fn one_at_a_time(engine: &mut Engine, tokens: &[u32], lengths: &[usize]) -> Vec<Vec<f32>> {
    pollster::block_on(async {
        let session = engine.session();
        session.rewind(0);
        let mut out = Vec::new();
        for (i, &token) in tokens.iter().enumerate() {
            session.feed(&[token]).unwrap();
            if lengths.contains(&(i + 1)) {
                out.push(session.logits().await.unwrap());
            }
        }
        out
    })
}

fn argmax(logits: &[f32]) -> (usize, f32) {
    let mut sorted: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    (sorted[0].0, sorted[0].1 - sorted.get(1).map_or(f32::MIN, |s| s.1))
}

fn check(model: &str, force_f32: bool, prefill_batch: usize, lengths: &[usize]) {
    let Some(text) = common::text(&Path::new(common::LICENSES).join("GFDL-1.3")) else { return };
    let longest = lengths.iter().copied().max().unwrap_or(1);
    let mut options = EngineOptions {
        gpu: GpuOptions { force_f32, ..GpuOptions::default() },
        context_length: Some(longest.next_power_of_two().max(256)),
        ..EngineOptions::default()
    };
    options.prefill_batch = prefill_batch;
    let Some(mut engine) = pollster::block_on(common::engine(model, options)) else { return };
    // One token more than the longest prompt: the target of its last position when scored.
    let tokens = common::leading_tokens(engine.tokenizer(), &text, longest + 1);
    assert_eq!(tokens.len(), longest + 1, "the text has {} tokens", longest + 1);
    let bound = bound(model, force_f32);
    let mut failures = Vec::new();
    let mut built = None;
    let references = one_at_a_time(&mut engine, &tokens, lengths);
    for (&n, reference) in lengths.iter().zip(&references) {
        let (logits, token) = pollster::block_on(async {
            let session = engine.session();
            session.rewind(0);
            session.feed(&tokens[..n]).unwrap();
            (session.logits().await.unwrap(), session.sampled().await.unwrap())
        });
        // Every graph a prompt needs exists after the first prompt longer than a token.
        let graphs = engine.session().graphs_built();
        match built {
            Some(before) => assert_eq!(graphs, before, "a prompt of {n} tokens built a graph"),
            None if n > 1 => built = Some(graphs),
            None => {}
        }
        assert_eq!(token as usize, argmax(&logits).0, "{n} tokens: the sampled token is the logits' argmax");
        let worst = logits.iter().zip(reference.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let (want, margin) = argmax(reference);
        eprintln!("{model} f32={force_f32} batch {prefill_batch}: {n} tokens, max |Δlogit| {worst:.4}, first token {token} (one at a time: {want}, margin {margin:.3})");
        if worst > bound {
            failures.push(format!("{n} tokens: logits differ by up to {worst} (bound {bound})"));
        }
        if token as usize != want && margin > bound {
            failures.push(format!("{n} tokens: first token {token}, one at a time {want} (margin {margin})"));
        }
    }
    assert!(built.is_some_and(|b| b <= 2), "graphs built before scoring: {built:?} (decode and prefill)");
    for (&n, reference) in lengths.iter().zip(&references) {
        // The scoring graph: one NLL per token, the last one that of the one-at-a-time logits.
        let nll = pollster::block_on(async {
            let session = engine.session();
            session.rewind(0);
            session.score(&tokens[..n], &tokens[1..=n]).await.unwrap()
        });
        assert_eq!(nll.len(), n, "scoring {n} tokens gives {} NLLs", nll.len());
        let max = reference.iter().copied().fold(f32::MIN, f32::max);
        let lse = max + reference.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
        let want_nll = lse - reference[tokens[n] as usize];
        if (nll[n - 1] - want_nll).abs() > bound {
            failures.push(format!("{n} tokens: the last NLL is {} but {want_nll} one at a time", nll[n - 1]));
        }
    }
    let graphs = engine.session().graphs_built();
    assert!(graphs <= 3, "{graphs} graphs built: decode, prefill and scoring at most");
    assert!(failures.is_empty(), "{model}:\n{}", failures.join("\n"));
}

#[test]
fn smol135_prompts_of_any_length_match_one_token_at_a_time() {
    check("smol135", true, 64, &[1, 63, 64, 65, 66]);
    check("smol135", false, 64, &[65]);
}

/// Prompts of 511, 513 and 1500 tokens with the default batch on `model`, with `WEBR1_SLOW=1`.
fn long_prompts(model: &str) {
    if !common::slow() {
        eprintln!("SKIP: {model}'s prompts of 511, 513 and 1500 tokens run with WEBR1_SLOW=1");
        return;
    }
    check(model, false, webr1::engine::DEFAULT_PREFILL_BATCH, &[511, 513, 1500]);
}

#[test]
fn smol135_long_prompts_match_one_token_at_a_time() {
    long_prompts("smol135");
}

#[test]
fn qwen05_long_prompts_match_one_token_at_a_time() {
    long_prompts("qwen05");
}
