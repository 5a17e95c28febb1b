//! Causal grouped-query attention over the KV cache: `shaders/attention_prefill.wgsl` for a batch of tokens and
//! `shaders/attention_decode.wgsl` for one token at a time (DESIGN.md decision 6).
//!
//! - **Prefill** is flash-style (Dao et al. 2022, "FlashAttention"): K/V tiles in workgroup memory, shared by the
//!   query heads of a GQA group and by neighbouring tokens, with an online softmax.
//! - **Decode** splits the context into chunks of `CHUNK` keys handled by separate workgroups, each writing a partial
//!   (maximum, sum, weighted values) to a scratch buffer allocated at build time for the whole context (one per
//!   dispatch list, or one shared by all layers through [`attention_decode_with`]), then a combine pass merges them
//!   (the "flash decoding" split-K of llama.cpp's Vulkan and WebGPU backends), so decode stays parallel as the
//!   context grows (DESIGN.md decision 7).
//!
//! Both read the engine's `step` tensor (`[n_past, n_tokens, 0, 0]`, `u32`) when they run: token `t < n_tokens` of the
//! batch sees cache rows `0 ..= n_past + t` (rows past the cache are never read), and output rows from `n_tokens` on
//! are not written. The scale is `1 / sqrt(head_dim)`; softmax is computed in f32 with the running-maximum trick.

