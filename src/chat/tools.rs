//! Tool calls in OpenAI's shape, written in each model's own format (README.md, "Structured output").
//!
//! - [`Tools`] is a request's `tools`, `tool_choice` and `parallel_tool_calls`, checked ([`Tools::from_json`]).
//! - [`ToolFormat`] is how a model calls a tool, chosen from its chat template:
//!   - **Hermes** (Qwen2.5 and others whose template renders `tools` and `<tool_call>`): the template lists the tools;
//!     a call is `<tool_call>\n{"name": NAME, "arguments": ARGS}\n</tool_call>`;
//!   - **DeepSeek** (R1-Distill, whose template renders calls and outputs with `<｜tool▁calls▁begin｜>` but not the tool
//!     list): webr1 lists the tools in the system prompt, as llama.cpp's server does for DeepSeek-R1, and a call is
//!     `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>…
//!     <｜tool▁calls▁end｜>`;
//!   - **generic** (any other template): webr1 lists the tools in the system prompt and asks for the Hermes layout as
//!     text; earlier calls become assistant text and tool results become user messages in `<tool_response>` tags.
//! - [`ToolFormat::grammar`] is the Lark grammar of the calls (each call's arguments constrained to its function's
//!   schema with `%json`); the engine switches it on when the model opens a call (a lazy grammar, triggered by the
//!   opening token's id where it is one token, else by its text), or from the start of the answer for
//!   `tool_choice: "required"` or a named function.
//! - [`ToolCallStream`] reads the calls back out of the generated text as it streams, as OpenAI's
//!   `delta.tool_calls[i]`: the id and name first, then the arguments in pieces.

use super::template::{FunctionCall, Message, ToolCall};
use super::ChatTemplate;
use crate::{err, Result};
use serde_json::{json, Value};

/// The longest function name (OpenAI's limit).
const MAX_NAME: usize = 64;
/// The most tools one request may list.
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of its arguments (no arguments, `{"type": "object", "properties": {}, "additionalProperties":
    /// false}`, when the request gave none).
    pub parameters: Value,
    pub strict: bool,
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model answers or calls, as it likes (the default).
    Auto,
    /// No calls: the tools are not shown to the model.
    None,
    /// At least one call, from the start of the answer.
    Required,
    /// A call of this function, from the start of the answer.
    Function(String),
}

/// A request's tools.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// More than one call in an answer (`parallel_tool_calls`, default true).
    pub parallel: bool,
}

fn invalid(why: impl std::fmt::Display) -> crate::Error {
    err!(ToolsInvalid, "{why}")
}

impl Tools {
    /// Reads OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` (each may be absent or null).
    pub fn from_json(tools: Option<&Value>, choice: Option<&Value>, parallel: Option<&Value>) -> Result<Option<Tools>> {
        let list = match tools {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, t)| tool_from_json(i, t)).collect::<Result<_>>()?
            }
            Some(_) => return Err(invalid("tools must be an array of {type: \"function\", function: {...}} objects")),
        };
        if list.len() > MAX_TOOLS {
            return Err(invalid(format!("{} tools are more than the {MAX_TOOLS} webr1 accepts", list.len())));
        }
        for (i, tool) in list.iter().enumerate() {
            if list[..i].iter().any(|t| t.name == tool.name) {
                return Err(invalid(format!("tools[{i}]: the name {:?} is listed twice", tool.name)));
            }
        }
        let choice = match choice {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid(format!("tool_choice {other:?} is not auto, none, required or a function")))
                }
            },
            Some(v) => {
                let name = v.pointer("/function/name").and_then(Value::as_str);
                match (v.get("type").and_then(Value::as_str), name) {
                    (Some("function"), Some(name)) => ToolChoice::Function(name.to_string()),
                    _ => return Err(invalid("tool_choice must be a string or {type: \"function\", function: {name}}")),
                }
            }
        };
        if let ToolChoice::Function(name) = &choice {
            if !list.iter().any(|t| &t.name == name) {
                return Err(invalid(format!("tool_choice names the function {name:?}, which is not in tools")));
            }
        }
        if list.is_empty() {
            if matches!(choice, ToolChoice::Required) {
                return Err(invalid("tool_choice \"required\" needs at least one tool"));
            }
            return Ok(None);
        }
        let parallel = match parallel {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("parallel_tool_calls must be true or false")),
        };
        Ok(Some(Tools { tools: list, choice, parallel }))
    }

    /// The tools as OpenAI lists them (what templates read as `tools`).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.tools
                .iter()
                .map(|t| {
                    let mut function = json!({"name": t.name});
                    if let Some(d) = &t.description {
                        function["description"] = json!(d);
                    }
                    function["parameters"] = t.parameters.clone();
                    json!({"type": "function", "function": function})
                })
                .collect(),
        )
    }

    /// Whether the model may call anything (not `tool_choice: "none"`).
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// Whether the answer must start with a call.
    pub fn forced(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }
}

