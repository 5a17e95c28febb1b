//! The prefill kernel (`shaders/matmul_tiled.wgsl`): `y[t, r] = Σ_k W[r, k] · x[t, k]` for any number of tokens, as a
//! tiled GEMM ending in the shared [`Epilogue`] (see [`super::matmul`]).
//!
//! A workgroup computes a tile of y of [`TileShape::rows`] rows of W × [`TileShape::tokens`] tokens. Per step of 32
//! values of k it stages the tile of W (dequantised from its raw blocks, every weight once) and the tile of x in
//! workgroup memory, double-buffered where the device's workgroup memory holds two sets. The shape is chosen by
//! [`tiled_kernel`] from the adapter and the product:
//!
//! - on a GPU, the largest of [`GPU_TILES`] that still gives every compute unit a few workgroups
//!   ([`TARGET_WORKGROUPS`]), down to tiles of 32 rows whose k steps are split between 4 invocations per output
//!   (added up with subgroup shuffles where the device has subgroups) for the products with few rows (R1-1.5B's K and
//!   V: 256 rows);
//! - on a CPU adapter (lavapipe natively, a browser's fallback adapter), [`CPU_TILE`], the shape that is fastest
//!   there; long rows are split along k into several dispatches there, because Mesa's lavapipe stops the loops of an
//!   invocation after 65535 iterations in all.
//!
//! Tiles and products are f16 on GPUs with `shader-f16` and f32 otherwise; sums are f32 either way.
//! [`matmul_tiled_with`] runs any shape of [`TILE_SHAPES`] on any device whose limits it fits, which is how the tests
//! cover every one of them on lavapipe. [`matmul_tiled_steps`] reads the token count from the engine's `step` tensor
//! when it runs, so one list of dispatches built for the largest batch serves chunks of any length.

use super::index_u32;
use super::kv_store::check_step;
use super::matmul::{bindings, check_product, nonempty_parts, params8, Epilogue, CPU_LOOP_BUDGET};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{Gpu, SplitWeight, Tensor};
use crate::{err, Result};

/// Values of k per step of the kernel.
const STEP_K: u32 = 32;

/// The geometry of the tiled kernel's workgroups: a tile of `rows × tokens` of y, each invocation computing
/// `thread_rows × thread_tokens` of it over `1 / k_slices` of every k step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileShape {
    /// Rows of W per tile (the shader's `TILE_M`).
    pub rows: u32,
    /// Tokens per tile (`TILE_N`).
    pub tokens: u32,
    /// Rows per invocation (`THREAD_M`).
    pub thread_rows: u32,
    /// Tokens per invocation (`THREAD_N`), a multiple of 4.
    pub thread_tokens: u32,
    /// Invocations that share each output, each taking `32 / k_slices` values of every k step (`K_SLICES`: split-K
    /// inside the workgroup); 1, 2, 4 or 8.
    pub k_slices: u32,
}

impl TileShape {
    /// Invocations per workgroup.
    pub const fn invocations(&self) -> u32 {
        (self.rows / self.thread_rows) * (self.tokens / self.thread_tokens) * self.k_slices
    }

    /// Workgroup memory the shape takes: a tile of W and one of x, 32 values of k each, in f16 or f32, twice when
    /// `double_buffer`; and with `shared_reduce` (slices added up without subgroups) one slice's sums.
    pub const fn workgroup_bytes(&self, f16_tiles: bool, double_buffer: bool, shared_reduce: bool) -> u32 {
        let value = if f16_tiles { 2 } else { 4 };
        let buffers = if double_buffer { 2 } else { 1 };
        let tiles = buffers * (self.rows + self.tokens) * STEP_K * value;
        let sums = if shared_reduce { self.rows * self.tokens * 4 } else { 0 };
        tiles + sums
    }

    /// Workgroups for a product of `rows` rows and `n_tokens` tokens.
    pub fn workgroups(&self, rows: u32, n_tokens: u32) -> u64 {
        u64::from(rows.div_ceil(self.rows)) * u64::from(n_tokens.div_ceil(self.tokens))
    }

