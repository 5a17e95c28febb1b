//! One generation: prefill (reusing the cached prefix), then one token per step until an end-of-generation token, the
//! token limit, a stop string, a full context or an abort; the text streamed as reasoning and answer deltas (and tool
//! calls). With a response format or tools, [`Structured`] is called before each step (the token mask) and with each
//! token (the grammar); see README.md, "Structured output".

use super::constrain::OutputFormat;
use super::structured::{self, Structured};
use super::Engine;
use crate::chat::{Delta, Message, ReasoningSplitter, ToolCall, ToolCallDelta, Tools, THINK_CLOSE};
use crate::gpu::ops::SamplingParams;
use crate::tokenizer::Detokenizer;
use crate::{err, ErrorCode, Result};
use std::collections::VecDeque;
use web_time::Instant;

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A conversation, rendered with the model's chat template.
    Messages(Vec<Message>),
    /// Token ids as they are (a raw prompt); `starts_in_reasoning` when they end inside `<think>`.
    Tokens { ids: Vec<u32>, starts_in_reasoning: bool },
}

/// How to choose tokens. Temperature 0 is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    /// DeepSeek's recommendation for R1: temperature 0.6, top-p 0.95.
    fn default() -> Self {
        Sampling { temperature: 0.6, top_k: 0, top_p: 0.95, min_p: 0.0, seed: 0 }
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Sampling { temperature: 0.0, top_k: 1, top_p: 1.0, min_p: 0.0, seed: 0 }
    }
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub input: Input,
    pub sampling: Sampling,
    /// Tokens to generate at most, reasoning and answer together (as DeepSeek's API counts them).
    pub max_tokens: Option<usize>,
    /// After this many reasoning tokens the engine writes `</think>` itself and the answer follows.
    pub thinking_budget: Option<usize>,
    /// Strings that end the answer (not included in it).
    pub stop: Vec<String>,
    /// What the answer must match (after the reasoning): README.md, "Structured output".
    pub format: Option<OutputFormat>,
    /// Functions the model may call.
    pub tools: Option<Tools>,
}

impl Request {
    pub fn new(input: Input) -> Self {
        Request {
            input,
            sampling: Sampling::default(),
            max_tokens: None,
            thinking_budget: None,
            stop: Vec::new(),
            format: None,
            tools: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// [`super::AbortHandle::abort`].
    Abort,
    /// The answer is one or more complete tool calls (see [`Finish::tool_calls`]).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts and speeds of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were already cached (not computed again).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub reasoning_tokens: usize,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub usage: Usage,
    /// The generated ids (the end-of-generation token excluded).
    pub token_ids: Vec<u32>,
    /// Why, in words, when the reason is not obvious (e.g. the context filled up).
    pub note: Option<String>,
    /// The tool calls of the answer (the last one cut short when the reason is `Length` or `Abort`).
    pub tool_calls: Vec<ToolCall>,
    /// Seconds each constrained step spent computing its token mask on the CPU (empty without a constraint).
    pub mask_seconds: Vec<f64>,
}

/// What a generation streams.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reasoning(String),
    Content(String),
    /// A piece of a tool call (OpenAI's `delta.tool_calls[i]`).
    ToolCall(ToolCallDelta),
    Done(Finish),
}

/// A running generation: call [`Generation::next`] until it returns `None`.
pub struct Generation<'e> {
    engine: &'e mut Engine,
    request: Request,
    prompt: Option<(Vec<u32>, bool)>,
    events: VecDeque<Event>,
    detok: Detokenizer,
    splitter: ReasoningSplitter,
    usage: Usage,
    token_ids: Vec<u32>,
    /// Content held back because it may be the start of a stop string.
    held: String,
    step: u32,
    /// The token the prefill sampled, read to time the prefill.
    first_token: Option<u32>,
    decode_started: Option<Instant>,
    finished: bool,
    /// The request's response format or tools, when it has them.
    structured: Option<Structured>,
}

