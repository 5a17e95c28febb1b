//! The engine's behaviour on a real model (smol135 on lavapipe in CI): decode allocates nothing and reads back 4 bytes
//! per token, seeded sampling is reproducible, the thinking budget closes `</think>` and an answer follows, a prompt
//! that extends the cache reuses it and gives the same logits as a fresh run, and streamed text never splits a
//! character.

mod common;

use webr1::chat::Message;
use webr1::engine::{Engine, EngineOptions, Event, Finish, FinishReason, Input, Request, Sampling};
use webr1::gpu::GpuOptions;

fn engine(force_f32: bool) -> Option<Engine> {
    let options = EngineOptions {
        gpu: GpuOptions { force_f32, ..GpuOptions::default() },
        context_length: Some(512),
        ..EngineOptions::default()
    };
    pollster::block_on(common::engine("smol135", options))
}

/// Runs a request to the end: (reasoning text, answer text, every event's text, finish).
fn run(engine: &mut Engine, request: Request) -> (String, String, Vec<String>, Finish) {
    pollster::block_on(async {
        let mut generation = engine.generate(request).expect("generation starts");
        let (mut reasoning, mut content, mut pieces, mut finish) = (String::new(), String::new(), Vec::new(), None);
        while let Some(event) = generation.next().await {
            match event.expect("generation step") {
                Event::Reasoning(t) => {
                    reasoning.push_str(&t);
                    pieces.push(t);
                }
                Event::Content(t) => {
                    content.push_str(&t);
                    pieces.push(t);
                }
                Event::ToolCall(_) => panic!("no tools were given"),
                Event::Done(f) => finish = Some(f),
            }
        }
        (reasoning, content, pieces, finish.expect("a Done event"))
    })
}

fn ask(text: &str) -> Request {
    Request::new(Input::Messages(vec![Message::user(text)]))
}

#[test]
fn decode_allocates_nothing_and_reads_back_four_bytes_per_token() {
    let Some(mut engine) = engine(false) else { return };
    let mut request = ask("Count from one to twenty.");
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(4);
    run(&mut engine, request.clone()); // builds the prefill and decode lists
    let (buffers, read) = (engine.gpu().buffers_created(), engine.gpu().bytes_read_back());
    request.max_tokens = Some(24);
    let (_, _, _, finish) = run(&mut engine, request);
    assert!(finish.usage.completion_tokens >= 8, "{finish:?}");
    assert_eq!(engine.gpu().buffers_created(), buffers, "no GPU buffer may be created while generating");
    // One 4-byte read per sampled token: each generated token, plus the end-of-generation token when that is how it
    // stopped (the prefill's token is the first generated one).
    let reads = finish.usage.completion_tokens + usize::from(finish.reason == FinishReason::Stop);
    assert_eq!(engine.gpu().bytes_read_back() - read, 4 * reads as u64, "4 bytes per token: {finish:?}");
}

/// The token loop never lets the GPU wait for the CPU: every token but the prefill's (read to time the prefill) and
/// the last is read while the next decode step is already submitted, and the tokens are those of feeding one token
/// at a time and waiting for each.
#[test]
fn decode_submits_the_next_step_before_reading_a_token() {
    let Some(mut engine) = engine(false) else { return };
    let n = 12;
    let mut request = ask("Count from one to ten.");
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(n);
    let before = engine.session().loop_stats();
    let finish = run(&mut engine, request).3;
    let stats = engine.session().loop_stats();
    let generated = finish.token_ids.len() as u64;
    assert_eq!(generated, n as u64, "{finish:?}");
    assert_eq!(stats.reads - before.reads, generated, "one read per token");
    assert_eq!(stats.reads_ahead - before.reads_ahead, generated - 2, "all but the first and the last read ahead");

    // The same tokens one at a time, each read before the next is fed.
    let prompt = engine.prompt(&[Message::user("Count from one to ten.")]).unwrap().ids;
    let session = engine.session();
    session.rewind(0);
    session.feed(&prompt).unwrap();
    let mut one_by_one = Vec::new();
    for _ in 0..n {
        let token = pollster::block_on(session.sampled()).unwrap();
        one_by_one.push(token);
        session.feed(&[token]).unwrap();
    }
    assert_eq!(finish.token_ids, one_by_one);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let Some(mut engine) = engine(false) else { return };
    let mut request = ask("Write a short poem about the sea.");
    request.sampling = Sampling { temperature: 1.0, top_k: 40, top_p: 0.95, min_p: 0.0, seed: 7 };
    request.max_tokens = Some(20);
    let a = run(&mut engine, request.clone()).3.token_ids;
    let b = run(&mut engine, request.clone()).3.token_ids;
    request.sampling.seed = 8;
    let c = run(&mut engine, request).3.token_ids;
    assert_eq!(a, b, "the same seed gives the same tokens");
    assert_ne!(a, c, "another seed gives other tokens");
}

