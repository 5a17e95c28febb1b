//! The browser binding: the one place where `#[wasm_bindgen]` meets the engine (ARCHITECTURE.md §9). The npm package's
//! JS (`pkg/src/`) turns this into the OpenAI-shaped API; it runs the same [`Engine`] as the native binary.
//!
//! - [`WebEngine::load`] takes a JS model source (see [`source`]), options and a progress callback;
//! - [`WebEngine::generate`] runs one request, calling back with each reasoning or answer delta, and resolves to how it
//!   finished (reason, usage, token ids);
//! - [`WebEngine::abort`] stops the running generation at its next token; [`WebEngine::unload`] frees the GPU memory;
//! - [`WebEngine::profile`] is `webr1 bench --profile` in the browser (a hook for tests and measurements).
//! - a lost device fails the running and every later call with `gpu.device_lost`; the package's `reload()` loads the
//!   model again into a new `WebEngine` (a new device).
//!
//! Errors reach JS as `Error`s with a stable `code` ([`errors`]). Options and events cross as plain objects through
//! `serde-wasm-bindgen`.

mod errors;
mod source;

pub use source::JsModelSource;

/// Buffers created on the GPU by this wasm instance so far, by every engine (for tests: a load refused by its
/// memory plan creates none).
#[wasm_bindgen]
pub fn gpu_buffers_created() -> f64 {
    crate::gpu::buffers_created_in_process() as f64
}

use crate::chat::{Message, ToolCall, Tools};
use crate::engine::{
    teacher_forced, AbortHandle, Engine, EngineOptions, Event, Finish, Input, LoadProgress, OutputFormat, Request,
    Sampling,
};
use crate::gpu::GpuOptions;
use crate::{err, Result};
use errors::to_js;
use js_sys::Function;
use serde::{Deserialize, Serialize};
use source::WebSource;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Load options as the JS side passes them (`pkg/src/core.js` maps the package's camelCase names).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoadOptions {
    context_length: Option<usize>,
    /// Use the f32 kernels even where `shader-f16` and subgroups are offered.
    force_f32: bool,
    /// GPU memory the model may use in all (`gpuMemory`).
    gpu_memory: Option<Size>,
    /// Caps on one storage binding and one buffer, below the device's limits (`maxStorageBufferBindingSize`,
    /// `maxBufferSize`): phone-sized limits on any GPU.
    max_storage_buffer_binding_size: Option<Size>,
    max_buffer_size: Option<Size>,
}

/// A size from JS: a number of bytes, or a string such as `"8GiB"` ([`crate::model::plan::parse_bytes`]).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(f64),
    Text(String),
}

impl Size {
    fn bytes(&self, what: &str) -> Result<u64> {
        match self {
            Size::Bytes(n) if n.is_finite() && *n >= 1.0 && n.fract() == 0.0 && *n <= 2f64.powi(53) => Ok(*n as u64),
            Size::Bytes(n) => {
                Err(err!(Usage, "{what} must be a whole number of bytes above 0, or a string like \"8GiB\"; got {n}"))
            }
            Size::Text(text) => crate::model::plan::parse_bytes(text, what),
        }
    }
}

/// Reads an optional size option.
fn size(option: &Option<Size>, what: &str) -> Result<Option<u64>> {
    option.as_ref().map(|s| s.bytes(what)).transpose()
}

/// A request as the JS side passes it (OpenAI's names).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GenerateOptions {
    messages: Option<Vec<Message>>,
    /// Token ids to continue, instead of messages (a raw prompt).
    prompt_ids: Option<Vec<u32>>,
    /// With `prompt_ids`: the prompt ends inside `<think>`.
    starts_in_reasoning: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    min_p: Option<f32>,
    seed: Option<f64>,
    max_tokens: Option<usize>,
    thinking_budget: Option<usize>,
    stop: Vec<String>,
    /// Structured output, as JSON texts (parsed here with serde_json's nesting limit): OpenAI's `response_format`,
    /// `tools`, `tool_choice`; and `parallel_tool_calls`, webr1's `grammar` (Lark) and `regex`.
    response_format: Option<String>,
    tools: Option<String>,
    tool_choice: Option<String>,
    parallel_tool_calls: Option<bool>,
    grammar: Option<String>,
    regex: Option<String>,
}

