//! The model's hyper-parameters, typed, from GGUF metadata and the tensor table.
//!
//! Keys follow llama.cpp's `llama-arch.cpp` naming (`{arch}.embedding_length`, `{arch}.attention.head_count`, ...).
//! Two architectures are supported, the two the R1 distills use: `qwen2` (R1-Distill-Qwen: QKV bias, NeoX RoPE) and
//! `llama` (R1-Distill-Llama: Llama-3.1 RoPE scaling, carried as a `rope_freqs.weight` tensor of per-frequency factors
//! that the converter computed). The output projection falls back to the token embedding when `output.weight` is absent.

use crate::gguf::{missing_key, Gguf, Metadata, TensorInfo};
use crate::quant::GgmlType;
use crate::{err, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Qwen2,
    Llama,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x0, x1), (x2, x3), ...: llama.
    Normal,
    /// The two halves of the head (x_i, x_{i+d/2}): qwen2 (GPT-NeoX style).
    Neox,
}

/// How RoPE frequencies are scaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (`{arch}.rope.scaling.type = linear`).
    Linear {
        factor: f32,
    },
    /// Per-frequency divisors from the `rope_freqs.weight` tensor (`head_dim / 2` F32 values): Llama 3.1's scaling as
    /// llama.cpp's converter writes it.
    FreqFactors,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Architecture,
    /// `general.name`, when present.
    pub name: Option<String>,
    pub n_vocab: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Dimension of one attention head (`attention.key_length`, else `n_embd / n_head`).
    pub head_dim: u32,
    pub n_ff: u32,
    /// The context the model was trained for.
    pub context_length: u32,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Dimensions of each head that RoPE rotates.
    pub rope_dim: u32,
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
    /// Q, K and V projections carry a bias (qwen2).
    pub qkv_bias: bool,
    /// No `output.weight`: the LM head is the token embedding.
    pub tied_embeddings: bool,
    /// The GGML type of each weight tensor, by name, for planning kernels and reporting.
    pub tensor_types: HashMap<String, GgmlType>,
}

impl TryFrom<&Gguf> for ModelConfig {
    type Error = crate::Error;

    fn try_from(gguf: &Gguf) -> Result<Self> {
        ModelConfig::new(&gguf.metadata, &gguf.tensors)
    }
}

