//! The decode kernel (`shaders/matmul_vec.wgsl`): `y[t, r] = Σ_k W[r, k] · x[t, k]` for a few tokens
//! (1..=[`MAX_VEC_TOKENS`]), ending in the shared [`Epilogue`] (see [`super::matmul`]), and the same kernel fused
//! with the feed-forward block's SwiGLU ([`silu_mul_vec`]). Memory-bound: every weight is read once and serves every
//! token; consecutive invocations read consecutive parts of a row, so a warp's loads are whole runs of bytes.
//!
//! The kernel's shape is a [`VecShape`] chosen from the adapter: few rows per workgroup on a GPU (enough workgroups
//! to fill every compute unit even for R1-1.5B's narrowest projections), many on a software GPU. Tests force each.

use super::index_u32;
use super::matmul::{check_product_outputs, nonempty_parts, params8, Epilogue, CPU_LOOP_BUDGET, MAX_VEC_TOKENS};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{Gpu, SplitWeight, Tensor};
use crate::quant::GgmlType;
use crate::{err, Result};

/// How a `matmul_vec` dispatch spreads its work over the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VecShape {
    /// Real GPUs: 64 invocations and 2 rows per workgroup for one token (1 row for more), so that R1-1.5B's
    /// narrowest projection (K and V, 256 rows each; 2048 rows with Q stacked) launches ~1000 workgroups and its
    /// `down` projection (1536 rows of 8960) 768: several per compute unit on the largest GPUs.
    Gpu,
    /// Software GPUs (lavapipe, SwiftShader): 32 rows per workgroup for one token (fewer for more tokens, down to 4),
    /// so that the loads of x, which every workgroup repeats and which are dear there, serve many rows; and as few
    /// invocations as llvmpipe's loop limit allows (8, one SIMD vector of lavapipe; more for long rows), so that adding
    /// up the invocations' sums through workgroup memory costs little. 1.5–2.4× faster on lavapipe than 64
    /// invocations × 16 rows at R1-1.5B's projections (`cargo bench --bench kernels -- --f32`).
    Software,
}

/// The geometry of one `matmul_vec` pipeline: invocations and rows per workgroup, and which operand stays in
/// registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VecGeometry {
    workgroup_size: u32,
    rows_per_workgroup: u32,
    /// Whether x stays in registers (few tokens) rather than the rows' weights.
    cache_x: bool,
}

impl VecShape {
    /// The shape for this device's adapter.
    pub fn for_gpu(gpu: &Gpu) -> VecShape {
        match gpu.adapter().is_software() {
            true => VecShape::Software,
            false => VecShape::Gpu,
        }
    }

    /// The geometry for `n_tokens` tokens and rows of `parts` parts of `part_vecs` vec4s each (dequant.wgsl), with
    /// `sources` rows per output (2 for the SwiGLU).
    fn geometry(self, n_tokens: u32, parts: u32, part_vecs: u32, sources: u32) -> VecGeometry {
        match self {
            VecShape::Gpu => VecGeometry {
                workgroup_size: 64,
                rows_per_workgroup: if n_tokens == 1 { 2 } else { 1 },
                cache_x: n_tokens == 1,
            },
            VecShape::Software => {
                let mut rows = (32 / n_tokens.max(1)).max(4);
                let mut size = 8;
                // llvmpipe ends an invocation's loops silently after 65535 iterations in all: more invocations for
                // long rows, then fewer rows, until an invocation's share fits the budget.
                while software_loop_iterations(size, rows, n_tokens, parts, part_vecs, sources) > CPU_LOOP_BUDGET {
                    match (size < 64, rows > 1) {
                        (true, _) => size *= 2,
                        (false, true) => rows /= 2,
                        (false, false) => break,
                    }
                }
                VecGeometry { workgroup_size: size, rows_per_workgroup: rows, cache_x: n_tokens <= rows }
            }
        }
    }
}

/// An upper estimate of the loop iterations one invocation of the software shape runs: every loop of
/// `shaders/matmul_vec.wgsl` counted as if the compiler unrolled none of them.
fn software_loop_iterations(size: u32, rows: u32, n_tokens: u32, parts: u32, part_vecs: u32, sources: u32) -> u32 {
    // Per part: the loads of x, then per source and row the dequantiser's 4 and the sums over tokens and vec4s.
    let per_part = 1 + n_tokens * part_vecs + sources * rows * (5 + n_tokens * (1 + part_vecs));
    // The sums added up across the workgroup and written.
    let sums = sources * rows * n_tokens;
    let reduce = sums * (size.ilog2() + 2) + rows * n_tokens;
    parts.div_ceil(size).saturating_mul(per_part).saturating_add(reduce)
}

/// The decode kernel: `y[t, r] = Σ_k W[r, k] · x[t, k]` for 1..=[`MAX_VEC_TOKENS`] tokens (the rows of `x`).
/// The number of tokens is compiled into the pipeline.
pub fn matmul_vec(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    matmul_vec_into(gpu, w, x, y, Epilogue::default())
}

