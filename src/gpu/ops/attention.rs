//! Causal grouped-query attention over the KV cache: `shaders/attention_prefill.wgsl` for a batch of tokens and
//! `shaders/attention_decode.wgsl` for one token at a time (ARCHITECTURE.md §6).
//!
//! - **Prefill** is flash-style (Dao et al. 2022, "FlashAttention"): tiles of 32 query rows, the (token, head) pairs
//!   of a GQA group, against K/V tiles of 32 keys staged in workgroup memory, with an online softmax; tiles past the
//!   last key a workgroup's rows see are never visited. See [`super::attention_prefill`].
//! - **Decode** splits the context between workgroups, each writing a partial (maximum, sum, weighted values) per
//!   head to a scratch buffer allocated at build time for the whole context (one per dispatch list, or one shared by
//!   all layers through [`super::attention_decode::attention_decode_with`]), then a combine pass merges them (the
//!   "flash decoding" split-K of llama.cpp's Vulkan and WebGPU backends), so decode stays parallel as the context
//!   grows (ARCHITECTURE.md §7). See [`super::attention_decode`].
//!
//! Both read the engine's `step` tensor (`[n_past, n_tokens, 0, 0]`, `u32`) when they run: token `t < n_tokens` of the
//! batch sees cache rows `0 ..= n_past + t` (rows past the cache are never read), and output rows from `n_tokens` on
//! are not written. The scale is `1 / sqrt(head_dim)`; softmax is computed in f32 with the running-maximum trick.
//! Both kernels' shapes are chosen from the adapter and can be forced ([`super::attention_decode::DecodeShape`],
//! [`super::attention_prefill::PrefillShape`]); the kernel tests run every shape a device can be given.

use super::attention_decode::attention_decode;
use super::attention_prefill::attention_prefill;
use super::kv_store::check_step;
use super::{activation, index_u32};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};
use crate::{err, Result};

/// The static shape an attention dispatch is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub n_head: u32,
    /// Key/value heads (dividing `n_head`: grouped-query attention).
    pub n_head_kv: u32,
    /// Dimension of one head: a multiple of 16, at most 256 (64 and 128 are tested).
    pub head_dim: u32,
    /// Rows of the KV cache: the context length.
    pub ctx: u32,
    /// The batch capacity: rows of `q` and `out`.
    pub batch: u32,
}

impl AttentionShape {
    pub(super) fn group(&self) -> u32 {
        self.n_head / self.n_head_kv
    }

    pub(super) fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// The tensors an attention dispatch reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct AttentionIo<'a> {
    /// f32 `[batch, n_head, head_dim]`, after RoPE.
    pub q: &'a Tensor,
    /// f32 or f16 `[ctx, n_head_kv, head_dim]`, both the same dtype.
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
    /// f32 `[batch, n_head * head_dim]`.
    pub out: &'a Tensor,
    /// The engine's `u32` tensor `[n_past, n_tokens, 0, 0]`, read when the dispatches run.
    pub step: &'a Tensor,
}

/// Attention of `io.q` over the caches into `io.out` (see [`AttentionIo`]): the decode kernels when the batch capacity
/// is 1, the prefill kernel otherwise.
pub fn attention(gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<Vec<Dispatch>> {
    match shape.batch {
        1 => attention_decode(gpu, io, shape),
        _ => Ok(vec![attention_prefill(gpu, io, shape)?]),
    }
}

/// What attention reads of a cache: the rows the step attends, `0 .. n_past + n_tokens`.
pub(super) fn cached_rows(shape: AttentionShape, cache: &Tensor) -> Access {
    Access::reads(Extent::PerCachedRows { bytes: cache.byte_size() / u64::from(shape.ctx), rows: 1 })
}

/// Checks tensors and shape; returns whether the caches are f16.
pub(super) fn check(op: &str, gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<bool> {
    check_shape(op, shape)?;
    let AttentionIo { q, k_cache, v_cache, out, step } = io;
    let AttentionShape { n_head, n_head_kv, head_dim, ctx, batch } = shape;
    let f16 = activation(gpu, op, "k_cache", k_cache)?;
    let q_len = u64::from(batch) * u64::from(n_head) * u64::from(head_dim);
    let cache_len = u64::from(ctx) * u64::from(n_head_kv) * u64::from(head_dim);
    for (name, t, dtype, len) in [
        ("q", q, DType::F32, q_len),
        ("out", out, DType::F32, q_len),
        ("k_cache", k_cache, k_cache.dtype(), cache_len),
        ("v_cache", v_cache, k_cache.dtype(), cache_len),
    ] {
        if t.dtype() != dtype || t.len() as u64 != len {
            return Err(err!(
                Usage,
                "{op}: {name} must be {} with {len} elements for {shape:?}, got {} {:?}",
                dtype.name(),
                t.dtype().name(),
                t.shape()
            ));
        }
    }
    check_step(op, step)?;
    if [q, k_cache, v_cache, step].iter().any(|t| t.same_buffer(out)) {
        return Err(err!(Usage, "{op}: out needs a buffer of its own"));
    }
    index_u32(op, "a cache", cache_len as usize)?;
    index_u32(op, "q", q_len as usize)?;
    Ok(f16)
}

/// Checks the sizes of `shape`.
pub(super) fn check_shape(op: &str, shape: AttentionShape) -> Result<()> {
    let AttentionShape { n_head, n_head_kv, head_dim, ctx, batch } = shape;
    if [n_head, n_head_kv, head_dim, ctx, batch].contains(&0) || n_head % n_head_kv != 0 {
        return Err(err!(Usage, "{op}: {shape:?} needs non-zero sizes and n_head a multiple of n_head_kv"));
    }
    if head_dim % 16 != 0 || head_dim > 256 {
        return Err(err!(Usage, "{op}: head_dim {head_dim} must be a multiple of 16, at most 256"));
    }
    Ok(())
}

/// Checks a workgroup's invocations and workgroup memory against the device's limits.
pub(super) fn check_workgroup(op: &str, gpu: &Gpu, invocations: u32, shared_bytes: u64) -> Result<()> {
    let limits = gpu.limits();
    let max_invocations = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x);
    let max_shared = u64::from(limits.max_compute_workgroup_storage_size);
    if invocations > max_invocations || shared_bytes > max_shared {
        return Err(err!(
            GpuLimits,
            "{op}: a workgroup of {invocations} invocations and {shared_bytes} bytes of workgroup memory passes this \
             GPU's limits ({max_invocations} invocations, {max_shared} bytes)"
        ));
    }
    Ok(())
}

/// The grid `[x, y, 1]`, checked against the per-dimension limit.
pub(super) fn grid_2d(gpu: &Gpu, op: &str, x: u32, y: u32) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    match x <= max && y <= max {
        true => Ok([x, y, 1]),
        false => Err(err!(GpuLimits, "{op}: a grid of {x} × {y} workgroups passes this GPU's {max} per dimension")),
    }
}
