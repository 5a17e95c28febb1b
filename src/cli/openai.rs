//! OpenAI's chat completions API as webr1 speaks it (`webr1 serve`, and `webr1 run --json`): reading a request,
//! checking every field a client may send, and writing `chat.completion` objects and `chat.completion.chunk`s, with
//! the reasoning in `reasoning_content` as DeepSeek's own API returns it.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat> and DeepSeek's reasoning model guide
//! (<https://api-docs.deepseek.com/guides/reasoning_model>).

use serde_json::{json, Map, Value};
use webr1::chat::{Message, ToolCall, ToolCallDelta, Tools};
use webr1::engine::{Finish, Input, OutputFormat, Request, Sampling, Usage};

/// A request that cannot be served: HTTP 400 with an OpenAI-style body naming the parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    pub message: String,
    pub param: Option<String>,
    /// webr1's error code, where one applies (`structured.schema`, `tools.invalid`, ...).
    pub code: Option<&'static str>,
}

fn bad(param: &str, message: impl Into<String>) -> BadRequest {
    BadRequest { message: message.into(), param: Some(param.to_string()), code: None }
}

/// An engine error about a request's field, as a 400.
pub fn bad_field(param: &str, e: &webr1::Error) -> BadRequest {
    BadRequest { message: e.message.clone(), param: Some(param.to_string()), code: Some(e.code()) }
}

/// The parameter a `tools` error is about.
fn tools_param(message: &str) -> &'static str {
    if message.contains("tool_choice") {
        "tool_choice"
    } else if message.contains("parallel_tool_calls") {
        "parallel_tool_calls"
    } else {
        "tools"
    }
}

/// OpenAI's `response_format`, or webr1's `grammar` (Lark) or `regex` (see [`OutputFormat::from_openai`]).
fn parse_format(
    response_format: Option<&Value>,
    grammar: Option<&Value>,
    regex: Option<&Value>,
) -> Result<Option<OutputFormat>, BadRequest> {
    let text = |v: Option<&Value>, name: &str| -> Result<Option<String>, BadRequest> {
        match v {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(name, format!("{name} must be a string"))),
        }
    };
    let (grammar, regex) = (text(grammar, "grammar")?, text(regex, "regex")?);
    let param = match (response_format.is_some(), grammar.is_some()) {
        (true, _) => "response_format",
        (false, true) => "grammar",
        (false, false) => "regex",
    };
    OutputFormat::from_openai(response_format, grammar.as_deref(), regex.as_deref()).map_err(|e| bad_field(param, &e))
}

/// A checked chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub request: Request,
    pub stream: bool,
    pub include_usage: bool,
}

/// The most stop strings OpenAI accepts.
const MAX_STOP: usize = 4;

/// Reads the body of `POST /v1/chat/completions`. Unknown fields are ignored (clients send many); fields webr1 does
/// not implement are refused when they would change the answer.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BadRequest {
        message: format!("the request body is not valid JSON: {e}"),
        param: None,
        code: None,
    })?;
    let object = value.as_object().ok_or_else(|| BadRequest {
        message: "the request body must be a JSON object".into(),
        param: None,
        code: None,
    })?;
    // A field set to null is treated as absent, as OpenAI does.
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());

    let messages = parse_messages(field("messages"))?;
    // The values' ranges are the engine's to judge (`Request::validate`, below), as for every other shell.
    let mut sampling = Sampling::default();
    if let Some(t) = number(field("temperature"), "temperature", f64::MIN, f64::MAX)? {
        sampling.temperature = t;
    }
    if let Some(p) = number(field("top_p"), "top_p", f64::MIN, f64::MAX)? {
        sampling.top_p = p;
    }
    if let Some(p) = number(field("min_p"), "min_p", f64::MIN, f64::MAX)? {
        sampling.min_p = p;
    }
    if let Some(k) = integer(field("top_k"), "top_k", 0, u32::MAX as i64)? {
        sampling.top_k = k as u32;
    }
    sampling.seed = match integer(field("seed"), "seed", i64::MIN, i64::MAX)? {
        Some(seed) => seed as u64,
        None => fresh_seed(),
    };
    if sampling.temperature == 0.0 {
        sampling.top_k = 1;
    }
    let max_tokens = match integer(field("max_completion_tokens"), "max_completion_tokens", 1, i64::MAX)? {
        Some(n) => Some(n),
        None => integer(field("max_tokens"), "max_tokens", 1, i64::MAX)?,
    };
    let stop = parse_stop(field("stop"))?;
    let stream = match field("stream") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| bad("stream", "stream must be true or false"))?,
    };
    let include_usage = parse_stream_options(field("stream_options"), stream)?;
    if integer(field("n"), "n", 1, i64::MAX)?.is_some_and(|n| n != 1) {
        return Err(bad("n", "webr1 generates one choice per request; n must be 1"));
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if number(field(name), name, -2.0, 2.0)?.is_some_and(|v| v != 0.0) {
            return Err(bad(name, format!("{name} is not supported by webr1; leave it out or set it to 0")));
        }
    }
    for name in ["functions", "function_call", "logit_bias"] {
        if field(name).is_some() {
            return Err(bad(name, format!("{name} is not supported by webr1")));
        }
    }
    let format = parse_format(field("response_format"), field("grammar"), field("regex"))?;
    let tools = Tools::from_json(field("tools"), field("tool_choice"), field("parallel_tool_calls")).map_err(|e| {
        BadRequest { param: Some(tools_param(&e.message).into()), code: Some(e.code()), message: e.message }
    })?;
    if format.is_some() && tools.as_ref().is_some_and(Tools::active) {
        return Err(bad("response_format", "response_format (or grammar, regex) and tools cannot be combined"));
    }
    if field("logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return Err(bad("logprobs", "logprobs are not supported by webr1"));
    }
    let request = Request {
        input: Input::Messages(messages),
        sampling,
        max_tokens: max_tokens.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        thinking_budget: None,
        stop,
        format,
        tools,
    };
    request.validate().map_err(|e| {
        // The engine's message begins with the name of the value it refuses.
        let name = e.message.split(' ').next().filter(|n| field(n).is_some()).map(str::to_string);
        BadRequest { message: e.message, param: name, code: None }
    })?;
    Ok(ChatRequest { request, stream, include_usage })
}