/// A delta, as the callback of [`WebEngine::generate`] receives it: `{type: "reasoning" | "content", text}`, or
/// `{type: "tool_call", index, id?, name?, arguments}` for a piece of a tool call.
#[derive(Serialize)]
struct EventObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

/// How a generation finished, as [`WebEngine::generate`] resolves.
#[derive(Serialize)]
struct FinishObject {
    finish_reason: &'static str,
    prompt_tokens: usize,
    cached_tokens: usize,
    completion_tokens: usize,
    reasoning_tokens: usize,
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: f64,
    token_ids: Vec<u32>,
    note: Option<String>,
    tool_calls: Vec<ToolCall>,
}

impl From<Finish> for FinishObject {
    fn from(f: Finish) -> Self {
        let u = f.usage;
        FinishObject {
            finish_reason: f.reason.as_str(),
            prompt_tokens: u.prompt_tokens,
            cached_tokens: u.cached_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.reasoning_tokens,
            prefill_tokens_per_second: u.prefill_tokens_per_second,
            decode_tokens_per_second: u.decode_tokens_per_second,
            token_ids: f.token_ids,
            note: f.note,
            tool_calls: f.tool_calls,
        }
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| err!(Usage, "cannot pass a value to JS: {e}"))
}

fn from_value<T: for<'de> Deserialize<'de>>(value: JsValue, what: &str) -> Result<T> {
    if value.is_undefined() || value.is_null() {
        return serde_wasm_bindgen::from_value(js_sys::Object::new().into())
            .map_err(|e| err!(Usage, "bad {what}: {e}"));
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| err!(Usage, "bad {what}: {e}"))
}

/// Where the engine is: idle, lent to the running generation, or unloaded.
enum Slot {
    Ready(Box<Engine>),
    Busy,
    Unloaded,
}

/// A model loaded on the browser's GPU.
#[wasm_bindgen]
pub struct WebEngine {
    engine: Rc<RefCell<Slot>>,
    abort: AbortHandle,
    info: serde_json::Value,
    /// The engine's GPU device, reachable while a generation holds the engine (for [`WebEngine::lose_device`]).
    device: wgpu::Device,
}

#[wasm_bindgen]
impl WebEngine {
    /// Loads a model from a JS model source. `on_progress` receives `{phase, loaded, total}`.
    pub async fn load(
        source: JsModelSource,
        options: JsValue,
        on_progress: Option<Function>,
    ) -> std::result::Result<WebEngine, JsValue> {
        Self::load_inner(source, options, on_progress).await.map_err(to_js)
    }

    /// The model, context, adapter, features, limits and memory plan.
    pub fn info(&self) -> std::result::Result<JsValue, JsValue> {
        to_value(&self.info).map_err(to_js)
    }

    /// Runs one request. `on_event` receives `{type: "reasoning" | "content", text}` for each delta; the promise
    /// resolves to `{finish_reason, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    /// prefill_tokens_per_second, decode_tokens_per_second, token_ids, note}`.
    pub async fn generate(&self, request: JsValue, on_event: Function) -> std::result::Result<JsValue, JsValue> {
        let engine = self.engine.clone();
        let request = from_value::<GenerateOptions>(request, "generation options").map_err(to_js)?;
        run_generation(&engine, request, &on_event).await.map_err(to_js)
    }

    /// Teacher-forced logits, a hook for tests that compare the browser's GPU path with the native one: `ids` as a
    /// fresh sequence from position 0, and for each position `{top: [[id, logit], ...], lse}` with its `top_k`
    /// highest logits and the log-sum-exp of all (see `webr1::engine::teacher_forced`). A cached chat prefix is lost.
    pub async fn teacher_forced(&self, ids: Vec<u32>, top_k: u32) -> std::result::Result<JsValue, JsValue> {
        run_teacher_forced(&self.engine, &ids, top_k as usize).await.map_err(to_js)
    }

