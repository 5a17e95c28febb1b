//! [`ChatTemplate`]: a model's own `tokenizer.chat_template`, compiled once and rendered as HF transformers'
//! `apply_chat_template` renders it.
//!
//! transformers renders with jinja2: `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[loopcontrols])`, globals `raise_exception(msg)` and `strftime_now(fmt)`, its own `tojson` filter, and the
//! variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and `tools` when a request has tools
//! (undefined otherwise; see [`super::tools`]). webr1 does the
//! same with minijinja and closes the gaps between the two engines:
//!
//! - Python string and dict methods (`content.split('</think>')[-1]`, `.strip()`, `.items()`, ...) come from
//!   `minijinja_contrib::pycompat`;
//! - `{{ x }}` and `x|string` print Python's `str(x)` (`True`, `None`, `['a']`, and floats as `repr`: `1e+16`,
//!   `1e-07`, where minijinja writes `10000000000000000.0`): see [`super::pyfmt`];
//! - `tojson` is Python's `json.dumps` (see [`super::json`]), not minijinja's HTML-safe filter;
//! - undefined values are lenient as jinja2's default `Undefined`: they print as nothing, iterate as empty and are
//!   false, while looking up an attribute of one is an error;
//! - one trailing newline of the template source is dropped (jinja2's `keep_trailing_newline=False`), nothing is
//!   auto-escaped.
//!
//! Not supported: transformers' `{% generation %}` block (assistant masks for training) and jinja2 features minijinja
//! lacks; templates that use them fail to compile with a `chat.template` error. `~` concatenation and `join` write
//! floats of 1e16 and more or below 1e-4 in fixed notation (`10000000000000000.0`) where Python writes `1e+16`.
//!
//! A differential check against jinja2 (about 150 snippets and conversations, among them Llama 3.1's and Qwen3's
//! templates) found no other difference.
//!
//! A template comes from a model file, so rendering is bounded: minijinja's fuel limits the work and the memory one
//! render may use (a budget that grows with the size of the messages), its recursion limit the nesting. A template
//! that runs out is a `chat.template` error, never a hang.

use super::json::tojson_filter;
use super::pyfmt::py_str;
use super::strftime::{strftime, system_now, DateTime};
use crate::gguf::{Gguf, Metadata};
use crate::{err, Error, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{context, AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// The name the template is stored under in its environment (it has no extension, so nothing is auto-escaped).
const TEMPLATE_NAME: &str = "chat_template";

/// Fuel every render may spend whatever the messages (about 2 million instructions or 128 MB of strings).
const BASE_FUEL: u64 = 2_000_000;
/// Extra fuel per byte of message text: one fuel pays for 64 bytes, so 1 fuel per 2 bytes lets the template copy each
/// message about 32 times.
const FUEL_PER_TWO_BYTES: u64 = 1;
/// Extra fuel per message (the instructions of one loop iteration, with room to spare).
const FUEL_PER_MESSAGE: u64 = 2_000;

/// One chat message. `role` is `system`, `user`, `assistant` or `tool` for the templates webr1 ships with, but any
/// text is passed on to the template as it is. An assistant message may carry the tool calls it made (OpenAI's
/// `tool_calls`), a `tool` message the id of the call it answers (`tool_call_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A call an assistant message made, in OpenAI's shape (`{id, type: "function", function: {name, arguments}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// A called function: its name and arguments (a JSON text, as OpenAI sends them; a template that prints arguments as
/// an object gets them parsed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: serde_json::Value,
}

fn function_type() -> String {
    "function".into()
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// The same message with `f` applied to every text a caller wrote (role, content, tool call ids, names and
    /// string arguments): how safe rendering defuses them.
    pub fn map_text(&self, f: impl Fn(&str) -> String) -> Message {
        let tool_calls = self
            .tool_calls
            .iter()
            .map(|c| ToolCall {
                id: f(&c.id),
                kind: f(&c.kind),
                function: FunctionCall { name: f(&c.function.name), arguments: map_strings(&c.function.arguments, &f) },
            })
            .collect();
        Message {
            role: f(&self.role),
            content: f(&self.content),
            tool_calls,
            tool_call_id: self.tool_call_id.as_deref().map(&f),
        }
    }

    /// Messages from JSON as the OpenAI API sends them: an array of `{"role": string, "content": ...}` objects whose
    /// content is a string, `null` (empty), or an array of parts of which the `{"type": "text", "text": ...}` ones are
    /// joined; an assistant message may hold `tool_calls` (each with an `id` and a `function` with a `name` and
    /// `arguments`), a `tool` message needs its `tool_call_id`. Anything else is a `chat.bad_messages` error (or
    /// `tools.invalid` for the tool fields) that says which message is wrong.
    pub fn list_from_json(json: &serde_json::Value) -> Result<Vec<Message>> {
        let list = json.as_array().ok_or_else(|| err!(ChatBadMessages, "messages must be an array"))?;
        list.iter().enumerate().map(|(i, m)| Self::from_json(i, m)).collect()
    }

    fn from_json(index: usize, json: &serde_json::Value) -> Result<Message> {
        let bad = |why: &str| bad_message(index, why.to_string());
        let object = json.as_object().ok_or_else(|| bad("it is not an object"))?;
        let role = object.get("role").and_then(|r| r.as_str()).ok_or_else(|| bad("it has no string 'role'"))?;
        let content = match object.get("content") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(parts)) => text_parts(parts).map_err(|e| bad_message(index, e))?,
            Some(_) => return Err(bad("its 'content' is neither a string nor an array of parts")),
        };
        let mut message = Message::new(role, content);
        let tool_error = |why: String| err!(ToolsInvalid, "message {index}: {why}");
        match object.get("tool_calls") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(calls)) => {
                message.tool_calls = calls
                    .iter()
                    .enumerate()
                    .map(|(j, c)| tool_call_from_json(j, c))
                    .collect::<Result<_, _>>()
                    .map_err(tool_error)?;
            }
            Some(_) => return Err(tool_error("'tool_calls' must be an array".into())),
        }
        match object.get("tool_call_id") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(id)) => message.tool_call_id = Some(id.clone()),
            Some(_) => return Err(tool_error("'tool_call_id' must be a string".into())),
        }
        if role == "tool" && message.tool_call_id.is_none() {
            return Err(tool_error("a tool message needs the 'tool_call_id' of the call it answers".into()));
        }
        Ok(message)
    }
}

