//! From a conversation to the token ids the model reads, the way llama.cpp's chat code builds them.

use super::{prompt_starts_in_reasoning, ChatTemplate, Message, Segment};
use crate::tokenizer::Tokenizer;
use crate::Result;

/// A rendered, tokenised chat prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The token ids to feed the model.
    pub ids: Vec<u32>,
    /// The rendered text (as the template wrote it, BOS text included when the template writes it).
    pub text: String,
    /// The prompt ends inside `<think>`: the model's output starts with reasoning.
    pub starts_in_reasoning: bool,
}

impl ChatTemplate {
    /// Renders the conversation with the generation prompt and tokenises it: control tokens only where the template
    /// wrote them, message text always as plain text, and BOS first exactly once when the vocabulary adds BOS (if the
    /// template already wrote the BOS text, that is the one). This is llama.cpp's prompt rule (see the fixtures
    /// README), made safe against turn markers typed into messages.
    pub fn prompt(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Prompt> {
        self.prompt_with_tools(tokenizer, messages, None)
    }

    /// [`ChatTemplate::prompt`] with the template variable `tools` set (see [`super::tools`]).
    pub fn prompt_with_tools(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<Prompt> {
        let controls = tokenizer.control_texts();
        let segments = self.render_segments_with_tools(messages, true, &controls, tools)?;
        let ids = tokenizer.encode_segments(&segments, true)?;
        let text: String = segments.iter().map(Segment::as_str).collect();
        Ok(Prompt { starts_in_reasoning: prompt_starts_in_reasoning(&text), ids, text })
    }
}