    /// An upper estimate of the loop iterations an invocation runs per k step: the loaders' loops (their trip counts
    /// differ between invocations), and per column of its slice the loop over its rows (the loops over tokens and the
    /// dequantisers' own loops are short and of fixed length, which compilers unroll). `float_weights`: 8 parts of
    /// 4 values per step instead of one of 32.
    pub const fn loop_iterations_per_step(&self, float_weights: bool) -> u32 {
        let parts = if float_weights { 8 } else { 1 };
        let invocations = self.invocations();
        let loaders = (self.rows * parts).div_ceil(invocations) + (self.tokens * 8).div_ceil(invocations);
        loaders + (8 / self.k_slices) * (self.thread_rows + 1) + 1
    }

    /// The shape in words, for messages.
    fn describe(&self) -> String {
        format!(
            "{}x{} tiles, {}x{} per invocation, {} k slice(s)",
            self.rows, self.tokens, self.thread_rows, self.thread_tokens, self.k_slices
        )
    }

    fn check(&self, op: &str) -> Result<()> {
        let pow2 = |v: u32| v.is_power_of_two();
        let ok = [self.rows, self.tokens, self.thread_rows, self.k_slices].into_iter().all(pow2)
            && self.thread_tokens % 4 == 0
            && pow2(self.thread_tokens)
            && self.thread_rows <= self.rows
            && self.thread_tokens <= self.tokens
            && self.k_slices <= 8
            && (1..=256).contains(&self.invocations());
        match ok {
            true => Ok(()),
            false => Err(err!(
                Usage,
                "{op}: no tile shape {}: rows, tokens, thread_rows and k_slices (≤ 8) must be powers of two, \
                 thread_tokens a power of two ≥ 4, and the workgroup at most 256 invocations",
                self.describe()
            )),
        }
    }
}

const fn tile(rows: u32, tokens: u32, thread_rows: u32, thread_tokens: u32, k_slices: u32) -> TileShape {
    TileShape { rows, tokens, thread_rows, thread_tokens, k_slices }
}

/// The shapes for GPUs, most reuse first: 128 × 128 (8 × 8 sums per invocation), 128 × 64, 64 × 64, and 32 × 64 with
/// each k step split between 4 invocations (for products of few rows). All have 256 invocations.
pub const GPU_TILES: [TileShape; 4] =
    [tile(128, 128, 8, 8, 1), tile(128, 64, 8, 4, 1), tile(64, 64, 4, 4, 1), tile(32, 64, 4, 8, 4)];

/// The shape for CPU adapters (lavapipe), where a workgroup runs on one core as a loop over SIMD lanes and every read
/// of a tile value that differs between lanes is a gather: few invocations with large blocks of sums (32 × 16 each)
/// read the tiles least often per product. Measured fastest there, with f32 tiles (`cargo bench --bench kernels`).
pub const CPU_TILE: TileShape = tile(128, 64, 32, 16, 1);

/// The shape every device can run: 16 KiB of workgroup memory (WebGPU's minimum) with f32 tiles, double-buffered.
pub const MIN_TILE: TileShape = tile(32, 32, 1, 4, 1);

/// Every shape [`tiled_kernel`] may choose.
pub const TILE_SHAPES: [TileShape; 6] = [GPU_TILES[0], GPU_TILES[1], GPU_TILES[2], GPU_TILES[3], CPU_TILE, MIN_TILE];

/// Workgroups a GPU shape should give a product before a smaller shape is preferred: a few per compute unit on
/// large GPUs (2 on 128 compute units, 4 on 64), so that none idles.
pub const TARGET_WORKGROUPS: u64 = 256;

/// A variant of the tiled kernel: its tile shape, whether its tiles and products are f16, and whether its k loop is
/// double-buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TiledKernel {
    pub shape: TileShape,
    /// Tiles and the products of 4 values in f16 (needs `shader-f16`); the sums stay f32.
    pub f16_tiles: bool,
    /// Two sets of tiles, so that loading step s + 1 overlaps multiplying step s (one barrier per step instead of
    /// two), where the device's workgroup memory holds them.
    pub double_buffer: bool,
}

impl TiledKernel {
    /// `shape` with f16 tiles as given, double-buffered where `gpu`'s workgroup memory holds it.
    pub fn new(gpu: &Gpu, shape: TileShape, f16_tiles: bool) -> TiledKernel {
        let double = TiledKernel { shape, f16_tiles, double_buffer: true };
        match fits_workgroup(gpu, &double) {
            true => double,
            false => TiledKernel { double_buffer: false, ..double },
        }
    }
}

