//! The prefill attention kernel (`shaders/attention_prefill.wgsl`): flash-style causal grouped-query attention of a
//! batch of tokens over the KV cache; see [`super::attention`] for the semantics both attention kernels share.

use super::attention::{cached_rows, check, check_workgroup, grid_2d, AttentionIo, AttentionShape};
use super::index_u32;
use crate::gpu::dispatch::{Bind, Dispatch, Launch};
use crate::gpu::{Gpu, Macros};
use crate::Result;

/// The prefill kernel's tiles for `head_dim`: (query rows per workgroup, keys per K/V tile), within 16 KiB of
/// workgroup memory (WebGPU's default limit).
fn prefill_tiles(head_dim: u32) -> (u32, u32) {
    match head_dim {
        ..=64 => (32, 8),
        65..=128 => (16, 8),
        _ => (8, 8),
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
            bindings: vec![
                Some(Bind::Tensor(q)),
                Some(Bind::Declared(k_cache, cached_rows(shape, k_cache))),
                Some(Bind::Declared(v_cache, cached_rows(shape, v_cache))),
                Some(Bind::Tensor(step)),
                Some(Bind::Tensor(out)),
            ],
            workgroups,
        },
    )
}
