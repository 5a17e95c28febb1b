#include "common.wgsl"
// Element-wise ops over flat tensors, one invocation per element, math in f32:
//
//     add:      out[i] = a[i] + b[i % b_len]      (b_len divides len: a residual add, or a bias added to every row)
//     mul:      out[i] = a[i] * b[i % b_len]
//     silu_mul: out[i] = silu(a[i]) * b[i]        (a = gate, b = up; silu(g) = g / (1 + exp(-g)), the SwiGLU of the FFN)
//     scale:    out[i] = a[i] * s
//
// Macros: WORKGROUP_SIZE, F16 (all tensors are f16), IN_PLACE (the result overwrites a, and there is no `out`),
// STEP_ROWS (only the step's rows; see `active_len`).
// With auto layouts each entry point's bind group holds only the bindings it uses (scale has no b).

struct Params {
    len: u32,   // elements of a and out
    b_len: u32, // elements of b
    s: f32,     // the factor of `scale`
    row_len: u32, // STEP_ROWS: elements per row (a token's)
}

@group(0) @binding(0) var<uniform> params: Params;
#ifdef IN_PLACE
@group(0) @binding(1) var<storage, read_write> a: array<ACT>; // [len], also the result
#else
@group(0) @binding(1) var<storage, read> a: array<ACT>;       // [len]
#endif
@group(0) @binding(2) var<storage, read> b: array<ACT>;       // [b_len]
#ifndef IN_PLACE
@group(0) @binding(3) var<storage, read_write> out: array<ACT>; // [len]
#endif
#ifdef STEP_ROWS
@group(0) @binding(4) var<storage, read> step: array<u32>;       // [4]: n_past, n_tokens, 0, 0
#endif

// The elements to compute: all of them, or with STEP_ROWS those of the step's tokens (the first n_tokens rows, read
// from the engine's `step` tensor when the dispatch runs: a prefill graph built for a batch capacity runs chunks of
// any length).
fn active_len() -> u32 {
#ifdef STEP_ROWS
    return min(params.len, step[1] * params.row_len);
#else
    return params.len;
#endif
}

fn element(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> u32 {
    return flat_workgroup(workgroup_id, num_workgroups) * WORKGROUP_SIZE + lane;
}

fn store(i: u32, v: f32) {
#ifdef IN_PLACE
    a[i] = ACT(v);
#else
    out[i] = ACT(v);
#endif
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn add(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < active_len() {
        store(i, f32(a[i]) + f32(b[i % params.b_len]));
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn mul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < active_len() {
        store(i, f32(a[i]) * f32(b[i % params.b_len]));
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn silu_mul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < active_len() {
        let gate = f32(a[i]);
        store(i, gate / (1.0 + exp(-gate)) * f32(b[i]));
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn scale(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < active_len() {
        store(i, f32(a[i]) * params.s);
    }
}