impl ModelConfig {
    /// Reads the configuration from metadata and the tensor table (of all parts, for a split model).
    pub fn new(metadata: &Metadata, tensors: &[TensorInfo]) -> Result<Self> {
        let arch_name = metadata.require_str("general.architecture")?;
        let arch = match arch_name {
            "qwen2" => Architecture::Qwen2,
            "llama" => Architecture::Llama,
            other => {
                return Err(err!(
                    ConfigUnsupportedArchitecture,
                    "architecture '{other}' is not supported; webr1 runs qwen2 (R1-Distill-Qwen) and llama \
                     (R1-Distill-Llama) models"
                ))
            }
        };
        let keys = Keys { metadata, arch: arch_name };
        let tensors: HashMap<&str, &TensorInfo> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();

        let n_embd = keys.u32("embedding_length")?;
        let n_head = keys.u32("attention.head_count")?;
        let n_head_kv = keys.opt_u32("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(err!(ConfigBadValue, "{n_head} attention heads cannot share {n_head_kv} key/value heads"));
        }
        let head_dim = match keys.opt_u32("attention.key_length")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => return Err(err!(ConfigBadValue, "embedding length {n_embd} is not divisible by {n_head} heads")),
        };
        let rope_dim = keys.opt_u32("rope.dimension_count")?.unwrap_or(head_dim);
        if head_dim == 0 || head_dim % 2 != 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(err!(ConfigBadValue, "head dimension {head_dim} with RoPE dimension {rope_dim} is not usable"));
        }
        let token_embd = tensors
            .get("token_embd.weight")
            .ok_or_else(|| err!(ConfigBadValue, "the model has no 'token_embd.weight' tensor"))?;
        let n_vocab = match keys.opt_u32("vocab_size")? {
            Some(n) => n,
            None => u32::try_from(token_embd.dims.get(1).copied().unwrap_or(0))
                .map_err(|_| err!(ConfigBadValue, "token_embd.weight has too many rows"))?,
        };

        let config = ModelConfig {
            arch,
            name: metadata.get_str("general.name")?.map(str::to_string),
            n_vocab,
            n_embd,
            n_layer: keys.u32("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: keys.u32("feed_forward_length")?,
            context_length: keys.u32("context_length")?,
            rms_norm_eps: keys.f32("attention.layer_norm_rms_epsilon")?,
            rope_theta: keys.opt_f32("rope.freq_base")?.unwrap_or(10_000.0),
            rope_dim,
            rope_style: match arch {
                Architecture::Qwen2 => RopeStyle::Neox,
                Architecture::Llama => RopeStyle::Normal,
            },
            rope_scaling: rope_scaling(&keys, tensors.contains_key("rope_freqs.weight"))?,
            qkv_bias: tensors.contains_key("blk.0.attn_q.bias"),
            tied_embeddings: !tensors.contains_key("output.weight"),
            tensor_types: tensors.iter().map(|(name, t)| (name.to_string(), t.ty)).collect(),
        };
        config.check_tensors(&tensors)?;
        Ok(config)
    }

    /// Query heads per key/value head (grouped-query attention).
    pub fn gqa_group(&self) -> u32 {
        self.n_head / self.n_head_kv
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> u32 {
        self.n_head * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> u32 {
        self.n_head_kv * self.head_dim
    }

    /// Total number of weights.
    pub fn n_params(&self, tensors: &[TensorInfo]) -> u64 {
        tensors.iter().map(TensorInfo::n_elements).sum()
    }

    /// The name and expected dims (GGUF order) of every tensor the forward pass reads.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (e, v, ff) = (self.n_embd as u64, self.n_vocab as u64, self.n_ff as u64);
        let (q, kv) = (self.q_dim() as u64, self.kv_dim() as u64);
        let mut out = vec![("token_embd.weight".to_string(), vec![e, v]), ("output_norm.weight".into(), vec![e])];
        if !self.tied_embeddings {
            out.push(("output.weight".into(), vec![e, v]));
        }
        if self.rope_scaling == RopeScaling::FreqFactors {
            out.push(("rope_freqs.weight".into(), vec![self.rope_dim as u64 / 2]));
        }
        for i in 0..self.n_layer {
            let blk = |name: &str, dims: Vec<u64>| (format!("blk.{i}.{name}"), dims);
            out.extend([
                blk("attn_norm.weight", vec![e]),
                blk("attn_q.weight", vec![e, q]),
                blk("attn_k.weight", vec![e, kv]),
                blk("attn_v.weight", vec![e, kv]),
                blk("attn_output.weight", vec![q, e]),
                blk("ffn_norm.weight", vec![e]),
                blk("ffn_gate.weight", vec![e, ff]),
                blk("ffn_up.weight", vec![e, ff]),
                blk("ffn_down.weight", vec![ff, e]),
            ]);
            if self.qkv_bias {
                out.extend([blk("attn_q.bias", vec![q]), blk("attn_k.bias", vec![kv]), blk("attn_v.bias", vec![kv])]);
            }
        }
        out
    }

    /// Every tensor the forward pass reads exists with the shape the hyper-parameters imply.
    fn check_tensors(&self, tensors: &HashMap<&str, &TensorInfo>) -> Result<()> {
        for (name, dims) in self.expected_tensors() {
            match tensors.get(name.as_str()) {
                None => return Err(err!(ConfigBadValue, "the model has no '{name}' tensor")),
                Some(t) if t.dims != dims => {
                    return Err(err!(
                        ConfigBadValue,
                        "tensor '{name}' has shape {:?}, but the metadata implies {dims:?}",
                        t.dims
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn rope_scaling(keys: &Keys, has_freq_factors: bool) -> Result<RopeScaling> {
    if has_freq_factors {
        return Ok(RopeScaling::FreqFactors);
    }
    let kind = keys.metadata.get_str(&keys.key("rope.scaling.type"))?;
    let factor = keys.opt_f32("rope.scaling.factor")?.or(keys.opt_f32("rope.scale_linear")?);
    match (kind, factor) {
        (None | Some("none"), None) | (Some("none"), _) => Ok(RopeScaling::None),
        (None | Some("linear"), Some(f)) if f > 0.0 && f.is_finite() => {
            Ok(if f == 1.0 { RopeScaling::None } else { RopeScaling::Linear { factor: f } })
        }
        (Some(other), _) => Err(err!(ConfigBadValue, "RoPE scaling type '{other}' is not supported")),
        (_, factor) => Err(err!(ConfigBadValue, "RoPE scaling factor {factor:?} is not usable")),
    }
}

/// Architecture-prefixed metadata keys.
struct Keys<'a> {
    metadata: &'a Metadata,
    arch: &'a str,
}

impl Keys<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.arch)
    }

    fn opt_u32(&self, name: &str) -> Result<Option<u32>> {
        let key = self.key(name);
        match self.metadata.get_uint(&key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .map(Some)
                .ok_or_else(|| err!(ConfigBadValue, "'{key}' is {v}, outside 1..2^32")),
        }
    }

    fn u32(&self, name: &str) -> Result<u32> {
        let key = self.key(name);
        self.opt_u32(name)?.ok_or_else(|| missing_key(&key))
    }

    fn opt_f32(&self, name: &str) -> Result<Option<f32>> {
        let key = self.key(name);
        match self.metadata.get_float(&key)? {
            None => Ok(None),
            Some(v) if v.is_finite() && v > 0.0 => Ok(Some(v as f32)),
            Some(v) => Err(err!(ConfigBadValue, "'{key}' is {v}, not a positive number")),
        }
    }

    fn f32(&self, name: &str) -> Result<f32> {
        let key = self.key(name);
        self.opt_f32(name)?.ok_or_else(|| missing_key(&key))
    }
}
