//! The split of an R1 model's output into its reasoning and its answer, as DeepSeek's API returns them
//! (`reasoning_content` and `content`), while the text streams in.
//!
//! R1 writes its thinking, then `</think>`, then the answer. Some R1 chat templates end the generation prompt with
//! `<think>\n`, so the output starts inside the reasoning ([`prompt_starts_in_reasoning`] says which); others let the
//! model write `<think>` itself, and then an output that begins (after optional whitespace) with `<think>` enters the
//! reasoning, while any other output is all answer. The tags belong to neither stream, and the leading whitespace of
//! both streams is dropped (R1 writes `<think>\n...\n</think>\n\nanswer`).
//!
//! Text arrives in pieces that can cut a tag anywhere (`</thi` + `nk>`): [`ReasoningSplitter`] holds back a tail that
//! could still become a tag and releases it once it cannot. It works on `&str`, so it never splits a character; the
//! tags are ASCII, so a held-back tail always starts on a character boundary.

/// The tag that opens the reasoning.
pub const THINK_OPEN: &str = "<think>";
/// The tag that closes the reasoning.
pub const THINK_CLOSE: &str = "</think>";

/// Whether a rendered prompt leaves the model inside its reasoning: it ends with `<think>` and optional whitespace.
pub fn prompt_starts_in_reasoning(rendered_prompt: &str) -> bool {
    rendered_prompt.trim_end().ends_with(THINK_OPEN)
}

/// A piece of the split output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Thinking (DeepSeek's `reasoning_content`).
    Reasoning(String),
    /// The answer (DeepSeek's `content`).
    Content(String),
}

/// Where the splitter is in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At the start of an output that may open with `<think>`; leading whitespace is held.
    AwaitOpen,
    /// In the reasoning, before its first character that is not whitespace.
    ReasoningStart,
    /// In the reasoning, watching for `</think>`.
    Reasoning,
    /// In the answer, before its first character that is not whitespace.
    ContentStart,
    /// In the answer; everything passes through.
    Content,
}

/// Splits streamed output text into [`Delta`]s (see the module docs).
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    phase: Phase,
    /// Text received but not yet emitted: a possible tag or, before `<think>`, leading whitespace.
    held: String,
}

impl ReasoningSplitter {
    /// `starts_in_reasoning`: the prompt ended with `<think>` (see [`prompt_starts_in_reasoning`]).
    pub fn new(starts_in_reasoning: bool) -> Self {
        let phase = if starts_in_reasoning { Phase::ReasoningStart } else { Phase::AwaitOpen };
        Self { phase, held: String::new() }
    }

    /// A splitter for the output that follows `rendered_prompt`.
    pub fn for_prompt(rendered_prompt: &str) -> Self {
        Self::new(prompt_starts_in_reasoning(rendered_prompt))
    }

    /// Whether the output is (so far) in the reasoning.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.phase, Phase::ReasoningStart | Phase::Reasoning)
    }

    /// Whether the output has reached the answer (after `</think>`, or past the start of an output without one).
    pub fn in_answer(&self) -> bool {
        matches!(self.phase, Phase::ContentStart | Phase::Content)
    }

    /// Feeds the next piece of output; returns what can be emitted now (possibly nothing).
    pub fn push(&mut self, delta: &str) -> Vec<Delta> {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(delta);
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            match self.step(rest, &mut out) {
                Some(consumed) => rest = &rest[consumed..],
                None => {
                    self.held = rest.to_string();
                    break;
                }
            }
        }
        out
    }

    /// Flushes what is held back (the output has ended): a partial tag is plain text after all.
    pub fn finish(&mut self) -> Vec<Delta> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.phase {
            Phase::AwaitOpen | Phase::ContentStart | Phase::Content => emit_content(&mut out, held.trim_start()),
            Phase::ReasoningStart | Phase::Reasoning => emit_reasoning(&mut out, held.trim_start()),
        }
        out
    }

    /// Handles the start of `text` in the current phase: `Some(bytes consumed)` (possibly 0 after a phase change), or
    /// `None` when all of `text` must be held until more arrives.
    fn step(&mut self, text: &str, out: &mut Vec<Delta>) -> Option<usize> {
        match self.phase {
            Phase::AwaitOpen => self.await_open(text),
            Phase::ReasoningStart => Some(self.skip_whitespace(text, Phase::Reasoning)),
            Phase::Reasoning => self.reasoning(text, out),
            Phase::ContentStart => Some(self.skip_whitespace(text, Phase::Content)),
            Phase::Content => {
                emit_content(out, text);
                Some(text.len())
            }
        }
    }

    /// Before anything but whitespace: `<think>` enters the reasoning, anything else makes the whole output the answer.
    fn await_open(&mut self, text: &str) -> Option<usize> {
        let body = text.trim_start();
        let skipped = text.len() - body.len();
        if body.starts_with(THINK_OPEN) {
            self.phase = Phase::ReasoningStart;
            return Some(skipped + THINK_OPEN.len());
        }
        if THINK_OPEN.starts_with(body) {
            return None; // whitespace and a possible start of `<think>` (or nothing yet): wait
        }
        self.phase = Phase::ContentStart;
        Some(0)
    }

    /// Drops leading whitespace; the first other character moves on to `next`.
    fn skip_whitespace(&mut self, text: &str, next: Phase) -> usize {
        let body = text.trim_start();
        if !body.is_empty() {
            self.phase = next;
        }
        text.len() - body.len()
    }

    /// Reasoning text up to `</think>`; a tail that could start the tag is held.
    fn reasoning(&mut self, text: &str, out: &mut Vec<Delta>) -> Option<usize> {
        if let Some(at) = text.find(THINK_CLOSE) {
            emit_reasoning(out, &text[..at]);
            self.phase = Phase::ContentStart;
            return Some(at + THINK_CLOSE.len());
        }
        let keep = partial_tag_len(text, THINK_CLOSE);
        if keep == text.len() {
            return None;
        }
        let emit = text.len() - keep;
        emit_reasoning(out, &text[..emit]);
        Some(emit)
    }
}

