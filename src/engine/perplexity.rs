//! Perplexity of a text, computed the way llama.cpp's `llama-perplexity` computes it, so that the numbers compare:
//!
//! 1. drop one trailing `\n` of the text, tokenise it all (BOS first when the vocabulary adds BOS; control-token texts
//!    stay plain text);
//! 2. cut the tokens into consecutive windows of `ctx` tokens and use the first `chunks` whole windows; each is a fresh
//!    sequence at positions `0..ctx` whose first token becomes BOS when the vocabulary adds BOS;
//! 3. in each window score only the second half: the predictions of tokens `ctx/2 + 1 .. ctx` from the logits at
//!    positions `ctx/2 .. ctx - 1` (the first half gives every scored token at least `ctx/2` tokens of context);
//! 4. PPL = exp(mean NLL), reported after each window as a running estimate, with the final estimate's error
//!    `sqrt((mean(nll²) − mean(nll)²) / (n − 1)) · PPL`.
//!
//! The first half of a window goes through the generation graphs; the second half through scoring graphs that compute
//! each token's NLL on the GPU ([`Session::score`]), so 4 bytes per token come back.

use super::{Engine, Session, TopLogits};
use crate::{err, Result};

/// How to cut the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per window (llama.cpp's `-c`, 512 in its published figures).
    pub ctx: usize,
    /// Windows to score at most (llama.cpp's `--chunks`); `None` scores every whole window of the text.
    pub chunks: Option<usize>,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        PerplexityOptions { ctx: 512, chunks: None }
    }
}

/// The result, with the running estimate after each window.
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// Tokens in the whole text.
    pub n_tokens: usize,
    /// The window size used.
    pub ctx: usize,
    /// exp(mean NLL) over the windows scored so far, after each window.
    pub running: Vec<f64>,
    /// The final estimate and its error (llama.cpp's `±`).
    pub ppl: f64,
    pub error: f64,
    /// Tokens scored (`(ctx/2 − 1)` per window).
    pub scored: usize,
}

/// The perplexity of `text` under the engine's model (see the module docs). `progress(window, running_ppl)` is
/// called after each window. The engine's KV cache is reused from position 0, so a cached chat prefix is lost.
pub async fn perplexity(
    engine: &mut Engine,
    text: &str,
    options: PerplexityOptions,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    let ctx = options.ctx;
    if ctx < 4 || ctx % 2 != 0 {
        return Err(err!(Usage, "perplexity needs an even window of at least 4 tokens, not {ctx}"));
    }
    if ctx > engine.context_length() {
        return Err(err!(
            ContextFull,
            "a perplexity window of {ctx} tokens does not fit the engine's context of {} (load it with a larger one)",
            engine.context_length()
        ));
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    let tokenizer = engine.tokenizer();
    let bos = if tokenizer.add_bos { tokenizer.bos } else { None };
    let mut tokens: Vec<u32> = bos.into_iter().collect();
    tokens.extend(tokenizer.encode(text)?);
    let whole = tokens.len() / ctx;
    let n_chunks = options.chunks.map_or(whole, |c| c.min(whole));
    if n_chunks == 0 {
        return Err(err!(
            Usage,
            "the text has {} tokens: perplexity needs at least one window of {ctx} (use a smaller window or a longer \
             text)",
            tokens.len()
        ));
    }

    let first = ctx / 2;
    let (mut sum, mut sum_sq, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    let session = engine.session();
    for chunk in 0..n_chunks {
        let mut window = tokens[chunk * ctx..(chunk + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            window[0] = bos;
        }
        for nll in score_window(session, &window, first).await? {
            let nll = f64::from(nll);
            sum += nll;
            sum_sq += nll * nll;
            count += 1;
        }
        let ppl = (sum / count as f64).exp();
        running.push(ppl);
        progress(chunk + 1, ppl);
    }
    session.rewind(0);
    let mean = sum / count as f64;
    let ppl = mean.exp();
    let variance = (sum_sq / count as f64 - mean * mean).max(0.0);
    let error = if count > 1 { (variance / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    Ok(Perplexity { n_tokens: tokens.len(), ctx, running, ppl, error, scored: count })
}

/// Teacher-forced logits: `tokens` as a fresh sequence from position 0, and for every position its `top_k` highest
/// logits and log-sum-exp ([`TopLogits`]), as the golden fixtures record them. For cross-checks of the GPU paths
/// (f32 against f16 and subgroups, the browser against native) and of an engine against llama.cpp. The engine's KV
/// cache is reused from position 0, so a cached chat prefix is lost.
pub async fn teacher_forced(engine: &mut Engine, tokens: &[u32], top_k: usize) -> Result<Vec<TopLogits>> {
    if tokens.is_empty() || tokens.len() > engine.context_length() {
        return Err(err!(
            Usage,
            "teacher forcing needs 1 to {} tokens (the engine's context), not {}",
            engine.context_length(),
            tokens.len()
        ));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t >= engine.config().n_vocab) {
        return Err(err!(Usage, "token {bad} is outside the vocabulary of {}", engine.config().n_vocab));
    }
    let session = engine.session();
    session.rewind(0);
    let result = session.teacher_forced(tokens, top_k).await;
    session.rewind(0);
    result
}

/// The NLLs of `window[first + 1..]`, each predicted from the tokens before it, in a fresh sequence.
async fn score_window(session: &mut Session, window: &[u32], first: usize) -> Result<Vec<f32>> {
    session.rewind(0);
    session.feed(&window[..first])?;
    let last = window.len() - 1;
    let nlls = session.score(&window[first..last], &window[first + 1..]).await?;
    if let Some((i, bad)) = nlls.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
        return Err(err!(
            GpuValidation,
            "perplexity: the GPU gave an NLL of {bad} for token {} of a window",
            first + 1 + i
        ));
    }
    Ok(nlls)
}