fn parse_messages(value: Option<&Value>) -> Result<Vec<Message>, BadRequest> {
    let value = value.ok_or_else(|| bad("messages", "messages is required"))?;
    let messages = Message::list_from_json(value).map_err(|e| BadRequest {
        message: e.message.clone(),
        param: Some("messages".into()),
        code: Some(e.code()),
    })?;
    // Only an assistant's turn may come without content (OpenAI allows it there, beside tool calls).
    for (i, raw) in value.as_array().into_iter().flatten().enumerate() {
        let content = raw.get("content").filter(|c| !c.is_null());
        if content.is_none() && raw.get("role").and_then(Value::as_str) != Some("assistant") {
            return Err(bad(&format!("messages[{i}].content"), format!("message {i} has no content")));
        }
    }
    if messages.is_empty() {
        return Err(bad("messages", "messages must hold at least one message"));
    }
    for (i, m) in messages.iter().enumerate() {
        if !["system", "user", "assistant", "developer", "tool"].contains(&m.role.as_str()) {
            return Err(bad(
                &format!("messages[{i}].role"),
                format!("role {:?} is not one of system, developer, user, assistant, tool", m.role),
            ));
        }
    }
    // "developer" is OpenAI's newer name for the system role.
    Ok(messages.into_iter().map(|m| if m.role == "developer" { Message::system(m.content) } else { m }).collect())
}

fn number(value: Option<&Value>, name: &str, lo: f64, hi: f64) -> Result<Option<f32>, BadRequest> {
    let Some(value) = value else { return Ok(None) };
    match value.as_f64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(Some(x as f32)),
        Some(_) => Err(bad(name, format!("{name} must be between {lo} and {hi}"))),
        None => Err(bad(name, format!("{name} must be a number"))),
    }
}

fn integer(value: Option<&Value>, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, BadRequest> {
    let Some(value) = value else { return Ok(None) };
    let n = value
        .as_i64()
        .or_else(|| value.as_u64().map(|u| u as i64))
        .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64));
    match n {
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        Some(_) if hi == i64::MAX => Err(bad(name, format!("{name} must be at least {lo}"))),
        Some(_) => Err(bad(name, format!("{name} must be between {lo} and {hi}"))),
        None => Err(bad(name, format!("{name} must be an integer"))),
    }
}

fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, BadRequest> {
    let stops = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad("stop", "stop must hold only strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop", "stop must be a string or an array of strings")),
    };
    if stops.len() > MAX_STOP {
        return Err(bad("stop", format!("stop holds at most {MAX_STOP} strings")));
    }
    if stops.iter().any(String::is_empty) {
        return Err(bad("stop", "a stop string must not be empty"));
    }
    Ok(stops)
}

fn parse_stream_options(value: Option<&Value>, stream: bool) -> Result<bool, BadRequest> {
    let Some(value) = value else { return Ok(false) };
    if !stream {
        return Err(bad("stream_options", "stream_options is only allowed with stream: true"));
    }
    let object = value.as_object().ok_or_else(|| bad("stream_options", "stream_options must be an object"))?;
    match object.get("include_usage") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("stream_options.include_usage", "include_usage must be true or false")),
    }
}

/// A seed for requests that name none, so that two identical requests may answer differently.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ ((nanos >> 64) as u64).rotate_left(17) ^ u64::from(std::process::id())
}

/// OpenAI's `finish_reason` for an engine finish; an aborted generation (its client left) reports `stop`.
pub fn finish_reason(finish: &Finish) -> &'static str {
    match finish.reason.as_str() {
        "length" => "length",
        "tool_calls" => "tool_calls",
        _ => "stop",
    }
}

