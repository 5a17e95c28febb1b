//! Synthetic models: GGUF files with random weights at the exact shapes of the six R1 distills, for benchmarks and
//! memory tests (ARCHITECTURE.md §11).
//!
//! A [`SynthModel`] is a header (the shape's hyper-parameters, a real tokenizer and chat template, the tensor table of
//! [`table`]) and a rule that makes any chunk of any tensor's bytes on demand ([`fill`]). `webr1 synth` writes it to a
//! file with several threads ([`write_file`]); `webr1 bench --shape` streams the same bytes straight into
//! [`crate::engine::Engine::load`] ([`SynthSource`]), so both build the same weights and the same dispatch lists.

pub mod fill;
pub mod shapes;
mod source;
pub mod table;
pub mod vocab;
#[cfg(not(target_arch = "wasm32"))]
mod write;

pub use shapes::{Llama3Rope, SynthShape};
pub use source::{SynthSource, SynthStream};
pub use table::{Role, SynthQuant, SynthTensor};
pub use vocab::Vocabulary;
#[cfg(not(target_arch = "wasm32"))]
pub use write::write_file;

use crate::config::Architecture;
use crate::gguf::writer::GgufWriter;
use crate::gguf::Value;
use crate::Result;

/// One chunk of tensor data and where it lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkAt {
    /// The tensor's index in [`SynthModel::tensors`].
    pub tensor: usize,
    /// The chunk's number within the tensor.
    pub chunk: u64,
    /// Absolute file offset and length in bytes.
    pub offset: u64,
    pub len: u64,
}

/// A synthetic model: header bytes, tensor table and the seed its data comes from.
#[derive(Debug, Clone)]
pub struct SynthModel {
    pub shape: SynthShape,
    pub quant: SynthQuant,
    pub seed: u64,
    pub tensors: Vec<SynthTensor>,
    /// Each tensor's byte length and offset from the start of the data section.
    pub sizes: Vec<u64>,
    pub offsets: Vec<u64>,
    /// The header, padded to the start of the data section.
    header: Vec<u8>,
}

impl SynthModel {
    /// The model of `shape` as `quant`, with `vocab` (fitted to the shape's vocabulary size) and data from `seed`.
    pub fn new(shape: &SynthShape, quant: SynthQuant, seed: u64, vocab: Vocabulary) -> Result<SynthModel> {
        let vocab = vocab.fitted(shape.n_vocab)?;
        let tensors = table::tensor_table(shape, quant);
        let mut w = GgufWriter::new();
        metadata(&mut w, shape, quant, seed);
        for (key, value) in vocab.pairs {
            w.kv(&key, value);
        }
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in &tensors {
            w.tensor(&t.name, &t.dims, t.ty, None)?;
            let rows: u64 = t.dims[1..].iter().product();
            sizes.push(t.ty.row_bytes(t.dims[0]).unwrap_or(0) * rows);
        }
        let offsets = w.offsets();
        Ok(SynthModel { shape: shape.clone(), quant, seed, tensors, sizes, offsets, header: w.header_bytes() })
    }

    /// The header and tensor table, padded to the data section.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The whole file's length in bytes.
    pub fn file_len(&self) -> u64 {
        let last = self.tensors.len().saturating_sub(1);
        self.header.len() as u64 + self.offsets.get(last).map_or(0, |o| o + self.sizes[last])
    }

    /// Weights in all.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum()
    }

    /// Every chunk of tensor data, in file order.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkAt> + '_ {
        let data_start = self.header.len() as u64;
        self.tensors.iter().enumerate().flat_map(move |(i, t)| {
            let (size, step) = (self.sizes[i], fill::chunk_bytes(t.ty));
            let start = data_start + self.offsets[i];
            (0..size.div_ceil(step)).map(move |c| ChunkAt {
                tensor: i,
                chunk: c,
                offset: start + c * step,
                len: step.min(size - c * step),
            })
        })
    }

    /// Fills `out` (exactly `at.len` bytes) with the bytes of chunk `at`.
    pub fn fill(&self, at: &ChunkAt, out: &mut [u8]) {
        fill::fill_chunk(&self.tensors[at.tensor], at.tensor, self.seed, at.chunk, out);
    }
}

/// The hyper-parameters, under llama.cpp's key names (as `config.rs` reads them).
fn metadata(w: &mut GgufWriter, shape: &SynthShape, quant: SynthQuant, seed: u64) {
    let arch = shape.arch.name();
    let key = |name: &str| format!("{arch}.{name}");
    w.kv("general.architecture", Value::String(arch.into()));
    w.kv("general.type", Value::String("model".into()));
    w.kv("general.name", Value::String(format!("{} (webr1 synth, random weights)", shape.model)));
    w.kv("general.size_label", Value::String(shape.size_label.into()));
    w.kv(&key("block_count"), Value::U32(shape.n_layer));
    w.kv(&key("context_length"), Value::U32(shape.context_length));
    w.kv(&key("embedding_length"), Value::U32(shape.n_embd));
    w.kv(&key("feed_forward_length"), Value::U32(shape.n_ff));
    w.kv(&key("attention.head_count"), Value::U32(shape.n_head));
    w.kv(&key("attention.head_count_kv"), Value::U32(shape.n_head_kv));
    w.kv(&key("rope.freq_base"), Value::F32(shape.rope_theta));
    w.kv(&key("attention.layer_norm_rms_epsilon"), Value::F32(shape.rms_norm_eps));
    if shape.arch == Architecture::Llama {
        w.kv(&key("rope.dimension_count"), Value::U32(shape.head_dim()));
        w.kv(&key("vocab_size"), Value::U32(shape.n_vocab));
    }
    w.kv("general.file_type", Value::U32(quant.file_type()));
    w.kv("general.quantization_version", Value::U32(2));
    w.kv("webr1.synth.shape", Value::String(shape.name.into()));
    w.kv("webr1.synth.seed", Value::U64(seed));
}
