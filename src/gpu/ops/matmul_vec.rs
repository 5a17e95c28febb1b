//! The decode kernel (`shaders/matmul_vec.wgsl`): `y[t, r] = Σ_k W[r, k] · x[t, k]` for a few tokens
//! (1..=[`MAX_VEC_TOKENS`]), ending in the shared [`Epilogue`] (see [`super::matmul`]). Memory-bound: every weight is
//! read once and serves every token, and each workgroup (16 rows for one token, 4 for 5..=8) loads each piece of x once
//! for all its rows. Reductions use subgroups when the device has them.

use super::index_u32;
use super::matmul::{bindings, check_product, nonempty_parts, params8, Epilogue, MAX_VEC_TOKENS};
use crate::gpu::dispatch::{grid, Dispatch, Launch};
use crate::gpu::{Gpu, SplitWeight, Tensor};
use crate::{err, Result};

/// Invocations of a `matmul_vec` workgroup.
const VEC_WORKGROUP_SIZE: u32 = 64;

/// The rows of W one `matmul_vec` workgroup computes for `n_tokens` tokens: x is loaded once per workgroup, so more
/// rows make it cheaper next to the weights; 16 sums per invocation for up to 4 tokens, 4 rows beyond.
fn vec_rows_per_workgroup(n_tokens: u32) -> u32 {
    (16 / n_tokens.max(1)).max(4)
}

/// The decode kernel: `y[t, r] = Σ_k W[r, k] · x[t, k]` for 1..=[`MAX_VEC_TOKENS`] tokens (the rows of `x`).
/// The number of tokens is compiled into the pipeline.
pub fn matmul_vec(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    matmul_vec_into(gpu, w, x, y, Epilogue::default())
}

/// [`matmul_vec`] with an [`Epilogue`].
pub fn matmul_vec_into(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
) -> Result<Vec<Dispatch>> {
    let op = "matmul_vec";
    let p = check_product(gpu, op, w, x, y, &epilogue)?;
    if p.n_tokens as usize > MAX_VEC_TOKENS {
        return Err(err!(Usage, "{op}: {} tokens, at most {MAX_VEC_TOKENS} (use matmul or matmul_tiled)", p.n_tokens));
    }
    let features = gpu.features();
    let rows_per_workgroup = vec_rows_per_workgroup(p.n_tokens);
    let mut macros = p
        .macros
        .u32("WORKGROUP_SIZE", VEC_WORKGROUP_SIZE)
        .u32("ROWS_PER_WG", rows_per_workgroup)
        .u32("N_TOKENS", p.n_tokens)
        .bool("CACHE_X", p.n_tokens <= rows_per_workgroup);
    if features.subgroups {
        let min_size = features.subgroup_min_size.clamp(1, VEC_WORKGROUP_SIZE);
        macros = macros.bool("SUBGROUPS", true).u32("MIN_SUBGROUP_SIZE", min_size);
    }
    nonempty_parts(w)
        .map(|part| {
            let rows = index_u32(op, "a part's row count", part.n_rows)?;
            let first_row = index_u32(op, "a part's first row", part.first_row)?;
            Dispatch::new(
                gpu,
                Launch {
                    shader: "matmul_vec",
                    entry: "matmul_vec",
                    macros: macros.clone(),
                    params: &params8([p.k, rows, first_row, p.y_cols, p.column, 0, 0, 0]),
                    bindings: bindings(part, x, y, &epilogue),
                    workgroups: grid(gpu, op, rows.div_ceil(rows_per_workgroup))?,
                },
            )
        })
        .collect()
}
