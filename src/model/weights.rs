//! The model's weights on the GPU, exactly as the GGUF stores them (raw GGML blocks; DESIGN decision 1), and the loader
//! that streams the file's bytes into them in bounded pieces, so the model never sits in CPU memory (decision 4).

use crate::config::{ModelConfig, RopeScaling};
use crate::gguf::split::SplitGguf;
use crate::gguf::TensorInfo;
use crate::gpu::{ByteWriter, DType, Gpu, SplitWeight, Tensor};
use crate::{err, Result};
use std::collections::HashMap;

/// One transformer block's weights. Matrices are `[rows = outputs, cols = inputs]`.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub wq: SplitWeight,
    pub wk: SplitWeight,
    pub wv: SplitWeight,
    /// Q, K and V biases (qwen2).
    pub bias: Option<[Tensor; 3]>,
    pub wo: SplitWeight,
    pub ffn_norm: Tensor,
    pub w_gate: SplitWeight,
    pub w_up: SplitWeight,
    pub w_down: SplitWeight,
}

/// All weights of a model.
#[derive(Debug)]
pub struct Weights {
    pub token_embd: SplitWeight,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Tensor,
    /// The LM head; `None` when tied to `token_embd`.
    pub output: Option<SplitWeight>,
    /// Llama 3.1's per-frequency RoPE divisors.
    pub rope_freqs: Option<Tensor>,
}

impl Weights {
    /// The LM head: `output.weight`, or the embedding when the model ties them.
    pub fn lm_head(&self) -> &SplitWeight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}

/// Allocates every weight on the GPU, then takes the GGUF files' bytes in order and routes each byte range to its
/// tensor. Feed it whole files, or a download as it arrives: `push(part, offset, bytes)` with increasing offsets.
pub struct WeightLoader {
    weights: Weights,
    /// Per file part: (absolute start, end, tensor name) in file order.
    ranges: Vec<Vec<(u64, u64, String)>>,
    writers: HashMap<String, ByteWriter>,
    /// Per part: the next range to fill.
    next: Vec<usize>,
    bytes_needed: u64,
    bytes_done: u64,
}

impl WeightLoader {
    /// Creates the GPU tensors for `model` (zero-filled) and plans where each file byte goes.
    pub fn new(gpu: &Gpu, config: &ModelConfig, model: &SplitGguf) -> Result<WeightLoader> {
        let tensors: HashMap<&str, &TensorInfo> = model.tensors().map(|(_, t)| (t.name.as_str(), t)).collect();
        for (_, t) in model.tensors() {
            t.ty.check_supported()?;
        }
        let mut writers = HashMap::new();
        let mut create = |name: &str| -> Result<Slot> {
            let t = tensors.get(name).ok_or_else(|| err!(ConfigBadValue, "the model has no '{name}' tensor"))?;
            let slot = Slot::new(gpu, t)?;
            writers.insert(name.to_string(), slot.writer());
            Ok(slot)
        };
        let weights = build_weights(config, &mut create)?;
        let mut ranges = Vec::new();
        let mut bytes_needed = 0;
        for part in &model.parts {
            let mut list: Vec<(u64, u64, String)> = part
                .tensors
                .iter()
                .filter(|t| writers.contains_key(&t.name))
                .map(|t| {
                    let start = part.tensor_file_offset(t);
                    (start, start + t.n_bytes, t.name.clone())
                })
                .collect();
            list.sort();
            bytes_needed += list.iter().map(|(s, e, _)| e - s).sum::<u64>();
            ranges.push(list);
        }
        let next = vec![0; ranges.len()];
        Ok(WeightLoader { weights, ranges, writers, next, bytes_needed, bytes_done: 0 })
    }

    /// Bytes of tensor data still to come, and in all.
    pub fn progress(&self) -> (u64, u64) {
        (self.bytes_done, self.bytes_needed)
    }

    /// The absolute offsets in part `part` where tensor data starts and ends (bytes outside may be skipped).
    pub fn data_span(&self, part: usize) -> Option<(u64, u64)> {
        let list = self.ranges.get(part)?;
        Some((list.first()?.0, list.last()?.1))
    }

