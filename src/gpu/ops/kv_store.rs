//! Appending a batch's keys or values to the KV cache (`shaders/kv_store.wgsl`).
//!
//! The cache is preallocated for the whole context (ARCHITECTURE.md §7): f16 when the device has `shader-f16`, f32
//! otherwise. Where the batch goes is read at run time from the engine's `step` tensor, so the dispatch is built once
//! and replayed at every step.

use super::{activation, index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// Copies rows `0 .. n_tokens` of `src` (f32 `[batch, n_head_kv, head_dim]`, or any shape whose first dimension is the
/// batch capacity) to rows `n_past .. n_past + n_tokens` of `cache` (f32 or f16 `[ctx, ...]` with rows as long as
/// `src`'s), where `step` is the engine's `u32` tensor `[n_past, n_tokens, 0, 0]`, read when the dispatch runs. Rows
/// that would fall past the end of the cache are not written.
pub fn kv_store(gpu: &Gpu, src: &Tensor, cache: &Tensor, step: &Tensor) -> Result<Dispatch> {
    let f16 = activation(gpu, "kv_store", "cache", cache)?;
    if src.dtype() != DType::F32 {
        return Err(err!(Usage, "kv_store: src must be f32, got {}", src.dtype().name()));
    }
    check_step("kv_store", step)?;
    let row = |t: &Tensor| t.shape().first().filter(|&&n| n > 0).map(|&n| (n, t.len() / n));
    let (Some((batch, row_len)), Some((ctx, cache_row))) = (row(src), row(cache)) else {
        return Err(err!(Usage, "kv_store: empty src {:?} or cache {:?}", src.shape(), cache.shape()));
    };
    if row_len != cache_row || row_len == 0 {
        return Err(err!(
            Usage,
            "kv_store: rows of src {:?} ({row_len} elements) and cache {:?} ({cache_row}) differ",
            src.shape(),
            cache.shape()
        ));
    }
    if cache.same_buffer(src) || cache.same_buffer(step) {
        return Err(err!(Usage, "kv_store: the cache may not share a buffer with src or step"));
    }
    let len = index_u32("kv_store", "src", src.len())?;
    index_u32("kv_store", "the cache", cache.len())?;
    let words = [row_len as u32, batch as u32, ctx as u32, 0];
    // The step's rows of the cache are written; nothing of it is read.
    let row_bytes = cache.byte_size() / ctx as u64;
    let rows_written = Access::writes(Extent::PerToken(row_bytes));
    Dispatch::new(
        gpu,
        Launch {
            shader: "kv_store",
            entry: "kv_store",
            macros: Macros::new().u32("WORKGROUP_SIZE", WORKGROUP_SIZE).bool("F16", f16),
            params: &params(words),
            bindings: vec![
                Some(Bind::Tensor(src)),
                Some(Bind::Tensor(step)),
                Some(Bind::Declared(cache, rows_written)),
            ],
            workgroups: grid(gpu, "kv_store", len.div_ceil(WORKGROUP_SIZE))?,
        },
    )
}

/// Checks the engine's `step` tensor: `u32`, `[n_past, n_tokens, ...]`.
pub(super) fn check_step(op: &str, step: &Tensor) -> Result<()> {
    match step.dtype() == DType::U32 && step.len() >= 2 {
        true => Ok(()),
        false => Err(err!(
            Usage,
            "{op}: step must be the u32 tensor [n_past, n_tokens, 0, 0], got {} {:?}",
            step.dtype().name(),
            step.shape()
        )),
    }
}
