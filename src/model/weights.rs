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

    /// Whether every layer's gate and up share one stack ([`GateUp::Stacked`]): then a step of at most
    /// [`crate::gpu::ops::MAX_VEC_TOKENS`] tokens needs no gate and up activations of its own.
    pub fn gate_up_stacked(&self) -> bool {
        self.layers.iter().all(|l| matches!(l.gate_up, GateUp::Stacked(_)))
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

/// One weight the loader creates on the GPU, before it is created: a matrix (GGUF tensors of one type and width
/// stacked by rows; most are one tensor), split by rows across buffers as [`SplitWeight::new`] splits it, or an f32
/// vector in one buffer (norms, RoPE factors, stacked biases). What the memory plan (`crate::model::plan`) sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightShape {
    /// The GPU tensor's label: the GGUF names joined by `+` (`" bias"` added for stacked biases).
    pub label: String,
    /// A matrix's rows (1 for a vector).
    pub rows: usize,
    /// A matrix's row length, or a vector's length.
    pub cols: usize,
    pub dtype: DType,
    pub matrix: bool,
}

/// What [`weight_layout`] decides for a model on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightLayout {
    /// Every weight [`WeightLoader::new`] creates, in the order it creates them.
    pub weights: Vec<WeightShape>,
    /// Whether every layer's gate and up share one stack ([`GateUp::Stacked`]; see [`Weights::gate_up_stacked`]).
    pub gate_up_stacked: bool,
}

/// The weights [`WeightLoader::new`] would create for `config` (with its tensor table `tensors`) on `gpu`, stacked and
/// split as it would, without creating anything: the loader and the memory plan take their decisions from the same
/// [`Creator::layout`].
pub fn weight_layout(gpu: &Gpu, config: &ModelConfig, tensors: &[TensorInfo]) -> Result<WeightLayout> {
    let tensors: HashMap<&str, &TensorInfo> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let c = Creator { gpu, tensors, writers: HashMap::new() };
    let layout = c.layout(config)?;
    let mut weights = Vec::new();
    for item in layout.items() {
        match item {
            Item::Vector(name) => weights.push(c.vector_shape(name)?),
            Item::Stack(names, biases) => {
                let (weight, bias) = c.stack_shapes(&names, &biases)?;
                weights.push(weight);
                weights.extend(bias);
            }
        }
    }
    Ok(WeightLayout { weights, gate_up_stacked: layout.layers.iter().all(|l| l.gate_up_stacked) })
}

/// Where the loader puts a model's tensors ([`Creator::layout`]): the GGUF names of each weight it creates.
struct Layout {
    token_embd: String,
    output_norm: String,
    output: Option<String>,
    rope_freqs: Option<String>,
    layers: Vec<LayerLayout>,
}

struct LayerLayout {
    attn_norm: String,
    /// Q, K and V in runs of neighbours that share a stack: each run's weights and their biases (none without).
    qkv: Vec<(Vec<String>, Vec<String>)>,
    wo: String,
    ffn_norm: String,
    gate: String,
    up: String,
    /// Gate and up in one stack in one binding ([`GateUp::Stacked`]), or apart.
    gate_up_stacked: bool,
    w_down: String,
}

/// One weight of a [`Layout`]: a vector, or a stack of matrices with their biases.
enum Item<'a> {
    Vector(&'a str),
    Stack(Vec<&'a str>, Vec<&'a str>),
}

impl Layout {
    /// Every weight, in the order [`build_weights`] creates them.
    fn items(&self) -> Vec<Item<'_>> {
        fn one(name: &str) -> Item<'_> {
            Item::Stack(vec![name], Vec::new())
        }
        let mut items = vec![one(&self.token_embd), Item::Vector(&self.output_norm)];
        items.extend(self.output.as_deref().map(one));
        items.extend(self.rope_freqs.as_deref().map(Item::Vector));
        for l in &self.layers {
            for (names, biases) in &l.qkv {
                items.push(Item::Stack(strs(names), strs(biases)));
            }
            items.push(one(&l.wo));
            match l.gate_up_stacked {
                true => items.push(Item::Stack(vec![&l.gate, &l.up], Vec::new())),
                false => items.extend([one(&l.gate), one(&l.up)]),
            }
            items.extend([one(&l.w_down), Item::Vector(&l.attn_norm), Item::Vector(&l.ffn_norm)]);
        }
        items
    }
}

