//! `webr1 run MODEL -p TEXT`: one answer from a model, streamed: reasoning first (dimmed on a terminal, on standard
//! error when standard output is piped), then the answer; speeds on standard error. Ctrl-C stops the answer: what was
//! written stays, the line is ended, the usage line follows and the exit code is 130.

use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::Path;
use webr1::chat::{prompt_starts_in_reasoning, Message};
use webr1::engine::{Event, Finish, FinishReason, Input, OutputFormat};
use webr1::{err, Result};

#[derive(Args)]
pub struct RunArgs {
    /// A GGUF file, an https:// URL or hf:OWNER/REPO/FILE.gguf (default: DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M).
    model: Option<String>,
    /// The user's message (or, with --raw, the whole prompt).
    #[arg(short, long)]
    prompt: String,
    /// A system message before the user's.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    generation: super::GenerationArgs,
    /// Use the prompt as given: no chat template, turn markers parsed, BOS as the model's metadata says.
    #[arg(long)]
    raw: bool,
    /// Print one OpenAI-shaped `chat.completion` object (with the generated `token_ids`) instead of streaming.
    #[arg(long)]
    json: bool,
    /// Do not show the reasoning.
    #[arg(long)]
    hide_reasoning: bool,
    /// Constrain the answer (after the reasoning) to JSON valid for the JSON schema in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    json_schema: Option<std::path::PathBuf>,
    /// Constrain the answer (after the reasoning) to the Lark grammar in FILE (llguidance's syntax).
    #[arg(long, value_name = "FILE")]
    grammar: Option<std::path::PathBuf>,
}

/// The `--json-schema` or `--grammar` constraint, read from its file.
fn output_format(args: &RunArgs) -> Result<Option<OutputFormat>> {
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|e| err!(IoRead, "cannot read {}: {e}", path.display()));
    if let Some(path) = &args.json_schema {
        let schema: serde_json::Value = serde_json::from_str(&read(path)?)
            .map_err(|e| err!(StructuredSchema, "{} is not a JSON schema: {e}", path.display()))?;
        return Ok(Some(OutputFormat::JsonSchema(schema)));
    }
    match &args.grammar {
        Some(path) => Ok(Some(OutputFormat::Lark(read(path)?))),
        None => Ok(None),
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    args.generation.validate()?;
    let format = output_format(args)?;
    if let Some(OutputFormat::JsonSchema(schema)) = &format {
        webr1::engine::check_schema_bounds(schema)?;
    }
    let path = super::model::resolve(args.model.as_deref())?;
    let mut engine = super::load_engine(&path, args.generation.engine_options())?;
    let abort = engine.abort_handle();
    ctrlc::set_handler(move || abort.abort()).map_err(|e| err!(Usage, "cannot handle Ctrl-C: {e}"))?;
    pollster::block_on(run_async(args, &mut engine, &path, format))
}

async fn run_async(
    args: &RunArgs,
    engine: &mut webr1::engine::Engine,
    path: &Path,
    format: Option<OutputFormat>,
) -> Result<()> {
    let input = if args.raw {
        let ids = engine.tokenizer().encode_trusted(&args.prompt, true)?;
        Input::Tokens { ids, starts_in_reasoning: prompt_starts_in_reasoning(&args.prompt) }
    } else {
        let mut messages: Vec<Message> = args.system.iter().map(Message::system).collect();
        messages.push(Message::user(&args.prompt));
        Input::Messages(messages)
    };
    let mut request = args.generation.request(input);
    request.format = format;
    let mut out = Output::new(args.hide_reasoning, args.json);
    let mut generation = engine.generate(request)?;
    while let Some(event) = generation.next().await {
        match event? {
            Event::Reasoning(text) => out.reasoning(&text),
            Event::Content(text) => out.content(&text),
            Event::ToolCall(_) => {}
            Event::Done(finish) => {
                out.done(&finish, path)?;
                if finish.reason == FinishReason::Abort {
                    return Err(err!(Aborted, "stopped by Ctrl-C"));
                }
            }
        }
    }
    Ok(())
}

/// Where the text goes: a terminal sees both parts, a pipe gets the answer alone.
struct Output {
    tty: bool,
    hide_reasoning: bool,
    json: bool,
    reasoning: String,
    content: String,
    in_reasoning: bool,
}

impl Output {
    fn new(hide_reasoning: bool, json: bool) -> Output {
        let tty = std::io::stdout().is_terminal();
        Output { tty, hide_reasoning, json, reasoning: String::new(), content: String::new(), in_reasoning: false }
    }

    fn reasoning(&mut self, text: &str) {
        self.reasoning.push_str(text);
        if self.json || self.hide_reasoning {
            return;
        }
        if self.tty {
            if !self.in_reasoning {
                print!("\x1b[2m");
                self.in_reasoning = true;
            }
            print!("{text}");
            let _ = std::io::stdout().flush();
        } else {
            eprint!("{text}");
        }
    }

    fn content(&mut self, text: &str) {
        if self.content.is_empty() && self.in_reasoning {
            print!("\x1b[0m\n\n");
            self.in_reasoning = false;
        }
        self.content.push_str(text);
        if !self.json {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }

    fn done(&mut self, finish: &Finish, model: &Path) -> Result<()> {
        if self.in_reasoning {
            print!("\x1b[0m");
        }
        if !self.tty && !self.json && !self.hide_reasoning && !self.reasoning.is_empty() {
            eprintln!(); // the reasoning went to standard error: end its line before the usage line
        }
        let u = &finish.usage;
        if self.json {
            let meta = super::openai::Meta::new("chatcmpl-run".into(), super::model::display_name(model));
            let mut object = super::openai::completion(&meta, &self.content, &self.reasoning, finish);
            object["token_ids"] = serde_json::json!(finish.token_ids);
            let text = serde_json::to_string(&object).map_err(|e| err!(IoWrite, "cannot write JSON: {e}"))?;
            println!("{text}");
        } else {
            println!();
        }
        eprintln!(
            "webr1: {} prompt tokens ({} cached) at {:.1} tok/s · {} generated at {:.1} tok/s · finish: {}{}",
            u.prompt_tokens,
            u.cached_tokens,
            u.prefill_tokens_per_second,
            u.completion_tokens,
            u.decode_tokens_per_second,
            finish.reason.as_str(),
            finish.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
        Ok(())
    }
}
