//! The engine every front end uses (ARCHITECTURE.md §9): load a model, generate a stream of events, abort.
//!
//! It is async and target-agnostic: the browser package awaits it on WebGPU, the CLI and the server drive it with
//! `pollster` natively. Generation works on token ids: the prompt is the chat template's rendering, tokenised with
//! control tokens only where the template wrote them; the output is detokenised without ever splitting a character and
//! split into R1's reasoning and its answer. A request may constrain its answer (a JSON schema, a grammar) or offer
//! tools: `constrain` compiles the constraint and computes each step's token mask, `structured` decides when it
//! applies (README.md, "Structured output").

mod constrain;
mod generate;
mod load;
mod perplexity;
mod profile;
mod request;
mod session;
mod structured;

pub use constrain::{
    check_schema_bounds, with_layout, Compiler, ConstraintRun, OutputFormat, MAX_ENUM, MAX_SCHEMA_DEPTH,
};
pub use generate::{Event, Finish, FinishReason, Generation, Input, Request, Sampling, Usage};
pub use load::{ByteStream, ModelSource, Opened, MAX_RESUMES};
#[cfg(not(target_arch = "wasm32"))]
pub use load::{FileSource, FileStream};
pub use perplexity::{perplexity, teacher_forced, Perplexity, PerplexityOptions};
pub use profile::{weight_bytes_needed, ClassRow, OpRow, Profile};
pub use request::{check_prompt_fits, context_length};
pub(crate) use session::scratch_bytes as session_scratch_bytes;
pub use session::step_batches;
pub use session::{LoopStats, Session, TopLogits, DEFAULT_PREFILL_BATCH};

use crate::chat::{ChatTemplate, Message, Prompt, ToolFormat, Tools};
use crate::config::ModelConfig;
use crate::gguf::split::SplitGguf;
use crate::gguf::TensorInfo;
use crate::gpu::{Gpu, GpuOptions};
use crate::model::{MemoryPlan, PlanRequest, Weights};
use crate::tokenizer::Tokenizer;
use crate::{err, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub gpu: GpuOptions,
    /// Tokens of context to allocate: at most the model's own (a longer one is a `usage` error). `None` takes the
    /// largest that fits the device and [`EngineOptions::gpu_memory`], up to the model's own and
    /// [`EngineOptions::max_context`] (see [`crate::model::plan`]).
    pub context_length: Option<usize>,
    /// The most tokens of context chosen when none is given: [`DEFAULT_MAX_CONTEXT`].
    pub max_context: usize,
    /// Bytes of GPU memory the model may use in all (weights, KV cache, activations); a model and context that need
    /// more are refused before any weight buffer is created (`model.too_large`).
    pub gpu_memory: Option<u64>,
    /// Prompt tokens per prefill dispatch list.
    pub prefill_batch: usize,
}

/// The longest context chosen when none is given: 32768 tokens natively, 8192 in the browser (a tab's GPU memory is
/// shared with the page and other tabs).
#[cfg(not(target_arch = "wasm32"))]
pub const DEFAULT_MAX_CONTEXT: usize = 32768;
/// The longest context chosen when none is given: 32768 tokens natively, 8192 in the browser (a tab's GPU memory is
/// shared with the page and other tabs).
#[cfg(target_arch = "wasm32")]
pub const DEFAULT_MAX_CONTEXT: usize = 8192;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            gpu: GpuOptions::default(),
            context_length: None,
            max_context: DEFAULT_MAX_CONTEXT,
            gpu_memory: None,
            prefill_batch: DEFAULT_PREFILL_BATCH,
        }
    }
}

/// Where loading stands: `phase` is `"header"` while the GGUF headers are read (`done` bytes of the file at hand,
/// `total` its length or 0 when unknown), then `"upload"` while weights go to the GPU (`done` of `total` bytes of
/// tensor data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// Stops a running generation from another thread or task.
#[derive(Debug, Clone, Default)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// What [`Engine::prepare`] reads from the headers before anything is allocated.
struct Prepared {
    config: ModelConfig,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    plan: MemoryPlan,
}

/// A loaded model with its tokenizer and chat template.
pub struct Engine {
    session: Session,
    plan: MemoryPlan,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    abort: AbortHandle,
    /// Structured output's grammar compiler for this vocabulary, built on first use.
    compiler: Option<Arc<Compiler>>,
}

impl Engine {
    /// Loads a GGUF file (or the first part of a split model, with its parts beside it) onto a new GPU device, streamed
    /// in 8 MiB chunks through [`Engine::load`].
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn load_file(
        path: &std::path::Path,
        options: EngineOptions,
        progress: impl FnMut(LoadProgress),
    ) -> Result<Engine> {
        Self::load(&mut FileSource::new(path), options, progress).await
    }

