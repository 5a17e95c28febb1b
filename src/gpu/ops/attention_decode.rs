//! The decode attention kernels (`shaders/attention_decode.wgsl`): one token's grouped-query attention split over the
//! context ("flash decoding"), then a combine pass; see [`super::attention`] for the semantics both attention kernels
//! share.

use super::attention::{cached_rows, check, check_shape, check_workgroup, grid_2d, AttentionIo, AttentionShape};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

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
    check_shape("attention_decode", shape)?;
    let n_chunks = shape.ctx.div_ceil(decode_chunk(gpu, shape.group(), shape.head_dim)?);
    let dims = [shape.n_head as usize, n_chunks as usize, shape.head_dim as usize + 2];
    Tensor::new(gpu, "attention partials", &dims, DType::F32)
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
    // The chunks the step attends write their records, which the combine pass reads.
    let record_bytes = u64::from(n_head) * u64::from(head_dim + 2) * 4;
    let records = Extent::PerCachedRows { bytes: record_bytes, rows: u64::from(chunk) };
    let macros = Macros::new().u32("HEAD_DIM", head_dim).u32("GROUP", group).u32("CHUNK", chunk).bool("F16", f16);
    let chunks = Dispatch::new(
        gpu,
        Launch {
            shader: "attention_decode",
            entry: "attention_decode",
            macros: macros.clone(),
            params: bytemuck::cast_slice(&words),
            bindings: vec![
                Some(Bind::Tensor(q)),
                Some(Bind::Declared(k_cache, cached_rows(shape, k_cache))),
                Some(Bind::Declared(v_cache, cached_rows(shape, v_cache))),
                Some(Bind::Tensor(step)),
                Some(Bind::Declared(partials, Access::writes(records))),
                None,
            ],
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
            bindings: vec![
                None,
                None,
                None,
                Some(Bind::Tensor(step)),
                Some(Bind::Declared(partials, Access::reads(records))),
                Some(Bind::Tensor(out)),
            ],
            workgroups: grid(gpu, "attention_combine", n_head)?,
        },
    )?;
    Ok(vec![chunks, combine])
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
