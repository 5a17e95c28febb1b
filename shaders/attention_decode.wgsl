#include "common.wgsl"
// Grouped-query attention of one token (decode) over the KV cache, split over the context (split-K, "flash
// decoding") so that a long context keeps the GPU busy instead of one workgroup per head walking all of it:
//
//     out[h, :] = sum_j softmax_j(q[h, :] . k[j, h / G, :] / sqrt(HEAD_DIM)) v[j, h / G, :]    j = 0 ..= n_past
//
// `attention_decode`: workgroup (chunk, kv_head) takes cache rows chunk * CHUNK .. (chunk + 1) * CHUNK for the G query
// heads that share kv_head, and writes for each of them a partial record (sum_j p_j v_j, m, l) with
// m = max_j score_j and p_j = exp(score_j - m), l = sum_j p_j over its rows. Chunks past the context return at once.
//   1. invocation j takes key j of the chunk and computes its G scores (each key read once for the whole group);
//   2. the maxima and sums over the chunk come from shared-memory trees;
//   3. invocation (column, key_group) adds p_j * v_j for every G head over the keys j = key_group (mod KEY_GROUPS)
//      of one 4-wide column of V, and the key groups add up their sums one after the other.
// `attention_combine`: one workgroup per query head merges the records of the active chunks,
//     out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c,   M = max_c m_c.
//
// n_past and n_tokens are read from `step` at run time; with n_tokens = 0 nothing is computed or written.
//
// Macros: HEAD_DIM (a multiple of 4), GROUP (n_head / n_head_kv), CHUNK (keys per workgroup and its invocations, a
// power of two, at least HEAD_DIM / 4), F16 (the caches are f16; q, out and all math are f32).

