//! The command line: argument parsing, exit codes, and one module per subcommand.
//!
//! Exit codes: 0 success, 1 a user error (bad file, bad input) reported in one line, 2 bad usage (from clap), 130 a
//! `run` stopped by Ctrl-C. A bug (a Rust panic) is reported in one line too, never with a backtrace, and exits with 1.

mod bench;
mod cache;
mod chat;
mod download;
mod info;
mod model;
mod openai;
mod perplexity;
mod run;
mod serve;
mod synth;
mod text;
mod web;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use webr1::gguf::split::SplitGguf;

#[derive(Parser)]
#[command(name = "webr1", version, about = "DeepSeek-R1 distilled reasoning models on your own GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF model's architecture, size, quantisation, tokenizer and chat template.
    Info(info::InfoArgs),
    /// Print the token ids of a text, as llama.cpp's tokenizer gives them.
    Tokenize(text::TokenizeArgs),
    /// Render a conversation with the model's own chat template, exactly as the template writes it.
    Template(text::TemplateArgs),
    /// Answer one prompt: the reasoning, then the answer, streamed.
    Run(run::RunArgs),
    /// Talk with a model: a multi-turn conversation in the terminal.
    Chat(chat::ChatArgs),
    /// Serve a model over HTTP with OpenAI's chat completions API.
    Serve(serve::ServeArgs),
    /// Measure prompt processing and generation speed, as llama-bench does.
    Bench(bench::BenchArgs),
    /// Serve the demo site and the npm package on localhost.
    Web(web::WebArgs),
    /// Score a text: perplexity over windows of N tokens, as llama.cpp's llama-perplexity computes it.
    Perplexity(perplexity::PerplexityArgs),
    /// Write a GGUF with random weights at the exact shape of an R1 distill (r1-qwen-7b, r1-llama-8b, ...).
    Synth(synth::SynthArgs),
}

pub fn main() -> ExitCode {
    // Mesa's device-select Vulkan layer complains on stderr when XDG_RUNTIME_DIR is unset; it chooses nothing for us.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let what = what.lines().next().unwrap_or_default().to_string();
        if what.starts_with("failed printing to std") {
            // A closed pipe or a full disk behind standard output: not a bug, and nothing more to say.
            eprintln!("webr1: cannot write the output: {what} [io.write]");
        } else {
            eprintln!("webr1: internal error: {what} (a bug in webr1; please report it) [internal]");
        }
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(move || dispatch(cli.command)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("webr1: {} [{}]", e.message, e.code());
            // Stopped by Ctrl-C (`run`): the shell's convention for SIGINT, 128 + 2.
            ExitCode::from(if e.code == webr1::ErrorCode::Aborted { 130 } else { 1 })
        }
        Err(_) => ExitCode::from(1),
    }
}

