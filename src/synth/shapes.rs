//! The shapes of the six DeepSeek-R1 distills (the model table of ARCHITECTURE.md, "What webr1 is"), from the public
//! `config.json` of each: DeepSeek-R1-Distill-Qwen-1.5B/7B/14B/32B (Qwen2.5 shapes) and
//! DeepSeek-R1-Distill-Llama-8B/70B (Llama-3.1 shapes).

use crate::config::Architecture;
use crate::{err, Result};

/// Llama 3.1's RoPE scaling (`rope_scaling` of type `llama3` in `config.json`), which llama.cpp's converter turns into
/// the per-frequency divisors of a `rope_freqs.weight` tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: u32,
}

/// Llama-3.1-8B and -70B (and so both R1-Distill-Llama models) use the same scaling.
const LLAMA31_ROPE: Llama3Rope =
    Llama3Rope { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192 };

/// One model's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthShape {
    /// The name `webr1 synth` takes, e.g. `r1-qwen-7b`.
    pub name: &'static str,
    /// The model it mimics, e.g. `DeepSeek-R1-Distill-Qwen-7B`.
    pub model: &'static str,
    /// `general.size_label`, e.g. `7B`.
    pub size_label: &'static str,
    pub arch: Architecture,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
    /// Rows of the embedding and the LM head (`vocab_size` in `config.json`, padded past the tokenizer's own tokens).
    pub n_vocab: u32,
    pub context_length: u32,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    /// Llama 3.1's RoPE scaling (llama shapes only).
    pub llama3_rope: Option<Llama3Rope>,
}

impl SynthShape {
    pub fn head_dim(&self) -> u32 {
        self.n_embd / self.n_head
    }

    /// Query width and key/value width.
    pub fn q_dim(&self) -> u32 {
        self.n_head * self.head_dim()
    }

    pub fn kv_dim(&self) -> u32 {
        self.n_head_kv * self.head_dim()
    }

    /// Every shape `webr1 synth` knows.
    pub fn all() -> &'static [SynthShape] {
        &SHAPES
    }

    /// The shape called `name`, or a `usage` error that lists the names.
    pub fn named(name: &str) -> Result<&'static SynthShape> {
        SHAPES.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
            err!(Usage, "unknown model shape '{name}'; the shapes are {}", names.join(", "))
        })
    }
}

const fn qwen(
    name: &'static str,
    model: &'static str,
    size_label: &'static str,
    dims: [u32; 6],
    rope_theta: f32,
    rms_norm_eps: f32,
) -> SynthShape {
    let [n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab] = dims;
    SynthShape {
        name,
        model,
        size_label,
        arch: Architecture::Qwen2,
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        n_ff,
        n_vocab,
        context_length: 131072,
        rope_theta,
        rms_norm_eps,
        llama3_rope: None,
    }
}

const fn llama(name: &'static str, model: &'static str, size_label: &'static str, dims: [u32; 5]) -> SynthShape {
    let [n_embd, n_layer, n_head, n_head_kv, n_ff] = dims;
    SynthShape {
        name,
        model,
        size_label,
        arch: Architecture::Llama,
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        n_ff,
        n_vocab: 128256,
        context_length: 131072,
        rope_theta: 500000.0,
        rms_norm_eps: 1e-5,
        llama3_rope: Some(LLAMA31_ROPE),
    }
}

//                                          n_embd layers heads kv  n_ff   vocab
const SHAPES: [SynthShape; 6] = [
    qwen("r1-qwen-1.5b", "DeepSeek-R1-Distill-Qwen-1.5B", "1.5B", [1536, 28, 12, 2, 8960, 151936], 10000.0, 1e-6),
    qwen("r1-qwen-7b", "DeepSeek-R1-Distill-Qwen-7B", "7B", [3584, 28, 28, 4, 18944, 152064], 10000.0, 1e-6),
    qwen("r1-qwen-14b", "DeepSeek-R1-Distill-Qwen-14B", "14B", [5120, 48, 40, 8, 13824, 152064], 1e6, 1e-5),
    qwen("r1-qwen-32b", "DeepSeek-R1-Distill-Qwen-32B", "32B", [5120, 64, 40, 8, 27648, 152064], 1e6, 1e-5),
    llama("r1-llama-8b", "DeepSeek-R1-Distill-Llama-8B", "8B", [4096, 32, 32, 8, 14336]),
    llama("r1-llama-70b", "DeepSeek-R1-Distill-Llama-70B", "70B", [8192, 80, 64, 8, 28672]),
];

/// Llama 3.1's per-frequency RoPE divisors (`head_dim / 2` values), computed as llama.cpp's converter computes them
/// for `rope_freqs.weight`: 1 for short wavelengths, `factor` for long ones, and a smooth blend between.
pub fn llama3_rope_factors(rope: &Llama3Rope, theta: f32, head_dim: u32) -> Vec<f32> {
    let old = rope.original_context as f64;
    let low_wavelen = old / rope.low_freq_factor as f64;
    let high_wavelen = old / rope.high_freq_factor as f64;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                rope.factor
            } else {
                let smooth = (old / wavelen - rope.low_freq_factor as f64)
                    / (rope.high_freq_factor as f64 - rope.low_freq_factor as f64);
                (1.0 / ((1.0 - smooth) / rope.factor as f64 + smooth)) as f32
            }
        })
        .collect()
}
