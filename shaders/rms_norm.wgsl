#include "common.wgsl"
// RMSNorm, as llama.cpp's `ggml_rms_norm` followed by the multiplication with the norm weight:
//
//     y[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * w[i]
//
// One workgroup per row. Each invocation sums the squares of a strided slice of the row in f32, the workgroup adds the
// partial sums (shared-memory tree, or subgroupAdd when the device has subgroups), then every invocation scales its
// slice. x and y must be different buffers.
//
// With STEP_ROWS only the rows of the step's tokens are normalised (rows < n_tokens, read from the engine's `step`
// tensor when the dispatch runs: a prefill graph built for a batch capacity runs chunks of any length). With LAST_ROW
// the one workgroup normalises row n_tokens - 1 of x into y's only row (the last token's state, for the LM head).
//
// Macros: WORKGROUP_SIZE (a power of two), F16 (x and y are f16), SUBGROUPS with MIN_SUBGROUP_SIZE (the adapter's
// smallest subgroup size: it bounds the number of subgroups per workgroup), STEP_ROWS, LAST_ROW.

struct Params {
    n: u32,    // elements per row
    rows: u32, // number of rows
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<ACT>;       // [rows, n]
@group(0) @binding(2) var<storage, read> w: array<f32>;       // [n]
@group(0) @binding(3) var<storage, read_write> y: array<ACT>; // [rows, n]; [1, n] with LAST_ROW
#ifdef STEP_ROWS
@group(0) @binding(4) var<storage, read> step: array<u32>;    // [4]: n_past, n_tokens, 0, 0
#endif

#ifdef SUBGROUPS
var<workgroup> partial: array<f32, WORKGROUP_SIZE / MIN_SUBGROUP_SIZE>; // one sum per subgroup
#else
var<workgroup> partial: array<f32, WORKGROUP_SIZE>; // one sum per invocation, then a tree
#endif

@compute @workgroup_size(WORKGROUP_SIZE)
fn rms_norm(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_id) subgroup_id: u32,
    @builtin(num_subgroups) num_subgroups: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
#endif
) {
    var row = flat_workgroup(workgroup_id, num_workgroups);
    var rows = params.rows;
#ifdef STEP_ROWS
    rows = min(rows, step[1]);
#endif
#ifdef LAST_ROW
    // The last token's row, written to row 0 of y.
    let out_base = 0u;
    row = select(rows - 1u, rows, rows == 0u);
#else
    let out_base = row * params.n;
#endif
    // Spare workgroups of a folded grid (and rows past the step's) see an empty row; they still reach every barrier.
    let n = select(0u, params.n, row < rows);
    let base = row * params.n;

    var sum = 0.0;
    for (var i = lane; i < n; i += WORKGROUP_SIZE) {
        let v = f32(x[base + i]);
        sum += v * v;
    }

#ifdef SUBGROUPS
    let subgroup_sum = subgroupAdd(sum);
    if subgroup_lane == 0u {
        partial[subgroup_id] = subgroup_sum;
    }
    workgroupBarrier();
    // Every subgroup adds the per-subgroup sums itself: no second barrier, and subgroupAdd stays in uniform flow.
    var total = 0.0;
    for (var s = subgroup_lane; s < num_subgroups; s += subgroup_size) {
        total += partial[s];
    }
    total = subgroupAdd(total);
#else
    partial[lane] = sum;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
#endif

    let scale = inverseSqrt(total / f32(params.n) + params.eps);
    for (var i = lane; i < n; i += WORKGROUP_SIZE) {
        y[out_base + i] = ACT(f32(x[base + i]) * scale * w[i]);
    }
}
