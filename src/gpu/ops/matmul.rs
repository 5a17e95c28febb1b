//! Matrix products with quantised weights: `y[t, r] = Σ_k W[r, k] · x[t, k]`, reading W's raw GGML blocks and
//! dequantising them in registers (`shaders/dequant.wgsl`, ARCHITECTURE.md §1), with separate kernels for decode
//! and prefill (ARCHITECTURE.md §6):
//!
//! - [`matmul_vec`] (`shaders/matmul_vec.wgsl`): a few tokens (1..=[`MAX_VEC_TOKENS`]). Memory-bound: every weight
//!   is read once and serves every token, and each workgroup (16 rows for one token, 4 for 5..=8) loads each piece
//!   of x once for all its rows. Reductions use subgroups when the device has them.
//! - [`matmul_tiled`] (`shaders/matmul.wgsl`): any number of tokens, a tiled GEMM that dequantises a tile of 128
//!   (or 64) rows × 32 columns of W into workgroup memory once for 64 tokens.
//! - [`matmul`] picks between them by the number of tokens; the forward pass builds its dispatches once per batch
//!   size and replays them.
//!
//! W is a [`SplitWeight`] of shape `[rows, cols]` (a GGUF tensor with `ne = [cols, rows]`), of any type webr1
//! supports: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (as `DType::Ggml(ty)`, or
//! plain `DType::F32`/`DType::F16`). There is one dispatch per part of W, each writing its own rows' columns of y.
//! x is `[n_tokens, cols]` and y `[n_tokens, rows]`, both f32, or both f16 on a device with `shader-f16`; math and
//! accumulation are f32 either way. Float weights need rows of a multiple of 4 elements (quantised rows are whole
//! blocks, so always are).

use super::{activation, index_u32, params};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{DType, Gpu, Macros, SplitWeight, Tensor, WeightPart};
use crate::quant::GgmlType;
use crate::{err, Result};

/// The most tokens [`matmul`] hands to the vector kernel; larger batches take the tiled one.
pub const MAX_VEC_TOKENS: usize = 8;

/// Invocations of a `matmul_vec` workgroup.
const VEC_WORKGROUP_SIZE: u32 = 64;

/// The rows of W one `matmul_vec` workgroup computes for `n_tokens` tokens: x is loaded once per workgroup, so more
/// rows make it cheaper next to the weights; 16 sums per invocation for up to 4 tokens, 4 rows beyond.
fn vec_rows_per_workgroup(n_tokens: u32) -> u32 {
    (16 / n_tokens.max(1)).max(4)
}

/// Tokens per tile of the tiled kernel; its tiles of W hold 64 or 128 rows (see [`matmul_tiled_with`]).
const TILE_N: u32 = 64;

/// Workgroup memory the tiled kernel takes for `tile_rows` rows: the f32 tiles of W and x, 32 values of k each.
fn tile_bytes(tile_rows: u32) -> u32 {
    (tile_rows + TILE_N) * 32 * 4
}

/// `y = x · Wᵀ` (`y[t, r] = Σ_k W[r, k] · x[t, k]`): [`matmul_vec`] for up to [`MAX_VEC_TOKENS`] rows of x,
/// [`matmul_tiled`] for more. One dispatch per part of `w`.
pub fn matmul(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    match x.rows() <= MAX_VEC_TOKENS {
        true => matmul_vec(gpu, w, x, y),
        false => matmul_tiled(gpu, w, x, y),
    }
}

/// The decode kernel: `y[t, r] = Σ_k W[r, k] · x[t, k]` for 1..=[`MAX_VEC_TOKENS`] tokens (the rows of `x`).
/// The number of tokens is compiled into the pipeline.
pub fn matmul_vec(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    let op = "matmul_vec";
    let p = check_product(gpu, op, w, x, y)?;
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
                    params: &params([p.k, rows, first_row, p.y_cols]),
                    bindings: bindings(part, x, y),
                    workgroups: grid(gpu, op, rows.div_ceil(rows_per_workgroup))?,
                },
            )
        })
        .collect()
}

/// The prefill kernel: `y[t, r] = Σ_k W[r, k] · x[t, k]` for any number of tokens (the rows of `x`), as a tiled
/// GEMM. Correct for a single token too, but [`matmul_vec`] is the faster choice there. Tiles of 128 rows when the
/// device's workgroup memory holds them (24 KiB), else 64.
pub fn matmul_tiled(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Vec<Dispatch>> {
    let tile_rows = match gpu.limits().max_compute_workgroup_storage_size >= tile_bytes(128) {
        true => 128,
        false => 64,
    };
    matmul_tiled_with(gpu, w, x, y, tile_rows)
}

/// [`matmul_tiled`] with tiles of `tile_rows` rows of W (64 or 128) × 64 tokens, which take
/// `(tile_rows + 64) · 128` bytes of workgroup memory (for tests and tuning).
pub fn matmul_tiled_with(gpu: &Gpu, w: &SplitWeight, x: &Tensor, y: &Tensor, tile_rows: u32) -> Result<Vec<Dispatch>> {
    let op = "matmul_tiled";
    let p = check_product(gpu, op, w, x, y)?;
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
                    params: &params8([p.k, rows, first_row, p.y_cols, p.n_tokens, 0, 0, 0]),
                    bindings: bindings(part, x, y),
                    workgroups: grid(gpu, op, tiles)?,
                },
            )
        })
        .collect()
}

/// What both matmul kernels need to know, once the tensors are checked.
struct Product {
    /// The weight type's and activation dtype's macros.
    macros: Macros,
    k: u32,
    n_tokens: u32,
    y_cols: u32,
}

fn check_product(gpu: &Gpu, op: &str, w: &SplitWeight, x: &Tensor, y: &Tensor) -> Result<Product> {
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
    if y.rows() != x.rows() || y.cols() != w.rows() {
        return Err(err!(Usage, "{op}: y must be [{}, {}], got {:?}", x.rows(), w.rows(), y.shape()));
    }
    if y.same_buffer(x) || w.parts().iter().any(|p| p.tensor.same_buffer(y)) {
        return Err(err!(Usage, "{op}: y must be a buffer of its own (not x or the weight)"));
    }
    index_u32(op, "x", x.len())?;
    index_u32(op, "y", y.len())?;
    Ok(Product {
        macros: weight_macros(ty).bool("F16", f16),
        k: index_u32(op, "a row", w.cols())?,
        n_tokens: index_u32(op, "the token count", x.rows())?,
        y_cols: index_u32(op, "the row count", w.rows())?,
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
fn nonempty_parts(w: &SplitWeight) -> impl Iterator<Item = &WeightPart> {
    w.parts().iter().filter(|p| p.n_rows > 0)
}

fn bindings<'a>(part: &'a WeightPart, x: &'a Tensor, y: &'a Tensor) -> Vec<Option<Bind<'a>>> {
    vec![Some(Bind::Tensor(&part.tensor)), Some(Bind::Tensor(x)), Some(Bind::Tensor(y))]
}
