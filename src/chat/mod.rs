//! Chat: the model's own chat template rendered as HF transformers renders it, safely, and R1's output split into its
//! reasoning and its answer.
//!
//! - [`ChatTemplate`] compiles a GGUF's `tokenizer.chat_template` once (minijinja, set up as transformers sets up
//!   jinja2) and [`ChatTemplate::render`]s conversations of [`Message`]s to the exact prompt text.
//! - [`ChatTemplate::render_segments`] cuts the prompt into the control tokens the template wrote and plain text, so
//!   that a user who types `<｜Assistant｜>` cannot forge a turn (ARCHITECTURE.md §8): the tokenizer encodes
//!   [`Segment::Control`] as control ids and [`Segment::Text`] as text.
//! - [`ReasoningSplitter`] turns the streamed output into [`Delta::Reasoning`] and [`Delta::Content`], DeepSeek's
//!   `reasoning_content` and `content`.
//!
//! Reference: transformers' `apply_chat_template` (`utils/chat_template_utils.py`) and the chat fixtures in
//! `tests/fixtures/chat.*.jsonl`, rendered by jinja2 3.1.6.

mod json;
mod prompt;
mod pyfmt;
mod reasoning;
mod safe;
mod strftime;
mod template;
pub mod tools;

pub use prompt::Prompt;
pub use reasoning::{prompt_starts_in_reasoning, Delta, ReasoningSplitter, THINK_CLOSE, THINK_OPEN};
pub use safe::{Segment, END_MARKER, MARKER};
pub use template::{ChatTemplate, FunctionCall, Message, ToolCall};
pub use tools::{ToolCallDelta, ToolChoice, ToolFormat, Tools};

use crate::gguf::{Gguf, Metadata};
use crate::{err, Result};

/// The token texts, `tokenizer.ggml.tokens`.
fn vocabulary(metadata: &Metadata) -> Result<&[String]> {
    let tokens = metadata.get_str_array("tokenizer.ggml.tokens")?;
    tokens.ok_or_else(|| err!(GgufMissingKey, "the model's metadata has no 'tokenizer.ggml.tokens'"))
}

/// The GGUF token type of control tokens (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
pub const TOKEN_TYPE_CONTROL: i64 = 3;

/// The texts of the vocabulary's control tokens (type 3), in id order: the texts [`ChatTemplate::render_segments`]
/// keeps user text from forming.
pub fn control_tokens(gguf: &Gguf) -> Result<Vec<String>> {
    let metadata = &gguf.metadata;
    let tokens = vocabulary(metadata)?;
    let Some(types) = metadata.get_array("tokenizer.ggml.token_type")? else {
        return Ok(Vec::new());
    };
    let types = types
        .to_i64s()
        .ok_or_else(|| err!(TokenizerBadVocab, "'tokenizer.ggml.token_type' is not an array of integers"))?;
    if types.len() != tokens.len() {
        return Err(err!(
            TokenizerBadVocab,
            "the vocabulary has {} tokens but {} token types",
            tokens.len(),
            types.len()
        ));
    }
    let control = tokens.iter().zip(&types).filter(|(_, &ty)| ty == TOKEN_TYPE_CONTROL);
    Ok(control.map(|(text, _)| text.clone()).collect())
}
