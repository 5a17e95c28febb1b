//! Matrix products with quantised weights: `y[t, r] = Σ_k W[r, k] · x[t, k]`, reading W's raw GGML blocks and
//! dequantising them in registers (`shaders/dequant.wgsl`, ARCHITECTURE.md §1), with separate kernels for decode
//! and prefill (ARCHITECTURE.md §6):
//!
//! - [`matmul_vec`](super::matmul_vec::matmul_vec) (`shaders/matmul_vec.wgsl`, module [`super::matmul_vec`]): a few
//!   tokens (1..=[`MAX_VEC_TOKENS`]). Memory-bound: every weight is read once and serves every token.
//! - [`matmul_tiled`](super::matmul_tiled::matmul_tiled) (`shaders/matmul_tiled.wgsl`, module
//!   [`super::matmul_tiled`]): any number of tokens, a tiled GEMM.
//! - [`matmul`] and [`matmul_into`] pick between them by the number of tokens; the forward pass builds its dispatches
//!   once per batch size and replays them.
//!
//! Both kernels end in the same fused [`Epilogue`]: a bias added to the sums, the sums added to what `y` holds (a
//! residual add) instead of replacing it, and a column offset so that several products write side by side into one
//! output (Q, K and V into one row).
//!
//! W is a [`SplitWeight`] of shape `[rows, cols]` (a GGUF tensor with `ne = [cols, rows]`), of any type webr1
//! supports: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (as `DType::Ggml(ty)`, or
//! plain `DType::F32`/`DType::F16`). There is one dispatch per part of W, each writing its own rows' columns of y.
//! x is `[n_tokens, cols]` and y `[n_tokens, ≥ column + rows]`, both f32, or both f16 on a device with `shader-f16`;
//! math and accumulation are f32 either way. Float weights need rows of a multiple of 4 elements (quantised rows are
//! whole blocks, so always are).

use super::matmul_tiled::matmul_tiled_into;
use super::matmul_vec::matmul_vec_into;
use super::{activation, index_u32};
use crate::gpu::dispatch::Bind;
use crate::gpu::{DType, Dispatch, Gpu, Macros, SplitWeight, Tensor, WeightPart};
use crate::quant::GgmlType;
use crate::{err, Result};

/// Loop iterations one invocation may run in one dispatch on a CPU adapter, in both kernels. Mesa's llvmpipe
/// (lavapipe) ends every loop of an invocation once they have run 65535 iterations together, silently: the tiled
/// kernel splits a long row into dispatches of at most this many iterations, the vector kernel's software shape takes
/// more invocations or fewer rows (half the limit, for the loops their estimates leave out).
pub(super) const CPU_LOOP_BUDGET: u32 = 32768;

/// The most tokens [`matmul`] hands to the vector kernel; larger batches take the tiled one.
pub const MAX_VEC_TOKENS: usize = 8;

/// What happens to a product's sums `s[t, r] = Σ_k W[r, k] · x[t, k]` on their way into `y`, in both kernels:
///
/// ```text
/// y[t, column + r]  = s[t, r] + bias[r]      (accumulate: false)
/// y[t, column + r] += s[t, r] + bias[r]      (accumulate: true)
/// ```
///
/// The default is a plain `y = x · Wᵀ`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `f32 [W's rows]`, added to every token's sums (qwen2's Q, K and V biases).
    pub bias: Option<&'a Tensor>,
    /// Add the sums to what `y` holds (the residual add after a projection) instead of replacing it.
    pub accumulate: bool,
    /// The column of `y` where W's outputs start: `y` may be wider than W has rows, so that several products write
    /// side by side into one output.
    pub column: usize,
}

/// `y = x · Wᵀ` (`y[t, r] = Σ_k W[r, k] · x[t, k]`): the vector kernel for up to [`MAX_VEC_TOKENS`] rows of x, the
/// tiled one for more. One dispatch per part of `w`.
pub fn matmul(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    matmul_into(gpu, w, x, y, Epilogue::default())
}

/// [`matmul`] with an [`Epilogue`]: bias, residual add, column offset.
pub fn matmul_into(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor, epilogue: Epilogue) -> Result<Vec<Dispatch>> {
    match x.rows() <= MAX_VEC_TOKENS {
        true => matmul_vec_into(gpu, w, x, y, epilogue),
        false => matmul_tiled_into(gpu, w, x, y, epilogue),
    }
}

/// What both matmul kernels need to know, once the tensors are checked.
pub(super) struct Product {
    /// The weight type's, activation dtype's and epilogue's macros (`BIAS`, `ACCUMULATE`).
    pub macros: Macros,
    pub k: u32,
    pub n_tokens: u32,
    /// Elements of a y row.
    pub y_cols: u32,
    /// The epilogue's column offset.
    pub column: u32,
    /// Whether W is a float type (F32, F16, BF16), read as parts of one vec4, rather than GGML blocks, read as parts
    /// of 32 weights (dequant.wgsl's `PART_VECS`).
    pub float_weights: bool,
}

/// Checks `w`, `x`, `y` and the epilogue for operation `op`.
pub(super) fn check_product(
    gpu: &Gpu,
    op: &str,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: &Epilogue,
) -> Result<Product> {
    check_product_outputs(gpu, op, w, x, y, epilogue, w.rows())
}

