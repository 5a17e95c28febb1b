//! `webr1 info MODEL`: what a GGUF holds, read from its header alone; with `--plan`, what loading it would allocate
//! on this machine's GPU (see `webr1::model::plan`), or the error loading would give, before anything is allocated.

use clap::Args;
use std::collections::BTreeMap;
use std::path::Path;
use webr1::config::ModelConfig;
use webr1::gguf::split::SplitGguf;
use webr1::gguf::TensorInfo;
use webr1::quant::GgmlType;
use webr1::tokenizer::Tokenizer;
use webr1::Result;

#[derive(Args)]
pub struct InfoArgs {
    /// A GGUF file (the first part of a split model), an https:// URL or hf:OWNER/REPO/FILE.gguf.
    model: Option<String>,
    /// Also print the memory plan on this GPU: how each weight is split across buffers, the KV cache, activations
    /// and scratch, checked against the GPU's limits and --gpu-memory.
    #[arg(long)]
    plan: bool,
    /// With --plan: the context to plan for (default: as `webr1 run` would choose).
    #[arg(long, requires = "plan")]
    ctx: Option<usize>,
    /// With --plan: plan for the f32 path (an f32 KV cache), as browsers without shader-f16 run.
    #[arg(long, requires = "plan")]
    f32: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let path = super::model::resolve(args.model.as_deref())?;
    let model = super::open_model(&path)?;
    describe(&path, &model)?;
    if args.plan {
        print_plan(&model, args)?;
    }
    Ok(())
}

/// The plan `webr1 run` would load the model with, computed on this machine's GPU.
fn print_plan(model: &SplitGguf, args: &InfoArgs) -> Result<()> {
    let options = super::engine_options(args.f32, args.ctx, &args.device);
    let tensors: Vec<TensorInfo> = model.tensors().map(|(_, t)| t.clone()).collect();
    let config = ModelConfig::new(model.metadata(), &tensors)?;
    let gpu = pollster::block_on(webr1::gpu::Gpu::new(options.gpu.clone()))?;
    let plan = webr1::engine::Engine::plan(&gpu, &config, &tensors, &options)?;
    println!("memory plan on {} ({} shaders):", gpu.adapter(), if gpu.features().shader_f16 { "f16" } else { "f32" });
    for line in plan.summary().lines() {
        println!("  {line}");
    }
    Ok(())
}

fn describe(path: &Path, model: &SplitGguf) -> Result<()> {
    let meta = model.metadata();
    let tensors: Vec<TensorInfo> = model.tensors().map(|(_, t)| t.clone()).collect();
    let file_bytes: u64 = model.parts.iter().map(|p| p.data_offset + p.data_len()).sum();

    let arch = meta.get_str("general.architecture")?.unwrap_or("(none)");
    let name = meta.get_str("general.name")?.unwrap_or("(unnamed)");
    row("model", format!("{name} ({arch})"));
    row(
        "file",
        format!(
            "{} · GGUF v{} · {} part(s) · {}",
            path.display(),
            model.parts[0].version,
            model.parts.len(),
            human_bytes(file_bytes)
        ),
    );
    row(
        "parameters",
        format!("{} ({} tensors)", human_count(tensors.iter().map(TensorInfo::n_elements).sum()), tensors.len()),
    );

    match ModelConfig::new(meta, &tensors) {
        Ok(c) => {
            row("context", format!("{} tokens", c.context_length));
            row(
                "shape",
                format!(
                    "{} layers · embedding {} · {} heads ({} key/value, head dim {}) · FFN {} · vocab {}",
                    c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab
                ),
            );
            row(
                "rope",
                format!(
                    "theta {} · {:?} · scaling {:?} · rms eps {:e}",
                    c.rope_theta, c.rope_style, c.rope_scaling, c.rms_norm_eps
                ),
            );
            row(
                "weights",
                format!(
                    "QKV bias {} · output {}",
                    yes(c.qkv_bias),
                    if c.tied_embeddings { "tied to the embedding" } else { "own tensor" }
                ),
            );
        }
        Err(e) => row("config", format!("not runnable: {} [{}]", e.message, e.code())),
    }

    match Tokenizer::from_metadata(meta) {
        Ok(t) => row(
            "tokenizer",
            format!(
                "byte-level BPE · pre {} · {} tokens · BOS {} · EOS {} · add BOS {} · end of generation {:?}",
                meta.get_str("tokenizer.ggml.pre")?.unwrap_or("?"),
                t.n_vocab(),
                opt(t.bos),
                opt(t.eos),
                yes(t.add_bos),
                t.eog_ids()
            ),
        ),
        Err(e) => row("tokenizer", format!("not usable: {} [{}]", e.message, e.code())),
    }
    let template = meta.get_str("tokenizer.chat_template")?;
    row("chat template", template.map_or("absent".to_string(), |t| format!("present ({} bytes)", t.len())));

    println!("tensor types:");
    for (ty, (count, bytes)) in type_totals(model) {
        let note = if ty.is_supported() { "" } else { "  (not supported by webr1)" };
        println!("  {:<6} {count:>5} tensors  {:>10}{note}", ty.name(), human_bytes(bytes));
    }
    Ok(())
}

fn type_totals(model: &SplitGguf) -> BTreeMap<GgmlType, (usize, u64)> {
    let mut totals = BTreeMap::new();
    for (_, t) in model.tensors() {
        let entry = totals.entry(t.ty).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += t.n_bytes;
    }
    totals
}

fn row(label: &str, value: String) {
    println!("{label:<14} {value}");
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn opt(id: Option<u32>) -> String {
    id.map_or("none".into(), |id| id.to_string())
}

pub(crate) fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n => n.to_string(),
    }
}
