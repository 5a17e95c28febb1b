//! Rotary position embedding (`shaders/rope.wgsl`), in place on the queries or keys of a batch (Su et al. 2021,
//! "RoFormer: Enhanced Transformer with Rotary Position Embedding"), with the semantics of llama.cpp's `ggml_rope_ext`
//! for what the R1 distills use: normal (llama) and NeoX (qwen2) pairing, linear position scaling, and Llama 3.1's
//! per-frequency factors (`rope_freqs.weight`). YaRN is not supported (no R1 distill uses it).
//!
//! The angle of dimension pair `i` of token `t` is computed in f32 as ggml's GPU backends do:
//! `freq_scale · pos[t] · theta_scale^i / freq_factors[i]` with `theta_scale = powf(theta, -2 / rope_dim)` and
//! `freq_scale = 1 / factor`, both rounded to f32 here on the CPU as ggml rounds them. `theta_scale^i` is
//! `exp2(i · log2(theta_scale))` with the logarithm taken here in f64, more accurate than WGSL's `pow` may be.

use super::{activation, index_u32, WORKGROUP_SIZE};
use crate::config::{ModelConfig, RopeScaling, RopeStyle};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::Access;
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// How a model rotates its query and key heads.
#[derive(Debug, Clone)]
pub struct RopeParams<'a> {
    pub style: RopeStyle,
    /// Dimensions of each head that are rotated (even, at most the head dimension); the rest pass through.
    pub rope_dim: u32,
    /// The frequency base (`rope.freq_base`: 10000 for qwen2, 500000 for Llama 3.1).
    pub theta: f32,
    pub scaling: RopeScaling,
    /// With [`RopeScaling::FreqFactors`]: the f32 tensor of `rope_dim / 2` divisors (`rope_freqs.weight`); `None`
    /// otherwise.
    pub freq_factors: Option<&'a Tensor>,
}

