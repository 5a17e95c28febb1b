#include "common.wgsl"
#include "dequant.wgsl"
// Quantised matrix × many vectors, for prefill (ARCHITECTURE.md §6):
//
//     y[t, first_row + r] = sum_k W[r, k] * x[t, k]      for t < n_tokens, r < rows
//
// A tiled GEMM. Each workgroup of 256 invocations computes a TILE_M × TILE_N tile of y (rows × tokens; TILE_M =
// 16 · THREAD_M, TILE_N = 64). It walks k in steps of TK = 32: the invocations dequantise the TILE_M × TK tile of W
// into workgroup memory once (dequant.wgsl, in registers, whole SPANs at a time: values outside the step are
// dropped) and copy the TILE_N × TK tile of x next to it; then every invocation accumulates a THREAD_M × 4 block of y
// from the two tiles, so each dequantised weight serves 64 tokens and each x value TILE_M rows. Math is f32 whatever
// the storage type.
//
// Tiles are stored row by row, 8 vec4s (TK floats) per row, the vec4s of row m permuted by m % 8 (an XOR swizzle) so
// that invocations reading the same k of neighbouring rows hit different banks.
//
// The epilogue (src/gpu/ops/matmul.rs, `Epilogue`): the sum of row r goes to column `column + first_row + r` of y,
// plus bias[first_row + r] (BIAS), added to what y holds there (ACCUMULATE) or replacing it.
//
// Macros: one TYPE_<name> (see dequant.wgsl), THREAD_M (4 or 8: rows per invocation; the tiles take
// (16 · THREAD_M + 64) · 128 bytes of workgroup memory), F16 (x and y are f16), BIAS, ACCUMULATE.

struct Params {
    k: u32,         // columns of W: elements of an x row, a multiple of BLOCK_SIZE
    rows: u32,      // rows of this part of W
    first_row: u32, // where this part's rows start in the whole W, and so in a y row
    y_cols: u32,    // elements of a y row
    n_tokens: u32,  // rows of x and y
    column: u32,    // the column of y where the whole W's outputs start
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;            // [rows, k] raw GGML blocks
@group(0) @binding(2) var<storage, read> x: array<vec4<ACT>>;      // [n_tokens, k / 4]
@group(0) @binding(3) var<storage, read_write> y: array<ACT>;      // [n_tokens, y_cols]
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // [rows of the whole W]
#endif

const TK: u32 = 32u;                           // k per step
const TK4: u32 = TK / 4u;                      // vec4s per tile row
const TILE_M: u32 = 16u * THREAD_M;            // rows of W per tile
const TILE_N: u32 = 64u;                       // tokens per tile
const WORKGROUP: u32 = 256u;                   // invocation i: rows i % 16 + 16a (a < THREAD_M), tokens i / 16 + 16b (b < 4)
const PART_ELEMS: u32 = PART_VECS * 4u;
const STEP_SPAN: u32 = max(TK, SPAN);          // elements dequantised per row and step
const STEP_PARTS: u32 = STEP_SPAN / PART_ELEMS;

var<workgroup> w_tile: array<vec4<f32>, TILE_M * TK4>; // [TILE_M, TK], swizzled
var<workgroup> x_tile: array<vec4<f32>, TILE_N * TK4>; // [TILE_N, TK], swizzled

fn slot(row: u32, k4: u32) -> u32 {
    return row * TK4 + (k4 ^ (row & (TK4 - 1u)));
}

// x[n0 + n, k0..k0 + TK] into the x tile; zeros past the last token or the end of the row.
fn load_x_tile(lane: u32, n0: u32, k0: u32) {
    for (var i = lane; i < TILE_N * TK4; i += WORKGROUP) {
        let n = i / TK4;
        let c = i % TK4;
        let token = n0 + n;
        let k = k0 + 4u * c;
        var v = vec4<f32>(0.0);
        if token < params.n_tokens && k < params.k {
            v = vec4<f32>(x[token * (params.k / 4u) + k / 4u]);
        }
        x_tile[slot(n, c)] = v;
    }
}

// W[m0 + m, k0..k0 + TK] into the W tile, dequantising the span(s) that hold it; zeros past the last row or the end
// of the row.
fn load_w_tile(lane: u32, m0: u32, k0: u32) {
    let blocks = params.k / BLOCK_SIZE;
    let row_bytes = blocks * BLOCK_BYTES;
    // The parts of the step: a whole number of spans starting at or before k0.
    let first_part = (k0 / STEP_SPAN) * STEP_SPAN / PART_ELEMS;
    for (var i = lane; i < TILE_M * STEP_PARTS; i += WORKGROUP) {
        let m = i / STEP_PARTS;
        let part_index = first_part + i % STEP_PARTS;
        let block = part_index / PARTS;
        let part = part_index % PARTS;
        var v: array<vec4<f32>, PART_VECS>;
        if m0 + m < params.rows && block < blocks {
            v = dequant_part((m0 + m) * row_bytes + block * BLOCK_BYTES, part);
        }
        for (var g = 0u; g < PART_VECS; g++) {
            let e = block * BLOCK_SIZE + part_offset(part, g);
            if e >= k0 && e < k0 + TK {
                w_tile[slot(m, (e - k0) / 4u)] = v[g];
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP)
fn matmul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let tiles_m = (params.rows + TILE_M - 1u) / TILE_M;
    let tile = flat_workgroup(workgroup_id, num_workgroups);
    let m0 = (tile % tiles_m) * TILE_M;
    let n0 = (tile / tiles_m) * TILE_N;
    // Spare workgroups of a folded grid leave as a whole, before any barrier.
    if n0 >= params.n_tokens {
        return;
    }
    let tm = lane % 16u;
    let tn = lane / 16u;

    // acc[a][b]: row m0 + tm + 16a, token n0 + tn + 16b.
    var acc: array<vec4<f32>, THREAD_M>;
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        load_x_tile(lane, n0, k0);
        load_w_tile(lane, m0, k0);
        workgroupBarrier();
        for (var c = 0u; c < TK4; c++) {
            let x0 = x_tile[slot(tn, c)];
            let x1 = x_tile[slot(tn + 16u, c)];
            let x2 = x_tile[slot(tn + 32u, c)];
            let x3 = x_tile[slot(tn + 48u, c)];
            for (var a = 0u; a < THREAD_M; a++) {
                let wv = w_tile[slot(tm + 16u * a, c)];
                acc[a] += vec4<f32>(dot(wv, x0), dot(wv, x1), dot(wv, x2), dot(wv, x3));
            }
        }
        workgroupBarrier();
    }

    for (var a = 0u; a < THREAD_M; a++) {
        let row = m0 + tm + 16u * a;
        for (var b = 0u; b < 4u; b++) {
            let token = n0 + tn + 16u * b;
            if row < params.rows && token < params.n_tokens {
                var sum = acc[a][b];
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
