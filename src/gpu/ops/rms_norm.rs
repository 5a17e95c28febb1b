//! RMSNorm (`shaders/rms_norm.wgsl`): `y = x / sqrt(mean(x²) + eps) * w` over each row, as llama.cpp's
//! `ggml_rms_norm` followed by the multiplication with the norm weight (Zhang & Sennrich 2019, "Root Mean Square Layer
//! Normalization").

use super::{activation, index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// Which rows of `x` an RMSNorm takes.
#[derive(Debug, Clone, Copy)]
pub enum NormRows<'a> {
    /// Every row, into the same row of `y`.
    All,
    /// Rows `0 .. n_tokens` of the engine's `step` tensor (`[n_past, n_tokens, 0, 0]`, read when the dispatch runs),
    /// into the same rows of `y`; the others are left as they are.
    Step(&'a Tensor),
    /// Row `n_tokens - 1` of the step (its last token), into `y`'s only row.
    LastOfStep(&'a Tensor),
}

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * w` for every row `r` of `x` (`[rows, n]`, f32 or f16), with the
/// f32 weight `w` (`[n]`) into `y` (same shape and dtype as `x`, another buffer).
///
/// One workgroup per row. The reduction uses subgroups when the device has them, shared memory otherwise.
pub fn rms_norm(gpu: &Gpu, x: &Tensor, w: &Tensor, y: &Tensor, eps: f32) -> Result<Dispatch> {
    rms_norm_rows(gpu, x, w, y, eps, NormRows::All)
}

/// [`rms_norm`] of the rows `rows` says.
pub fn rms_norm_rows(gpu: &Gpu, x: &Tensor, w: &Tensor, y: &Tensor, eps: f32, rows: NormRows) -> Result<Dispatch> {
    let f16 = activation(gpu, "rms_norm", "x", x)?;
    let y_rows = match rows {
        NormRows::LastOfStep(_) => 1,
        _ => x.rows(),
    };
    let step = match rows {
        NormRows::All => None,
        NormRows::Step(step) | NormRows::LastOfStep(step) => {
            super::kv_store::check_step("rms_norm", step)?;
            Some(step)
        }
    };
    if y.dtype() != x.dtype() || y.cols() != x.cols() || y.rows() != y_rows {
        return Err(err!(
            Usage,
            "rms_norm: y is {} {:?} but x is {} {:?}",
            y.dtype().name(),
            y.shape(),
            x.dtype().name(),
            x.shape()
        ));
    }
    if w.dtype() != DType::F32 || w.len() != x.cols() {
        return Err(err!(Usage, "rms_norm: w must be f32 [{}], got {} {:?}", x.cols(), w.dtype().name(), w.shape()));
    }
    if x.same_buffer(y) || w.same_buffer(y) || step.is_some_and(|s| s.same_buffer(y)) {
        return Err(err!(Usage, "rms_norm: y must be a buffer of its own (not x or w)"));
    }
    if x.cols() == 0 || !eps.is_finite() || eps < 0.0 {
        return Err(err!(
            Usage,
            "rms_norm: needs rows of at least one element and a finite eps >= 0 (n {}, eps {eps})",
            x.cols()
        ));
    }
    let n = index_u32("rms_norm", "a row", x.cols())?;
    let x_rows = index_u32("rms_norm", "the row count", x.rows())?;
    let last = matches!(rows, NormRows::LastOfStep(_));
    // With the step's rows, the rows of its tokens are read and written (the profile counts those).
    let row_bytes = x.byte_size() / u64::from(x_rows.max(1));
    let (x_binding, y_binding) = match rows {
        NormRows::Step(_) => (
            Some(Bind::Declared(x, Access::reads(Extent::PerToken(row_bytes)))),
            Some(Bind::Declared(y, Access::writes(Extent::PerToken(row_bytes)))),
        ),
        _ => (Some(Bind::Tensor(x)), Some(Bind::Tensor(y))),
    };
    let features = gpu.features();
    let mut macros = Macros::new()
        .u32("WORKGROUP_SIZE", WORKGROUP_SIZE)
        .bool("F16", f16)
        .bool("STEP_ROWS", step.is_some())
        .bool("LAST_ROW", last);
    if features.subgroups {
        let min_size = features.subgroup_min_size.clamp(1, WORKGROUP_SIZE);
        macros = macros.bool("SUBGROUPS", true).u32("MIN_SUBGROUP_SIZE", min_size);
    }
    Dispatch::new(
        gpu,
        Launch {
            shader: "rms_norm",
            entry: "rms_norm",
            macros,
            params: &params([n, x_rows, eps.to_bits(), 0]),
            bindings: vec![x_binding, Some(Bind::Tensor(w)), y_binding, step.map(Bind::Tensor)],
            workgroups: grid(gpu, "rms_norm", if last { 1 } else { x_rows })?,
        },
    )
}
