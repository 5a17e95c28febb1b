//! The command line: argument parsing, exit codes, and one module per subcommand.
//!
//! Exit codes: 0 success, 1 a user error (bad file, bad input) reported in one line, 2 bad usage (from clap).

mod info;
mod perplexity;
mod run;
mod text;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    Info {
        /// Path of the GGUF file (the first part of a split model).
        model: PathBuf,
    },
    /// Print the token ids of a text, as llama.cpp's tokenizer gives them.
    Tokenize(text::TokenizeArgs),
    /// Render a conversation with the model's own chat template, exactly as the template writes it.
    Template(text::TemplateArgs),
    /// Answer one prompt: the reasoning, then the answer, streamed.
    Run(run::RunArgs),
    /// Score a text: perplexity over windows of N tokens, as llama.cpp's llama-perplexity computes it.
    Perplexity(perplexity::PerplexityArgs),
}

pub fn main() -> ExitCode {
    // Mesa's device-select Vulkan layer complains on stderr when XDG_RUNTIME_DIR is unset; it chooses nothing for us.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model } => info::run(&model),
        Command::Tokenize(args) => text::tokenize(&args),
        Command::Template(args) => text::template(&args),
        Command::Run(args) => run::run(&args),
        Command::Perplexity(args) => perplexity::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webr1: {} [{}]", e.message, e.code());
            ExitCode::from(1)
        }
    }
}

/// Reads the header of a model file and, for a split model, of all its parts (which must sit beside the first).
pub(crate) fn open_model(path: &std::path::Path) -> webr1::Result<SplitGguf> {
    webr1::gguf::split::open_files(path).map(|(model, _)| model)
}