fn tool_from_json(i: usize, tool: &Value) -> Result<Tool> {
    let bad = |why: &str| invalid(format!("tools[{i}]: {why}"));
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("type must be \"function\""));
    }
    let function = tool.get("function").filter(|f| f.is_object()).ok_or_else(|| bad("it has no 'function' object"))?;
    let name = function.get("name").and_then(Value::as_str).ok_or_else(|| bad("function.name must be a string"))?;
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("function.name must be 1 to 64 letters, digits, '_' or '-'"));
    }
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(bad("function.description must be a string")),
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}, "additionalProperties": false}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(bad("function.parameters must be a JSON schema object")),
    };
    if parameters.get("type").is_some_and(|t| t != "object") {
        return Err(bad("function.parameters must describe an object (\"type\": \"object\")"));
    }
    crate::engine::check_schema_bounds(&parameters)
        .map_err(|e| err!(StructuredSchema, "tools[{i}] ({name}): {}", e.message))?;
    let strict = function.get("strict").and_then(Value::as_bool).unwrap_or(false);
    Ok(Tool { name: name.to_string(), description, parameters, strict })
}

/// How a model writes tool calls (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>` JSON; `native`: the template renders `tools` and the calls itself.
    Hermes { native: bool },
    /// DeepSeek's `<｜tool▁calls▁begin｜>` markers.
    DeepSeek,
}

const DEEPSEEK_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const HERMES_OPEN: &str = "<tool_call>";

/// The fixed text around calls in one format.
struct Layout {
    /// Before the first call.
    begin: &'static str,
    /// A call's text before its name, and between the name and the arguments.
    head: (&'static str, &'static str),
    /// After the arguments.
    close: &'static str,
    /// Between two calls.
    sep: &'static str,
    /// After the last call.
    end: &'static str,
}

const HERMES: Layout = Layout {
    begin: "",
    head: ("<tool_call>\n{\"name\": \"", "\", \"arguments\": "),
    close: "}\n</tool_call>",
    sep: "\n",
    end: "",
};

const DEEPSEEK: Layout = Layout {
    begin: DEEPSEEK_BEGIN,
    head: ("<｜tool▁call▁begin｜>function<｜tool▁sep｜>", "\n```json\n"),
    close: "\n```<｜tool▁call▁end｜>",
    sep: "\n",
    end: "<｜tool▁calls▁end｜>",
};

impl ToolFormat {
    /// The format of a model with this template (see the module docs).
    pub fn for_template(template: &ChatTemplate) -> ToolFormat {
        if template.source().contains(DEEPSEEK_BEGIN) {
            return ToolFormat::DeepSeek;
        }
        let needle = "webr1_tool_probe";
        let probe = json!([{"type": "function", "function": {"name": needle, "parameters": {"type": "object"}}}]);
        let renders = template
            .render_with_tools(&[Message::user("x")], true, Some(&probe))
            .is_ok_and(|text| text.contains(needle));
        ToolFormat::Hermes { native: renders && template.source().contains(HERMES_OPEN) }
    }