struct Params {
    n_head: u32,    // query heads
    n_head_kv: u32, // key/value heads
    ctx: u32,       // rows of the caches
    n_chunks: u32,  // ceil(ctx / CHUNK): records per head in `partials`
    scale: f32,     // 1 / sqrt(HEAD_DIM)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;           // [n_head, HEAD_DIM / 4]
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<ACT>>;     // [ctx, n_head_kv, HEAD_DIM / 4]
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<ACT>>;     // [ctx, n_head_kv, HEAD_DIM / 4]
@group(0) @binding(4) var<storage, read> step: array<u32>;              // [4]: n_past, n_tokens, 0, 0
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;    // [n_head, n_chunks, HEAD_DIM + 2]: o, m, l
@group(0) @binding(6) var<storage, read_write> out: array<f32>;         // [1, n_head * HEAD_DIM]

const VEC_PER_ROW = HEAD_DIM / 4u;
const KEY_GROUPS = CHUNK / VEC_PER_ROW; // invocations that share a column of V
const RECORD = HEAD_DIM + 2u;          // one partial: o[HEAD_DIM], m, l
const REDUCE_WIDTH = max(CHUNK, HEAD_DIM);
const COMBINE_SIZE = 64u;
const NEG_BIG: f32 = -3.0e38; // below every real score; exp(NEG_BIG - m) is 0

var<workgroup> q_tile: array<vec4<f32>, GROUP * VEC_PER_ROW>; // [GROUP, HEAD_DIM / 4]: the group's queries, scaled
var<workgroup> probs: array<f32, GROUP * CHUNK>;              // [GROUP, CHUNK]: p_j of the chunk's keys
var<workgroup> reduce: array<f32, GROUP * REDUCE_WIDTH>;      // [GROUP, CHUNK] trees, then [GROUP, HEAD_DIM] sums

// Cache rows the token sees: 0 ..= n_past (clamped to the cache), or none when the batch is empty.
fn kv_len() -> u32 {
    return select(0u, min(step[0], params.ctx - 1u) + 1u, step[1] > 0u);
}

// reduce[g, 0] = the maximum (or the sum) of reduce[g, 0 .. CHUNK], for every g. Called in uniform control flow.
fn reduce_tree(lane: u32, maximum: bool) {
    workgroupBarrier();
    for (var stride = CHUNK / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            for (var g = 0u; g < GROUP; g++) {
                let a = reduce[g * CHUNK + lane];
                let b = reduce[g * CHUNK + lane + stride];
                reduce[g * CHUNK + lane] = select(a + b, max(a, b), maximum);
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(CHUNK)
fn attention_decode(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let chunk = workgroup_id.x;
    let kv_head = workgroup_id.y;
    let first_key = chunk * CHUNK;
    let len = kv_len();
    if first_key >= len {
        return;
    }
    let n_keys = min(len - first_key, CHUNK);

    // The group's heads are consecutive: kv_head * GROUP + g.
    for (var i = lane; i < GROUP * VEC_PER_ROW; i += CHUNK) {
        q_tile[i] = q[kv_head * GROUP * VEC_PER_ROW + i] * params.scale;
    }
    workgroupBarrier();

    // 1. Scores of key `lane` for every head of the group.
    var s: array<f32, GROUP>;
    let has_key = lane < n_keys;
    if has_key {
        let base = ((first_key + lane) * params.n_head_kv + kv_head) * VEC_PER_ROW;
        for (var d = 0u; d < VEC_PER_ROW; d++) {
            let k = vec4<f32>(k_cache[base + d]);
            for (var g = 0u; g < GROUP; g++) {
                s[g] += dot(q_tile[g * VEC_PER_ROW + d], k);
            }
        }
    }

    // 2. The chunk's maximum and sum per head.
    for (var g = 0u; g < GROUP; g++) {
        reduce[g * CHUNK + lane] = select(NEG_BIG, s[g], has_key);
    }
    reduce_tree(lane, true);
    var m: array<f32, GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        m[g] = reduce[g * CHUNK];
        probs[g * CHUNK + lane] = select(0.0, exp(s[g] - m[g]), has_key);
    }
    workgroupBarrier(); // every invocation has read the maxima
    for (var g = 0u; g < GROUP; g++) {
        reduce[g * CHUNK + lane] = probs[g * CHUNK + lane];
    }
    reduce_tree(lane, false);
    var l: array<f32, GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        l[g] = reduce[g * CHUNK];
    }
    workgroupBarrier(); // every invocation has read the sums: `reduce` is reused below

    // 3. sum_j p_j v_j: invocation (column, key_group).
    let column = lane % VEC_PER_ROW;
    let key_group = lane / VEC_PER_ROW;
    var o: array<vec4<f32>, GROUP>;
    if key_group < KEY_GROUPS {
        for (var j = key_group; j < n_keys; j += KEY_GROUPS) {
            let v = vec4<f32>(v_cache[((first_key + j) * params.n_head_kv + kv_head) * VEC_PER_ROW + column]);
            for (var g = 0u; g < GROUP; g++) {
                o[g] += probs[g * CHUNK + j] * v;
            }
        }
    }
    for (var turn = 0u; turn < KEY_GROUPS; turn++) {
        if key_group == turn {
            for (var g = 0u; g < GROUP; g++) {
                let at = g * HEAD_DIM + column * 4u;
                var sum = o[g];
                if turn > 0u {
                    sum += vec4<f32>(reduce[at], reduce[at + 1u], reduce[at + 2u], reduce[at + 3u]);
                }
                reduce[at] = sum.x;
                reduce[at + 1u] = sum.y;
                reduce[at + 2u] = sum.z;
                reduce[at + 3u] = sum.w;
            }
        }
        workgroupBarrier();
    }

    // The records of the group's heads for this chunk.
    for (var i = lane; i < GROUP * HEAD_DIM; i += CHUNK) {
        let head = kv_head * GROUP + i / HEAD_DIM;
        partials[(head * params.n_chunks + chunk) * RECORD + i % HEAD_DIM] = reduce[i];
    }
    if lane < GROUP {
        let at = ((kv_head * GROUP + lane) * params.n_chunks + chunk) * RECORD + HEAD_DIM;
        partials[at] = m[lane];
        partials[at + 1u] = l[lane];
    }
}

@compute @workgroup_size(COMBINE_SIZE)
fn attention_combine(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let head = flat_workgroup(workgroup_id, num_workgroups);
    let n_active = (kv_len() + CHUNK - 1u) / CHUNK;
    if head >= params.n_head || n_active == 0u {
        return;
    }
    let base = head * params.n_chunks * RECORD;
    var m_max = NEG_BIG;
    for (var c = 0u; c < n_active; c++) {
        m_max = max(m_max, partials[base + c * RECORD + HEAD_DIM]);
    }
    var total = 0.0;
    for (var c = 0u; c < n_active; c++) {
        let at = base + c * RECORD + HEAD_DIM;
        total += exp(partials[at] - m_max) * partials[at + 1u];
    }
    for (var d = lane; d < HEAD_DIM; d += COMBINE_SIZE) {
        var acc = 0.0;
        for (var c = 0u; c < n_active; c++) {
            let at = base + c * RECORD;
            acc += exp(partials[at + HEAD_DIM] - m_max) * partials[at + d];
        }
        out[head * HEAD_DIM + d] = acc / total;
    }
}