fn tool_call_from_json(j: usize, call: &serde_json::Value) -> std::result::Result<ToolCall, String> {
    let id = call.get("id").and_then(|v| v.as_str()).ok_or_else(|| format!("tool_calls[{j}] has no string 'id'"))?;
    let function = call.get("function").ok_or_else(|| format!("tool_calls[{j}] has no 'function'"))?;
    let name = function
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("tool_calls[{j}].function has no string 'name'"))?;
    let arguments = match function.get("arguments") {
        Some(serde_json::Value::String(s)) => serde_json::Value::String(s.clone()),
        Some(v @ serde_json::Value::Object(_)) => serde_json::Value::String(v.to_string()),
        None | Some(serde_json::Value::Null) => serde_json::Value::String("{}".into()),
        Some(_) => return Err(format!("tool_calls[{j}].function.arguments must be a JSON string")),
    };
    Ok(ToolCall {
        id: id.to_string(),
        kind: function_type(),
        function: FunctionCall { name: name.to_string(), arguments },
    })
}

/// `value` with `f` applied to every string in it (object keys included).
pub(crate) fn map_strings(value: &serde_json::Value, f: &impl Fn(&str) -> String) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(f(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (f(k), map_strings(v, f))).collect()),
        other => other.clone(),
    }
}

fn bad_message(index: usize, why: String) -> Error {
    err!(ChatBadMessages, "message {index} is not a {{role, content}} object: {why}")
}

/// The text of OpenAI content parts, joined; parts of other types (images) are an error: no webr1 model reads them.
fn text_parts(parts: &[serde_json::Value]) -> std::result::Result<String, String> {
    let mut text = String::new();
    for part in parts {
        match (part.get("type").and_then(|t| t.as_str()), part.get("text").and_then(|t| t.as_str())) {
            (Some("text"), Some(t)) => text.push_str(t),
            (kind, _) => return Err(format!("content part of type {kind:?} is not text")),
        }
    }
    Ok(text)
}