fn dispatch(command: Command) -> webr1::Result<()> {
    match command {
        Command::Info(args) => info::run(&args),
        Command::Tokenize(args) => text::tokenize(&args),
        Command::Template(args) => text::template(&args),
        Command::Run(args) => run::run(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Web(args) => web::run(&args),
        Command::Perplexity(args) => perplexity::run(&args),
        Command::Synth(args) => synth::run(&args),
    }
}

/// Reads the header of a model file and, for a split model, of all its parts (which must sit beside the first).
pub(crate) fn open_model(path: &std::path::Path) -> webr1::Result<SplitGguf> {
    webr1::gguf::split::open_files(path).map(|(model, _)| model)
}

/// How `run` and `chat` generate: sampling, lengths, context and the f32 switch.
#[derive(clap::Args)]
pub(crate) struct GenerationArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.6)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens to generate at most per answer (reasoning and answer together).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Tokens of context to allocate, at most the model's own (default: the largest that fits the GPU and
    /// --gpu-memory, up to the model's own and 32768).
    #[arg(long)]
    ctx: Option<usize>,
    /// After this many reasoning tokens, close the reasoning and answer.
    #[arg(long)]
    think_budget: Option<usize>,
    /// Use only f32 shaders (no shader-f16, no subgroups), as browsers without those features do.
    #[arg(long)]
    f32: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// GPU memory and limits, for every command that loads a model (README: "Memory planning", "Phone-sized limits").
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct DeviceArgs {
    /// GPU memory webr1 may use in all, in bytes or with a suffix (8GiB, 512MiB, 7.5G): a model and context that
    /// need more are refused before loading; with no --ctx the context is the largest that fits.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = size("--gpu-memory"))]
    gpu_memory: Option<u64>,
    /// Cap one storage binding (WebGPU's maxStorageBufferBindingSize) below the GPU's, e.g. 128MiB as on many
    /// phones: larger weights are split across more buffers.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = size("--max-binding-size"))]
    max_binding_size: Option<u64>,
    /// Cap one buffer (WebGPU's maxBufferSize) below the GPU's, e.g. 256MiB.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = size("--max-buffer-size"))]
    max_buffer_size: Option<u64>,
    /// Prompt tokens per prefill step (fewer where one GPU binding cannot hold a step's activations).
    #[arg(long, value_name = "N", default_value_t = webr1::engine::DEFAULT_PREFILL_BATCH as u64,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch_size: u64,
}

/// A clap parser for a size argument ([`webr1::model::plan::parse_bytes`]).
fn size(flag: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |text| webr1::model::plan::parse_bytes(text, flag).map_err(|e| e.message)
}

impl GenerationArgs {
    /// A request for `input` with these settings.
    pub(crate) fn request(&self, input: webr1::engine::Input) -> webr1::engine::Request {
        let mut request = webr1::engine::Request::new(input);
        request.sampling = webr1::engine::Sampling {
            temperature: self.temperature,
            top_k: if self.temperature == 0.0 { 1 } else { self.top_k },
            top_p: self.top_p,
            min_p: self.min_p,
            seed: self.seed,
        };
        request.max_tokens = self.max_tokens;
        request.thinking_budget = self.think_budget;
        request
    }

    /// Checks the sampling values and the token limit as the engine will (`Request::validate`), before a model is
    /// loaded for nothing.
    pub(crate) fn validate(&self) -> webr1::Result<()> {
        self.request(webr1::engine::Input::Tokens { ids: Vec::new(), starts_in_reasoning: false }).validate()
    }

    pub(crate) fn engine_options(&self) -> webr1::engine::EngineOptions {
        engine_options(self.f32, self.ctx, &self.device)
    }
}

/// The options every command that computes shares: the f32 switch, the context length, the memory budget and the
/// limit caps.
pub(crate) fn engine_options(force_f32: bool, ctx: Option<usize>, device: &DeviceArgs) -> webr1::engine::EngineOptions {
    webr1::engine::EngineOptions {
        gpu: webr1::gpu::GpuOptions {
            force_f32,
            max_binding_bytes: device.max_binding_size,
            max_buffer_bytes: device.max_buffer_size,
            ..webr1::gpu::GpuOptions::default()
        },
        context_length: ctx,
        gpu_memory: device.gpu_memory,
        prefill_batch: device.batch_size as usize,
        ..webr1::engine::EngineOptions::default()
    }
}

/// Loads a model onto the GPU with a progress bar on standard error.
pub(crate) fn load_engine(
    path: &std::path::Path,
    options: webr1::engine::EngineOptions,
) -> webr1::Result<webr1::engine::Engine> {
    load_source(&mut webr1::engine::FileSource::new(path), options)
}

/// Loads a model from any source (a file, a synthetic model) with a progress bar on standard error.
pub(crate) fn load_source(
    source: &mut impl webr1::engine::ModelSource,
    options: webr1::engine::EngineOptions,
) -> webr1::Result<webr1::engine::Engine> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let engine = pollster::block_on(webr1::engine::Engine::load(source, options, |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    }));
    bar.finish_and_clear();
    engine
}
