//! The tensor table of a synthetic model: every tensor's name, shape (GGUF order, fastest first), GGML type and what
//! its values should look like.
//!
//! `Q4_K_M` is the per-tensor mix the community's Q4_K_M files carry (llama.cpp's `llama-quantize` rule): Q4_K for
//! the matrices, with Q6_K for `output.weight` and for `attn_v` / `ffn_down` in the layers that get more bits (the
//! first and last eighth of the layers and every third layer between); the 80-layer (70B) model's other `attn_v`
//! layers get Q5_K. Vectors (norms, biases, RoPE factors) stay F32. For R1-Distill-Qwen-7B this gives exactly the real
//! table in `tests/fixtures/r1-distill-qwen-7b.tensors.json` (names, shapes, types and offsets).

use super::shapes::{llama3_rope_factors, SynthShape};
use crate::config::Architecture;
use crate::quant::GgmlType;
use crate::{err, Result};

/// The quantisations `webr1 synth` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum SynthQuant {
    Q4_K_M,
    Q8_0,
    Q4_0,
    F16,
}

impl SynthQuant {
    pub const ALL: [SynthQuant; 4] = [Self::Q4_K_M, Self::Q8_0, Self::Q4_0, Self::F16];

    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_K_M => "Q4_K_M",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::F16 => "F16",
        }
    }

    /// The quantisation called `name` (any case), or a `usage` error that lists them.
    pub fn named(name: &str) -> Result<SynthQuant> {
        Self::ALL.into_iter().find(|q| q.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|q| q.name()).collect();
            err!(Usage, "unknown quantisation '{name}'; webr1 synth writes {}", names.join(", "))
        })
    }

    /// `general.file_type`: llama.cpp's `llama_ftype` number.
    pub fn file_type(self) -> u32 {
        match self {
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 7,
            Self::Q4_K_M => 15,
        }
    }

    /// The type of most matrices.
    fn base(self) -> GgmlType {
        match self {
            Self::Q4_K_M => GgmlType::Q4_K,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
            Self::F16 => GgmlType::F16,
        }
    }
}

/// What a tensor holds, which decides its values (see `fill.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// RMSNorm weights: all 1.
    Norm,
    /// Q/K/V biases: small random values of this standard deviation.
    Bias { std: f32 },
    /// Llama 3.1's per-frequency RoPE divisors.
    RopeFactors(Vec<f32>),
    /// A weight matrix: zero-mean random values of this standard deviation.
    Matrix { std: f32 },
    /// The LM head: a matrix of deviation `std` in which one row in [`LOUD_ROW_EVERY`] (chosen by the seed) has
    /// [`LOUD_ROW_GAIN`] times that deviation.
    LmHead { std: f32 },
}

impl Role {
    /// The deviation of the tensor's ordinary values (0 for norms and RoPE factors, which are not random).
    pub fn std(&self) -> f32 {
        match self {
            Role::Matrix { std } | Role::Bias { std } | Role::LmHead { std } => *std,
            Role::Norm | Role::RopeFactors(_) => 0.0,
        }
    }
}

/// One tensor of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthTensor {
    pub name: String,
    /// GGUF order, fastest-varying first: a matrix of `rows` outputs over `cols` inputs is `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub role: Role,
}

/// The standard deviation of the logits a unit-RMS final state gives.
pub const LOGIT_STD: f32 = 12.0;
/// The LM head's loud rows: one in this many, with this gain. The top logit of 150k Gaussian ones stands only about
/// 0.2 deviations above the second; among the few hundred loud rows, whose logits have three times the deviation and
/// so hold the top, the gap is several times wider.
pub const LOUD_ROW_EVERY: u64 = 256;
pub const LOUD_ROW_GAIN: f32 = 3.0;
/// The standard deviation of the Q, K and V biases.
const BIAS_STD: f32 = 0.1;