    /// The engine around weights that are on the GPU: the KV cache and the first dispatch lists are built here.
    async fn assemble(gpu: Gpu, weights: Weights, prepared: Prepared, prefill_batch: usize) -> Result<Engine> {
        let Prepared { config, tokenizer, template, plan } = prepared;
        let ctx = plan.kv.ctx;
        let scope = gpu.alloc_scope();
        let session = Session::new(gpu, config, weights, ctx, prefill_batch);
        scope.finish(&format!("the KV cache for {ctx} tokens")).await?;
        let session = session?;
        session.gpu.check()?;
        let tokenizer = Arc::new(tokenizer);
        Ok(Engine { session, plan, tokenizer, template, abort: AbortHandle::default(), compiler: None })
    }

    /// Reads config, tokenizer and template, and plans the model's memory on this device: the context rule and the
    /// budget applied, everything checked against the device's limits (see [`crate::model::plan`]).
    fn prepare(gpu: &Gpu, model: &SplitGguf, options: &EngineOptions) -> Result<Prepared> {
        let tensors: Vec<_> = model.tensors().map(|(_, t)| t.clone()).collect();
        let config = ModelConfig::new(model.metadata(), &tensors)?;
        let tokenizer = Tokenizer::from_metadata(model.metadata())?;
        let template = match model.metadata().get_str("tokenizer.chat_template")? {
            Some(_) => Some(ChatTemplate::from_metadata(model.metadata())?),
            None => None,
        };
        let plan = Self::plan(gpu, &config, &tensors, options)?;
        Ok(Prepared { config, tokenizer, template, plan })
    }

    /// The memory plan of a model (its config and tensor table) on `gpu` with `options`: what [`Engine::load`] would
    /// allocate, or the error it would give before allocating anything.
    pub fn plan(
        gpu: &Gpu,
        config: &ModelConfig,
        tensors: &[TensorInfo],
        options: &EngineOptions,
    ) -> Result<MemoryPlan> {
        let request = PlanRequest {
            context: options.context_length,
            max_context: options.max_context,
            prefill_batch: options.prefill_batch.max(1),
            budget: options.gpu_memory,
        };
        MemoryPlan::choose(gpu, config, tensors, request)
    }

    /// The memory plan the model was loaded with.
    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.plan
    }

    pub fn config(&self) -> &ModelConfig {
        &self.session.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn gpu(&self) -> &Gpu {
        &self.session.gpu
    }

    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The low-level session (feed tokens, read logits): for tests, perplexity and benchmarks.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Tokens of context allocated.
    pub fn context_length(&self) -> usize {
        self.session.cache.ctx()
    }

    /// A handle that aborts the running generation.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// The prompt of a conversation, rendered with the model's template and tokenised safely.
    pub fn prompt(&self, messages: &[Message]) -> Result<Prompt> {
        let template = self
            .template
            .as_ref()
            .ok_or_else(|| err!(ChatNoTemplate, "this model has no chat template; pass a raw prompt instead"))?;
        template.prompt(&self.tokenizer, messages)
    }

    /// The prompt of a conversation with tools, in `format` (see [`crate::chat::tools`]).
    pub fn prompt_with_tools(&self, messages: &[Message], tools: &Tools, format: ToolFormat) -> Result<Prompt> {
        let template = self
            .template
            .as_ref()
            .ok_or_else(|| err!(ChatNoTemplate, "this model has no chat template; tools need one"))?;
        let (messages, listed) = format.prepare(messages, tools);
        template.prompt_with_tools(&self.tokenizer, &messages, listed.as_ref())
    }

    /// How this model writes tool calls (from its chat template; the generic format without one).
    pub fn tool_format(&self) -> ToolFormat {
        self.template.as_ref().map_or(ToolFormat::Hermes { native: false }, ToolFormat::for_template)
    }

    /// Structured output's compiler for this model's vocabulary (built on first use, then shared): for callers that
    /// check a request's schema before queueing it.
    pub fn compiler(&mut self) -> Result<Arc<Compiler>> {
        if let Some(compiler) = &self.compiler {
            return Ok(compiler.clone());
        }
        let compiler = Arc::new(Compiler::new(self.tokenizer.clone())?);
        self.compiler = Some(compiler.clone());
        Ok(compiler)
    }

    /// Starts generating; pull events with [`Generation::next`].
    pub fn generate(&mut self, request: Request) -> Result<Generation<'_>> {
        Generation::new(self, request)
    }
}
