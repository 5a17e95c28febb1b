//! The model's weights on the GPU, exactly as the GGUF stores them (raw GGML blocks; ARCHITECTURE.md §1), and the
//! loader that streams the file's bytes into them in bounded pieces, so the model never sits in CPU memory
//! (ARCHITECTURE.md §4).

use crate::config::{ModelConfig, RopeScaling};
use crate::gguf::split::SplitGguf;
use crate::gguf::TensorInfo;
use crate::gpu::{ByteWriter, DType, Gpu, SplitWeight, Tensor};
use crate::quant::GgmlType;
use crate::{err, Result};
use std::collections::HashMap;

/// Weights read by one product: tensors of the same type and width stacked by rows in file order, so that one
/// dispatch computes all of them (Q, K and V; gate and up), with their biases stacked the same way.
#[derive(Debug)]
pub struct Stack {
    /// `[Σ rows, cols]`: the tensors' rows one after another.
    pub weight: SplitWeight,
    /// f32 `[Σ rows]`: their biases (qwen2's Q, K and V), if they have them.
    pub bias: Option<Tensor>,
}

/// The feed-forward block's gate and up projections.
#[derive(Debug)]
pub enum GateUp {
    /// `[gate; up]` (`2 · n_ff` rows) in one binding: one dispatch computes `silu(gate · x) ⊙ (up · x)`.
    Stacked(SplitWeight),
    /// Apart (different types, or too large for one binding together).
    Separate { gate: SplitWeight, up: SplitWeight },
}

/// One transformer block's weights. Matrices are `[rows = outputs, cols = inputs]`.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    /// Q, K and V stacked into as few weights as their types allow (one for most models): their outputs side by side
    /// are one row of `[q | k | v]`.
    pub qkv: Vec<Stack>,
    pub wo: SplitWeight,
    pub ffn_norm: Tensor,
    pub gate_up: GateUp,
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

    /// Every weight tensor on the GPU (each part of a split weight) with its layer (`None` outside the layers) and
    /// name: what the profile counts as weights (`engine::profile`). A new weight must be listed here.
    pub fn tensors(&self) -> Vec<(Option<usize>, &'static str, &Tensor)> {
        fn split<'w>(
            out: &mut Vec<(Option<usize>, &'static str, &'w Tensor)>,
            at: Option<usize>,
            name: &'static str,
            w: &'w SplitWeight,
        ) {
            out.extend(w.parts().iter().map(|p| (at, name, &p.tensor)));
        }
        let mut out = Vec::new();
        split(&mut out, None, "token_embd", &self.token_embd);
        for (l, w) in self.layers.iter().enumerate() {
            let at = Some(l);
            out.push((at, "attn_norm", &w.attn_norm));
            for stack in &w.qkv {
                split(&mut out, at, "attn_qkv", &stack.weight);
                out.extend(stack.bias.iter().map(|b| (at, "attn_qkv.bias", b)));
            }
            split(&mut out, at, "attn_output", &w.wo);
            out.push((at, "ffn_norm", &w.ffn_norm));
            match &w.gate_up {
                GateUp::Stacked(m) => split(&mut out, at, "ffn_gate_up", m),
                GateUp::Separate { gate, up } => {
                    split(&mut out, at, "ffn_gate", gate);
                    split(&mut out, at, "ffn_up", up);
                }
            }
            split(&mut out, at, "ffn_down", &w.w_down);
        }
        out.push((None, "output_norm", &self.output_norm));
        if let Some(output) = &self.output {
            split(&mut out, None, "output", output);
        }
        if let Some(freqs) = &self.rope_freqs {
            out.push((None, "rope_freqs", freqs));
        }
        out
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
        let mut creator = Creator { gpu, tensors, writers: HashMap::new() };
        let weights = build_weights(config, &mut creator)?;
        let writers = creator.writers;
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

/// Creates the weights on the GPU (zero-filled) and a writer for each GGUF tensor's bytes.
struct Creator<'a> {
    gpu: &'a Gpu,
    tensors: HashMap<&'a str, &'a TensorInfo>,
    writers: HashMap<String, ByteWriter>,
}

