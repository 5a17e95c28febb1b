#include "common.wgsl"
#include "dequant.wgsl"
// Quantised matrix × a few vectors, for decode (ARCHITECTURE.md §6):
//
//     y[t, first_row + r] = sum_k W[r, k] * x[t, k]      for t < N_TOKENS, r < rows
//
// W is one part of a split weight (rows `first_row..first_row + rows` of the whole matrix) in raw GGML blocks,
// dequantised in registers by dequant.wgsl. Each workgroup computes ROWS_PER_WG rows for all N_TOKENS tokens: its
// invocations stride over the parts of a row (32 weights each for the quantised types); for each part they load x
// at the part's elements and dequantise the part of each of the ROWS_PER_WG rows, and apply every row's weights to
// every token. So every weight is read once, and x once per ROWS_PER_WG rows (storage loads are what software GPUs
// spend their time on). Whichever of the two is smaller stays in registers while the other streams past it: x for
// few tokens (CACHE_X), the rows' weights for more. The per-invocation sums are then reduced across the workgroup:
// subgroupAdd when the device has subgroups, a shared-memory tree otherwise. Math is f32 whatever the storage type.
//
// The epilogue (src/gpu/ops/matmul.rs, `Epilogue`): the sum of row r goes to column `column + first_row + r` of y,
// plus bias[first_row + r] (BIAS), added to what y holds there (ACCUMULATE) or replacing it.
//
// Macros: one TYPE_<name> (see dequant.wgsl), WORKGROUP_SIZE (a power of two), ROWS_PER_WG, N_TOKENS, CACHE_X (keep
// x in registers rather than the rows' weights: for N_TOKENS <= ROWS_PER_WG), F16 (x and y are f16), SUBGROUPS with
// MIN_SUBGROUP_SIZE, BIAS, ACCUMULATE.

struct Params {
    k: u32,         // columns of W: elements of an x row, a multiple of BLOCK_SIZE
    rows: u32,      // rows of this part of W
    first_row: u32, // where this part's rows start in the whole W, and so in a y row
    y_cols: u32,    // elements of a y row
    column: u32,    // the column of y where the whole W's outputs start
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;            // [rows, k] raw GGML blocks
@group(0) @binding(2) var<storage, read> x: array<vec4<ACT>>;      // [N_TOKENS, k / 4]
@group(0) @binding(3) var<storage, read_write> y: array<ACT>;      // [N_TOKENS, y_cols]
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // [rows of the whole W]
#endif

const OUTPUTS: u32 = ROWS_PER_WG * N_TOKENS; // sums per workgroup, row-major: output r * N_TOKENS + t

#ifdef SUBGROUPS
var<workgroup> partial: array<f32, (WORKGROUP_SIZE / MIN_SUBGROUP_SIZE) * OUTPUTS>; // [subgroup, output]
#else
var<workgroup> partial: array<f32, OUTPUTS * WORKGROUP_SIZE>; // [output, invocation]
#endif

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

    var acc: array<f32, OUTPUTS>;
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
        for (var r = 0u; r < ROWS_PER_WG; r++) {
            if row0 + r < params.rows {
                var wv = dequant_part((row0 + r) * row_bytes + block * BLOCK_BYTES, part);
                for (var t = 0u; t < N_TOKENS; t++) {
                    var sum = 0.0;
                    for (var g = 0u; g < PART_VECS; g++) {
                        sum += dot(wv[g], xv[t][g]);
                    }
                    acc[r * N_TOKENS + t] += sum;
                }
            }
        }
#else
        // More tokens than rows: the part of every row stays in registers, and x streams past it one vec4 at a time.
        var wv: array<array<vec4<f32>, PART_VECS>, ROWS_PER_WG>;
        for (var r = 0u; r < ROWS_PER_WG; r++) {
            if row0 + r < params.rows {
                wv[r] = dequant_part((row0 + r) * row_bytes + block * BLOCK_BYTES, part);
            }
        }
        for (var g = 0u; g < PART_VECS; g++) {
            let at = (first + part_offset(part, g)) / 4u;
            for (var t = 0u; t < N_TOKENS; t++) {
                let xv = vec4<f32>(x[t * k4 + at]);
                for (var r = 0u; r < ROWS_PER_WG; r++) {
                    acc[r * N_TOKENS + t] += dot(wv[r][g], xv);
                }
            }
        }
#endif
    }

#ifdef SUBGROUPS
    for (var o = 0u; o < OUTPUTS; o++) {
        let sum = subgroupAdd(acc[o]);
        if subgroup_lane == 0u {
            partial[subgroup_id * OUTPUTS + o] = sum;
        }
    }
    workgroupBarrier();
    if lane < OUTPUTS {
        var total = 0.0;
        for (var s = 0u; s < num_subgroups; s++) {
            total += partial[s * OUTPUTS + lane];
        }
        store(row0, lane, total);
    }
#else
    for (var o = 0u; o < OUTPUTS; o++) {
        partial[o * WORKGROUP_SIZE + lane] = acc[o];
    }
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            for (var o = 0u; o < OUTPUTS; o++) {
                partial[o * WORKGROUP_SIZE + lane] += partial[o * WORKGROUP_SIZE + lane + stride];
            }
        }
        workgroupBarrier();
    }
    if lane < OUTPUTS {
        store(row0, lane, partial[lane * WORKGROUP_SIZE]);
    }
#endif
}
