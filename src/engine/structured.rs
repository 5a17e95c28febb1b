//! Structured output in a generation (README.md, "Structured output"): when the constraint starts, which tokens it
//! sees, and where tool calls go. [`super::generate`] calls it at four places: [`Structured::before_step`] before a
//! step is submitted (the mask upload, for constrained steps only), [`Structured::take_token`] and
//! [`Structured::after_token`] around each generated token, and [`Structured::content_trigger`] on answer text.
//!
//! Reasoning first: for a reasoning model the constraint starts after `</think>` (the model's, or the one the thinking
//! budget forces), so the thinking is free and streamed as reasoning. When the prompt does not open `<think>` but the
//! vocabulary has it (R1's own template), the first token may be `<think>` or the start of the constrained answer.
//! A response format or a required tool call constrains from the start of the answer; `tool_choice: "auto"` leaves the
//! answer free until the model opens a call (its opening token, or text where the opening is not one token), and from
//! there the grammar holds until the calls are complete.

use super::constrain::{Compiler, ConstraintRun};
use super::Session;
use crate::chat::tools::ToolCallStream;
use crate::chat::{Delta, ReasoningSplitter, ToolCallDelta, ToolFormat};
use crate::tokenizer::Tokenizer;
use crate::Result;
use llguidance::Matcher;

/// What opens the constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the first token of the answer.
    Answer,
    /// When the model opens a tool call.
    Trigger,
}

/// Where the constraint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The model is thinking (or may still open `<think>`): nothing is masked.
    Reasoning,
    /// The first token of a reasoning model's output: `<think>` or the constrained answer.
    FirstToken,
    /// Free answer text, watched for the opening of a tool call.
    Watching,
    /// Every token is masked and advances the grammar.
    Active,
}

/// The constraint of one generation.
pub struct Structured {
    run: ConstraintRun,
    start: Start,
    phase: Phase,
    /// `<think>`, for a reasoning model whose prompt leaves the opening to it.
    think_open: Option<u32>,
    /// Tool calls: their format, the trigger's token id (when the opening text is one token) and, once the calls have
    /// started, their reader.
    tools: Option<ToolFormat>,
    trigger_token: Option<u32>,
    calls: Option<ToolCallStream>,
    id_prefix: String,
}