/// [`matmul_vec`] with an [`Epilogue`], in this adapter's [`VecShape`].
pub fn matmul_vec_into(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
) -> Result<Vec<Dispatch>> {
    matmul_vec_with(gpu, w, x, y, epilogue, VecShape::for_gpu(gpu))
}

/// [`matmul_vec_into`] in a given shape (for tests and tuning).
pub fn matmul_vec_with(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
    shape: VecShape,
) -> Result<Vec<Dispatch>> {
    vec_dispatches(gpu, w, x, y, epilogue, shape, None)
}

/// The feed-forward block's SwiGLU in one dispatch: `y[t, r] = silu(Σ_k G[r, k] x[t, k]) · Σ_k U[r, k] x[t, k]`,
/// where `w` is gate and up stacked by rows (`[G; U]`, `2 · n_ff` rows, in one part) and `y` is `[n_tokens, n_ff]`.
pub fn silu_mul_vec(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    silu_mul_vec_with(gpu, w, x, y, VecShape::for_gpu(gpu))
}

/// [`silu_mul_vec`] in a given shape (for tests and tuning).
pub fn silu_mul_vec_with(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor, shape: VecShape) -> Result<Vec<Dispatch>> {
    if w.parts().len() != 1 || w.rows() % 2 != 0 {
        return Err(err!(
            Usage,
            "silu_mul_vec: the weight must be gate and up stacked in one part (an even number of rows), got {} rows \
             in {} parts",
            w.rows(),
            w.parts().len()
        ));
    }
    vec_dispatches(gpu, w, x, y, Epilogue::default(), shape, Some(w.rows() / 2))
}

/// The dispatches of either product; `pair` is the distance from a gate row to its up row for the SwiGLU.
fn vec_dispatches(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
    shape: VecShape,
    pair: Option<usize>,
) -> Result<Vec<Dispatch>> {
    let op = if pair.is_some() { "silu_mul_vec" } else { "matmul_vec" };
    let outputs = pair.unwrap_or(w.rows());
    let p = check_product_outputs(gpu, op, w, x, y, &epilogue, outputs)?;
    if p.n_tokens as usize > MAX_VEC_TOKENS {
        return Err(err!(Usage, "{op}: {} tokens, at most {MAX_VEC_TOKENS} (use matmul or matmul_tiled)", p.n_tokens));
    }
    // A part is 32 weights of a quantised type (8 vec4s), a vec4 of a float type (dequant.wgsl).
    let part_vecs = if p.float_weights { 1 } else { 8 };
    let parts = p.k / (4 * part_vecs);
    let sources = if pair.is_some() { 2 } else { 1 };
    let geometry = shape.geometry(p.n_tokens, parts, part_vecs, sources);
    let (size, rows_per_workgroup) = (geometry.workgroup_size, geometry.rows_per_workgroup);
    let w4 = matches!(w.dtype(), crate::gpu::DType::Ggml(GgmlType::Q4_K | GgmlType::Q5_K));
    let mut macros = p
        .macros
        .u32("WORKGROUP_SIZE", size)
        .u32("ROWS_PER_WG", rows_per_workgroup)
        .u32("N_TOKENS", p.n_tokens)
        .bool("CACHE_X", geometry.cache_x)
        .bool("SILU_MUL", pair.is_some())
        .bool("W4", w4);
    let features = gpu.features();
    if features.subgroups {
        let min_size = features.subgroup_min_size.clamp(1, size);
        macros = macros.bool("SUBGROUPS", true).u32("MIN_SUBGROUP_SIZE", min_size);
    }
    let pair = index_u32(op, "the gate's rows", pair.unwrap_or(0))?;
    nonempty_parts(w)
        .map(|part| {
            // With the SwiGLU the part holds both halves; its outputs are the gate's rows.
            let rows = index_u32(op, "a part's row count", if pair > 0 { pair as usize } else { part.n_rows })?;
            let first_row = index_u32(op, "a part's first row", part.first_row)?;
            let weights = Bind::Tensor(&part.tensor);
            let (w_words, w_vec4) = if w4 { (None, Some(weights)) } else { (Some(weights), None) };
            Dispatch::new(
                gpu,
                Launch {
                    shader: "matmul_vec",
                    entry: "matmul_vec",
                    macros: macros.clone(),
                    params: &params8([p.k, rows, first_row, p.y_cols, p.column, pair, 0, 0]),
                    bindings: vec![
                        w_words,
                        Some(Bind::Tensor(x)),
                        Some(Bind::Tensor(y)),
                        epilogue.bias.map(Bind::Tensor),
                        w_vec4,
                    ],
                    workgroups: grid(gpu, op, rows.div_ceil(rows_per_workgroup))?,
                },
            )
        })
        .collect()
}
