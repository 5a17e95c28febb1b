//! `webr1 chat MODEL`: a conversation in the terminal. Each turn re-renders the whole conversation with the chat
//! template; the engine finds the cached prefix and computes only the new tokens. Ctrl-C stops the answer being
//! written (the turn is dropped) and returns to the prompt; Ctrl-D or `/exit` leaves.

use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use webr1::chat::Message;
use webr1::engine::{AbortHandle, Engine, Event, FinishReason, Input};
use webr1::{err, ErrorCode, Result};

#[derive(Args)]
pub struct ChatArgs {
    /// A GGUF file, an https:// URL or hf:OWNER/REPO/FILE.gguf (default: DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M).
    model: Option<String>,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    generation: super::GenerationArgs,
    /// Do not show the reasoning.
    #[arg(long)]
    hide_reasoning: bool,
}

const HELP: &str = "commands: /reset (start a new conversation), /exit (or Ctrl-D); Ctrl-C stops an answer";

pub fn run(args: &ChatArgs) -> Result<()> {
    args.generation.validate()?;
    let path = super::model::resolve(args.model.as_deref())?;
    let mut engine = super::load_engine(&path, args.generation.engine_options())?;
    let interrupts = Interrupts::install(engine.abort_handle())?;
    let tty = std::io::stdout().is_terminal();
    eprintln!("webr1: chatting with {} · {HELP}", super::model::display_name(&path));
    let opening: Vec<Message> = args.system.iter().map(Message::system).collect();
    let mut messages = opening.clone();
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        print!("> ");
        flush();
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err!(IoRead, "cannot read standard input: {e}")),
        }
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = opening.clone();
                println!("(a new conversation)");
                continue;
            }
            "/help" => {
                println!("{HELP}");
                continue;
            }
            text => messages.push(Message::user(text.trim_end_matches(['\r', '\n']))),
        }
        match answer(&mut engine, args, &messages, tty, &interrupts)? {
            Some(content) => messages.push(Message::assistant(content)),
            None => {
                messages.pop();
            }
        }
    }
    println!();
    Ok(())
}

/// Generates one answer; `None` when Ctrl-C stopped it.
fn answer(
    engine: &mut Engine,
    args: &ChatArgs,
    messages: &[Message],
    tty: bool,
    interrupts: &Interrupts,
) -> Result<Option<String>> {
    let request = args.generation.request(Input::Messages(messages.to_vec()));
    let (mut content, mut dimmed) = (String::new(), false);
    interrupts.generating(true);
    let result = pollster::block_on(async {
        let mut generation = engine.generate(request)?;
        while let Some(event) = generation.next().await {
            match event? {
                Event::Reasoning(text) if !args.hide_reasoning => {
                    if tty && !dimmed {
                        print!("\x1b[2m");
                        dimmed = true;
                    }
                    print!("{text}");
                    flush();
                }
                Event::Reasoning(_) | Event::ToolCall(_) => {}
                Event::Content(text) => {
                    if dimmed {
                        print!("\x1b[0m\n\n");
                        dimmed = false;
                    }
                    content.push_str(&text);
                    print!("{text}");
                    flush();
                }
                Event::Done(finish) => return Ok(finish),
            }
        }
        Err(err!(Usage, "the generation ended without finishing"))
    });
    interrupts.generating(false);
    if dimmed {
        print!("\x1b[0m");
    }
    println!();
    let finish = match result {
        Err(e) if e.code == ErrorCode::ContextFull => {
            eprintln!("webr1: {} [{}]; /reset starts a new conversation", e.message, e.code());
            return Ok(None);
        }
        other => other?,
    };
    let u = &finish.usage;
    // One write, so that a reader of the terminal never sees half of the line.
    let line = format!(
        "webr1: prefill {} new tokens ({} of {} cached) at {:.1} tok/s · {} generated at {:.1} tok/s · {}\n",
        u.prompt_tokens - u.cached_tokens,
        u.cached_tokens,
        u.prompt_tokens,
        u.prefill_tokens_per_second,
        u.completion_tokens,
        u.decode_tokens_per_second,
        finish.reason.as_str()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    if finish.reason == FinishReason::Abort {
        eprintln!("webr1: (stopped; this turn is left out of the conversation)");
        return Ok(None);
    }
    Ok(Some(content))
}

/// Ctrl-C: aborts the answer being generated; at the prompt it only reminds how to leave.
struct Interrupts {
    generating: Arc<AtomicBool>,
}

impl Interrupts {
    fn install(abort: AbortHandle) -> Result<Interrupts> {
        let generating = Arc::new(AtomicBool::new(false));
        let flag = generating.clone();
        ctrlc::set_handler(move || {
            if flag.load(Ordering::SeqCst) {
                abort.abort();
            } else {
                eprint!("\n(/exit or Ctrl-D leaves)\n> ");
            }
        })
        .map_err(|e| err!(Usage, "cannot handle Ctrl-C: {e}"))?;
        Ok(Interrupts { generating })
    }

    fn generating(&self, on: bool) {
        self.generating.store(on, Ordering::SeqCst);
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}
