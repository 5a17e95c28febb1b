//! Safe rendering: the rendered prompt cut into the control tokens the template wrote and the text around them, so that
//! text typed by a user never becomes a control token (ARCHITECTURE.md §8).
//!
//! A rendered prompt is one string in which a turn marker written by the template (`<｜Assistant｜>`) and the same
//! characters typed by a user look alike. [`ChatTemplate::render_segments`] tells them apart by marking the user's copy
//! before the template sees it:
//!
//! 1. **Defuse.** In every message's `role` and `content`, the two marker characters U+F0000 and U+F0001 (private
//!    use) are first doubled wherever the user's text already holds them; then the marker U+F0000 is inserted after
//!    the first character of every occurrence of every control token (overlapping occurrences included), so no
//!    control token is left intact. The edges are defused too, so that user text cannot complete a token together
//!    with the text around it: a string that ends with the start of a control token (`…<|im_`) gets U+F0000 after that
//!    start's first character (or U+F0001 at its very end, for a single character), and one that begins with the end
//!    of a control token (`end|>…`) gets U+F0000 after that end's first character (or before it).
//! 2. **Render** the defused messages. Template string operations keep working (`content.split('</think>')` finds the
//!    same pieces) as long as what they look for is not a control token.
//! 3. **Split** the output at every control-token text, leftmost and longest first. Only the tokens the template
//!    wrote are still intact, so they become [`Segment::Control`]; everything else is [`Segment::Text`].
//! 4. **Restore** the text segments: a run of `n` equal markers becomes `n / 2` of them. User markers were doubled,
//!    and an inserted one never touches another inserted one of the same kind (U+F0000 sits between two characters of
//!    a token or at a string's start, U+F0001 at a string's end), so this gives back the user's exact text.
//! 5. **Check** that the segments joined equal the plain [`ChatTemplate::render`] output, byte for byte.
//!
//! Limits. The check in step 5 catches templates whose output depends on the text in ways the markers change (its
//! length, slicing by position, or a comparison with a string that contains a control token); those conversations are
//! a `chat.template` error rather than a wrong prompt. Edges are defused at the start and end of each whole string, so
//! a template that writes part of a control token itself and completes it with a piece it cut out of a message (by
//! slicing or `split`), or with a message's text as the middle piece of a token, is not covered; templates write whole
//! tokens. Control tokens must be at least two characters long and must not contain a marker; BOS and EOS texts are
//! the template's, not the user's.

use super::template::{ChatTemplate, Message};
use crate::{err, Result};

/// The marker inserted inside a control token's text or at a string's start: a private-use character that no model
/// vocabulary gives a meaning to.
pub const MARKER: char = '\u{F0000}';
/// The marker inserted at a string's end.
pub const END_MARKER: char = '\u{F0001}';

/// One piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text to tokenise as text: any control-token lookalike in it stays plain text.
    Text(String),
    /// A control token the template wrote, to be encoded as its own id.
    Control(String),
}

impl Segment {
    pub fn as_str(&self) -> &str {
        match self {
            Segment::Text(s) | Segment::Control(s) => s,
        }
    }

    pub fn is_control(&self) -> bool {
        matches!(self, Segment::Control(_))
    }
}

impl ChatTemplate {
    /// Renders as [`ChatTemplate::render`] does and cuts the result at the control tokens the template wrote (see the
    /// module docs). The segments joined equal `render(messages, add_generation_prompt)` byte for byte.
    ///
    /// `control_tokens` are the texts of the vocabulary's control tokens (GGUF token type 3). An empty token is
    /// ignored; a one-character token or one containing [`MARKER`] or [`END_MARKER`] is a `usage` error.
    pub fn render_segments(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        control_tokens: &[&str],
    ) -> Result<Vec<Segment>> {
        self.render_segments_with_tools(messages, add_generation_prompt, control_tokens, None)
    }

    /// [`ChatTemplate::render_segments`] with the template variable `tools` set (its strings, the tools'
    /// descriptions among them, are defused like message text).
    pub fn render_segments_with_tools(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        control_tokens: &[&str],
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<Segment>> {
        let tokens = ControlTokens::new(control_tokens)?;
        let plain = self.render_with_tools(messages, add_generation_prompt, tools)?;
        let defuse = |s: &str| tokens.defuse(s);
        let defused: Vec<Message> = messages.iter().map(|m| m.map_text(defuse)).collect();
        let defused_tools = tools.map(|t| super::template::map_strings(t, &defuse));
        let segments = if defused == messages && defused_tools.as_ref() == tools {
            tokens.split(&plain)
        } else {
            tokens.split(&self.render_with_tools(&defused, add_generation_prompt, defused_tools.as_ref())?)
        };
        check_joined(&segments, &plain)?;
        Ok(segments)
    }
}

/// Step 5: the segments joined must be the plain rendering.
fn check_joined(segments: &[Segment], plain: &str) -> Result<()> {
    let mut at = 0;
    for segment in segments {
        let s = segment.as_str();
        if plain.get(at..at + s.len()) != Some(s) {
            return Err(err!(
                ChatTemplate,
                "the chat template treats message text in a way that safe rendering cannot follow (it differs from \
                 the plain rendering at byte {at}); the conversation cannot be rendered safely"
            ));
        }
        at += s.len();
    }
    if at != plain.len() {
        return Err(err!(ChatTemplate, "safe rendering lost the end of the prompt after byte {at}"));
    }
    Ok(())
}

/// The control-token texts, longest first, with a quick filter on their first bytes.
#[derive(Debug)]
pub(crate) struct ControlTokens<'a> {
    tokens: Vec<&'a str>,
    first_bytes: [bool; 256],
}

