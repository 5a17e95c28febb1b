//! RMSNorm (`shaders/rms_norm.wgsl`): `y = x / sqrt(mean(x²) + eps) * w` over each row, as llama.cpp's
//! `ggml_rms_norm` followed by the multiplication with the norm weight (Zhang & Sennrich 2019, "Root Mean Square Layer
//! Normalization").

use super::{activation, index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * w` for every row `r` of `x` (`[rows, n]`, f32 or f16), with the
/// f32 weight `w` (`[n]`) into `y` (same shape and dtype as `x`, another buffer).
///
/// One workgroup per row. The reduction uses subgroups when the device has them, shared memory otherwise.
pub fn rms_norm(gpu: &Gpu, x: &Tensor, w: &Tensor, y: &Tensor, eps: f32) -> Result<Dispatch> {
    let f16 = activation(gpu, "rms_norm", "x", x)?;
    if y.dtype() != x.dtype() || y.shape() != x.shape() {
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
    if x.same_buffer(y) || w.same_buffer(y) {
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
    let rows = index_u32("rms_norm", "the row count", x.rows())?;
    let features = gpu.features();
    let mut macros = Macros::new().u32("WORKGROUP_SIZE", WORKGROUP_SIZE).bool("F16", f16);
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
            params: &params([n, rows, eps.to_bits(), 0]),
            bindings: vec![Some(Bind::Tensor(x)), Some(Bind::Tensor(w)), Some(Bind::Tensor(y))],
            workgroups: grid(gpu, "rms_norm", rows)?,
        },
    )
}
