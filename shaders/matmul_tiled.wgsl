#include "common.wgsl"
#include "dequant.wgsl"
// Quantised matrix × many vectors, for prefill (ARCHITECTURE.md, "Prefill and decode use different kernels"):
//
//     y[t, column + first_row + r] (+)= sum_k W[r, k] * x[t, k] (+ bias[first_row + r])   for t < n_tokens, r < rows
//
// A tiled GEMM (src/gpu/ops/matmul_tiled.rs chooses the tile shape). A workgroup computes a TILE_M × TILE_N tile of
// y (rows of W × tokens). It walks k one step at a time; a step is 32 values of k, and stages them in workgroup
// memory: the TILE_M × 32 tile of W, dequantised in registers (dequant.wgsl), and the TILE_N × 32 tile of x.
//
// The step takes W's values in the order dequant.wgsl hands them out, whole parts of blocks (a part of a K-quant
// block is 32 values that share the words they are decoded from, but are not consecutive in k): a sum over k does not
// care about the order, so the x tile is loaded in the same order (`part_offset`), and every weight dequantised is a
// weight used. Quantised types take one part per step, the float types 8 parts of 4.
//
// A dispatch may take only some of the k steps (software GPUs stop a loop after so many iterations): then the first
// dispatch writes its sums (BIAS, ACCUMULATE as asked) and the others add theirs to y (ACCUMULATE).
//
// The k loop is double-buffered (DOUBLE_BUFFER, where the device's workgroup memory holds two sets of tiles): while
// the invocations multiply the tiles of step s, they already load those of step s + 1 into the other set, so one
// barrier per step separates loading from multiplying. Otherwise each step loads, waits, multiplies and waits.
//
// Invocation i computes THREAD_M rows × THREAD_N tokens of the tile, rows i' % MT + MT·a and tokens i' / MT + NT·b
// (i' = i / K_SLICES: neighbouring invocations read neighbouring rows of the W tile, and the same x). With K_SLICES > 1
// the K_SLICES neighbouring invocations that share these outputs split every step's 32 values between them (split-K
// inside the workgroup, for tiles of few rows: more invocations per output) and add their sums at the end, with
// subgroup shuffles (SUBGROUPS: the K_SLICES invocations are in one subgroup) or through workgroup memory.
//
// Tiles are stored row by row, 8 vec4s (32 values) per row, the vec4s of row m permuted by m % 8 (an XOR swizzle) so
// that invocations reading the same column of neighbouring rows hit different banks. With F16_TILES they hold f16,
// and the products of a vec4 are summed in f16 (shader-f16) before they join the f32 sums; otherwise everything is
// f32. Either way the sums are f32.
//
// Macros: one TYPE_<name> (dequant.wgsl); TILE_M, TILE_N, THREAD_M, THREAD_N (a multiple of 4), K_SLICES (1, 2, 4 or
// 8); DOUBLE_BUFFER; F16_TILES (with ENABLE_F16); SUBGROUPS (K_SLICES > 1 only) or SHARED_REDUCE; F16 (x and y are
// f16); BIAS; ACCUMULATE; STEP (the token count is read from `step` when the kernel runs; params.n_tokens is the
// capacity).