/// A message's `tool_calls`, as OpenAI writes them.
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    let call = |c: &ToolCall| {
        let arguments = match &c.function.arguments {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": arguments}})
    };
    Value::Array(calls.iter().map(call).collect())
}

/// A streamed piece of a tool call: `delta.tool_calls[0]` with the call's index (its id, type and name first).
pub fn tool_call_delta(d: &ToolCallDelta) -> Value {
    let mut call = json!({"index": d.index, "function": {"arguments": d.arguments}});
    if let Some(id) = &d.id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = &d.name {
        call["function"]["name"] = json!(name);
    }
    json!({"tool_calls": [call]})
}

/// The `usage` object, with DeepSeek's cache counts and webr1's speeds besides OpenAI's fields.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "prompt_cache_hit_tokens": u.cached_tokens,
        "prompt_cache_miss_tokens": u.prompt_tokens - u.cached_tokens,
        "prefill_tokens_per_second": u.prefill_tokens_per_second,
        "decode_tokens_per_second": u.decode_tokens_per_second,
    })
}

/// Identity of one response: its id, creation time and model name.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    pub fn new(id: String, model: String) -> Meta {
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Meta { id, created, model }
    }
}

/// A whole `chat.completion`.
pub fn completion(meta: &Meta, content: &str, reasoning: &str, finish: &Finish) -> Value {
    let mut message = json!({"role": "assistant", "content": content, "reasoning_content": reasoning});
    if !finish.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(&finish.tool_calls);
        if content.is_empty() {
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(finish),
        }],
        "usage": usage_json(&finish.usage),
    })
}

/// One `chat.completion.chunk` with a single choice.
pub fn chunk(meta: &Meta, delta: Value, finish_reason: Option<&str>, with_usage_field: bool) -> Value {
    let mut object = chunk_head(meta);
    object.insert(
        "choices".into(),
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
    );
    if with_usage_field {
        object.insert("usage".into(), Value::Null);
    }
    Value::Object(object)
}

/// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
pub fn usage_chunk(meta: &Meta, usage: &Usage) -> Value {
    let mut object = chunk_head(meta);
    object.insert("choices".into(), json!([]));
    object.insert("usage".into(), usage_json(usage));
    Value::Object(object)
}

fn chunk_head(meta: &Meta) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("id".into(), json!(meta.id));
    object.insert("object".into(), json!("chat.completion.chunk"));
    object.insert("created".into(), json!(meta.created));
    object.insert("model".into(), json!(meta.model));
    object.insert("system_fingerprint".into(), Value::Null);
    object
}

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, BadRequest> {
        parse_chat_request(body.as_bytes())
    }

    #[test]
    fn a_full_request_sets_every_field() {
        let r = parse(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}],
               "temperature":0.3,"top_p":0.5,"top_k":7,"max_tokens":9,"seed":42,"stop":["x","y"],"stream":true,
               "stream_options":{"include_usage":true},"n":1,"presence_penalty":0}"#,
        )
        .unwrap();
        let s = r.request.sampling;
        assert_eq!((s.temperature, s.top_p, s.top_k, s.seed), (0.3, 0.5, 7, 42));
        assert_eq!(r.request.max_tokens, Some(9));
        assert_eq!(r.request.stop, vec!["x".to_string(), "y".to_string()]);
        assert!(r.stream && r.include_usage);
        let Input::Messages(m) = &r.request.input else { panic!("messages") };
        assert_eq!(m[0], Message::system("be brief"));
    }

    #[test]
    fn temperature_zero_is_greedy_and_nulls_are_absent() {
        let r = parse(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"top_p":null}"#).unwrap();
        assert_eq!(r.request.sampling.top_k, 1);
        assert_eq!(r.request.sampling.top_p, Sampling::default().top_p);
    }

    #[test]
    fn bad_fields_name_their_parameter() {
        let cases = [
            (r#"{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#, "temperature"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"temperature":3}"#, "temperature"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"temperature":-1}"#, "temperature"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"top_p":7}"#, "top_p"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"top_p":0}"#, "top_p"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"min_p":5}"#, "min_p"),
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (
                r#"{"messages":[{"role":"system","content":null},{"role":"user","content":"hi"}]}"#,
                "messages[0].content",
            ),
            (r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#, "max_tokens"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1.5}"#, "max_tokens"),
            (r#"{"messages":[{"role":"wizard","content":"hi"}]}"#, "messages[0].role"),
            (r#"{"messages":[]}"#, "messages"),
            (r#"{"messages":"hi"}"#, "messages"),
            (r#"{}"#, "messages"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"stop":["a","b","c","d","e"]}"#, "stop"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"n":2}"#, "n"),
            (r#"{"messages":[{"role":"user","content":"hi"}],"stream":"yes"}"#, "stream"),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}"#,
                "stream_options",
            ),
        ];
        for (body, param) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        }
        assert_eq!(parse("[1]").unwrap_err().param, None);
        assert_eq!(parse("{").unwrap_err().param, None);
    }
}