    fn layout(self) -> &'static Layout {
        match self {
            ToolFormat::Hermes { .. } => &HERMES,
            ToolFormat::DeepSeek => &DEEPSEEK,
        }
    }

    /// The text that opens the calls: the lazy grammar's trigger.
    pub fn trigger(self) -> &'static str {
        match self {
            ToolFormat::Hermes { .. } => HERMES_OPEN,
            ToolFormat::DeepSeek => DEEPSEEK_BEGIN,
        }
    }

    /// The text of `calls` in this format (an earlier assistant turn written back into the prompt).
    pub fn write_calls(self, calls: &[ToolCall]) -> String {
        let l = self.layout();
        let mut out = String::from(l.begin);
        for (i, call) in calls.iter().enumerate() {
            if i > 0 {
                out.push_str(l.sep);
            }
            let args = match &call.function.arguments {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{}{}{}{args}{}", l.head.0, call.function.name, l.head.1, l.close));
        }
        out.push_str(l.end);
        out
    }

    /// The conversation and `tools` variable to render for a request with `tools` (see the module docs).
    pub fn prepare(self, messages: &[Message], tools: &Tools) -> (Vec<Message>, Option<Value>) {
        let listed = tools.active().then(|| tools.to_json());
        let mut out: Vec<Message> = messages.iter().map(|m| self.rewrite(m)).collect();
        match (self, listed) {
            (ToolFormat::Hermes { native: true }, listed) => (out, listed),
            (_, None) => (out, None),
            (_, Some(listed)) => {
                let text = self.system_text(&listed);
                match out.first_mut() {
                    Some(first) if first.role == "system" => first.content = format!("{}\n\n{text}", first.content),
                    _ => out.insert(0, Message::system(text)),
                }
                (out, None)
            }
        }
    }

    /// One message as this format's template should see it.
    fn rewrite(self, m: &Message) -> Message {
        match self {
            // The template prints the arguments with `tojson`: it wants them as an object.
            ToolFormat::Hermes { native: true } => {
                let mut m = m.clone();
                for call in &mut m.tool_calls {
                    if let Value::String(s) = &call.function.arguments {
                        if let Ok(v) = serde_json::from_str::<Value>(s) {
                            call.function.arguments = v;
                        }
                    }
                }
                m
            }
            // Calls become the assistant's text (R1's template leaves a single call unclosed when it renders calls).
            _ if !m.tool_calls.is_empty() => {
                let calls = self.write_calls(&m.tool_calls);
                let content = if m.content.is_empty() { calls } else { format!("{}\n\n{calls}", m.content) };
                Message::new(m.role.clone(), content)
            }
            ToolFormat::Hermes { native: false } if m.role == "tool" => {
                Message::user(format!("<tool_response>\n{}\n</tool_response>", m.content))
            }
            _ => m.clone(),
        }
    }

    /// The tool list and how to call, for a system prompt.
    fn system_text(self, listed: &Value) -> String {
        // Written as Python's json.dumps writes them (what Qwen2.5's template shows its models).
        let dumps = |v: &Value| {
            let value = minijinja::Value::from(minijinja::value::Serde(v));
            super::json::to_json(&value, &super::json::JsonStyle::default()).unwrap_or_else(|_| v.to_string())
        };
        let list: Vec<String> = listed.as_array().into_iter().flatten().map(dumps).collect();
        let example = ToolFormat::write_calls(
            self,
            &[ToolCall {
                id: String::new(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "<function-name>".into(),
                    arguments: Value::String("<arguments as a JSON object>".into()),
                },
            }],
        );
        format!(
            "# Tools\n\nYou may call one or more functions to help with the user's request. The functions are \
             listed as JSON schemas within <tools></tools> tags:\n<tools>\n{}\n</tools>\n\nTo call a function, \
             answer with:\n{example}",
            list.join("\n")
        )
    }

    /// The Lark grammar of the calls of a request with `tools` (see the module docs): from the format's opening
    /// text to its end, each call's arguments constrained to its function's schema.
    pub fn grammar(self, tools: &Tools) -> String {
        let l = self.layout();
        let allowed: Vec<&Tool> = match &tools.choice {
            ToolChoice::Function(name) => tools.tools.iter().filter(|t| &t.name == name).collect(),
            _ => tools.tools.iter().collect(),
        };
        let lit = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let seq = |parts: &[&str]| -> String {
            parts.iter().filter(|p| !p.is_empty()).map(|p| lit(p)).collect::<Vec<_>>().join(" ")
        };
        let calls = if tools.parallel && !matches!(tools.choice, ToolChoice::Function(_)) {
            match l.sep {
                "" => "call+".to_string(),
                sep => format!("call ({} call)*", lit(sep)),
            }
        } else {
            "call".to_string()
        };
        let mut g = format!("start: {} {calls} {}\n", seq(&[l.begin]), seq(&[l.end]));
        let names: Vec<String> = (0..allowed.len()).map(|i| format!("call_{i}")).collect();
        g.push_str(&format!("call: {}\n", names.join(" | ")));
        for (i, tool) in allowed.iter().enumerate() {
            let head = format!("{}{}{}", l.head.0, tool.name, l.head.1);
            g.push_str(&format!("call_{i}: {} args_{i} {}\n", lit(&head), lit(l.close)));
            let schema = crate::engine::with_layout(&tool.parameters);
            g.push_str(&format!("args_{i}: %json {schema}\n"));
        }
        g
    }
}