/// Every tensor of `shape` quantised as `quant`, in the order llama.cpp's files store them: the output, final norm
/// and embedding, then each block's tensors sorted by name (Llama 3.1's RoPE factors first).
///
/// Scales: the embedding has unit variance, so the residual stream starts at RMS 1; every projection that reads a
/// normed state has standard deviation `1/sqrt(inputs)`, which keeps unit variance; the two that write the residual
/// stream's branches (`attn_output`, and `ffn_up`, which scales the gated product `ffn_down` reads) carry another
/// `1/sqrt(2 n_layer)`, so the stream grows to an RMS of about 1.3 over all the layers, not `sqrt(n_layer)`. (Putting
/// that factor on `attn_output` and `ffn_up` keeps every block scale a normal f16 for all six shapes.)
pub fn tensor_table(shape: &SynthShape, quant: SynthQuant) -> Vec<SynthTensor> {
    let (e, v, ff) = (shape.n_embd as u64, shape.n_vocab as u64, shape.n_ff as u64);
    let (q, kv) = (shape.q_dim() as u64, shape.kv_dim() as u64);
    let unit = |inputs: u64| 1.0 / (inputs as f32).sqrt();
    let branch = |inputs: u64| 1.0 / ((inputs * 2 * shape.n_layer as u64) as f32).sqrt();
    let matrix = |name: &str, dims: Vec<u64>, std: f32, layer: Option<u32>| SynthTensor {
        ty: matrix_type(shape, quant, name, layer),
        name: layer.map_or(name.to_string(), |i| format!("blk.{i}.{name}")),
        dims,
        role: if name == "output.weight" { Role::LmHead { std } } else { Role::Matrix { std } },
    };
    let vector = |name: String, n: u64, role: Role| SynthTensor { name, dims: vec![n], ty: GgmlType::F32, role };

    let mut out = Vec::new();
    if let Some(rope) = &shape.llama3_rope {
        let factors = llama3_rope_factors(rope, shape.rope_theta, shape.head_dim());
        out.push(vector("rope_freqs.weight".into(), factors.len() as u64, Role::RopeFactors(factors)));
    }
    out.push(matrix("output.weight", vec![e, v], LOGIT_STD * unit(e), None));
    out.push(vector("output_norm.weight".into(), e, Role::Norm));
    out.push(matrix("token_embd.weight", vec![e, v], 1.0, None));
    for i in 0..shape.n_layer {
        let l = Some(i);
        let mut block = vec![
            matrix("attn_k.weight", vec![e, kv], unit(e), l),
            vector(format!("blk.{i}.attn_norm.weight"), e, Role::Norm),
            matrix("attn_output.weight", vec![q, e], branch(q), l),
            matrix("attn_q.weight", vec![e, q], unit(e), l),
            matrix("attn_v.weight", vec![e, kv], unit(e), l),
            matrix("ffn_down.weight", vec![ff, e], unit(ff), l),
            matrix("ffn_gate.weight", vec![e, ff], unit(e), l),
            vector(format!("blk.{i}.ffn_norm.weight"), e, Role::Norm),
            matrix("ffn_up.weight", vec![e, ff], branch(e), l),
        ];
        if shape.arch == Architecture::Qwen2 {
            let bias = Role::Bias { std: BIAS_STD };
            block.push(vector(format!("blk.{i}.attn_q.bias"), q, bias.clone()));
            block.push(vector(format!("blk.{i}.attn_k.bias"), kv, bias.clone()));
            block.push(vector(format!("blk.{i}.attn_v.bias"), kv, bias));
        }
        block.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(block);
    }
    out
}

/// The GGML type of matrix `name` (of layer `layer`) in a `quant` file.
fn matrix_type(shape: &SynthShape, quant: SynthQuant, name: &str, layer: Option<u32>) -> GgmlType {
    let base = quant.base();
    if quant == SynthQuant::F16 {
        return base;
    }
    let more_bits = layer.is_some_and(|i| uses_more_bits(i, shape.n_layer));
    match (quant, name) {
        (_, "output.weight") if base == GgmlType::Q8_0 => GgmlType::Q8_0,
        (_, "output.weight") => GgmlType::Q6_K,
        (SynthQuant::Q4_K_M, "attn_v.weight" | "ffn_down.weight") if more_bits => GgmlType::Q6_K,
        (SynthQuant::Q4_K_M, "attn_v.weight") if shape.n_layer == 80 => GgmlType::Q5_K,
        _ => base,
    }
}

/// The layers that get more bits: the first and last eighth, and every third layer between.
pub fn uses_more_bits(layer: u32, n_layer: u32) -> bool {
    let eighth = n_layer / 8;
    layer < eighth || layer >= 7 * n_layer / 8 || (layer - eighth) % 3 == 2
}
