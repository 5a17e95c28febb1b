#include "common.wgsl"
#include "dequant.wgsl"
// Quantised matrix × a few vectors, for decode (ARCHITECTURE.md §6):
//
//     y[t, column + first_row + r] (+)= sum_k W[r, k] * x[t, k] (+ bias)                 t < N_TOKENS, r < rows
//     y[t, column + first_row + r]   = silu(sum_k W[r, k] x[t, k]) * sum_k W[pair + r, k] x[t, k]     (SILU_MUL)
//
// W is one part of a split weight (rows `first_row..first_row + rows` of the whole matrix) in raw GGML blocks,
// dequantised in registers by dequant.wgsl. With SILU_MUL the part holds two matrices stacked by rows, gate then up
// (`pair` rows apart), and the workgroup computes row r of both: the feed-forward block's SwiGLU in one dispatch.
//
// Each workgroup computes ROWS_PER_WG rows for all N_TOKENS tokens. Its invocations take the parts of a row in turn
// (32 weights each for the quantised types): consecutive invocations read consecutive parts, so one load instruction
// of a warp reads consecutive bytes of W. For each part an invocation loads x at the part's elements and dequantises
// the part of each of the workgroup's rows (and of their pairs), so every weight is read once and x once per
// workgroup. Whichever of the two is smaller stays in registers while the other streams past it: x for few tokens
// (CACHE_X), the rows' weights for more. The per-invocation sums are then reduced across the workgroup: subgroupAdd
// when the device has subgroups, a shared-memory tree otherwise. Math is f32 whatever the storage type.
//
// The shape (WORKGROUP_SIZE, ROWS_PER_WG, CACHE_X) is chosen in src/gpu/ops/matmul_vec.rs: few rows per workgroup on
// a GPU, so that even R1-1.5B's narrowest projections launch thousands of workgroups; on a software GPU many rows
// (loads of x are dear there) and few invocations (adding up their sums through workgroup memory is dear too), so a
// workgroup may have fewer invocations than outputs: each writes every WORKGROUP_SIZE-th.
//
// The epilogue (src/gpu/ops/matmul.rs, `Epilogue`): the sum of row r goes to column `column + first_row + r` of y,
// plus bias[first_row + r] (BIAS), added to what y holds there (ACCUMULATE) or replacing it.
//
// Macros: one TYPE_<name> (see dequant.wgsl), W4 (the weights are also bound as vec4s: see dequant.wgsl),
// WORKGROUP_SIZE (a power of two), ROWS_PER_WG, N_TOKENS, CACHE_X, F16 (x and y are f16), SUBGROUPS with
// MIN_SUBGROUP_SIZE, BIAS, ACCUMULATE, SILU_MUL.