use super::kv_store::check_step;
use super::{activation, index_u32};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{DType, Gpu, Macros, Tensor};
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
    fn group(&self) -> u32 {
        self.n_head / self.n_head_kv
    }

    fn scale(&self) -> f32 {
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

/// The prefill kernel's tiles for `head_dim`: (query rows per workgroup, keys per K/V tile), within 16 KiB of
/// workgroup memory (WebGPU's default limit).
fn prefill_tiles(head_dim: u32) -> (u32, u32) {
    match head_dim {
        ..=64 => (32, 8),
        65..=128 => (16, 8),
        _ => (8, 8),
    }
}

/// Attention of `io.q` over the caches into `io.out` (see [`AttentionIo`]): the decode kernels when the batch capacity
/// is 1, the prefill kernel otherwise.
pub fn attention(gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<Vec<Dispatch>> {
    match shape.batch {
        1 => attention_decode(gpu, io, shape),
        _ => Ok(vec![attention_prefill(gpu, io, shape)?]),
    }
}

/// The prefill kernel (any batch capacity), as described at [`attention`]: one dispatch.
pub fn attention_prefill(gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<Dispatch> {
    let f16 = check("attention_prefill", gpu, io, shape)?;
    let AttentionIo { q, k_cache, v_cache, out, step } = io;
    let AttentionShape { n_head, n_head_kv, head_dim, ctx, batch } = shape;
    let (rows, block_kv) = prefill_tiles(head_dim);
    // q_tile and kv_tile (padded by a vec4 per row), scores, row_factor and row_end.
    let shared = 16 * u64::from(rows + block_kv) * u64::from(head_dim / 4 + 1) + 4 * u64::from(rows * (block_kv + 2));
    check_workgroup("attention_prefill", gpu, rows / 2 * block_kv / 2, shared)?;
    let row_tiles = (u64::from(batch) * u64::from(shape.group())).div_ceil(u64::from(rows));
    let row_tiles = index_u32("attention_prefill", "the query tiles", row_tiles as usize)?;
    let workgroups = grid_2d(gpu, "attention_prefill", row_tiles, n_head_kv)?;
    let words = [n_head, n_head_kv, shape.group(), batch, ctx, shape.scale().to_bits(), 0, 0];
    let macros = Macros::new().u32("HEAD_DIM", head_dim).u32("ROWS", rows).u32("BLOCK_KV", block_kv).bool("F16", f16);
    Dispatch::new(
        gpu,
        Launch {
            shader: "attention_prefill",
            entry: "attention_prefill",
            macros,
            params: bytemuck::cast_slice(&words),
            bindings: tensors([Some(q), Some(k_cache), Some(v_cache), Some(step), Some(out)]),
            workgroups,
        },
    )
}

/// The decode kernels (batch capacity 1), as described at [`attention`]: the chunks, then the combine pass, with a
/// scratch tensor of their own (see [`attention_decode_partials`]), kept alive by the dispatches.
pub fn attention_decode(gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<Vec<Dispatch>> {
    let partials = attention_decode_partials(gpu, shape)?;
    attention_decode_with(gpu, io, shape, &partials)
}

/// The scratch tensor of the decode kernels for `shape`: f32 `[n_head, ceil(ctx / chunk), head_dim + 2]`, one record
/// (sum of p·v over the chunk's keys, their maximum score, the sum of p) per query head and chunk of the context. The
/// layers of a model run one after another and may share one (see [`attention_decode_with`]).
pub fn attention_decode_partials(gpu: &Gpu, shape: AttentionShape) -> Result<Tensor> {
    Tensor::new(gpu, "attention partials", &attention_decode_partials_shape(gpu, shape)?, DType::F32)
}

/// The shape of [`attention_decode_partials`] for `shape` on this device, without allocating it (for the memory
/// plan).
pub fn attention_decode_partials_shape(gpu: &Gpu, shape: AttentionShape) -> Result<[usize; 3]> {
    check_shape("attention_decode", shape)?;
    let n_chunks = shape.ctx.div_ceil(decode_chunk(gpu, shape.group(), shape.head_dim)?);
    Ok([shape.n_head as usize, n_chunks as usize, shape.head_dim as usize + 2])
}

/// [`attention_decode`] with the scratch tensor `partials` given (from [`attention_decode_partials`] for this shape).
pub fn attention_decode_with(
    gpu: &Gpu,
    io: AttentionIo<'_>,
    shape: AttentionShape,
    partials: &Tensor,
) -> Result<Vec<Dispatch>> {
    let f16 = check("attention_decode", gpu, io, shape)?;
    let AttentionIo { q, k_cache, v_cache, out, step } = io;
    if shape.batch != 1 {
        return Err(err!(Usage, "attention_decode: the batch capacity must be 1, got {}", shape.batch));
    }
    let AttentionShape { n_head, n_head_kv, head_dim, ctx, .. } = shape;
    let group = shape.group();
    let chunk = decode_chunk(gpu, group, head_dim)?;
    let n_chunks = ctx.div_ceil(chunk);
    let dims = [n_head as usize, n_chunks as usize, head_dim as usize + 2];
    if partials.dtype() != DType::F32 || partials.shape() != dims {
        return Err(err!(
            Usage,
            "attention_decode: partials must be f32 {dims:?} for {shape:?}, got {} {:?}",
            partials.dtype().name(),
            partials.shape()
        ));
    }
    if [q, k_cache, v_cache, step, out].iter().any(|t| t.same_buffer(partials)) {
        return Err(err!(Usage, "attention_decode: partials needs a buffer of its own"));
    }
    let words = [n_head, n_head_kv, ctx, n_chunks, shape.scale().to_bits(), 0, 0, 0];
    let macros = Macros::new().u32("HEAD_DIM", head_dim).u32("GROUP", group).u32("CHUNK", chunk).bool("F16", f16);
    let chunks = Dispatch::new(
        gpu,
        Launch {
            shader: "attention_decode",
            entry: "attention_decode",
            macros: macros.clone(),
            params: bytemuck::cast_slice(&words),
            bindings: tensors([Some(q), Some(k_cache), Some(v_cache), Some(step), Some(partials), None]),
            workgroups: grid_2d(gpu, "attention_decode", n_chunks, n_head_kv)?,
        },
    )?;
    let combine = Dispatch::new(
        gpu,
        Launch {
            shader: "attention_decode",
            entry: "attention_combine",
            macros,
            params: bytemuck::cast_slice(&words),
            bindings: tensors([None, None, None, Some(step), Some(partials), Some(out)]),
            workgroups: grid(gpu, "attention_combine", n_head)?,
        },
    )?;
    Ok(vec![chunks, combine])
}

/// Bind group entries from tensors; `None` skips a binding the entry point does not use.
fn tensors<const N: usize>(list: [Option<&Tensor>; N]) -> Vec<Option<Bind<'_>>> {
    list.into_iter().map(|t| t.map(Bind::Tensor)).collect()
}

/// Keys per decode workgroup (and its invocations): the largest of 128, 64, 32 whose workgroup memory fits the device
/// and that covers a row of V with 4-wide columns.
fn decode_chunk(gpu: &Gpu, group: u32, head_dim: u32) -> Result<u32> {
    let shared = |chunk: u32| 4 * u64::from(group) * u64::from(head_dim + chunk + chunk.max(head_dim));
    let limit = u64::from(gpu.limits().max_compute_workgroup_storage_size);
    let fits = |&chunk: &u32| chunk >= head_dim / 4 && shared(chunk) <= limit;
    let chunk = [128, 64, 32].into_iter().find(fits).ok_or_else(|| {
        err!(
            GpuLimits,
            "attention_decode: {} bytes of workgroup memory for {group} heads of {head_dim} pass this GPU's {limit}",
            shared(32.max(head_dim / 4))
        )
    })?;
    check_workgroup("attention_decode", gpu, chunk, shared(chunk))?;
    Ok(chunk)
}

/// Checks tensors and shape; returns whether the caches are f16.
fn check(op: &str, gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<bool> {
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
fn check_shape(op: &str, shape: AttentionShape) -> Result<()> {
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
fn check_workgroup(op: &str, gpu: &Gpu, invocations: u32, shared_bytes: u64) -> Result<()> {
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
fn grid_2d(gpu: &Gpu, op: &str, x: u32, y: u32) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    match x <= max && y <= max {
        true => Ok([x, y, 1]),
        false => Err(err!(GpuLimits, "{op}: a grid of {x} × {y} workgroups passes this GPU's {max} per dimension")),
    }
}