/// The variant [`matmul_tiled`] runs for a product of `rows` rows of W and `n_tokens` tokens on `gpu`: on a GPU the
/// first of [`GPU_TILES`] that fits the device's workgroup memory and makes [`TARGET_WORKGROUPS`] workgroups (else
/// the fitting one that makes the most), on a CPU adapter [`CPU_TILE`]; f16 tiles on GPUs with `shader-f16`;
/// double-buffered where the workgroup memory holds it.
pub fn tiled_kernel(gpu: &Gpu, rows: usize, n_tokens: usize) -> TiledKernel {
    let cpu = cpu_adapter(gpu);
    let f16_tiles = gpu.features().shader_f16 && !cpu;
    let rows = u32::try_from(rows).unwrap_or(u32::MAX);
    let n_tokens = u32::try_from(n_tokens).unwrap_or(u32::MAX);
    let fits = |shape: &TileShape| fits_workgroup(gpu, &TiledKernel::new(gpu, *shape, f16_tiles));
    let shape = match cpu {
        true => Some(CPU_TILE).filter(fits).unwrap_or(MIN_TILE),
        false => gpu_tile(rows, n_tokens, fits),
    };
    TiledKernel::new(gpu, shape, f16_tiles)
}

/// The GPU rule of [`tiled_kernel`] for `rows × n_tokens`, among the shapes `fits` accepts: the first of
/// [`GPU_TILES`] that makes [`TARGET_WORKGROUPS`] workgroups, else the one that makes the most, else [`MIN_TILE`].
pub fn gpu_tile(rows: u32, n_tokens: u32, fits: impl Fn(&TileShape) -> bool) -> TileShape {
    let fitting = || GPU_TILES.iter().filter(|s| fits(s));
    fitting()
        .find(|s| s.workgroups(rows, n_tokens) >= TARGET_WORKGROUPS)
        .or_else(|| fitting().max_by_key(|s| s.workgroups(rows, n_tokens)))
        .copied()
        .unwrap_or(MIN_TILE)
}

/// Whether the slices of `kernel` are added up with subgroup shuffles on `gpu`: when it has subgroups of at least
/// `k_slices` invocations (the `k_slices` neighbouring invocations that share outputs are then in one subgroup).
fn slices_in_subgroups(gpu: &Gpu, shape: &TileShape) -> bool {
    let features = gpu.features();
    shape.k_slices > 1 && features.subgroups && features.subgroup_min_size >= shape.k_slices
}

fn workgroup_bytes(gpu: &Gpu, kernel: &TiledKernel) -> u32 {
    let shared_reduce = kernel.shape.k_slices > 1 && !slices_in_subgroups(gpu, &kernel.shape);
    kernel.shape.workgroup_bytes(kernel.f16_tiles, kernel.double_buffer, shared_reduce)
}

fn fits_workgroup(gpu: &Gpu, kernel: &TiledKernel) -> bool {
    let limits = gpu.limits();
    workgroup_bytes(gpu, kernel) <= limits.max_compute_workgroup_storage_size
        && kernel.shape.invocations() <= limits.max_compute_invocations_per_workgroup
}

/// The prefill kernel: `y[t, r] = Σ_k W[r, k] · x[t, k]` for any number of tokens (the rows of `x`), as a tiled
/// GEMM of the shape [`tiled_kernel`] chooses. Correct for a single token too, but the vector kernel is the faster
/// choice there.
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
    let kernel = tiled_kernel(gpu, w.rows(), x.rows());
    matmul_tiled_with(gpu, w, x, y, epilogue, kernel, None)
}

/// [`matmul_tiled_into`] for a batch whose token count is read when the dispatches run: `step` is the engine's `u32`
/// tensor `[n_past, n_tokens, 0, 0]`, and only the first `min(n_tokens, rows of x)` rows of `y` are computed (the
/// others keep what they hold). `x` and `y` have rows for the largest batch; the grid is sized for it, and the
/// workgroups past the step's tokens leave at once.
pub fn matmul_tiled_steps(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
    step: &Tensor,
) -> Result<Vec<Dispatch>> {
    let kernel = tiled_kernel(gpu, w.rows(), x.rows());
    matmul_tiled_with(gpu, w, x, y, epilogue, kernel, Some(step))
}