/// [`check_product`] for a product that writes `outputs` columns of y (fewer than W's rows when pairs of rows make one
/// output, as in the fused SwiGLU); a bias then has one value per output.
pub(super) fn check_product_outputs(
    gpu: &Gpu,
    op: &str,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: &Epilogue,
    outputs: usize,
) -> Result<Product> {
    let ty = weight_type(op, w)?;
    let f16 = activation(gpu, op, "x", x)?;
    if y.dtype() != x.dtype() {
        return Err(err!(Usage, "{op}: y is {} but x is {}", y.dtype().name(), x.dtype().name()));
    }
    if x.cols() != w.cols() || x.rows() == 0 {
        return Err(err!(
            Usage,
            "{op}: x must be [n_tokens ≥ 1, {}] for a [{}, {}] weight, got {:?}",
            w.cols(),
            w.rows(),
            w.cols(),
            x.shape()
        ));
    }
    let column = epilogue.column;
    if y.rows() != x.rows() || column.checked_add(outputs).is_none_or(|end| end > y.cols()) {
        return Err(err!(
            Usage,
            "{op}: y must be [{}, ≥ {column} + {outputs}] (column + the product's outputs), got {:?}",
            x.rows(),
            y.shape()
        ));
    }
    if y.same_buffer(x) || w.parts().iter().any(|p| p.tensor.same_buffer(y)) {
        return Err(err!(Usage, "{op}: y must be a buffer of its own (not x or the weight)"));
    }
    if let Some(bias) = epilogue.bias {
        if bias.dtype() != DType::F32 || bias.len() != outputs {
            return Err(err!(
                Usage,
                "{op}: the bias must be f32 [{outputs}] (one per output), got {} {:?}",
                bias.dtype().name(),
                bias.shape()
            ));
        }
        if bias.same_buffer(y) {
            return Err(err!(Usage, "{op}: the bias must not share y's buffer"));
        }
    }
    index_u32(op, "x", x.len())?;
    index_u32(op, "y", y.len())?;
    Ok(Product {
        macros: weight_macros(ty)
            .bool("F16", f16)
            .bool("BIAS", epilogue.bias.is_some())
            .bool("ACCUMULATE", epilogue.accumulate),
        k: index_u32(op, "a row", w.cols())?,
        n_tokens: index_u32(op, "the token count", x.rows())?,
        y_cols: index_u32(op, "a row of y", y.cols())?,
        column: index_u32(op, "the column", column)?,
        float_weights: ty.block_size() == 1,
    })
}

/// The GGML type of a weight the kernels can read, after checking what `shaders/dequant.wgsl` needs of it: a
/// supported type, rows a multiple of 4 elements (float types; quantised rows are whole blocks), and parts whose
/// byte offsets fit the shaders' 32-bit arithmetic.
pub(super) fn weight_type(op: &str, w: &SplitWeight) -> Result<GgmlType> {
    let ty = match w.dtype() {
        DType::F32 => GgmlType::F32,
        DType::F16 => GgmlType::F16,
        DType::Ggml(ty) => {
            ty.check_supported()?;
            ty
        }
        DType::U32 => return Err(err!(Usage, "{op}: the weight must be float or GGML blocks, not u32")),
    };
    if ty.block_size() == 1 && w.cols() % 4 != 0 {
        return Err(err!(Usage, "{op}: {ty} weights need rows of a multiple of 4 elements, got {}", w.cols()));
    }
    if let Some(part) = w.parts().iter().find(|p| p.tensor.byte_size() + 64 > 1 << 32) {
        return Err(err!(
            GpuLimits,
            "{op}: a weight part of {} bytes is too large for 32-bit byte offsets; cap the binding size below 4 GiB",
            part.tensor.byte_size()
        ));
    }
    Ok(ty)
}

/// The macro that selects `ty`'s `dequant_part` in `shaders/dequant.wgsl`: `TYPE_Q4_K` and so on.
pub(super) fn weight_macros(ty: GgmlType) -> Macros {
    Macros::new().bool(&format!("TYPE_{}", ty.name()), true)
}

/// A `Params` struct of eight 32-bit words.
pub(super) fn params8(words: [u32; 8]) -> [u8; 32] {
    bytemuck::cast(words)
}

/// The parts of `w` that hold rows (a weight of zero rows has one empty part).
pub(super) fn nonempty_parts(w: &SplitWeight) -> impl Iterator<Item = &WeightPart> {
    w.parts().iter().filter(|p| p.n_rows > 0)
}

/// The bindings of both kernels after the uniform: W's part, x, y, and the bias when the epilogue has one.
pub(super) fn bindings<'a>(
    part: &'a WeightPart,
    x: &'a Tensor,
    y: &'a Tensor,
    epilogue: &Epilogue<'a>,
) -> Vec<Option<Bind<'a>>> {
    vec![
        Some(Bind::Tensor(&part.tensor)),
        Some(Bind::Tensor(x)),
        Some(Bind::Tensor(y)),
        epilogue.bias.map(Bind::Tensor),
    ]
}
