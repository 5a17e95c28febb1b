#include "common.wgsl"
#include "dequant.wgsl"
// The embedding lookup, as llama.cpp's `ggml_get_rows`:
//
//     out[t, :] = W[ids[t], :]      dequantised (dequant.wgsl)
//
// W is one part of a split weight, rows `first_row..first_row + rows` of the whole matrix; the ids are read when the
// kernel runs (the engine writes them before each step), and a token whose id falls in another part is left to that
// part's dispatch. The dispatch of the last part (`last_part` = 1) also writes zeros for ids past the end of the
// matrix, so an out-of-range id never reads out of bounds and never leaves stale data. One workgroup per token; its
// invocations stride over the parts of the row.
//
// Macros: one TYPE_<name>, WORKGROUP_SIZE, F16 (out is f16).

struct Params {
    cols: u32,      // elements per row, a multiple of BLOCK_SIZE
    rows: u32,      // rows of this part of W
    first_row: u32, // where this part's rows start in the whole W
    n_tokens: u32,  // elements of ids, rows of out
    last_part: u32, // 1 for the last part of W: it also zeroes the rows of out-of-range ids
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;                // [rows, cols] raw GGML blocks
@group(0) @binding(2) var<storage, read> ids: array<u32>;              // [n_tokens]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<ACT>>;  // [n_tokens, cols / 4]

@compute @workgroup_size(WORKGROUP_SIZE)
fn get_rows(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let t = flat_workgroup(workgroup_id, num_workgroups);
    if t >= params.n_tokens {
        return;
    }
    let id = ids[t];
    if id < params.first_row {
        return;
    }
    let row = id - params.first_row;
    let blocks = params.cols / BLOCK_SIZE;
    let out_row = t * (params.cols / 4u);
    if row >= params.rows {
        if params.last_part != 0u {
            for (var i = lane; i < params.cols / 4u; i += WORKGROUP_SIZE) {
                out[out_row + i] = vec4<ACT>(0.0);
            }
        }
        return;
    }
    let row_start = row * blocks * BLOCK_BYTES;
    for (var i = lane; i < blocks * PARTS; i += WORKGROUP_SIZE) {
        let block = i / PARTS;
        let part = i % PARTS;
        var v = dequant_part(row_start + block * BLOCK_BYTES, part);
        for (var g = 0u; g < PART_VECS; g++) {
            out[out_row + (block * BLOCK_SIZE + part_offset(part, g)) / 4u] = vec4<ACT>(v[g]);
        }
    }
}