/// A compiled chat template with the BOS and EOS texts it is rendered with.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    /// The time `strftime_now` formats, when the caller sets it; otherwise the system clock (native only).
    now: Option<i64>,
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not compile is a `chat.template` error.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = hf_environment()?;
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(template_error)?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            now: None,
        })
    }

    /// The model's own template (`tokenizer.chat_template`) with the texts of its BOS and EOS tokens
    /// (`tokenizer.ggml.bos_token_id` / `eos_token_id`; the empty text when an id is absent).
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        Self::from_metadata(&gguf.metadata)
    }

    /// [`ChatTemplate::from_gguf`] from the metadata alone (of a split model's first part, say).
    pub fn from_metadata(metadata: &Metadata) -> Result<Self> {
        let source = metadata
            .get_str("tokenizer.chat_template")?
            .ok_or_else(|| err!(ChatNoTemplate, "the model has no chat template (no 'tokenizer.chat_template')"))?;
        let bos = special_token_text(metadata, "tokenizer.ggml.bos_token_id")?;
        let eos = special_token_text(metadata, "tokenizer.ggml.eos_token_id")?;
        Self::new(source, &bos, &eos)
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Sets the time `strftime_now` formats (seconds since the Unix epoch, UTC), or `None` for the system clock. On
    /// wasm32 there is no system clock: without a time set, `strftime_now` is undefined for the template.
    pub fn set_now(&mut self, unix_seconds: Option<i64>) {
        self.now = unix_seconds;
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends where the assistant's answer begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// [`ChatTemplate::render`] with the template variable `tools` set (OpenAI's tool list, as transformers passes
    /// it) when `tools` is given.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let call_bytes =
            |m: &Message| -> usize { m.tool_calls.iter().map(|c| c.function.arguments.to_string().len() + 64).sum() };
        let input_bytes: usize = messages.iter().map(|m| m.role.len() + m.content.len() + call_bytes(m)).sum::<usize>()
            + tools.map_or(0, |t| t.to_string().len());
        let mut env = self.env.clone();
        env.set_fuel(Some(fuel_budget(input_bytes, messages.len())));
        if let Some(now) = self.now.or_else(system_now) {
            let time = DateTime::from_unix(now);
            env.add_function("strftime_now", move |format: &str| strftime(format, &time));
        }
        let template = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        let ctx = context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            tools => tools.map_or(Value::UNDEFINED, |t| Value::from(minijinja::value::Serde(t))),
        };
        template.render(ctx).map_err(template_error)
    }
}

/// The text of the token whose id the metadata key holds.
fn special_token_text(metadata: &Metadata, id_key: &str) -> Result<String> {
    let Some(id) = metadata.get_uint(id_key)? else {
        return Ok(String::new());
    };
    let tokens = super::vocabulary(metadata)?;
    let token: Option<&String> = usize::try_from(id).ok().and_then(|i| tokens.get(i));
    token
        .cloned()
        .ok_or_else(|| err!(TokenizerBadVocab, "'{id_key}' is {id}, but the vocabulary has {} tokens", tokens.len()))
}

fn fuel_budget(input_bytes: usize, n_messages: usize) -> u64 {
    let bytes = u64::try_from(input_bytes).unwrap_or(u64::MAX);
    let messages = u64::try_from(n_messages).unwrap_or(u64::MAX);
    BASE_FUEL.saturating_add(bytes / 2 * FUEL_PER_TWO_BYTES).saturating_add(messages.saturating_mul(FUEL_PER_MESSAGE))
}

/// An environment set up as transformers sets up jinja2 (see the module docs).
fn hf_environment() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(template_error)?;
    env.set_syntax(syntax);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        let result = match value.as_str() {
            Some(s) => out.write_str(s),
            None => out.write_str(&py_str(value)),
        };
        result.map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "cannot write the template output"))
    });
    // jinja2 built-ins that minijinja keeps in its contrib crate.
    env.add_filter("striptags", minijinja_contrib::filters::striptags);
    env.add_filter("filesizeformat", minijinja_contrib::filters::filesizeformat);
    env.add_function("joiner", minijinja_contrib::globals::joiner);
    env.add_filter("tojson", tojson_filter);
    env.add_filter("string", |value: &Value| py_str(value));
    env.add_function("raise_exception", raise_exception);
    Ok(env)
}

/// How the detail of a `raise_exception` error starts.
const RAISED: &str = "raise_exception: ";

/// `raise_exception(message)`: the template refuses the conversation; the message reaches the caller.
fn raise_exception(message: &str) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{message}")))
}

/// A minijinja error as a `chat.template` error, with the template line when known.
fn template_error(e: minijinja::Error) -> Error {
    let what = match (e.kind(), e.detail()) {
        (ErrorKind::OutOfFuel, _) => "it did more work than webr1 allows for this conversation".to_string(),
        (_, Some(detail)) if detail.starts_with(RAISED) => {
            format!("it raised an exception: {}", &detail[RAISED.len()..])
        }
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    match e.line() {
        Some(line) => err!(ChatTemplate, "the chat template failed at line {line}: {what}"),
        None => err!(ChatTemplate, "the chat template failed: {what}"),
    }
}