fn strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// Creates the weights on the GPU (zero-filled) and a writer for each GGUF tensor's bytes; without creating anything,
/// it also lays them out and sizes them ([`weight_layout`]).
struct Creator<'a> {
    gpu: &'a Gpu,
    tensors: HashMap<&'a str, &'a TensorInfo>,
    writers: HashMap<String, ByteWriter>,
}

impl Creator<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).copied().ok_or_else(|| err!(ConfigBadValue, "the model has no '{name}' tensor"))
    }

    /// The shape of [`Creator::vector`]`(name)`, checked.
    fn vector_shape(&self, name: &str) -> Result<WeightShape> {
        let t = self.info(name)?;
        if t.dims.len() != 1 || t.ty != GgmlType::F32 {
            return Err(err!(ConfigBadValue, "tensor '{name}' should be a vector of F32, got {} {:?}", t.ty, t.dims));
        }
        let cols = t.row_len() as usize;
        Ok(WeightShape { label: name.to_string(), rows: 1, cols, dtype: DType::F32, matrix: false })
    }

    /// A 1-D f32 tensor (norms, biases).
    fn vector(&mut self, name: &str) -> Result<Tensor> {
        let shape = self.vector_shape(name)?;
        let tensor = Tensor::new(self.gpu, name, &[shape.cols], shape.dtype)?;
        self.writers.insert(name.to_string(), tensor.writer());
        Ok(tensor)
    }

    /// A matrix of raw GGML blocks, split by rows as the device's bindings require.
    fn matrix(&mut self, name: &str) -> Result<SplitWeight> {
        Ok(self.stack(&[name], &[])?.weight)
    }

    /// The shapes of [`Creator::stack`]`(names, biases)`: the stacked matrix and the stacked biases, checked.
    fn stack_shapes(&self, names: &[&str], biases: &[&str]) -> Result<(WeightShape, Option<WeightShape>)> {
        let infos = names.iter().map(|n| self.info(n)).collect::<Result<Vec<_>>>()?;
        let first = infos.first().ok_or_else(|| err!(Usage, "an empty stack of weights"))?;
        if let Some(t) = infos.iter().find(|t| t.dims.len() != 2) {
            return Err(err!(ConfigBadValue, "tensor '{}' should be a matrix, got dims {:?}", t.name, t.dims));
        }
        let (ty, cols) = (first.ty, first.row_len() as usize);
        let label = names.join("+");
        let rows: usize = infos.iter().map(|t| t.n_rows() as usize).sum();
        let bias = match biases.is_empty() {
            true => None,
            false => {
                for (name, t) in biases.iter().zip(&infos) {
                    let (b, n) = (self.info(name)?, t.n_rows());
                    if b.dims.len() != 1 || b.ty != GgmlType::F32 || b.row_len() != n {
                        return Err(err!(
                            ConfigBadValue,
                            "bias '{name}' should be F32 [{n}], got {} {:?}",
                            b.ty,
                            b.dims
                        ));
                    }
                }
                let label = format!("{label} bias");
                Some(WeightShape { label, rows: 1, cols: rows, dtype: DType::F32, matrix: false })
            }
        };
        let weight = WeightShape { label, rows, cols, dtype: DType::Ggml(ty), matrix: true };
        Ok((weight, bias))
    }

    /// Matrices of the same type and width stacked by rows, each GGUF tensor's bytes routed to its rows, and their
    /// biases (`biases[i]` of `names[i]`, all or none) stacked the same way.
    fn stack(&mut self, names: &[&str], biases: &[&str]) -> Result<Stack> {
        let (shape, bias_shape) = self.stack_shapes(names, biases)?;
        let weight = SplitWeight::new(self.gpu, &shape.label, shape.rows, shape.cols, shape.dtype)?;
        let rows: Vec<usize> = names.iter().map(|n| Ok(self.info(n)?.n_rows() as usize)).collect::<Result<_>>()?;
        let mut first_row = 0;
        for (name, &n) in names.iter().zip(&rows) {
            self.writers.insert(name.to_string(), weight.writer_rows(first_row, n)?);
            first_row += n;
        }
        let bias = match bias_shape {
            None => None,
            Some(b) => {
                let bias = Tensor::new(self.gpu, &b.label, &[b.cols], b.dtype)?;
                let mut at = 0u64;
                for (name, &n) in biases.iter().zip(&rows) {
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

    /// Which GGUF tensors make each weight of `config` on this device: the decisions of the loader and the memory plan.
    fn layout(&self, config: &ModelConfig) -> Result<Layout> {
        let mut layers = Vec::with_capacity(config.n_layer as usize);
        for i in 0..config.n_layer {
            let blk = |name: &str| format!("blk.{i}.{name}");
            let qkv_names = [blk("attn_q.weight"), blk("attn_k.weight"), blk("attn_v.weight")];
            let bias_names = [blk("attn_q.bias"), blk("attn_k.bias"), blk("attn_v.bias")];
            // Q, K and V in runs of neighbours that can share a stack.
            let mut qkv = Vec::new();
            let mut start = 0;
            while start < 3 {
                let mut end = start + 1;
                while end < 3 && self.stackable(&strs(&qkv_names[start..=end]), false)? {
                    end += 1;
                }
                let biases = match config.qkv_bias {
                    true => bias_names[start..end].to_vec(),
                    false => Vec::new(),
                };
                qkv.push((qkv_names[start..end].to_vec(), biases));
                start = end;
            }
            let (gate, up) = (blk("ffn_gate.weight"), blk("ffn_up.weight"));
            let gate_up_stacked = self.stackable(&[&gate, &up], true)?;
            layers.push(LayerLayout {
                attn_norm: blk("attn_norm.weight"),
                qkv,
                wo: blk("attn_output.weight"),
                ffn_norm: blk("ffn_norm.weight"),
                gate,
                up,
                gate_up_stacked,
                w_down: blk("ffn_down.weight"),
            });
        }
        Ok(Layout {
            token_embd: "token_embd.weight".into(),
            output_norm: "output_norm.weight".into(),
            output: (!config.tied_embeddings).then(|| "output.weight".into()),
            rope_freqs: (config.rope_scaling == RopeScaling::FreqFactors).then(|| "rope_freqs.weight".into()),
            layers,
        })
    }
}

/// Creates every weight of `config` as [`Creator::layout`] lays them out.
fn build_weights(config: &ModelConfig, c: &mut Creator) -> Result<Weights> {
    let layout = c.layout(config)?;
    let token_embd = c.matrix(&layout.token_embd)?;
    let output_norm = c.vector(&layout.output_norm)?;
    let output = layout.output.as_deref().map(|name| c.matrix(name)).transpose()?;
    let rope_freqs = layout.rope_freqs.as_deref().map(|name| c.vector(name)).transpose()?;
    let mut layers = Vec::with_capacity(layout.layers.len());
    for l in &layout.layers {
        let qkv = l.qkv.iter().map(|(names, biases)| c.stack(&strs(names), &strs(biases))).collect::<Result<_>>()?;
        let wo = c.matrix(&l.wo)?;
        let gate_up = match l.gate_up_stacked {
            true => GateUp::Stacked(c.stack(&[&l.gate, &l.up], &[])?.weight),
            false => GateUp::Separate { gate: c.matrix(&l.gate)?, up: c.matrix(&l.up)? },
        };
        let w_down = c.matrix(&l.w_down)?;
        let (attn_norm, ffn_norm) = (c.vector(&l.attn_norm)?, c.vector(&l.ffn_norm)?);
        layers.push(LayerWeights { attn_norm, qkv, wo, ffn_norm, gate_up, w_down });
    }
    Ok(Weights { token_embd, layers, output_norm, output, rope_freqs })
}
