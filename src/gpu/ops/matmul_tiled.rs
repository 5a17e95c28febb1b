//! The prefill kernel (`shaders/matmul.wgsl`): `y[t, r] = Σ_k W[r, k] · x[t, k]` for any number of tokens, as a
//! tiled GEMM that dequantises a tile of 128 (or 64) rows × 32 columns of W into workgroup memory once for 64 tokens,
//! ending in the shared [`Epilogue`] (see [`super::matmul`]).

use super::index_u32;
use super::matmul::{bindings, check_product, nonempty_parts, params8, Epilogue};
use crate::gpu::dispatch::{grid, Dispatch, Launch};
use crate::gpu::{Gpu, SplitWeight, Tensor};
use crate::{err, Result};

/// Tokens per tile of the tiled kernel; its tiles of W hold 64 or 128 rows (see [`matmul_tiled_with`]).
const TILE_N: u32 = 64;

/// Workgroup memory the tiled kernel takes for `tile_rows` rows: the f32 tiles of W and x, 32 values of k each.
fn tile_bytes(tile_rows: u32) -> u32 {
    (tile_rows + TILE_N) * 32 * 4
}

/// The prefill kernel: `y[t, r] = Σ_k W[r, k] · x[t, k]` for any number of tokens (the rows of `x`), as a tiled
/// GEMM. Correct for a single token too, but the vector kernel is the faster choice there. Tiles of 128 rows when the
/// device's workgroup memory holds them (24 KiB), else 64.
pub fn matmul_tiled(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    matmul_tiled_into(gpu, w, x, y, Epilogue::default())
}

/// [`matmul_tiled`] with an [`Epilogue`].
pub fn matmul_tiled_into(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
) -> Result<Vec<Dispatch>> {
    let tile_rows = match gpu.limits().max_compute_workgroup_storage_size >= tile_bytes(128) {
        true => 128,
        false => 64,
    };
    tiled(gpu, w, x, y, epilogue, tile_rows)
}

/// [`matmul_tiled`] with tiles of `tile_rows` rows of W (64 or 128) × 64 tokens, which take
/// `(tile_rows + 64) · 128` bytes of workgroup memory (for tests and tuning).
pub fn matmul_tiled_with(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor, tile_rows: u32) -> Result<Vec<Dispatch>> {
    tiled(gpu, w, x, y, Epilogue::default(), tile_rows)
}

fn tiled(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
    tile_rows: u32,
) -> Result<Vec<Dispatch>> {
    let op = "matmul_tiled";
    let p = check_product(gpu, op, w, x, y, &epilogue)?;
    if tile_rows != 64 && tile_rows != 128 {
        return Err(err!(Usage, "{op}: tiles of 64 or 128 rows, not {tile_rows}"));
    }
    let limit = gpu.limits().max_compute_workgroup_storage_size;
    if tile_bytes(tile_rows) > limit {
        return Err(err!(
            GpuLimits,
            "{op}: tiles of {tile_rows} rows need {} bytes of workgroup memory, this GPU has {limit}",
            tile_bytes(tile_rows)
        ));
    }
    let macros = p.macros.u32("THREAD_M", tile_rows / 16);
    let token_tiles = p.n_tokens.div_ceil(TILE_N);
    nonempty_parts(w)
        .map(|part| {
            let rows = index_u32(op, "a part's row count", part.n_rows)?;
            let first_row = index_u32(op, "a part's first row", part.first_row)?;
            let tiles = rows
                .div_ceil(tile_rows)
                .checked_mul(token_tiles)
                .ok_or_else(|| err!(GpuLimits, "{op}: {rows} rows × {} tokens is too many tiles", p.n_tokens))?;
            Dispatch::new(
                gpu,
                Launch {
                    shader: "matmul",
                    entry: "matmul",
                    macros: macros.clone(),
                    params: &params8([p.k, rows, first_row, p.y_cols, p.n_tokens, p.column, 0, 0]),
                    bindings: bindings(part, x, y, &epilogue),
                    workgroups: grid(gpu, op, tiles)?,
                },
            )
        })
        .collect()
}