    /// A profile of `n_tokens` greedy decode steps from position 0, after a profiled prefill of `n_prompt` tokens
    /// unless 0, each after an unprofiled warm-up run when `warmup`: what `webr1 bench --profile` measures natively
    /// (`webr1::engine::Profile`: dispatches, submissions, waits and bytes read per token; GPU time per op where the
    /// adapter has `timestamp-query`, wall time always). Resolves to `{decode, prefill}` (`prefill` is `null` for 0).
    /// A cached chat prefix is lost.
    pub async fn profile(&self, n_tokens: u32, n_prompt: u32, warmup: bool) -> std::result::Result<JsValue, JsValue> {
        run_profile(&self.engine, n_tokens as usize, n_prompt as usize, warmup).await.map_err(to_js)
    }

    /// A hook for tests: destroys the engine's `GPUDevice` now, even mid-generation, as a driver reset or a
    /// reclaimed background tab loses it. The running generation then fails with `gpu.device_lost`, and so does
    /// every later call until the model is loaded again.
    pub fn lose_device(&self) {
        self.device.destroy();
    }

    /// Stops the running generation before its next token (it finishes with `finish_reason: "abort"`).
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Frees the model's GPU memory (a running generation is aborted first); later calls fail with `usage`.
    pub fn unload(&self) {
        let previous = std::mem::replace(&mut *self.engine.borrow_mut(), Slot::Unloaded);
        match previous {
            Slot::Ready(engine) => engine.gpu().device().destroy(),
            Slot::Busy => self.abort.abort(),
            Slot::Unloaded => {}
        }
    }
}

impl WebEngine {
    async fn load_inner(source: JsModelSource, options: JsValue, on_progress: Option<Function>) -> Result<WebEngine> {
        let options: LoadOptions = from_value(options, "load options")?;
        let engine_options = EngineOptions {
            gpu: GpuOptions {
                force_f32: options.force_f32,
                max_binding_bytes: size(&options.max_storage_buffer_binding_size, "maxStorageBufferBindingSize")?,
                max_buffer_bytes: size(&options.max_buffer_size, "maxBufferSize")?,
                ..GpuOptions::default()
            },
            context_length: options.context_length,
            gpu_memory: size(&options.gpu_memory, "gpuMemory")?,
            ..EngineOptions::default()
        };
        let mut source = WebSource::new(source);
        let progress = |p: LoadProgress| {
            if let Some(callback) = &on_progress {
                let event = serde_json::json!({ "phase": p.phase, "loaded": p.done, "total": p.total });
                if let Ok(value) = to_value(&event) {
                    let _ = callback.call1(&JsValue::NULL, &value);
                }
            }
        };
        let engine = Engine::load(&mut source, engine_options, progress).await?;
        let info = describe(&engine);
        let abort = engine.abort_handle();
        let device = engine.gpu().device().clone();
        Ok(WebEngine { engine: Rc::new(RefCell::new(Slot::Ready(Box::new(engine)))), abort, info, device })
    }
}

async fn run_generation(slot: &Rc<RefCell<Slot>>, options: GenerateOptions, on_event: &Function) -> Result<JsValue> {
    let request = build_request(options)?;
    let mut engine = take(slot)?;
    let result = generate_with(&mut engine, request, on_event).await;
    give_back(slot, engine);
    result
}

/// Lends the engine to one request (the slot is busy meanwhile); [`give_back`] returns it.
fn take(slot: &Rc<RefCell<Slot>>) -> Result<Box<Engine>> {
    match std::mem::replace(&mut *slot.borrow_mut(), Slot::Busy) {
        Slot::Ready(engine) => Ok(engine),
        Slot::Busy => Err(err!(Usage, "a generation is already running on this engine; await it or abort it")),
        Slot::Unloaded => {
            *slot.borrow_mut() = Slot::Unloaded;
            Err(err!(Usage, "the model was unloaded"))
        }
    }
}

fn give_back(slot: &Rc<RefCell<Slot>>, engine: Box<Engine>) {
    let mut state = slot.borrow_mut();
    match *state {
        // unload() was called meanwhile: free the GPU memory now.
        Slot::Unloaded => engine.gpu().device().destroy(),
        _ => *state = Slot::Ready(engine),
    }
}