/// The tiled kernel in a given variant (any shape of [`TILE_SHAPES`] runs on any device whose limits it fits; f16
/// tiles need `shader-f16`), with the token count of `step` when there is one: for tests and tuning.
pub fn matmul_tiled_with(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
    kernel: TiledKernel,
    step: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let op = "matmul_tiled";
    let p = check_product(gpu, op, w, x, y, &epilogue)?;
    let shape = kernel.shape;
    shape.check(op)?;
    if kernel.f16_tiles && !gpu.features().shader_f16 {
        return Err(err!(Usage, "{op}: f16 tiles need shader-f16, which this device does not have"));
    }
    if !fits_workgroup(gpu, &kernel) {
        return Err(err!(
            GpuLimits,
            "{op}: {} need {} bytes of workgroup memory and {} invocations, this GPU has {} and {}",
            shape.describe(),
            workgroup_bytes(gpu, &kernel),
            shape.invocations(),
            gpu.limits().max_compute_workgroup_storage_size,
            gpu.limits().max_compute_invocations_per_workgroup
        ));
    }
    if let Some(step) = step {
        check_step(op, step)?;
        if step.same_buffer(y) {
            return Err(err!(Usage, "{op}: step must not share y's buffer"));
        }
    }
    let subgroups = slices_in_subgroups(gpu, &shape);
    let macros = p
        .macros
        .u32("TILE_M", shape.rows)
        .u32("TILE_N", shape.tokens)
        .u32("THREAD_M", shape.thread_rows)
        .u32("THREAD_N", shape.thread_tokens)
        .u32("K_SLICES", shape.k_slices)
        .bool("F16_TILES", kernel.f16_tiles)
        .bool("ENABLE_F16", kernel.f16_tiles)
        .bool("DOUBLE_BUFFER", kernel.double_buffer)
        .bool("SUBGROUPS", subgroups)
        .bool("SHARED_REDUCE", shape.k_slices > 1 && !subgroups)
        .bool("STEP", step.is_some());
    // The k steps, in dispatches of at most `per_dispatch` on a CPU adapter; the later ones add to the first's sums.
    let steps = p.k.div_ceil(STEP_K);
    let per_dispatch = match cpu_adapter(gpu) {
        true => (CPU_LOOP_BUDGET / shape.loop_iterations_per_step(p.float_weights)).max(1),
        false => steps,
    };
    let token_tiles = p.n_tokens.div_ceil(shape.tokens);
    let mut dispatches = Vec::new();
    for part in nonempty_parts(w) {
        let rows = index_u32(op, "a part's row count", part.n_rows)?;
        let first_row = index_u32(op, "a part's first row", part.first_row)?;
        let tiles = rows
            .div_ceil(shape.rows)
            .checked_mul(token_tiles)
            .ok_or_else(|| err!(GpuLimits, "{op}: {rows} rows × {} tokens is too many tiles", p.n_tokens))?;
        let workgroups = grid(gpu, op, tiles)?;
        for first_step in (0..steps).step_by(per_dispatch as usize) {
            let end_step = steps.min(first_step + per_dispatch);
            let (chunk_macros, chunk_epilogue) = match first_step {
                0 => (macros.clone(), epilogue),
                _ => (
                    macros.clone().bool("BIAS", false).bool("ACCUMULATE", true),
                    Epilogue { bias: None, accumulate: true, ..epilogue },
                ),
            };
            let mut binds = bindings(part, x, y, &chunk_epilogue);
            binds.push(step.map(Bind::Tensor));
            let words = [p.k, rows, first_row, p.y_cols, p.n_tokens, p.column, first_step, end_step];
            dispatches.push(Dispatch::new(
                gpu,
                Launch {
                    shader: "matmul_tiled",
                    entry: "matmul_tiled",
                    macros: chunk_macros,
                    params: &params8(words),
                    bindings: binds,
                    workgroups,
                },
            )?);
        }
    }
    Ok(dispatches)
}

/// Whether `gpu` is a CPU adapter (lavapipe natively; a browser's fallback adapter, SwiftShader, on the web).
fn cpu_adapter(gpu: &Gpu) -> bool {
    gpu.adapter().device_type == wgpu::DeviceType::Cpu
}