impl<'a> RopeParams<'a> {
    /// The model's RoPE; `freq_factors` is its `rope_freqs.weight` when the config says [`RopeScaling::FreqFactors`].
    pub fn from_config(config: &ModelConfig, freq_factors: Option<&'a Tensor>) -> RopeParams<'a> {
        RopeParams {
            style: config.rope_style,
            rope_dim: config.rope_dim,
            theta: config.rope_theta,
            scaling: config.rope_scaling.clone(),
            freq_factors,
        }
    }

    /// The rope shader's macros for this rotation, with f16 activations or not (both entries share them).
    fn macros(&self, f16: bool) -> Macros {
        Macros::new()
            .u32("WORKGROUP_SIZE", WORKGROUP_SIZE)
            .bool("F16", f16)
            .bool("NEOX", self.style == RopeStyle::Neox)
            .bool("FREQ_FACTORS", self.freq_factors.is_some())
    }

    /// `(log2(theta_scale), freq_scale)`, from `theta_scale` and `freq_scale` as ggml computes them in f32.
    fn scales(&self) -> (f32, f32) {
        let theta_scale = self.theta.powf(-2.0 / self.rope_dim as f32);
        let log2_theta_scale = f64::from(theta_scale).log2() as f32;
        let freq_scale = match self.scaling {
            RopeScaling::Linear { factor } => 1.0 / factor,
            RopeScaling::None | RopeScaling::FreqFactors => 1.0,
        };
        (log2_theta_scale, freq_scale)
    }
}

/// Rotates the first `rope.rope_dim` dimensions of every head of `x` (`[batch, n_heads, head_dim]` in any shape of
/// that length, f32 or f16) in place, token `t` by its position `pos[t]` (a `u32` tensor `[batch]`).
///
/// Every row of the batch capacity is rotated: the engine writes the positions of the real tokens, and rows past them
/// are padding that nothing reads.
pub fn rope(
    gpu: &Gpu,
    x: &Tensor,
    pos: &Tensor,
    n_heads: u32,
    head_dim: u32,
    rope: &RopeParams<'_>,
) -> Result<Dispatch> {
    let f16 = activation(gpu, "rope", "x", x)?;
    if pos.dtype() != DType::U32 || pos.is_empty() {
        return Err(err!(
            Usage,
            "rope: pos must be a u32 tensor [batch], got {} {:?}",
            pos.dtype().name(),
            pos.shape()
        ));
    }
    let rows = pos.len() as u64 * u64::from(n_heads);
    if n_heads == 0 || head_dim == 0 || x.len() as u64 != rows * u64::from(head_dim) {
        return Err(err!(
            Usage,
            "rope: x {:?} is not [batch {}, n_heads {n_heads}, head_dim {head_dim}]",
            x.shape(),
            pos.len()
        ));
    }
    if rope.rope_dim == 0 || rope.rope_dim % 2 != 0 || rope.rope_dim > head_dim {
        return Err(err!(Usage, "rope: rope_dim {} must be even and in 2..={head_dim}", rope.rope_dim));
    }
    check_frequencies(rope)?;
    if x.same_buffer(pos) || rope.freq_factors.is_some_and(|f| f.same_buffer(x)) {
        return Err(err!(Usage, "rope: x is rotated in place and may not share a buffer with pos or freq_factors"));
    }
    let half_dim = rope.rope_dim / 2;
    let pairs = index_u32("rope", "the pair count", (rows * u64::from(half_dim)) as usize)?;
    let (log2_theta_scale, freq_scale) = rope.scales();
    let words = [pairs, half_dim, head_dim, n_heads, log2_theta_scale.to_bits(), freq_scale.to_bits(), 0, 0];
    let macros = rope.macros(f16);
    Dispatch::new(
        gpu,
        Launch {
            shader: "rope",
            entry: "rope",
            macros,
            params: bytemuck::cast_slice(&words),
            // x is rotated in place: read and written.
            bindings: vec![
                Some(Bind::Declared(x, Access::READ_WRITE)),
                Some(Bind::Tensor(pos)),
                rope.freq_factors.map(Bind::Tensor),
            ],
            workgroups: grid(gpu, "rope", pairs.div_ceil(WORKGROUP_SIZE))?,
        },
    )
}

/// The tensors [`rope_store`] reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct RopeStoreIo<'a> {
    /// f32 `[batch, (n_head + 2 · n_head_kv) · head_dim]`: Q, K and V side by side (the stacked projection's output).
    pub qkv: &'a Tensor,
    /// The engine's `u32` tensor `[n_past, n_tokens, 0, 0]`, read when the dispatch runs.
    pub step: &'a Tensor,
    /// f32 `[batch, n_head · head_dim]`: the rotated queries.
    pub q: &'a Tensor,
    /// f32 or f16 `[ctx, n_head_kv · head_dim]`, both the same dtype: the rotated keys and the values go to rows
    /// `n_past ..`.
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
}

