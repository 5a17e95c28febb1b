//! `webr1 synth NAME -o FILE.gguf`: a GGUF with random weights at the exact shape of one of the six R1 distills,
//! with a real tokenizer and chat template, for benchmarks (see `webr1::synth`).

use clap::Args;
use std::path::{Path, PathBuf};
use web_time::Instant;
use webr1::gguf::Gguf;
use webr1::synth::{SynthModel, SynthQuant, SynthShape, Vocabulary};
use webr1::{err, Result};

#[derive(Args)]
pub struct SynthArgs {
    /// r1-qwen-1.5b, r1-qwen-7b, r1-qwen-14b, r1-qwen-32b, r1-llama-8b or r1-llama-70b.
    name: String,
    /// The GGUF file to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[command(flatten)]
    model: SynthModelArgs,
    /// Write only the header and tensor table; the data is left a hole of zeros (no disk space where the file
    /// system has sparse files).
    #[arg(long)]
    header_only: bool,
}

/// What `synth` and `bench --shape` share: quantisation, seed and vocabulary.
#[derive(Args)]
pub struct SynthModelArgs {
    /// Q4_K_M (the community's per-tensor Q4_K/Q6_K mix), Q8_0, Q4_0 or F16.
    #[arg(long, default_value = "Q4_K_M")]
    quant: String,
    /// The random weights' seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A GGUF whose tokenizer and chat template to use (needed for llama shapes: llama.cpp's
    /// ggml-vocab-llama-bpe.gguf); R1-Distill-Qwen's is built in.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

impl SynthModelArgs {
    /// The model of shape `name` these arguments describe.
    pub fn model(&self, name: &str) -> Result<SynthModel> {
        let shape = SynthShape::named(name)?;
        let quant = SynthQuant::named(&self.quant)?;
        let vocab = match (&self.vocab, shape.arch) {
            (Some(path), _) => Vocabulary::from_gguf(&Gguf::read_file(path)?, &path.display().to_string())?,
            (None, webr1::config::Architecture::Qwen2) => Vocabulary::r1_qwen()?,
            (None, webr1::config::Architecture::Llama) => {
                return Err(err!(
                    SynthVocab,
                    "{name} needs a Llama-3 vocabulary: pass --vocab ggml-vocab-llama-bpe.gguf (llama.cpp's, from \
                     its models/ folder)"
                ))
            }
        };
        SynthModel::new(shape, quant, self.seed, vocab)
    }
}

pub fn run(args: &SynthArgs) -> Result<()> {
    let model = args.model.model(&args.name)?;
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("writing {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    webr1::synth::write_file(&model, &args.output, args.header_only, threads, &progress)?;
    bar.finish_and_clear();
    report(&model, &args.output, args.header_only, start.elapsed().as_secs_f64());
    Ok(())
}

fn report(model: &SynthModel, path: &Path, header_only: bool, seconds: f64) {
    let bytes = model.file_len();
    let what = format!(
        "{} {} (seed {}): {} tensors, {:.2} B parameters, {}",
        model.shape.name,
        model.quant.name(),
        model.seed,
        model.tensors.len(),
        model.n_params() as f64 / 1e9,
        super::info::human_bytes(bytes)
    );
    if header_only {
        println!("wrote {}: {what}; header and tensor table only ({} bytes)", path.display(), model.header().len());
    } else {
        let rate = bytes as f64 / 1e6 / seconds.max(1e-9);
        println!("wrote {}: {what} in {seconds:.1} s ({rate:.0} MB/s)", path.display());
    }
}