    /// Takes `bytes` found at absolute `offset` of file part `part`. Calls for a part must come in file order and not
    /// overlap; bytes that belong to no tensor (header, padding) are skipped.
    pub fn push(&mut self, gpu: &Gpu, part: usize, offset: u64, bytes: &[u8]) -> Result<()> {
        let end = offset + bytes.len() as u64;
        let list = self.ranges.get(part).ok_or_else(|| err!(Usage, "no file part {part}"))?;
        let next = &mut self.next[part];
        while let Some((start, stop, name)) = list.get(*next) {
            if *start >= end {
                break;
            }
            let from = (*start).max(offset);
            let to = (*stop).min(end);
            if from < to {
                let writer = self.writers.get_mut(name).ok_or_else(|| err!(Usage, "tensor {name} written twice"))?;
                writer.write(gpu, &bytes[(from - offset) as usize..(to - offset) as usize])?;
                self.bytes_done += to - from;
            }
            if *stop <= end {
                if let Some(writer) = self.writers.remove(name) {
                    writer.finish(gpu)?;
                }
                *next += 1;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Every tensor received all its bytes: the weights.
    pub fn finish(self) -> Result<Weights> {
        if let Some(name) = self.writers.keys().next() {
            return Err(err!(
                GgufTruncated,
                "the model's bytes ended before tensor '{name}' was complete ({} of {} bytes of weights arrived)",
                self.bytes_done,
                self.bytes_needed
            ));
        }
        Ok(self.weights)
    }

    /// Streams whole GGUF files (the parts of `model`, at `paths`) into the weights, reading `chunk` bytes at a time.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_files(
        mut self,
        gpu: &Gpu,
        paths: &[std::path::PathBuf],
        chunk: usize,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Weights> {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = vec![0u8; chunk.max(4096)];
        for (part, path) in paths.iter().enumerate() {
            let Some((start, stop)) = self.data_span(part) else { continue };
            let mut file = std::fs::File::open(path).map_err(|e| crate::gguf::io_error(path, e))?;
            file.seek(SeekFrom::Start(start)).map_err(|e| crate::gguf::io_error(path, e))?;
            let mut at = start;
            while at < stop {
                let want = ((stop - at) as usize).min(buf.len());
                let n = file.read(&mut buf[..want]).map_err(|e| crate::gguf::io_error(path, e))?;
                if n == 0 {
                    break;
                }
                self.push(gpu, part, at, &buf[..n])?;
                at += n as u64;
                let (done, all) = self.progress();
                progress(done, all);
            }
        }
        gpu.flush_writes()?;
        self.finish()
    }
}

/// A weight being created: a plain tensor (norms, biases) or a matrix that may be split by rows.
enum Slot {
    Vector(Tensor),
    Matrix(SplitWeight),
}

impl Slot {
    fn new(gpu: &Gpu, t: &TensorInfo) -> Result<Slot> {
        let cols = t.row_len() as usize;
        let rows = t.n_rows() as usize;
        if t.dims.len() == 1 {
            let dtype = if t.ty == crate::quant::GgmlType::F32 { DType::F32 } else { DType::Ggml(t.ty) };
            if dtype != DType::F32 {
                return Err(err!(ConfigBadValue, "vector tensor '{}' is {}, webr1 expects F32", t.name, t.ty));
            }
            return Ok(Slot::Vector(Tensor::new(gpu, &t.name, &[cols], dtype)?));
        }
        Ok(Slot::Matrix(SplitWeight::new(gpu, &t.name, rows, cols, DType::Ggml(t.ty))?))
    }

    fn writer(&self) -> ByteWriter {
        match self {
            Slot::Vector(t) => t.writer(),
            Slot::Matrix(w) => w.writer(),
        }
    }

    fn vector(self, name: &str) -> Result<Tensor> {
        match self {
            Slot::Vector(t) => Ok(t),
            Slot::Matrix(_) => Err(err!(ConfigBadValue, "'{name}' should be a vector")),
        }
    }

    fn matrix(self, name: &str) -> Result<SplitWeight> {
        match self {
            Slot::Matrix(w) => Ok(w),
            Slot::Vector(_) => Err(err!(ConfigBadValue, "'{name}' should be a matrix")),
        }
    }
}

/// The tensors [`WeightLoader::new`] creates for `config` (those `build_weights` asks for): what the memory plan
/// (`crate::model::plan`) sizes.
pub fn weight_names(config: &ModelConfig) -> Vec<String> {
    let mut names: Vec<String> = vec!["token_embd.weight".into(), "output_norm.weight".into()];
    if !config.tied_embeddings {
        names.push("output.weight".into());
    }
    if config.rope_scaling == RopeScaling::FreqFactors {
        names.push("rope_freqs.weight".into());
    }
    for i in 0..config.n_layer {
        let mut layer = vec!["attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"];
        layer.extend(["ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "attn_norm.weight", "ffn_norm.weight"]);
        if config.qkv_bias {
            layer.extend(["attn_q.bias", "attn_k.bias", "attn_v.bias"]);
        }
        names.extend(layer.into_iter().map(|name| format!("blk.{i}.{name}")));
    }
    names
}

fn build_weights(config: &ModelConfig, create: &mut dyn FnMut(&str) -> Result<Slot>) -> Result<Weights> {
    let mut layers = Vec::with_capacity(config.n_layer as usize);
    let token_embd = create("token_embd.weight")?.matrix("token_embd.weight")?;
    let output_norm = create("output_norm.weight")?.vector("output_norm.weight")?;
    let output = match config.tied_embeddings {
        true => None,
        false => Some(create("output.weight")?.matrix("output.weight")?),
    };
    let rope_freqs = match config.rope_scaling {
        RopeScaling::FreqFactors => Some(create("rope_freqs.weight")?.vector("rope_freqs.weight")?),
        _ => None,
    };
    for i in 0..config.n_layer {
        let mut matrix = |name: &str| {
            let full = format!("blk.{i}.{name}");
            create(&full)?.matrix(&full)
        };
        let (wq, wk, wv, wo) = (
            matrix("attn_q.weight")?,
            matrix("attn_k.weight")?,
            matrix("attn_v.weight")?,
            matrix("attn_output.weight")?,
        );
        let (w_gate, w_up, w_down) = (matrix("ffn_gate.weight")?, matrix("ffn_up.weight")?, matrix("ffn_down.weight")?);
        let mut vector = |name: &str| {
            let full = format!("blk.{i}.{name}");
            create(&full)?.vector(&full)
        };
        let bias = match config.qkv_bias {
            true => Some([vector("attn_q.bias")?, vector("attn_k.bias")?, vector("attn_v.bias")?]),
            false => None,
        };
        layers.push(LayerWeights {
            attn_norm: vector("attn_norm.weight")?,
            wq,
            wk,
            wv,
            bias,
            wo,
            ffn_norm: vector("ffn_norm.weight")?,
            w_gate,
            w_up,
            w_down,
        });
    }
    Ok(Weights { token_embd, layers, output_norm, output, rope_freqs })
}