/// RoPE on the step's queries and keys, and the keys and values into the KV cache, in one dispatch
/// (`shaders/rope.wgsl`, `rope_store`): for `t < n_tokens`, `q[t] = rope(Q of qkv[t])`, `k_cache[n_past + t] =
/// rope(K of qkv[t])` and `v_cache[n_past + t] = V of qkv[t]`, token `t` at position `n_past + t`, with `n_past` and
/// `n_tokens` read from `io.step` when it runs (rows past the cache are never written). The rotation is [`rope`]'s.
pub fn rope_store(
    gpu: &Gpu,
    io: RopeStoreIo<'_>,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    rope: &RopeParams<'_>,
) -> Result<Dispatch> {
    let op = "rope_store";
    let RopeStoreIo { qkv, step, q, k_cache, v_cache } = io;
    let f16 = activation(gpu, op, "k_cache", k_cache)?;
    super::kv_store::check_step(op, step)?;
    if n_head == 0 || n_head_kv == 0 || head_dim == 0 || head_dim % 2 != 0 {
        return Err(err!(Usage, "{op}: {n_head} heads, {n_head_kv} kv heads of {head_dim}: non-zero, head_dim even"));
    }
    if rope.rope_dim == 0 || rope.rope_dim % 2 != 0 || rope.rope_dim > head_dim {
        return Err(err!(Usage, "{op}: rope_dim {} must be even and in 2..={head_dim}", rope.rope_dim));
    }
    check_frequencies(rope)?;
    let (q_dim, kv_dim) = (n_head as usize * head_dim as usize, n_head_kv as usize * head_dim as usize);
    let batch = q.rows();
    let ctx = k_cache.rows();
    let wants = [
        ("qkv", qkv, DType::F32, batch, q_dim + 2 * kv_dim),
        ("q", q, DType::F32, batch, q_dim),
        ("k_cache", k_cache, k_cache.dtype(), ctx, kv_dim),
        ("v_cache", v_cache, k_cache.dtype(), ctx, kv_dim),
    ];
    for (name, t, dtype, rows, cols) in wants {
        if t.dtype() != dtype || t.rows() != rows || t.cols() != cols || rows == 0 {
            return Err(err!(
                Usage,
                "{op}: {name} must be {} [{rows}, {cols}], got {} {:?}",
                dtype.name(),
                t.dtype().name(),
                t.shape()
            ));
        }
    }
    let written = [q, k_cache, v_cache];
    let read = [qkv, step];
    if written.iter().enumerate().any(|(i, a)| {
        read.iter().any(|b| a.same_buffer(b))
            || written[i + 1..].iter().any(|b| a.same_buffer(b))
            || rope.freq_factors.is_some_and(|f| f.same_buffer(a))
    }) {
        return Err(err!(Usage, "{op}: q and the caches need buffers of their own"));
    }
    let per_token = (q_dim + kv_dim) / 2 + kv_dim / 2;
    let invocations = index_u32(op, "the work items", batch.saturating_mul(per_token))?;
    index_u32(op, "qkv", qkv.len())?;
    index_u32(op, "the caches", k_cache.len())?;
    let (log2_theta_scale, freq_scale) = rope.scales();
    let words = [
        n_head,
        n_head_kv,
        head_dim,
        rope.rope_dim / 2,
        log2_theta_scale.to_bits(),
        freq_scale.to_bits(),
        index_u32(op, "the batch", batch)?,
        index_u32(op, "the context", ctx)?,
    ];
    let macros = rope.macros(f16);
    Dispatch::new(
        gpu,
        Launch {
            shader: "rope",
            entry: "rope_store",
            macros,
            params: bytemuck::cast_slice(&words),
            bindings: [Some(qkv), Some(step), Some(q), Some(k_cache), Some(v_cache), rope.freq_factors]
                .into_iter()
                .map(|t| t.map(Bind::Tensor))
                .collect(),
            workgroups: grid(gpu, op, invocations.div_ceil(WORKGROUP_SIZE))?,
        },
    )
}

/// Checks theta, the scaling and the frequency factors.
fn check_frequencies(rope: &RopeParams<'_>) -> Result<()> {
    if !rope.theta.is_finite() || rope.theta <= 0.0 {
        return Err(err!(Usage, "rope: theta must be a positive number, got {}", rope.theta));
    }
    if let RopeScaling::Linear { factor } = rope.scaling {
        if !factor.is_finite() || factor <= 0.0 {
            return Err(err!(Usage, "rope: the linear scaling factor must be a positive number, got {factor}"));
        }
    }
    let wants_factors = rope.scaling == RopeScaling::FreqFactors;
    match rope.freq_factors {
        None if wants_factors => Err(err!(Usage, "rope: FreqFactors scaling needs the freq_factors tensor")),
        Some(_) if !wants_factors => Err(err!(Usage, "rope: freq_factors given without FreqFactors scaling")),
        Some(f) if f.dtype() != DType::F32 || f.len() != rope.rope_dim as usize / 2 => Err(err!(
            Usage,
            "rope: freq_factors must be f32 [{}], got {} {:?}",
            rope.rope_dim / 2,
            f.dtype().name(),
            f.shape()
        )),
        _ => Ok(()),
    }
}