struct Params {
    k: u32,          // columns of W: elements of an x row
    rows: u32,       // rows of this part of W
    first_row: u32,  // where this part's rows start in the whole W, and so in a y row
    y_cols: u32,     // elements of a y row
    n_tokens: u32,   // rows of x and y (with STEP: the most tokens `step` may name)
    column: u32,     // the column of y where the whole W's outputs start
    first_step: u32, // the k steps this dispatch takes, first_step..end_step of the
    end_step: u32,   // row's ceil(parts / STEP_PARTS)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;            // [rows, k] raw GGML blocks
@group(0) @binding(2) var<storage, read> x: array<vec4<ACT>>;      // [n_tokens, k / 4]
@group(0) @binding(3) var<storage, read_write> y: array<ACT>;      // [n_tokens, y_cols]
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // [rows of the whole W]
#endif
#ifdef STEP
@group(0) @binding(5) var<storage, read> step: array<u32>;         // [4]: n_past, n_tokens, 0, 0
#endif

#ifdef F16_TILES
#define TILE f16
#else
#define TILE f32
#endif

const TK4: u32 = 8u;                           // vec4s per tile row: 32 values of k
const STEP_PARTS: u32 = TK4 / PART_VECS;       // parts of a block row per step
const MT: u32 = TILE_M / THREAD_M;             // invocations along the rows of a slice
const NT: u32 = TILE_N / THREAD_N;             // and along its tokens
const TN4: u32 = THREAD_N / 4u;                // vec4s of tokens per row of an invocation's sums
const SUMS: u32 = THREAD_M * TN4;              // vec4s of sums per invocation
const WORKGROUP: u32 = MT * NT * K_SLICES;
const SLICE_COLS: u32 = TK4 / K_SLICES;        // vec4 columns of a step per slice
const W_TILE: u32 = TILE_M * TK4;              // vec4s of one W tile
const X_TILE: u32 = TILE_N * TK4;

#ifdef DOUBLE_BUFFER
const BUFFERS: u32 = 2u;
#else
const BUFFERS: u32 = 1u;
#endif
var<workgroup> w_tile: array<vec4<TILE>, BUFFERS * W_TILE>; // [BUFFERS, TILE_M, 32], swizzled
var<workgroup> x_tile: array<vec4<TILE>, BUFFERS * X_TILE>; // [BUFFERS, TILE_N, 32], swizzled
#ifdef SHARED_REDUCE
var<workgroup> partial: array<vec4<f32>, MT * NT * SUMS>; // one slice's sums
#endif

fn slot(row: u32, c: u32) -> u32 {
    return row * TK4 + (c ^ (row & (TK4 - 1u)));
}

// W[m0 + m, the values of step s] into the W tile at `base`: STEP_PARTS parts of every row, dequantised; zeros past
// the last row or the end of a row.
fn load_w_tile(lane: u32, m0: u32, s: u32, base: u32) {
    let blocks = params.k / BLOCK_SIZE;
    let row_bytes = blocks * BLOCK_BYTES;
    for (var i = lane; i < TILE_M * STEP_PARTS; i += WORKGROUP) {
        let m = i / STEP_PARTS;
        let p = s * STEP_PARTS + i % STEP_PARTS; // the part's index in the row
        var v: array<vec4<f32>, PART_VECS>;
        if m0 + m < params.rows && p < blocks * PARTS {
            v = dequant_part((m0 + m) * row_bytes + (p / PARTS) * BLOCK_BYTES, p % PARTS);
        }
        for (var g = 0u; g < PART_VECS; g++) {
            w_tile[base + slot(m, (i % STEP_PARTS) * PART_VECS + g)] = vec4<TILE>(v[g]);
        }
    }
}

// x[n0 + n, the values of step s] into the x tile at `base`, in the W tile's order; zeros past the last token or the
// end of a row.
fn load_x_tile(lane: u32, n0: u32, n_tokens: u32, s: u32, base: u32) {
    let parts = (params.k / BLOCK_SIZE) * PARTS;
    for (var i = lane; i < X_TILE; i += WORKGROUP) {
        let n = i / TK4;
        let c = i % TK4;
        let p = s * STEP_PARTS + c / PART_VECS;
        var v = vec4<TILE>(0.0);
        if n0 + n < n_tokens && p < parts {
            let e = (p / PARTS) * BLOCK_SIZE + part_offset(p % PARTS, c % PART_VECS);
            v = vec4<TILE>(x[(n0 + n) * (params.k / 4u) + e / 4u]);
        }
        x_tile[base + slot(n, c)] = v;
    }
}

@compute @workgroup_size(WORKGROUP)
fn matmul_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // Tiles run rows first, so the tiles past the token count are the last workgroups of the grid.
    let tiles_m = (params.rows + TILE_M - 1u) / TILE_M;
    let tile = flat_workgroup(workgroup_id, num_workgroups);
    let m0 = (tile % tiles_m) * TILE_M;
    let n0 = (tile / tiles_m) * TILE_N;
#ifdef STEP
    let n_tokens = min(step[1], params.n_tokens);
#else
    let n_tokens = params.n_tokens;
#endif
    // Spare workgroups (past the tokens of this step, or of a folded grid) leave as a whole, before any barrier.
    if n0 >= n_tokens {
        return;
    }
    let slice = lane % K_SLICES;
    let tm = (lane / K_SLICES) % MT;
    let tn = (lane / K_SLICES) / MT;

