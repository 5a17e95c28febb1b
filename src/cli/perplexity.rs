//! `webr1 perplexity MODEL -f FILE`: the perplexity of a text as llama.cpp's `llama-perplexity` computes and prints it
//! (see [`webr1::engine::perplexity`]): the running estimate after each window, then the final estimate with its error.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use webr1::engine::{perplexity, PerplexityOptions};
use webr1::{err, Result};

#[derive(Args)]
pub struct PerplexityArgs {
    /// A GGUF path, an https:// URL or hf:owner/repo/file.gguf (default: DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M).
    model: Option<String>,
    /// The text to score (UTF-8).
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per window; the second half of each is scored.
    #[arg(short, long, default_value_t = 512)]
    ctx: usize,
    /// Windows to score at most (default: every whole window of the text).
    #[arg(long)]
    chunks: Option<usize>,
    /// Use only f32 shaders (no shader-f16, no subgroups), as browsers without those features do.
    #[arg(long)]
    f32: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
}

pub fn run(args: &PerplexityArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).map_err(|e| err!(IoRead, "cannot read {}: {e}", args.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        err!(Usage, "{} is not UTF-8 text (byte {})", args.file.display(), e.utf8_error().valid_up_to())
    })?;
    let path = super::model::resolve(args.model.as_deref())?;
    let mut engine = super::load_engine(&path, super::engine_options(args.f32, Some(args.ctx), &args.device))?;
    eprintln!("perplexity: {} on {}", path.display(), engine.gpu().summary());
    pollster::block_on(async {
        let start = Instant::now();
        let options = PerplexityOptions { ctx: args.ctx, chunks: args.chunks };
        let result = perplexity(&mut engine, &text, options, |chunk, ppl| {
            if chunk == 1 {
                eprintln!("perplexity: {:.2} seconds per window", start.elapsed().as_secs_f64());
            }
            print!("[{chunk}]{ppl:.4},");
            let _ = std::io::stdout().flush();
        })
        .await?;
        println!();
        eprintln!(
            "perplexity: {} tokens, {} windows of {}, {} predictions scored in {:.1} s",
            result.n_tokens,
            result.running.len(),
            result.ctx,
            result.scored,
            start.elapsed().as_secs_f64()
        );
        println!("Final estimate: PPL = {:.4} +/- {:.5}", result.ppl, result.error);
        Ok(())
    })
}