struct Params {
    k: u32,         // columns of W: elements of an x row, a multiple of BLOCK_SIZE
    rows: u32,      // rows of this part of W (with SILU_MUL: of the gate, the outputs)
    first_row: u32, // where this part's rows start in the whole W, and so in a y row
    y_cols: u32,    // elements of a y row
    column: u32,    // the column of y where the whole W's outputs start
    pair: u32,      // SILU_MUL: rows between a gate row and its up row
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;            // [rows, k] raw GGML blocks
@group(0) @binding(2) var<storage, read> x: array<vec4<ACT>>;      // [N_TOKENS, k / 4]
@group(0) @binding(3) var<storage, read_write> y: array<ACT>;      // [N_TOKENS, y_cols]
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // [rows of the whole W]
#endif
#ifdef W4
@group(0) @binding(5) var<storage, read> w4: array<vec4<u32>>;     // [rows, k] binding 1's bytes, 16 at a time
#endif

const OUTPUTS: u32 = ROWS_PER_WG * N_TOKENS; // outputs per workgroup, row-major: output r * N_TOKENS + t
#ifdef SILU_MUL
const SOURCES: u32 = 2u; // the gate row and its up row
#else
const SOURCES: u32 = 1u;
#endif
const SUMS: u32 = SOURCES * OUTPUTS; // the gate's sums, then the up's

#ifdef SUBGROUPS
var<workgroup> partial: array<f32, (WORKGROUP_SIZE / MIN_SUBGROUP_SIZE) * SUMS>; // [subgroup, sum]
#else
var<workgroup> partial: array<f32, SUMS * WORKGROUP_SIZE>; // [sum, invocation]
#endif

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

// Writes output `output` (row r, token t) of the workgroup whose first row is row0: the epilogue.
fn store(row0: u32, output: u32, value: f32) {
    let r = output / N_TOKENS;
    let t = output % N_TOKENS;
    let row = params.first_row + row0 + r;
    if row0 + r < params.rows {
        var sum = value;
#ifdef BIAS
        sum += bias[row];
#endif
        let at = t * params.y_cols + params.column + row;
#ifdef ACCUMULATE
        sum += f32(y[at]);
#endif
        y[at] = ACT(sum);
    }
}

// The value of an output from its totals over the workgroup: the sum, or silu(gate) * up (`up` is unused without
// SILU_MUL).
fn total_of(sum: f32, up: f32) -> f32 {
#ifdef SILU_MUL
    return silu(sum) * up;
#else
    return sum;
#endif
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn matmul_vec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_id) subgroup_id: u32,
    @builtin(num_subgroups) num_subgroups: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
#endif
) {
    let row0 = flat_workgroup(workgroup_id, num_workgroups) * ROWS_PER_WG;
    // Spare workgroups of a folded grid leave as a whole, before any barrier.
    if row0 >= params.rows {
        return;
    }
    let blocks = params.k / BLOCK_SIZE;
    let row_bytes = blocks * BLOCK_BYTES;
    let k4 = params.k / 4u;

    var acc: array<f32, SUMS>;
    for (var i = lane; i < blocks * PARTS; i += WORKGROUP_SIZE) {
        let block = i / PARTS;
        let part = i % PARTS;
        let first = block * BLOCK_SIZE;
#ifdef CACHE_X
        // Few tokens, many rows: this part's piece of x stays in registers for every token, and the part of each
        // row is dequantised in turn.
        var xv: array<array<vec4<f32>, PART_VECS>, N_TOKENS>;
        for (var g = 0u; g < PART_VECS; g++) {
            let at = (first + part_offset(part, g)) / 4u;
            for (var t = 0u; t < N_TOKENS; t++) {
                xv[t][g] = vec4<f32>(x[t * k4 + at]);
            }
        }
        for (var s = 0u; s < SOURCES; s++) {
            for (var r = 0u; r < ROWS_PER_WG; r++) {
                if row0 + r < params.rows {
                    let row = row0 + r + s * params.pair;
                    var wv = dequant_part(row * row_bytes + block * BLOCK_BYTES, part);
                    for (var t = 0u; t < N_TOKENS; t++) {
                        var sum = 0.0;
                        for (var g = 0u; g < PART_VECS; g++) {
                            sum += dot(wv[g], xv[t][g]);
                        }
                        acc[s * OUTPUTS + r * N_TOKENS + t] += sum;
                    }
                }
            }
        }
#else
        // More tokens than rows: the part of every row stays in registers, and x streams past it one vec4 at a time.
        for (var s = 0u; s < SOURCES; s++) {
            var wv: array<array<vec4<f32>, PART_VECS>, ROWS_PER_WG>;
            for (var r = 0u; r < ROWS_PER_WG; r++) {
                if row0 + r < params.rows {
                    wv[r] = dequant_part((row0 + r + s * params.pair) * row_bytes + block * BLOCK_BYTES, part);
                }
            }
            for (var g = 0u; g < PART_VECS; g++) {
                let at = (first + part_offset(part, g)) / 4u;
                for (var t = 0u; t < N_TOKENS; t++) {
                    let xv = vec4<f32>(x[t * k4 + at]);
                    for (var r = 0u; r < ROWS_PER_WG; r++) {
                        acc[s * OUTPUTS + r * N_TOKENS + t] += dot(wv[r][g], xv);
                    }
                }
            }
        }
#endif
    }

#ifdef SUBGROUPS
    for (var o = 0u; o < SUMS; o++) {
        let sum = subgroupAdd(acc[o]);
        if subgroup_lane == 0u {
            partial[subgroup_id * SUMS + o] = sum;
        }
    }
    workgroupBarrier();
    // Each invocation writes outputs lane, lane + WORKGROUP_SIZE, ...: a workgroup may have fewer invocations than
    // outputs (the software shape).
    for (var o = lane; o < OUTPUTS; o += WORKGROUP_SIZE) {
        var totals = vec2<f32>(0.0);
        for (var s = 0u; s < SOURCES; s++) {
            for (var g = 0u; g < num_subgroups; g++) {
                totals[s] += partial[g * SUMS + s * OUTPUTS + o];
            }
        }
        store(row0, o, total_of(totals.x, totals.y));
    }
#else
    for (var o = 0u; o < SUMS; o++) {
        partial[o * WORKGROUP_SIZE + lane] = acc[o];
    }
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            for (var o = 0u; o < SUMS; o++) {
                partial[o * WORKGROUP_SIZE + lane] += partial[o * WORKGROUP_SIZE + lane + stride];
            }
        }
        workgroupBarrier();
    }
    for (var o = lane; o < OUTPUTS; o += WORKGROUP_SIZE) {
        var totals = vec2<f32>(0.0);
        for (var s = 0u; s < SOURCES; s++) {
            totals[s] = partial[(s * OUTPUTS + o) * WORKGROUP_SIZE];
        }
        store(row0, o, total_of(totals.x, totals.y));
    }
#endif
}