async fn run_teacher_forced(slot: &Rc<RefCell<Slot>>, ids: &[u32], top_k: usize) -> Result<JsValue> {
    let mut engine = take(slot)?;
    let result = teacher_forced(&mut engine, ids, top_k).await;
    give_back(slot, engine);
    to_value(&result?)
}

async fn run_profile(slot: &Rc<RefCell<Slot>>, n_tokens: usize, n_prompt: usize, warmup: bool) -> Result<JsValue> {
    let mut engine = take(slot)?;
    let result = profile_with(&mut engine, n_tokens, n_prompt, warmup).await;
    give_back(slot, engine);
    result
}

async fn profile_with(engine: &mut Engine, n_tokens: usize, n_prompt: usize, warmup: bool) -> Result<JsValue> {
    if n_tokens == 0 || n_tokens.max(n_prompt) > engine.context_length() {
        return Err(err!(Usage, "profile: 1 to {} decode steps and prompt tokens", engine.context_length()));
    }
    // Token ids spread over the vocabulary; their values do not change the work.
    let n_vocab = engine.tokenizer().n_vocab().max(1) as u64;
    let ids: Vec<u32> = (0..n_prompt as u64).map(|i| ((i * 7919 + 13) % n_vocab) as u32).collect();
    let session = engine.session();
    let prefill = match n_prompt {
        0 => None,
        _ => Some(session.profile_prefill(&ids, warmup).await?),
    };
    let decode = session.profile_decode(1, n_tokens, warmup).await?;
    to_value(&serde_json::json!({ "decode": decode, "prefill": prefill }))
}

async fn generate_with(engine: &mut Engine, request: Request, on_event: &Function) -> Result<JsValue> {
    let mut generation = engine.generate(request)?;
    let mut finish = None;
    while let Some(event) = generation.next().await {
        let event = event?;
        let plain =
            |kind, text| EventObject { kind, text: Some(text), index: None, id: None, name: None, arguments: None };
        let object = match &event {
            Event::Reasoning(text) => plain("reasoning", text),
            Event::Content(text) => plain("content", text),
            Event::ToolCall(d) => EventObject {
                kind: "tool_call",
                text: None,
                index: Some(d.index),
                id: d.id.as_deref(),
                name: d.name.as_deref(),
                arguments: Some(&d.arguments),
            },
            Event::Done(f) => {
                finish = Some(f.clone());
                continue;
            }
        };
        let value = to_value(&object)?;
        on_event.call1(&JsValue::NULL, &value).map_err(|e| errors::from_js(&e, "the event callback"))?;
    }
    let finish = finish.ok_or_else(|| err!(Usage, "the generation ended without finishing"))?;
    to_value(&FinishObject::from(finish))
}

fn build_request(o: GenerateOptions) -> Result<Request> {
    let (format, tools) = structured_options(&o)?;
    let input = match (o.messages, o.prompt_ids) {
        (Some(messages), None) => Input::Messages(messages),
        (None, Some(ids)) => Input::Tokens { ids, starts_in_reasoning: o.starts_in_reasoning },
        (Some(_), Some(_)) => return Err(err!(Usage, "pass either messages or prompt_ids, not both")),
        (None, None) => return Err(err!(ChatBadMessages, "messages is required")),
    };
    let defaults = Sampling::default();
    let temperature = o.temperature.unwrap_or(defaults.temperature);
    let seed = match o.seed {
        None => js_sys::Math::random().to_bits(),
        Some(s) if s.is_finite() && s >= 0.0 && s.fract() == 0.0 => s as u64,
        Some(s) => return Err(err!(Usage, "seed must be a non-negative integer, not {s}")),
    };
    let sampling = Sampling {
        temperature,
        top_k: o.top_k.unwrap_or(defaults.top_k),
        top_p: o.top_p.unwrap_or(defaults.top_p),
        min_p: o.min_p.unwrap_or(defaults.min_p),
        seed,
    };
    // The same check as every shell's (`Request::validate`); temperature 0 is greedy once it has passed.
    sampling.validate()?;
    let sampling = if temperature == 0.0 { Sampling::greedy() } else { sampling };
    let request = Request {
        input,
        sampling,
        max_tokens: o.max_tokens,
        thinking_budget: o.thinking_budget,
        stop: o.stop,
        format,
        tools,
    };
    request.validate()?;
    Ok(request)
}