/// A piece of a streamed tool call, as OpenAI's `delta.tool_calls[i]`: the first piece of call `index` carries its
/// `id` and `name`, later ones more of its `arguments` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Where [`ToolCallStream`] is in the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Begin,
    Head,
    Arguments,
    After,
    Done,
}

/// Reads tool calls out of generated text in a [`ToolFormat`] (the grammar guarantees the layout), as
/// [`ToolCallDelta`]s and, at the end, whole [`ToolCall`]s.
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    format: ToolFormat,
    state: CallState,
    buffer: String,
    calls: Vec<ToolCall>,
    /// The ids given to calls: `{prefix}{index}`.
    id_prefix: String,
}

impl ToolCallStream {
    pub fn new(format: ToolFormat, id_prefix: String) -> ToolCallStream {
        ToolCallStream { format, state: CallState::Begin, buffer: String::new(), calls: Vec::new(), id_prefix }
    }

    /// Feeds generated text; returns the deltas it completes.
    pub fn push(&mut self, text: &str) -> Vec<ToolCallDelta> {
        self.buffer.push_str(text);
        let l = self.format.layout();
        let mut out = Vec::new();
        loop {
            let progressed = match self.state {
                CallState::Begin => self.expect(l.begin, CallState::Head),
                CallState::Head => self.head(l, &mut out),
                CallState::Arguments => self.arguments(l, &mut out),
                CallState::After => self.after(l),
                CallState::Done => false,
            };
            if !progressed {
                return out;
            }
        }
    }

    fn expect(&mut self, literal: &str, next: CallState) -> bool {
        if self.buffer.starts_with(literal) {
            self.buffer.drain(..literal.len());
            self.state = next;
            return true;
        }
        false
    }

    fn head(&mut self, l: &Layout, out: &mut Vec<ToolCallDelta>) -> bool {
        let Some(rest) = self.buffer.strip_prefix(l.head.0) else { return false };
        let Some(at) = rest.find(l.head.1) else { return false };
        let name = rest[..at].to_string();
        let used = l.head.0.len() + at + l.head.1.len();
        self.buffer.drain(..used);
        let index = self.calls.len();
        let id = format!("{}{index}", self.id_prefix);
        out.push(ToolCallDelta { index, id: Some(id.clone()), name: Some(name.clone()), arguments: String::new() });
        let function = FunctionCall { name, arguments: Value::String(String::new()) };
        self.calls.push(ToolCall { id, kind: "function".into(), function });
        self.state = CallState::Arguments;
        true
    }

    fn arguments(&mut self, l: &Layout, out: &mut Vec<ToolCallDelta>) -> bool {
        let (piece, closed) = match self.buffer.find(l.close) {
            Some(at) => (self.buffer[..at].to_string(), Some(at)),
            None => {
                let keep = partial_suffix(&self.buffer, l.close);
                (self.buffer[..self.buffer.len() - keep].to_string(), None)
            }
        };
        if !piece.is_empty() {
            let index = self.calls.len() - 1;
            if let Some(Value::String(args)) = self.calls.last_mut().map(|c| &mut c.function.arguments) {
                args.push_str(&piece);
            }
            out.push(ToolCallDelta { index, id: None, name: None, arguments: piece.clone() });
        }
        self.buffer.drain(..piece.len());
        match closed {
            Some(_) => {
                self.buffer.drain(..l.close.len());
                self.state = CallState::After;
                true
            }
            None => false,
        }
    }

    fn after(&mut self, l: &Layout) -> bool {
        if !l.end.is_empty() && self.buffer.starts_with(l.end) {
            self.buffer.drain(..l.end.len());
            self.state = CallState::Done;
            return true;
        }
        if self.buffer.starts_with(l.sep) && self.buffer.len() > l.sep.len() {
            self.buffer.drain(..l.sep.len());
            self.state = CallState::Head;
            return true;
        }
        false
    }