impl Creator<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).copied().ok_or_else(|| err!(ConfigBadValue, "the model has no '{name}' tensor"))
    }

    /// A 1-D f32 tensor (norms, biases).
    fn vector(&mut self, name: &str) -> Result<Tensor> {
        let t = self.info(name)?;
        if t.dims.len() != 1 || t.ty != GgmlType::F32 {
            return Err(err!(ConfigBadValue, "tensor '{name}' should be a vector of F32, got {} {:?}", t.ty, t.dims));
        }
        let tensor = Tensor::new(self.gpu, name, &[t.row_len() as usize], DType::F32)?;
        self.writers.insert(name.to_string(), tensor.writer());
        Ok(tensor)
    }

    /// A matrix of raw GGML blocks, split by rows as the device's bindings require.
    fn matrix(&mut self, name: &str) -> Result<SplitWeight> {
        Ok(self.stack(&[name], &[])?.weight)
    }

    /// Matrices of the same type and width stacked by rows, each GGUF tensor's bytes routed to its rows, and their
    /// biases (`biases[i]` of `names[i]`, all or none) stacked the same way.
    fn stack(&mut self, names: &[&str], biases: &[&str]) -> Result<Stack> {
        let infos = names.iter().map(|n| self.info(n)).collect::<Result<Vec<_>>>()?;
        let first = infos.first().ok_or_else(|| err!(Usage, "an empty stack of weights"))?;
        if let Some(t) = infos.iter().find(|t| t.dims.len() != 2) {
            return Err(err!(ConfigBadValue, "tensor '{}' should be a matrix, got dims {:?}", t.name, t.dims));
        }
        let (ty, cols) = (first.ty, first.row_len() as usize);
        let rows: Vec<usize> = infos.iter().map(|t| t.n_rows() as usize).collect();
        let label = names.join("+");
        let weight = SplitWeight::new(self.gpu, &label, rows.iter().sum(), cols, DType::Ggml(ty))?;
        let mut first_row = 0;
        for (name, &n) in names.iter().zip(&rows) {
            self.writers.insert(name.to_string(), weight.writer_rows(first_row, n)?);
            first_row += n;
        }
        let bias = match biases.is_empty() {
            true => None,
            false => {
                let bias = Tensor::new(self.gpu, &format!("{label} bias"), &[first_row], DType::F32)?;
                let mut at = 0u64;
                for (name, &n) in biases.iter().zip(&rows) {
                    let t = self.info(name)?;
                    if t.dims.len() != 1 || t.ty != GgmlType::F32 || t.row_len() as usize != n {
                        return Err(err!(
                            ConfigBadValue,
                            "bias '{name}' should be F32 [{n}], got {} {:?}",
                            t.ty,
                            t.dims
                        ));
                    }
                    let piece = vec![(bias.buffer().clone(), bias.offset() + at, 4 * n as u64)];
                    self.writers.insert(name.to_string(), ByteWriter::new(piece));
                    at += 4 * n as u64;
                }
                Some(bias)
            }
        };
        Ok(Stack { weight, bias })
    }

    /// Whether the named matrices can share one stack: one type, one width, and each tensor's rows ending on a 4-byte
    /// boundary (the GPU writes whole words). `one_binding` also asks that the stack fit one binding, with each
    /// tensor's rows starting on the device's storage offset alignment (so each can be bound on its own too).
    fn stackable(&self, names: &[&str], one_binding: bool) -> Result<bool> {
        let infos = names.iter().map(|n| self.info(n)).collect::<Result<Vec<_>>>()?;
        let (ty, cols) = (infos[0].ty, infos[0].row_len());
        let same = infos.iter().all(|t| t.dims.len() == 2 && t.ty == ty && t.row_len() == cols);
        let align = match one_binding {
            true => u64::from(self.gpu.limits().min_storage_buffer_offset_alignment).max(4),
            false => 4,
        };
        let aligned = infos.iter().all(|t| t.n_bytes % align == 0);
        let bytes: u64 = infos.iter().map(|t| t.n_bytes).sum();
        Ok(same && aligned && (!one_binding || bytes <= self.gpu.max_binding_bytes()))
    }
}

fn build_weights(config: &ModelConfig, c: &mut Creator) -> Result<Weights> {
    let mut layers = Vec::with_capacity(config.n_layer as usize);
    let token_embd = c.matrix("token_embd.weight")?;
    let output_norm = c.vector("output_norm.weight")?;
    let output = match config.tied_embeddings {
        true => None,
        false => Some(c.matrix("output.weight")?),
    };
    let rope_freqs = match config.rope_scaling {
        RopeScaling::FreqFactors => Some(c.vector("rope_freqs.weight")?),
        _ => None,
    };
    for i in 0..config.n_layer {
        let blk = |name: &str| format!("blk.{i}.{name}");
        let qkv_names = [blk("attn_q.weight"), blk("attn_k.weight"), blk("attn_v.weight")];
        let bias_names = [blk("attn_q.bias"), blk("attn_k.bias"), blk("attn_v.bias")];
        // Q, K and V in runs of neighbours that can share a stack.
        let mut qkv = Vec::new();
        let mut start = 0;
        while start < 3 {
            let mut end = start + 1;
            while end < 3 {
                let run: Vec<&str> = qkv_names[start..=end].iter().map(String::as_str).collect();
                if !c.stackable(&run, false)? {
                    break;
                }
                end += 1;
            }
            let names: Vec<&str> = qkv_names[start..end].iter().map(String::as_str).collect();
            let biases: Vec<&str> = match config.qkv_bias {
                true => bias_names[start..end].iter().map(String::as_str).collect(),
                false => Vec::new(),
            };
            qkv.push(c.stack(&names, &biases)?);
            start = end;
        }
        let wo = c.matrix(&blk("attn_output.weight"))?;
        let (gate, up) = (blk("ffn_gate.weight"), blk("ffn_up.weight"));
        let gate_up = match c.stackable(&[&gate, &up], true)? {
            true => GateUp::Stacked(c.stack(&[&gate, &up], &[])?.weight),
            false => GateUp::Separate { gate: c.matrix(&gate)?, up: c.matrix(&up)? },
        };
        let w_down = c.matrix(&blk("ffn_down.weight"))?;
        layers.push(LayerWeights {
            attn_norm: c.vector(&blk("attn_norm.weight"))?,
            qkv,
            wo,
            ffn_norm: c.vector(&blk("ffn_norm.weight"))?,
            gate_up,
            w_down,
        });
    }
    Ok(Weights { token_embd, layers, output_norm, output, rope_freqs })
}
