//! `webr1 tokenize` and `webr1 template`: the model's text handling on its own, in shapes that compare directly with
//! llama.cpp's.

use clap::Args;
use std::io::{Read, Write};
use std::path::PathBuf;
use webr1::chat::{ChatTemplate, Message};
use webr1::tokenizer::Tokenizer;
use webr1::{err, Result};

#[derive(Args)]
pub struct TokenizeArgs {
    /// A GGUF file, an https:// URL or hf:OWNER/REPO/FILE.gguf.
    model: String,
    /// The text to tokenise: a file, or `-` (the default) for standard input. Read as is, newlines included.
    file: Option<PathBuf>,
    /// Parse control tokens (turn markers) in the text instead of treating them as plain text.
    #[arg(long)]
    special: bool,
    /// Put the vocabulary's BOS token first.
    #[arg(long)]
    bos: bool,
    /// Print one JSON array of ids and nothing else.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TemplateArgs {
    /// A GGUF file, an https:// URL or hf:OWNER/REPO/FILE.gguf.
    model: String,
    /// A JSON file holding an array of {"role", "content"} messages (`-` for standard input).
    messages: PathBuf,
    /// Leave out the generation prompt (the assistant turn's opening).
    #[arg(long)]
    no_generation_prompt: bool,
}

fn read_input(path: Option<&PathBuf>) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match path {
        Some(p) if p.as_os_str() != "-" => {
            bytes = std::fs::read(p).map_err(|e| err!(IoRead, "cannot read {}: {e}", p.display()))?;
        }
        _ => {
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| err!(IoRead, "cannot read standard input: {e}"))?;
        }
    }
    Ok(bytes)
}

fn load_tokenizer(model: &str) -> Result<Tokenizer> {
    Tokenizer::from_metadata(super::open_model(&super::model::resolve(Some(model))?)?.metadata())
}

pub fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&args.model)?;
    let bytes = read_input(args.file.as_ref())?;
    let text = String::from_utf8(bytes).map_err(|_| err!(Usage, "the text to tokenise is not UTF-8"))?;
    let mut ids = if args.special { tok.encode_trusted(&text, false)? } else { tok.encode(&text)? };
    if args.bos {
        let bos = tok.bos.ok_or_else(|| err!(Usage, "this vocabulary has no BOS token"))?;
        ids.insert(0, bos);
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))
    } else {
        ids.iter()
            .try_for_each(|&id| writeln!(out, "{id:>6} -> '{}'", String::from_utf8_lossy(tok.piece_with_special(id))))
    };
    written.map_err(|e| err!(IoWrite, "cannot write to standard output: {e}"))
}

pub fn template(args: &TemplateArgs) -> Result<()> {
    let gguf = super::open_model(&super::model::resolve(Some(&args.model))?)?;
    let json = read_input(Some(&args.messages))?;
    let messages: Vec<Message> = serde_json::from_slice(&json).map_err(|e| {
        err!(
            ChatBadMessages,
            "{}: expected a JSON array of {{\"role\", \"content\"}} objects: {e}",
            args.messages.display()
        )
    })?;
    let template = ChatTemplate::from_metadata(gguf.metadata())?;
    let rendered = template.render(&messages, !args.no_generation_prompt)?;
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| err!(IoWrite, "cannot write to standard output: {e}"))
}