impl<'a> ControlTokens<'a> {
    pub fn new(texts: &[&'a str]) -> Result<Self> {
        let mut tokens: Vec<&str> = Vec::with_capacity(texts.len());
        let mut first_bytes = [false; 256];
        for &text in texts.iter().filter(|t| !t.is_empty()) {
            if text.chars().nth(1).is_none() {
                return Err(err!(
                    Usage,
                    "control token {text:?} is a single character, which safe rendering cannot defuse"
                ));
            }
            if text.contains([MARKER, END_MARKER]) {
                return Err(err!(Usage, "control token {text:?} contains a marker character (U+F0000, U+F0001)"));
            }
            first_bytes[usize::from(text.as_bytes()[0])] = true;
            tokens.push(text);
        }
        tokens.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        tokens.dedup();
        Ok(Self { tokens, first_bytes })
    }

    /// The longest control token that starts at byte `at` of `s`.
    fn match_at(&self, s: &str, at: usize) -> Option<&'a str> {
        let rest = s.as_bytes().get(at..)?;
        if !self.first_bytes[usize::from(*rest.first()?)] {
            return None;
        }
        self.tokens.iter().copied().find(|t| rest.starts_with(t.as_bytes()))
    }

    /// Step 1 for one string (see the module docs).
    pub fn defuse(&self, s: &str) -> String {
        let cuts = self.cuts(s);
        if cuts.inner.is_empty() && !cuts.end && !s.contains([MARKER, END_MARKER]) {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len() + 4 * cuts.inner.len() + 8);
        let mut next_cut = cuts.inner.iter().copied().peekable();
        for (i, c) in s.char_indices() {
            if next_cut.next_if_eq(&i).is_some() {
                out.push(MARKER);
            }
            out.push(c);
            if c == MARKER || c == END_MARKER {
                out.push(c);
            }
        }
        if cuts.end {
            out.push(END_MARKER);
        }
        out
    }

    /// Where markers go in `s`.
    fn cuts(&self, s: &str) -> Cuts {
        let mut cuts = Cuts::default();
        for (i, c) in s.char_indices() {
            if self.match_at(s, i).is_some() {
                cuts.inner.push(i + c.len_utf8());
            }
        }
        for token in &self.tokens {
            edge_cuts(s, token, &mut cuts);
        }
        cuts.inner.sort_unstable();
        cuts.inner.dedup();
        cuts
    }

    /// Steps 3 and 4: the rendered output cut at intact control tokens, text segments restored.
    pub fn split(&self, rendered: &str) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut text_start = 0;
        let mut at = 0;
        while at < rendered.len() {
            match self.match_at(rendered, at) {
                Some(token) => {
                    if text_start < at {
                        segments.push(Segment::Text(restore(&rendered[text_start..at])));
                    }
                    segments.push(Segment::Control(token.to_string()));
                    at += token.len();
                    text_start = at;
                }
                None => at += 1,
            }
        }
        if text_start < rendered.len() {
            segments.push(Segment::Text(restore(&rendered[text_start..])));
        }
        segments
    }
}

/// Where one string gets markers.
#[derive(Debug, Default)]
struct Cuts {
    /// Byte offsets that get [`MARKER`] before the character there; sorted and unique after [`ControlTokens::cuts`].
    inner: Vec<usize>,
    /// Whether [`END_MARKER`] goes after the last character.
    end: bool,
}

/// Cuts that keep `s` from completing `token` with text before or after it.
fn edge_cuts(s: &str, token: &str, cuts: &mut Cuts) {
    let first_len = |piece: &str| piece.chars().next().map_or(0, char::len_utf8);
    // The end of `s` is a proper start of the token: cut inside that start, or after it when it is one character.
    for (k, _) in token.char_indices().skip(1) {
        let start = &token[..k];
        if s.ends_with(start) {
            match start.chars().nth(1) {
                Some(_) => cuts.inner.push(s.len() - k + first_len(start)),
                None => cuts.end = true,
            }
        }
    }
    // The start of `s` is a proper end of the token: cut inside that end, or before it when it is one character.
    for (k, _) in token.char_indices().skip(1) {
        let end = &token[k..];
        if s.starts_with(end) {
            cuts.inner.push(if end.chars().nth(1).is_some() { first_len(end) } else { 0 });
        }
    }
}

