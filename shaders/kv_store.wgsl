#include "common.wgsl"
// Appends the batch's keys (or values) to the KV cache:
//
//     cache[n_past + t, :] = src[t, :]      for t < n_tokens, and n_past + t < ctx
//
// n_past and n_tokens are read from `step` at run time (the engine writes it before each submit), so one dispatch
// serves every step. Rows past the cache are never written.
//
// One invocation per element of `src` (the whole batch capacity; rows past n_tokens return at once).
//
// Macros: WORKGROUP_SIZE, F16 (the cache is f16; src stays f32).

struct Params {
    row_len: u32, // elements per row: n_head_kv * head_dim
    batch: u32,   // the batch capacity: rows of src
    ctx: u32,     // rows of the cache
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;          // [batch, row_len]
@group(0) @binding(2) var<storage, read> step: array<u32>;         // [4]: n_past, n_tokens, 0, 0
@group(0) @binding(3) var<storage, read_write> cache: array<ACT>;  // [ctx, row_len]

@compute @workgroup_size(WORKGROUP_SIZE)
fn kv_store(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = flat_workgroup(workgroup_id, num_workgroups) * WORKGROUP_SIZE + lane;
    if i >= params.batch * params.row_len {
        return;
    }
    let t = i / params.row_len;
    let n_past = step[0];
    // Written so that nothing overflows, whatever `step` holds.
    if t >= step[1] || n_past >= params.ctx || t >= params.ctx - n_past {
        return;
    }
    cache[(n_past + t) * params.row_len + i % params.row_len] = ACT(src[i]);
}