    /// The calls read so far (the last one may be cut short when generation stopped inside it).
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// Whether every call read so far is complete.
    pub fn complete(&self) -> bool {
        !self.calls.is_empty() && matches!(self.state, CallState::After | CallState::Done)
    }
}

/// Bytes at the end of `text` that could begin `marker` (held back until the next piece decides).
pub fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| marker.is_char_boundary(n) && text.is_char_boundary(text.len() - n) && text.ends_with(&marker[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: Value) -> Tools {
        let list = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
        Tools::from_json(Some(&list), Some(&choice), None).unwrap().unwrap()
    }

    #[test]
    fn hermes_calls_stream_name_first_then_arguments_in_pieces() {
        let mut s = ToolCallStream::new(ToolFormat::Hermes { native: true }, "call_x".into());
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>";
        let mut deltas = Vec::new();
        for piece in text.as_bytes().chunks(3) {
            deltas.extend(s.push(std::str::from_utf8(piece).unwrap()));
        }
        assert_eq!(deltas[0].name.as_deref(), Some("get_weather"));
        assert_eq!(deltas[0].id.as_deref(), Some("call_x0"));
        let args: String = deltas.iter().filter(|d| d.index == 0).map(|d| d.arguments.as_str()).collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        assert!(deltas.iter().filter(|d| d.index == 0).count() > 2, "arguments come in pieces");
        assert_eq!(s.calls().len(), 2);
        assert_eq!(s.calls()[1].function.arguments, json!("{}"));
        assert!(s.complete());
    }

    #[test]
    fn deepseek_calls_are_read_back() {
        let calls = vec![ToolCall {
            id: "a".into(),
            kind: "function".into(),
            function: FunctionCall { name: "f".into(), arguments: json!("{\"x\": 1}") },
        }];
        let text = ToolFormat::DeepSeek.write_calls(&calls);
        assert!(text.starts_with(DEEPSEEK_BEGIN) && text.ends_with("<｜tool▁calls▁end｜>"), "{text}");
        let mut s = ToolCallStream::new(ToolFormat::DeepSeek, "id".into());
        s.push(&text);
        assert_eq!(s.calls()[0].function, calls[0].function);
        assert!(s.complete());
    }

    #[test]
    fn bad_tools_are_tools_invalid() {
        let cases = [
            json!({"type": "function"}),
            json!([{"type": "function", "function": {"name": "bad name"}}]),
            json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            json!([{"type": "web", "function": {"name": "f"}}]),
            json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]),
        ];
        for tools in cases {
            let e = Tools::from_json(Some(&tools), None, None).unwrap_err();
            assert_eq!(e.code(), "tools.invalid", "{tools}: {e}");
        }
        let one = json!([{"type": "function", "function": {"name": "f"}}]);
        let missing = json!({"type": "function", "function": {"name": "g"}});
        let e = Tools::from_json(Some(&one), Some(&missing), None).unwrap_err();
        assert!(e.message.contains("\"g\""), "{e}");
        assert_eq!(Tools::from_json(Some(&one), Some(&json!("sometimes")), None).unwrap_err().code(), "tools.invalid");
    }

    #[test]
    fn the_grammar_names_each_function_and_its_schema() {
        let g = ToolFormat::Hermes { native: true }.grammar(&tools(json!("auto")));
        assert!(g.contains("get_weather") && g.contains("%json {") && g.contains("call (\"\\n\" call)*"), "{g}");
        let g = ToolFormat::DeepSeek.grammar(&tools(json!({"type": "function", "function": {"name": "get_weather"}})));
        assert!(g.starts_with("start: \"<｜tool▁calls▁begin｜>\" call \"<｜tool▁calls▁end｜>\""), "{g}");
    }

    #[test]
    fn partial_suffixes_are_held_back() {
        assert_eq!(partial_suffix("abc}\n</to", "}\n</tool_call>"), 6);
        assert_eq!(partial_suffix("abc", "}\n</tool_call>"), 0);
        assert_eq!(partial_suffix("x<｜tool", DEEPSEEK_BEGIN), "<｜tool".len());
    }
}