impl<'e> Generation<'e> {
    pub(super) fn new(engine: &'e mut Engine, request: Request) -> Result<Generation<'e>> {
        request.validate()?;
        if let Some(lost) = engine.session.gpu.lost() {
            return Err(lost);
        }
        let tool_format = request.tools.as_ref().map(|_| engine.tool_format());
        let (ids, starts_in_reasoning) = match &request.input {
            Input::Messages(messages) => {
                let prompt = match (&request.tools, tool_format) {
                    (Some(tools), Some(format)) => engine.prompt_with_tools(messages, tools, format)?,
                    _ => engine.prompt(messages)?,
                };
                (prompt.ids, prompt.starts_in_reasoning)
            }
            Input::Tokens { ids, starts_in_reasoning } => (ids.clone(), *starts_in_reasoning),
        };
        if ids.is_empty() {
            return Err(err!(Usage, "the prompt is empty"));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= engine.tokenizer.n_vocab()) {
            return Err(err!(Usage, "token id {bad} is outside the vocabulary of {}", engine.tokenizer.n_vocab()));
        }
        super::request::check_prompt_fits(ids.len(), engine.session.cache.ctx())?;
        let structured = structured::for_request(engine, &request, starts_in_reasoning, tool_format)?;
        engine.abort.take();
        Ok(Generation {
            engine,
            request,
            splitter: ReasoningSplitter::new(starts_in_reasoning),
            prompt: Some((ids, starts_in_reasoning)),
            events: VecDeque::new(),
            detok: Detokenizer::new(),
            usage: Usage::default(),
            token_ids: Vec::new(),
            held: String::new(),
            step: 0,
            first_token: None,
            decode_started: None,
            finished: false,
            structured,
        })
    }

    /// The next event; `None` after [`Event::Done`].
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            if let Err(e) = self.advance().await {
                self.finished = true;
                return Some(Err(e));
            }
        }
    }

    /// Runs one step: the prefill on the first call, then one token.
    ///
    /// The step after this token is submitted before this token is read (when the generation may go on after it), so
    /// the GPU computes while the CPU reads, decodes and checks the token: see the token loop in
    /// `src/engine/session.rs`. If the generation ends at this token, that step is discarded.
    async fn advance(&mut self) -> Result<()> {
        if let Some((ids, _)) = self.prompt.take() {
            return self.prefill(ids).await;
        }
        if self.engine.abort.take() {
            return self.finish(FinishReason::Abort, None);
        }
        // A constrained step's mask depends on the token before it, so a request with a response format or tools
        // reads each token before its next step (one wait a step); every other request submits ahead.
        let ahead = match self.may_go_on() && self.structured.is_none() {
            true => match self.engine.session.advance() {
                Ok(()) => true,
                // No room for one more row: the token is read, and the context's end is reported below.
                Err(e) if e.code == ErrorCode::ContextFull => false,
                Err(e) => return Err(e),
            },
            false => false,
        };
        let token = match self.first_token.take() {
            Some(token) => token,
            None => self.engine.session.next_token().await?,
        };
        if self.engine.tokenizer.is_eog(token) {
            return self.finish(FinishReason::Stop, None);
        }
        self.accept(&[token], false)?;
        if self.finished {
            return Ok(());
        }
        if self.max_reached() {
            return self.finish(FinishReason::Length, None);
        }
        let mut next = vec![token];
        if ahead {
            // The step in flight consumed the token: its cache row is kept.
            self.engine.session.keep(token)?;
            next.clear();
        }
        if self.over_thinking_budget() {
            // Close the reasoning ourselves: the model then writes its answer. The closing tokens count towards
            // max_tokens; when they do not fit, the generation ends here. (The token sampled by the step in flight
            // is dropped: the closing tokens come instead.)
            let close = self.engine.tokenizer.encode(&format!("\n{THINK_CLOSE}\n\n"))?;
            if self.request.max_tokens.is_some_and(|max| self.usage.completion_tokens + close.len() >= max) {
                return self.finish(FinishReason::Length, None);
            }
            self.accept(&close, true)?;
            next.extend(close);
        }
        match next.is_empty() {
            true => {
                self.step += 1;
                Ok(())
            }
            false => self.feed(&next),
        }
    }

    /// Whether the generation may continue after the token about to be read: it will not reach `max_tokens`. (An
    /// end-of-generation token or a stop string is known only once the token is read.)
    fn may_go_on(&self) -> bool {
        self.request.max_tokens.is_none_or(|max| self.usage.completion_tokens + 1 < max)
    }

    async fn prefill(&mut self, ids: Vec<u32>) -> Result<()> {
        let session = &mut self.engine.session;
        let reuse = session.cache.reusable_prefix(&ids);
        session.rewind(reuse);
        self.usage.prompt_tokens = ids.len();
        self.usage.cached_tokens = reuse;
        let s = &self.request.sampling;
        let params = SamplingParams::new(s.temperature, s.top_k, s.top_p, s.min_p, s.seed, 0);
        session.set_sampling(&params)?;
        let start = Instant::now();
        if let Some(s) = &mut self.structured {
            s.before_step(session)?;
        }
        session.feed(&ids[reuse..])?;
        // Wait for the prefill to finish before timing it: reading the sampled token does.
        self.first_token = Some(session.next_token().await?);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        self.usage.prefill_tokens_per_second = (ids.len() - reuse) as f64 / secs;
        self.decode_started = Some(Instant::now());
        Ok(())
    }

    /// Feeds generated tokens back, with the sampler's step counter moved on.
    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        let session = &mut self.engine.session;
        if session.cache.len() + tokens.len() > session.cache.ctx() {
            let note = format!("the context of {} tokens is full", session.cache.ctx());
            return self.finish(FinishReason::Length, Some(note));
        }
        self.step += 1;
        let s = &self.request.sampling;
        session.set_sampling(&SamplingParams::new(s.temperature, s.top_k, s.top_p, s.min_p, s.seed, self.step))?;
        if let Some(s) = &mut self.structured {
            s.before_step(session)?;
        }
        session.feed(tokens)
    }

    /// Turns generated tokens into text events. `forced` tokens (the `</think>` the engine writes at the thinking
    /// budget) are part of the output but not of the reasoning.
    fn accept(&mut self, tokens: &[u32], forced: bool) -> Result<()> {
        for &token in tokens {
            self.token_ids.push(token);
            self.usage.completion_tokens += 1;
            if self.splitter.in_reasoning() && !forced {
                self.usage.reasoning_tokens += 1;
            }
            let text = self.detok.push(self.engine.tokenizer.piece(token));
            if let Some(s) = &mut self.structured {
                if let Some(calls) = s.take_token(token, &text, forced, &self.splitter)? {
                    self.events.extend(calls.into_iter().map(Event::ToolCall));
                    continue;
                }
            }
            let mut deltas = self.splitter.push(&text);
            if let Some(s) = &mut self.structured {
                let (rest, calls) = s.after_token(token, forced, deltas, &self.splitter, &self.engine.tokenizer)?;
                self.events.extend(calls.into_iter().map(Event::ToolCall));
                deltas = rest;
            }
            self.emit(deltas)?;
            if self.finished {
                return Ok(());
            }
        }
        Ok(())
    }

    fn emit(&mut self, deltas: Vec<Delta>) -> Result<()> {
        for delta in deltas {
            match delta {
                Delta::Reasoning(text) => self.events.push_back(Event::Reasoning(text)),
                Delta::Content(text) => {
                    self.held.push_str(&text);
                    if self.open_calls_in_text()? {
                        continue;
                    }
                    if let Some(at) = self.request.stop.iter().filter_map(|s| self.held.find(s.as_str())).min() {
                        let before = self.held[..at].to_string();
                        self.held.clear();
                        if !before.is_empty() {
                            self.events.push_back(Event::Content(before));
                        }
                        return self.finish(FinishReason::Stop, None);
                    }
                    let keep = self.stop_prefix_len();
                    let release = self.held.len() - keep;
                    if release > 0 {
                        let out: String = self.held.drain(..release).collect();
                        self.events.push_back(Event::Content(out));
                    }
                }
            }
        }
        Ok(())
    }

    /// Tool calls opened by text in the answer (see [`Structured::content_trigger`]): the content before the opening
    /// is released, the rest goes to the calls. Whether they opened.
    fn open_calls_in_text(&mut self) -> Result<bool> {
        let Some(s) = &mut self.structured else { return Ok(false) };
        if s.calls().is_some() {
            // Calls that started from the answer's first token: everything is theirs (routed by `after_token`).
            return Ok(false);
        }
        let Some(at) = s.text_trigger().and_then(|t| self.held.find(t)) else { return Ok(false) };
        let calls_text = self.held.split_off(at);
        let before = std::mem::take(&mut self.held);
        if !before.is_empty() {
            self.events.push_back(Event::Content(before));
        }
        let calls = s.content_trigger(&calls_text, &self.engine.tokenizer)?;
        self.events.extend(calls.into_iter().map(Event::ToolCall));
        Ok(true)
    }

    /// Bytes at the end of the held content that could begin a stop string (or a tool call's opening text).
    fn stop_prefix_len(&self) -> usize {
        let trigger = self.structured.as_ref().and_then(Structured::text_trigger);
        let mut keep = trigger.map_or(0, |t| crate::chat::tools::partial_suffix(&self.held, t));
        for stop in &self.request.stop {
            for (i, _) in stop.char_indices().skip(1) {
                if self.held.ends_with(&stop[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        keep
    }

    fn max_reached(&self) -> bool {
        self.request.max_tokens.is_some_and(|max| self.usage.completion_tokens >= max)
    }

    fn over_thinking_budget(&self) -> bool {
        self.splitter.in_reasoning() && self.request.thinking_budget.is_some_and(|b| self.usage.reasoning_tokens >= b)
    }

    fn finish(&mut self, reason: FinishReason, note: Option<String>) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        // A step submitted ahead of this end is dropped, and its cache row forgotten.
        self.engine.session.discard();
        let tail = self.detok.finish();
        let mut deltas = self.splitter.push(&tail);
        deltas.extend(self.splitter.finish());
        let (mut tool_calls, mut mask_seconds, mut reason) = (Vec::new(), Vec::new(), reason);
        if let Some(s) = &mut self.structured {
            let (rest, calls) = s.answer_text(deltas);
            self.events.extend(calls.into_iter().map(Event::ToolCall));
            deltas = rest;
            if let Some(calls) = s.calls() {
                tool_calls = calls.calls().to_vec();
                if reason == FinishReason::Stop && calls.complete() {
                    reason = FinishReason::ToolCalls;
                }
            }
            mask_seconds = s.mask_seconds().to_vec();
        }
        for delta in deltas {
            match delta {
                Delta::Reasoning(t) => self.events.push_back(Event::Reasoning(t)),
                Delta::Content(t) => self.held.push_str(&t),
            }
        }
        if !self.held.is_empty() {
            self.events.push_back(Event::Content(std::mem::take(&mut self.held)));
        }
        if let Some(start) = self.decode_started {
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            self.usage.decode_tokens_per_second = self.usage.completion_tokens as f64 / secs;
        }
        let token_ids = std::mem::take(&mut self.token_ids);
        let finish = Finish { reason, usage: self.usage, token_ids, note, tool_calls, mask_seconds };
        self.events.push_back(Event::Done(finish));
        Ok(())
    }
}