    // sums[a * TN4 + b][j]: row m0 + tm + MT·a, token n0 + tn + NT·(4b + j).
    var sums: array<vec4<f32>, SUMS>;
#ifdef DOUBLE_BUFFER
    load_w_tile(lane, m0, params.first_step, (params.first_step & 1u) * W_TILE);
    load_x_tile(lane, n0, n_tokens, params.first_step, (params.first_step & 1u) * X_TILE);
#endif
    for (var s = params.first_step; s < params.end_step; s++) {
        workgroupBarrier();
#ifdef DOUBLE_BUFFER
        let buf = s & 1u;
        if s + 1u < params.end_step {
            load_w_tile(lane, m0, s + 1u, (1u - buf) * W_TILE);
            load_x_tile(lane, n0, n_tokens, s + 1u, (1u - buf) * X_TILE);
        }
#else
        let buf = 0u;
        load_w_tile(lane, m0, s, 0u);
        load_x_tile(lane, n0, n_tokens, s, 0u);
        workgroupBarrier();
#endif
        let wb = buf * W_TILE;
        let xb = buf * X_TILE;
        for (var cc = 0u; cc < SLICE_COLS; cc++) {
            let c = slice * SLICE_COLS + cc;
            var xs: array<vec4<TILE>, THREAD_N>;
            for (var j = 0u; j < THREAD_N; j++) {
                xs[j] = x_tile[xb + slot(tn + NT * j, c)];
            }
            for (var a = 0u; a < THREAD_M; a++) {
                let wv = w_tile[wb + slot(tm + MT * a, c)];
                for (var b = 0u; b < TN4; b++) {
                    sums[a * TN4 + b] += vec4<f32>(
                        f32(dot(wv, xs[4u * b])),
                        f32(dot(wv, xs[4u * b + 1u])),
                        f32(dot(wv, xs[4u * b + 2u])),
                        f32(dot(wv, xs[4u * b + 3u])));
                }
            }
        }
    }

    // The slices' sums added up: in every slice with subgroups, in slice 0 through workgroup memory otherwise.
#ifdef SUBGROUPS
    for (var mask = 1u; mask < K_SLICES; mask <<= 1u) {
        for (var i = 0u; i < SUMS; i++) {
            sums[i] += subgroupShuffleXor(sums[i], mask);
        }
    }
#endif
#ifdef SHARED_REDUCE
    let own = (lane / K_SLICES) * SUMS;
    for (var source = 1u; source < K_SLICES; source++) {
        workgroupBarrier();
        if slice == source {
            for (var i = 0u; i < SUMS; i++) {
                partial[own + i] = sums[i];
            }
        }
        workgroupBarrier();
        if slice == 0u {
            for (var i = 0u; i < SUMS; i++) {
                sums[i] += partial[own + i];
            }
        }
    }
#endif

    for (var i = 0u; i < SUMS; i++) {
        // Each vec4 of sums is written by one slice.
#ifdef SUBGROUPS
        let writer = i % K_SLICES;
#else
        let writer = 0u;
#endif
        let row = m0 + tm + MT * (i / TN4);
        if slice != writer || row >= params.rows {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let token = n0 + tn + NT * (4u * (i % TN4) + j);
            if token < n_tokens {
                var sum = sums[i][j];
#ifdef BIAS
                sum += bias[params.first_row + row];
#endif
                let at = token * params.y_cols + params.column + params.first_row + row;
#ifdef ACCUMULATE
                sum += f32(y[at]);
#endif
                y[at] = ACT(sum);
            }
        }
    }
}
