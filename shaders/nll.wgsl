#include "common.wgsl"
// The negative log-likelihood of each row's target token, for perplexity:
//
//     nll[r] = log(sum_j exp(logits[r, j])) - logits[r, targets[r]]
//
// computed as llama.cpp's perplexity tool does, relative to the row's maximum so that exp never overflows. One
// workgroup per row: a max over a strided slice of the row, a shared-memory tree for the workgroup's max, then the sum
// of exp(logit - max) the same way. A target outside the vocabulary gives -1 (a real NLL is never negative).
//
// Macros: WORKGROUP_SIZE (a power of two).

struct Params {
    n_vocab: u32, // logits per row
    rows: u32,    // rows (tokens)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [rows, n_vocab]
@group(0) @binding(2) var<storage, read> targets: array<u32>;      // [rows]
@group(0) @binding(3) var<storage, read_write> nll: array<f32>;    // [rows]

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

// The workgroup's reduction of `value` by max (`use_max`) or sum; every invocation gets the result.
fn reduce(lane: u32, value: f32, use_max: bool) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            let other = partial[lane + stride];
            partial[lane] = select(partial[lane] + other, max(partial[lane], other), use_max);
        }
        workgroupBarrier();
    }
    let result = partial[0];
    // Nobody may overwrite partial[0] for the next reduction before every invocation has read it.
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn nll_rows(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = flat_workgroup(workgroup_id, num_workgroups);
    // Spare workgroups of a folded grid see an empty row; they still reach every barrier.
    let n = select(0u, params.n_vocab, row < params.rows);
    let base = row * params.n_vocab;

    var m = -3.402823e38;
    for (var i = lane; i < n; i += WORKGROUP_SIZE) {
        m = max(m, logits[base + i]);
    }
    m = reduce(lane, m, true);

    var sum = 0.0;
    for (var i = lane; i < n; i += WORKGROUP_SIZE) {
        sum += exp(logits[base + i] - m);
    }
    sum = reduce(lane, sum, false);

    if lane == 0u && row < params.rows {
        let want = targets[row];
        var value = -1.0;
        if want < params.n_vocab {
            value = m + log(sum) - logits[base + want];
        }
        nll[row] = value;
    }
}