#[test]
fn thinking_budget_closes_the_reasoning_and_an_answer_follows() {
    let Some(mut engine) = engine(false) else { return };
    let prompt = engine.prompt(&[Message::user("What is 17 times 3?")]).unwrap();
    // As R1 templates that end with `<think>\n` do: the model's output starts inside the reasoning.
    let mut ids = prompt.ids.clone();
    ids.extend(engine.tokenizer().encode("<think>\n").unwrap());
    let mut request = Request::new(Input::Tokens { ids, starts_in_reasoning: true });
    request.sampling = Sampling::greedy();
    request.thinking_budget = Some(12);
    request.max_tokens = Some(40);
    let (reasoning, content, _, finish) = run(&mut engine, request);
    assert!(!reasoning.trim().is_empty(), "real reasoning text came first");
    assert!(!content.trim().is_empty(), "an answer followed the forced </think>: {finish:?}");
    assert!(!reasoning.contains("</think>") && !content.contains("</think>"), "the tag is not part of either text");
    assert_eq!(finish.usage.reasoning_tokens, 12, "{finish:?}");
    // The closing tokens count towards max_tokens: when they do not fit, generation ends there.
    let mut ids = prompt.ids.clone();
    ids.extend(engine.tokenizer().encode("<think>\n").unwrap());
    let mut request = Request::new(Input::Tokens { ids, starts_in_reasoning: true });
    request.sampling = Sampling::greedy();
    request.thinking_budget = Some(2);
    request.max_tokens = Some(5);
    let (_, _, _, finish) = run(&mut engine, request);
    assert!(finish.usage.completion_tokens <= 5, "max_tokens 5 holds with a forced close: {finish:?}");
    assert_eq!(finish.reason, FinishReason::Length, "{finish:?}");
}

#[test]
fn an_extended_prompt_reuses_the_cache_and_gives_the_same_logits() {
    let Some(mut engine) = engine(true) else { return };
    let first = vec![Message::user("Name three colours.")];
    let mut request = Request::new(Input::Messages(first.clone()));
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(12);
    let (_, answer, _, _) = run(&mut engine, request.clone());
    let mut second = first;
    second.push(Message::assistant(answer));
    second.push(Message::user("And three animals?"));
    let prompt = engine.prompt(&second).unwrap();
    request.input = Input::Messages(second);
    request.max_tokens = Some(1);
    let (_, _, _, finish) = run(&mut engine, request);
    let cached = finish.usage.cached_tokens;
    assert!(cached > 10, "the second turn reused the first's prefix: {:?}", finish.usage);
    eprintln!("turn 2: {} prompt tokens, {cached} cached, {} computed", prompt.ids.len(), prompt.ids.len() - cached);
    pollster::block_on(async {
        let session = engine.session();
        // The logits after the reused prefill (the generated token was never fed) ...
        session.rewind(prompt.ids.len());
        let reused = session.logits().await.unwrap();
        // ... equal those of the whole prompt computed afresh.
        session.rewind(0);
        session.feed(&prompt.ids).unwrap();
        let fresh = session.logits().await.unwrap();
        let worst = reused.iter().zip(&fresh).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "reused and fresh logits differ by up to {worst}");
    });
}

