//! The embedding lookup (`shaders/get_rows.wgsl`), as llama.cpp's `ggml_get_rows`: `out[t, :] = W[ids[t], :]`,
//! dequantised from W's raw GGML blocks by `shaders/dequant.wgsl`.
//!
//! The ids are read on the GPU when the dispatch runs, so the forward pass builds the dispatches once and the engine
//! writes new ids into the same tensor before each step.

use super::matmul::{params8, weight_macros, weight_type};
use super::{activation, index_u32};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{DType, Gpu, SplitWeight, Tensor};
use crate::{err, Result};

/// Invocations per workgroup (one workgroup per token).
const GET_ROWS_WORKGROUP_SIZE: u32 = 64;

/// `out[t, :] = W[ids[t], :]` for the `u32` ids (`[n_tokens]`) into `out` (`[n_tokens, cols]`, f32, or f16 with
/// `shader-f16`), for a weight `w` (`[rows, cols]`) of any supported type.
///
/// One dispatch per part of `w`; each writes the tokens whose id falls in its rows. An id of `rows` or more gives a
/// row of zeros (written by the last part's dispatch), never an out-of-bounds read.
pub fn get_rows(gpu: &Gpu, w: &SplitWeight, ids: &Tensor, out: &Tensor) -> Result<Vec<Dispatch>> {
    let op = "get_rows";
    let ty = weight_type(op, w)?;
    if ids.dtype() != DType::U32 || ids.is_empty() {
        return Err(err!(Usage, "{op}: ids must be u32 [n_tokens ≥ 1], got {} {:?}", ids.dtype().name(), ids.shape()));
    }
    let f16 = activation(gpu, op, "out", out)?;
    if out.rows() != ids.len() || out.cols() != w.cols() {
        return Err(err!(Usage, "{op}: out must be [{}, {}], got {:?}", ids.len(), w.cols(), out.shape()));
    }
    if out.same_buffer(ids) || w.parts().iter().any(|p| p.tensor.same_buffer(out)) {
        return Err(err!(Usage, "{op}: out must be a buffer of its own (not ids or the weight)"));
    }
    let cols = index_u32(op, "a row", w.cols())?;
    let n_tokens = index_u32(op, "the token count", ids.len())?;
    index_u32(op, "out", out.len())?;
    let macros = weight_macros(ty).bool("F16", f16).u32("WORKGROUP_SIZE", GET_ROWS_WORKGROUP_SIZE);
    let last = w.parts().len().saturating_sub(1);
    // Each token's row is read, not the table (a bound for a split table: every part counts every token's row).
    let rows_read = Access::reads(Extent::PerToken(w.row_bytes()));
    w.parts()
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let rows = index_u32(op, "a part's row count", part.n_rows)?;
            let first_row = index_u32(op, "a part's first row", part.first_row)?;
            Dispatch::new(
                gpu,
                Launch {
                    shader: "get_rows",
                    entry: "get_rows",
                    macros: macros.clone(),
                    params: &params8([cols, rows, first_row, n_tokens, u32::from(i == last), 0, 0, 0]),
                    bindings: vec![
                        Some(Bind::Declared(&part.tensor, rows_read)),
                        Some(Bind::Tensor(ids)),
                        Some(Bind::Tensor(out)),
                    ],
                    workgroups: grid(gpu, op, n_tokens)?,
                },
            )
        })
        .collect()
}
