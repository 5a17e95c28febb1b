#include "common.wgsl"
// The allowed-token mask of constrained decoding (structured output), applied to a row of logits in place before the
// sampler reads it:
//
//     apply_mask: logits[offset + i] = -inf  where bit i of `allowed` is 0     (i < n_vocab)
//
// `allowed` holds one bit per token, 32 to a word, least significant bit first (bit i is word i / 32, bit i % 32),
// as llguidance's token masks are laid out. One invocation per logit: the 32 lanes that share a word read it together
// (one load, broadcast) and the writes of disallowed logits are coalesced across lanes.
//
// Macros: WORKGROUP_SIZE.

struct Params {
    n_vocab: u32, // logits in the row (bits that count)
    offset: u32,  // element of `logits` where the row starts
    n_words: u32, // ceil(n_vocab / 32), the words of `allowed`
    // 0xff800000, the bits of -inf: WGSL has no infinite constants (Tint rejects `bitcast<f32>(0xff800000u)` as a
    // constant expression), so the value arrives at run time.
    neg_inf_bits: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>; // [.., n_vocab], the row at `offset`
@group(0) @binding(2) var<storage, read> allowed: array<u32>;      // [n_words]

@compute @workgroup_size(WORKGROUP_SIZE)
fn apply_mask(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = flat_workgroup(workgroup_id, num_workgroups) * WORKGROUP_SIZE + lane;
    if i >= params.n_vocab {
        return;
    }
    if (allowed[i / 32u] & (1u << (i % 32u))) == 0u {
        logits[params.offset + i] = bitcast<f32>(params.neg_inf_bits);
    }
}