#[test]
fn streamed_text_never_splits_a_character() {
    let Some(mut engine) = engine(false) else { return };
    let text = "🤔🌍🚀 日本語 🤔🌍🚀 日本語 🤔🌍🚀 日本語 🤔🌍🚀";
    let ids = engine.tokenizer().encode(text).unwrap();
    let mut request = Request::new(Input::Tokens { ids, starts_in_reasoning: false });
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(16);
    let (_, content, pieces, finish) = run(&mut engine, request);
    assert!(!content.contains('\u{fffd}'), "{content:?}");
    assert!(content.chars().any(|c| c.len_utf8() > 2), "the model continued with CJK or emoji: {content:?}");
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')));
    assert!(matches!(finish.reason, FinishReason::Length | FinishReason::Stop));
}

/// Greedy token ids and the first step's logits of `prompt` on a smol135 engine loaded with `options`.
fn greedy_run(options: EngineOptions, prompt: &str, n: usize) -> Option<(Engine, Vec<u32>, Vec<f32>)> {
    let mut engine = pollster::block_on(common::engine("smol135", options))?;
    let ids = engine.prompt(&[Message::user(prompt)]).unwrap().ids;
    let session = engine.session();
    session.feed(&ids).unwrap();
    let logits = pollster::block_on(session.logits()).unwrap();
    let mut request = ask(prompt);
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(n);
    let tokens = run(&mut engine, request).3.token_ids;
    Some((engine, tokens, logits))
}

#[test]
fn weights_split_across_8_mib_bindings_give_the_same_tokens() {
    let prompt = "List three prime numbers.";
    let plain = EngineOptions { context_length: Some(256), ..EngineOptions::default() };
    let Some((mut whole, want, want_logits)) = greedy_run(plain.clone(), prompt, 12) else { return };
    let mut capped = plain;
    capped.gpu.max_binding_bytes = Some(8 << 20);
    let (mut split, got, got_logits) = greedy_run(capped, prompt, 12).unwrap();
    // The Q8_0 embedding (also the LM head: smol135 ties them) is 31 MB: 4 parts under the cap, 1 without it.
    let parts = |e: &mut Engine| e.session().weights.token_embd.parts().len();
    assert_eq!(parts(&mut whole), 1);
    let n_parts = parts(&mut split);
    assert!(n_parts >= 4, "the embedding was not split: {n_parts} parts");
    assert_eq!(got, want, "split weights changed the greedy tokens");
    let max_diff = got_logits.iter().zip(&want_logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(max_diff < 1e-3, "logits differ by {max_diff} with split weights");
    eprintln!("split into {n_parts} parts: {} tokens equal, max |Δlogit| {max_diff:e}", got.len());
}

#[test]
fn a_full_context_ends_with_length_and_says_so() {
    let options = EngineOptions { context_length: Some(56), ..EngineOptions::default() };
    let Some(mut engine) = pollster::block_on(common::engine("smol135", options)) else { return };
    let mut request = ask("Tell me a long story about a lighthouse keeper.");
    request.sampling = Sampling::greedy();
    let prompt_tokens =
        engine.prompt(&[Message::user("Tell me a long story about a lighthouse keeper.")]).unwrap().ids.len();
    assert!(prompt_tokens < 48, "the prompt leaves room to generate: {prompt_tokens} tokens");
    let (_, content, _, finish) = run(&mut engine, request);
    assert_eq!(finish.reason, FinishReason::Length, "{finish:?}");
    assert!(finish.note.as_deref().is_some_and(|n| n.contains("context of 56")), "{finish:?}");
    // Every cache row is used, and the token sampled from the last row is output too (it needs no row of its own).
    assert_eq!(prompt_tokens + finish.usage.completion_tokens, 57, "generation used the whole context: {content:?}");
    // A prompt that leaves no room in the context is a context.full error, before any work, naming both numbers.
    let long = ask(&"many words ".repeat(40));
    let e = engine.generate(long).err().expect("a prompt longer than the context is refused");
    assert_eq!(e.code, webr1::ErrorCode::ContextFull, "{e}");
    assert!(e.message.contains("the context holds 56"), "{e}");
    // The engine is unharmed: the first request gives the same answer again.
    let mut request = ask("Tell me a long story about a lighthouse keeper.");
    request.sampling = Sampling::greedy();
    assert_eq!(run(&mut engine, request).1, content);
}