/// The length of the longest tail of `text` that is a proper start of `tag` (an ASCII tag, so a character boundary).
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len()).rev().find(|&k| text.ends_with(&tag[..k])).unwrap_or(0)
}

fn emit_reasoning(out: &mut Vec<Delta>, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Delta::Reasoning(s)) => s.push_str(text),
        _ => out.push(Delta::Reasoning(text.to_string())),
    }
}

fn emit_content(out: &mut Vec<Delta>, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Delta::Content(s)) => s.push_str(text),
        _ => out.push(Delta::Content(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and `finish`, then joins the deltas of each kind (checking that no delta is empty and that
    /// consecutive deltas differ in kind).
    fn split(starts_in_reasoning: bool, pieces: &[&str]) -> (String, String) {
        let mut splitter = ReasoningSplitter::new(starts_in_reasoning);
        let mut deltas = Vec::new();
        for piece in pieces {
            deltas.extend(splitter.push(piece));
        }
        deltas.extend(splitter.finish());
        let (mut reasoning, mut content) = (String::new(), String::new());
        for delta in deltas {
            match delta {
                Delta::Reasoning(s) => {
                    assert!(!s.is_empty());
                    reasoning.push_str(&s)
                }
                Delta::Content(s) => {
                    assert!(!s.is_empty());
                    content.push_str(&s)
                }
            }
        }
        (reasoning, content)
    }

    fn pair(reasoning: &str, content: &str) -> (String, String) {
        (reasoning.to_string(), content.to_string())
    }

    #[test]
    fn prompt_style_is_detected() {
        assert!(prompt_starts_in_reasoning("<｜User｜>hi<｜Assistant｜><think>\n"));
        assert!(prompt_starts_in_reasoning("<｜Assistant｜><think>"));
        assert!(!prompt_starts_in_reasoning("<｜User｜>hi<｜Assistant｜>"));
        assert!(!prompt_starts_in_reasoning("<think>\nx"));
    }

    #[test]
    fn template_opens_the_reasoning() {
        let out = split(true, &["\nLet me think.\n", "</think>", "\n\nThe answer is 4."]);
        assert_eq!(out, pair("Let me think.\n", "The answer is 4."));
    }

    #[test]
    fn model_opens_the_reasoning() {
        let out = split(false, &["<think>\nHmm.\n</think>\n\nYes."]);
        assert_eq!(out, pair("Hmm.\n", "Yes."));
        let out = split(false, &["  \n", "<th", "ink>", "\n", "x</think>", " ", "\n", "y z "]);
        assert_eq!(out, pair("x", "y z "));
    }

    #[test]
    fn output_without_tags_is_all_answer() {
        assert_eq!(split(false, &["\n Hello ", "world"]), pair("", "Hello world"));
        assert_eq!(split(false, &["<thinking> is not a tag"]), pair("", "<thinking> is not a tag"));
        assert_eq!(split(false, &["a</think>b"]), pair("", "a</think>b"));
        assert_eq!(split(false, &["<thi"]), pair("", "<thi"));
        assert_eq!(split(false, &[" ", "<", "b>"]), pair("", "<b>"));
        assert_eq!(split(false, &[]), pair("", ""));
    }

    #[test]
    fn unterminated_reasoning_stays_reasoning() {
        assert_eq!(split(true, &["still thinking", " </thi"]), pair("still thinking </thi", ""));
        assert_eq!(split(false, &["<think>", "a<", "/b"]), pair("a</b", ""));
        assert_eq!(split(true, &["\n\n"]), pair("", ""));
    }

    #[test]
    fn empty_reasoning() {
        assert_eq!(split(false, &["<think>\n\n</think>\n\nHi"]), pair("", "Hi"));
        assert_eq!(split(true, &["</think>Hi"]), pair("", "Hi"));
    }

    #[test]
    fn tags_split_at_every_byte() {
        let output = "<think>\nplan é中 <b> </th\n</think>\n\nanswer 😀 </think> <think>";
        let want = pair("plan é中 <b> </th\n", "answer 😀 </think> <think>");
        for cut in 0..=output.len() {
            if output.is_char_boundary(cut) {
                assert_eq!(split(false, &[&output[..cut], &output[cut..]]), want, "cut at {cut}");
            }
        }
        let body = &output["<think>".len()..];
        for cut in 0..=body.len() {
            if body.is_char_boundary(cut) {
                assert_eq!(split(true, &[&body[..cut], &body[cut..]]), want, "cut at {cut}");
            }
        }
    }

    #[test]
    fn one_character_at_a_time() {
        let output = "<think>思考 </th </think>答え</think>";
        let chars: Vec<String> = output.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split(false, &pieces), pair("思考 </th ", "答え</think>"));
    }

    #[test]
    fn deltas_stream_without_waiting_for_the_end() {
        let mut splitter = ReasoningSplitter::new(true);
        assert_eq!(splitter.push("abc </"), vec![Delta::Reasoning("abc ".into())]);
        assert!(splitter.in_reasoning());
        assert_eq!(splitter.push("think>\n"), vec![]);
        assert!(!splitter.in_reasoning());
        assert_eq!(splitter.push("x"), vec![Delta::Content("x".into())]);
        assert_eq!(splitter.finish(), vec![]);
    }
}