/// Step 4: a run of `n` equal markers becomes `n / 2` of them.
fn restore(text: &str) -> String {
    if !text.contains([MARKER, END_MARKER]) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut run: Option<(char, usize)> = None;
    for c in text.chars() {
        if c == MARKER || c == END_MARKER {
            run = match run {
                Some((m, n)) if m == c => Some((m, n + 1)),
                other => {
                    flush_run(&mut out, other);
                    Some((c, 1))
                }
            };
            continue;
        }
        flush_run(&mut out, run.take());
        out.push(c);
    }
    flush_run(&mut out, run);
    out
}

fn flush_run(out: &mut String, run: Option<(char, usize)>) {
    if let Some((marker, n)) = run {
        out.extend(std::iter::repeat_n(marker, n / 2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: char = MARKER;
    const E: char = END_MARKER;

    fn tokens<'a>(texts: &[&'a str]) -> ControlTokens<'a> {
        ControlTokens::new(texts).unwrap()
    }

    #[test]
    fn defuse_breaks_every_occurrence_and_restore_undoes_it() {
        let t = tokens(&["<|im_start|>", "<|im_end|>", "ab", "ba"]);
        assert_eq!(t.defuse("x<|im_start|>y"), format!("x<{M}|im_start|>y"));
        // Both occurrences, plus the edges: "a" ends "ba" (marker before it) and starts "ab" (marker after it).
        assert_eq!(t.defuse("aba"), format!("{M}a{M}b{M}a{E}"));
        assert_eq!(t.defuse(&format!("{M}q{E}{M}")), format!("{M}{M}q{E}{E}{M}{M}"));
        for s in ["x<|im_start|>y", "aba", "plain", "", "<|im_end|><|im_end|>", "{M}<|im_end|>{M}{E}<{E}"] {
            let s = s.replace("{M}", &M.to_string()).replace("{E}", &E.to_string());
            let defused = t.defuse(&s);
            assert!(!defused.contains("<|im_start|>") && !defused.contains("<|im_end|>"), "{defused:?}");
            assert_eq!(restore(&defused), s);
        }
    }

    #[test]
    fn defuse_cuts_the_edges() {
        let t = tokens(&["<|im_end|>"]);
        assert_eq!(t.defuse("hi <|im_"), format!("hi <{M}|im_"));
        assert_eq!(t.defuse("hi <"), format!("hi <{E}"));
        assert_eq!(t.defuse("end|> hi"), format!("e{M}nd|> hi"));
        assert_eq!(t.defuse("> hi"), format!("{M}> hi"));
        assert_eq!(t.defuse("hi"), "hi");
        for s in ["hi <|im_", "hi <", "end|> hi", "> hi", "<", ">"] {
            assert_eq!(restore(&t.defuse(s)), s);
        }
    }

    #[test]
    fn adjacent_strings_restore_exactly() {
        // Two user strings written back to back: the first ends with a token's first character, the second starts
        // with a token's last character, with user markers on either side of the seam.
        let t = tokens(&["<|im_end|>"]);
        for (a, b) in
            [("x<", "> y"), ("<", ">"), ("x<", "{M}> y"), ("x{M}{E}<", "{E}{M}>"), ("{M}", "{M}"), ("<|im_", "end|>")]
        {
            let a = a.replace("{M}", &M.to_string()).replace("{E}", &E.to_string());
            let b = b.replace("{M}", &M.to_string()).replace("{E}", &E.to_string());
            let joined = format!("{}{}", t.defuse(&a), t.defuse(&b));
            assert!(!joined.contains("<|im_end|>"), "{joined:?}");
            assert_eq!(restore(&joined), format!("{a}{b}"), "{joined:?}");
        }
    }

    #[test]
    fn split_takes_longest_leftmost() {
        let t = tokens(&["<a>", "<a>b", "<b>"]);
        let got = t.split("x<a>b<b><a>");
        assert_eq!(
            got,
            vec![
                Segment::Text("x".into()),
                Segment::Control("<a>b".into()),
                Segment::Control("<b>".into()),
                Segment::Control("<a>".into())
            ]
        );
        assert_eq!(t.split(""), vec![]);
    }

    #[test]
    fn bad_control_tokens_are_refused() {
        assert_eq!(ControlTokens::new(&["x"]).unwrap_err().code(), "usage");
        assert_eq!(ControlTokens::new(&["<\u{F0000}>"]).unwrap_err().code(), "usage");
        assert_eq!(ControlTokens::new(&["<\u{F0001}>"]).unwrap_err().code(), "usage");
        assert!(ControlTokens::new(&["", "<s>"]).is_ok());
    }
}