/// The request's response format or tools, parsed from the JSON texts the package sends (see [`GenerateOptions`]).
fn structured_options(o: &GenerateOptions) -> Result<(Option<OutputFormat>, Option<Tools>)> {
    let json = |text: &Option<String>, name: &str, code: crate::ErrorCode| -> Result<Option<serde_json::Value>> {
        text.as_deref()
            .map(|t| {
                serde_json::from_str(t).map_err(|e| crate::Error::new(code, format!("{name} is not valid JSON: {e}")))
            })
            .transpose()
    };
    let response_format = json(&o.response_format, "response_format", crate::ErrorCode::StructuredSchema)?;
    let format = OutputFormat::from_openai(response_format.as_ref(), o.grammar.as_deref(), o.regex.as_deref())?;
    let tools_list = json(&o.tools, "tools", crate::ErrorCode::ToolsInvalid)?;
    let choice = json(&o.tool_choice, "tool_choice", crate::ErrorCode::ToolsInvalid)?;
    let parallel = o.parallel_tool_calls.map(serde_json::Value::Bool);
    let tools = Tools::from_json(tools_list.as_ref(), choice.as_ref(), parallel.as_ref())?;
    if let Some(messages) = &o.messages {
        if let Some(i) = messages.iter().position(|m| m.role == "tool" && m.tool_call_id.is_none()) {
            return Err(err!(
                ToolsInvalid,
                "message {i}: a tool message needs the 'tool_call_id' of the call it answers"
            ));
        }
    }
    Ok((format, tools))
}

/// What `engine.info()` reports.
fn describe(engine: &Engine) -> serde_json::Value {
    let c = engine.config();
    let gpu = engine.gpu();
    let (features, offered, limits) = (gpu.features(), gpu.adapter_features(), gpu.limits());
    serde_json::json!({
        "model": {
            "architecture": c.arch.name(),
            "name": c.name,
            "n_vocab": c.n_vocab,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_head_kv": c.n_head_kv,
            "n_ff": c.n_ff,
            "context_length": c.context_length,
            "has_chat_template": engine.template().is_some(),
        },
        "context_length": engine.context_length(),
        "adapter": { "name": gpu.adapter().name, "backend": format!("{:?}", gpu.adapter().backend) },
        "features": {
            "shader_f16": features.shader_f16,
            "subgroups": features.subgroups,
            "adapter_shader_f16": offered.shader_f16,
            "adapter_subgroups": offered.subgroups,
        },
        "limits": {
            "max_buffer_size": limits.max_buffer_size,
            "max_storage_buffer_binding_size": limits.max_storage_buffer_binding_size,
            "binding_cap": gpu.max_binding_bytes(),
            "buffer_cap": gpu.max_buffer_bytes(),
        },
        "gpu_bytes": gpu.bytes_created(),
        "gpu_buffers": gpu.buffers_created(),
        "largest_binding": gpu.largest_binding(),
        "largest_buffer": gpu.largest_buffer(),
        "plan": plan_object(engine.memory_plan()),
    })
}

/// The memory plan as `engine.info().plan` gives it: totals, and the weights stored in more than one buffer.
fn plan_object(plan: &crate::model::MemoryPlan) -> serde_json::Value {
    let split: Vec<_> = plan
        .split_weights()
        .map(|w| serde_json::json!({ "name": w.name, "type": w.dtype.name(), "bytes": w.bytes(), "parts": w.parts.len() }))
        .collect();
    serde_json::json!({
        "total": plan.total(),
        "weights": plan.weight_bytes(),
        "weight_buffers": plan.weights.iter().map(|w| w.parts.len()).sum::<usize>(),
        "split_weights": split,
        "kv_cache": plan.kv.bytes(),
        "kv_type": plan.kv.dtype.name(),
        "context_length": plan.kv.ctx,
        "activations": plan.activation_bytes(),
        "scratch": plan.scratch_bytes,
        "largest_buffer": plan.largest_buffer(),
        "max_binding_bytes": plan.max_binding_bytes,
        "max_buffer_bytes": plan.max_buffer_bytes,
        "budget": plan.budget,
    })
}