impl Structured {
    /// The constraint of a generation whose prompt `starts_in_reasoning` (or not), for tool calls in `tools` format
    /// when given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        matcher: Matcher,
        compiler: &Compiler,
        session: &Session,
        tokenizer: &Tokenizer,
        start: Start,
        starts_in_reasoning: bool,
        tools: Option<ToolFormat>,
        id_prefix: String,
    ) -> Structured {
        let think_open = tokenizer
            .token_id(crate::chat::THINK_OPEN)
            .filter(|_| tokenizer.token_id(crate::chat::THINK_CLOSE).is_some());
        let phase = match (starts_in_reasoning, think_open, start) {
            (true, _, _) => Phase::Reasoning,
            (false, _, Start::Trigger) => Phase::Watching,
            (false, Some(_), Start::Answer) => Phase::FirstToken,
            (false, None, Start::Answer) => Phase::Active,
        };
        let trigger_token = tools.and_then(|f| tokenizer.token_id(f.trigger()));
        Structured {
            run: ConstraintRun::new(matcher, compiler, session.config.n_vocab as usize),
            start,
            phase,
            think_open,
            tools,
            trigger_token,
            calls: None,
            id_prefix,
        }
    }

    /// Before a step is submitted: the mask of the token it samples, uploaded when the step is constrained.
    pub fn before_step(&mut self, session: &mut Session) -> Result<()> {
        match self.phase {
            Phase::Active => session.set_mask(self.run.mask()?),
            Phase::FirstToken => {
                if let Some(think) = self.think_open {
                    self.run.allow_once(think);
                }
                session.set_mask(self.run.mask()?)
            }
            Phase::Reasoning | Phase::Watching => Ok(()),
        }
    }

    /// Before a generated token's text is split: `Some(deltas)` when the token belongs to the tool calls (its text
    /// goes to them, not to the answer). `forced` tokens are the engine's own (the thinking budget's `</think>`).
    pub fn take_token(
        &mut self,
        token: u32,
        text: &str,
        forced: bool,
        splitter: &ReasoningSplitter,
    ) -> Result<Option<Vec<ToolCallDelta>>> {
        if self.calls.is_some() && self.start == Start::Trigger {
            if !forced {
                self.run.advance(token)?;
            }
            return Ok(Some(self.push_calls(text)));
        }
        let opens_call = self.phase == Phase::Watching && Some(token) == self.trigger_token && !splitter.in_reasoning();
        if opens_call && !forced {
            self.phase = Phase::Active;
            self.run.advance(token)?;
            self.calls = self.tools.map(|f| ToolCallStream::new(f, self.id_prefix.clone()));
            return Ok(Some(self.push_calls(text)));
        }
        Ok(None)
    }

    /// After a token's text was split into `deltas`: starts the constraint where the answer starts and advances it.
    /// Returns the deltas to emit (a forced tool call's text is taken out of the answer).
    pub fn after_token(
        &mut self,
        token: u32,
        forced: bool,
        deltas: Vec<Delta>,
        splitter: &ReasoningSplitter,
        tokenizer: &Tokenizer,
    ) -> Result<(Vec<Delta>, Vec<ToolCallDelta>)> {
        match self.phase {
            Phase::FirstToken if Some(token) == self.think_open => {
                self.phase = Phase::Reasoning;
                Ok((deltas, Vec::new()))
            }
            Phase::FirstToken => {
                self.phase = Phase::Active;
                self.run.advance(token)?;
                Ok(self.answer_text(deltas))
            }
            Phase::Reasoning if splitter.in_answer() => {
                self.phase = match self.start {
                    Start::Answer => Phase::Active,
                    Start::Trigger => Phase::Watching,
                };
                if self.phase == Phase::Watching {
                    return Ok((deltas, Vec::new()));
                }
                // The text after `</think>` in this token (leading whitespace dropped) is the answer's start.
                self.feed_text(&content_of(&deltas), tokenizer)?;
                Ok(self.answer_text(deltas))
            }
            Phase::Active if forced => {
                self.feed_text(&content_of(&deltas), tokenizer)?;
                Ok(self.answer_text(deltas))
            }
            Phase::Active => {
                self.run.advance(token)?;
                Ok(self.answer_text(deltas))
            }
            Phase::Reasoning | Phase::Watching => Ok((deltas, Vec::new())),
        }
    }

    /// The opening text of a tool call whose opening is not one token: found in the answer text `held` back from the
    /// caller, from byte `at`. The grammar takes the text from there (re-tokenised) and the calls begin.
    pub fn content_trigger(&mut self, text: &str, tokenizer: &Tokenizer) -> Result<Vec<ToolCallDelta>> {
        self.phase = Phase::Active;
        self.feed_text(text, tokenizer)?;
        self.calls = self.tools.map(|f| ToolCallStream::new(f, self.id_prefix.clone()));
        Ok(self.push_calls(text))
    }

    /// The text that opens tool calls, when the answer is watched for it by text (its opening is not one token).
    pub fn text_trigger(&self) -> Option<&'static str> {
        match (self.phase, self.tools, self.trigger_token) {
            (Phase::Watching, Some(format), None) => Some(format.trigger()),
            _ => None,
        }
    }

    /// The tool calls read so far, and whether they are all complete.
    pub fn calls(&self) -> Option<&ToolCallStream> {
        self.calls.as_ref()
    }

    /// Seconds each constrained step spent computing its mask.
    pub fn mask_seconds(&self) -> &[f64] {
        &self.run.mask_seconds
    }

    /// With calls from the start of the answer, the answer's text is the calls': it goes to them (also what the
    /// splitter releases when the output ends).
    pub fn answer_text(&mut self, deltas: Vec<Delta>) -> (Vec<Delta>, Vec<ToolCallDelta>) {
        if self.tools.is_none() || self.start != Start::Answer {
            return (deltas, Vec::new());
        }
        if self.calls.is_none() {
            self.calls = self.tools.map(|f| ToolCallStream::new(f, self.id_prefix.clone()));
        }
        let (calls, other): (Vec<Delta>, Vec<Delta>) = deltas.into_iter().partition(|d| matches!(d, Delta::Content(_)));
        let text = content_of(&calls);
        (other, self.push_calls(&text))
    }

    fn push_calls(&mut self, text: &str) -> Vec<ToolCallDelta> {
        self.calls.as_mut().map(|c| c.push(text)).unwrap_or_default()
    }

    /// Advances the grammar by text that was not sampled under its mask (re-tokenised).
    fn feed_text(&mut self, text: &str, tokenizer: &Tokenizer) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.run.advance_all(&tokenizer.encode(text)?)
    }
}

fn content_of(deltas: &[Delta]) -> String {
    deltas
        .iter()
        .filter_map(|d| match d {
            Delta::Content(t) => Some(t.as_str()),
            Delta::Reasoning(_) => None,
        })
        .collect()
}

/// The constraint of `request`, if it has one: its format compiled, or its tools' grammar (`None` for tools with
/// `tool_choice: "none"`). Response formats and tools together are refused.
pub(super) fn for_request(
    engine: &mut super::Engine,
    request: &super::Request,
    starts_in_reasoning: bool,
    tool_format: Option<ToolFormat>,
) -> Result<Option<Structured>> {
    let tools = request.tools.as_ref().filter(|t| t.active());
    let (matcher, start) = match (&request.format, tools, tool_format) {
        (None, None, _) => return Ok(None),
        (Some(_), Some(_), _) => {
            return Err(crate::err!(
                Usage,
                "a response format and tools cannot be combined in one request; pass one of them"
            ))
        }
        (Some(format), None, _) => (engine.compiler()?.compile(format)?, Start::Answer),
        (None, Some(tools), Some(f)) => {
            let start = if tools.forced() { Start::Answer } else { Start::Trigger };
            (engine.compiler()?.compile_tool_grammar(&f.grammar(tools))?, start)
        }
        (None, Some(_), None) => return Ok(None),
    };
    let compiler = engine.compiler()?;
    let active_tools = tools.and(tool_format);
    let id_prefix = call_id_prefix(request.sampling.seed);
    Ok(Some(Structured::new(
        matcher,
        &compiler,
        &engine.session,
        &engine.tokenizer,
        start,
        starts_in_reasoning,
        active_tools,
        id_prefix,
    )))
}

/// `call_` and 12 hex digits, different for every generation of a process (the seed and a counter mixed).
fn call_id_prefix(seed: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = seed
        ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    format!("call_{:012x}", h & 0xffff_ffff_ffff)
}
