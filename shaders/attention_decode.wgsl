#include "common.wgsl"
// Grouped-query attention of one token (decode) over the KV cache, split over the context ("flash decoding", the
// split-K of llama.cpp's Vulkan and WebGPU backends), so that a long context keeps every compute unit busy instead of
// one workgroup per head walking all of it:
//
//     out[h, :] = sum_j softmax_j(q[h, :] . k[j, h / G, :] / sqrt(HEAD_DIM)) v[j, h / G, :]    j = 0 ..= n_past
//
// `attention_decode`: workgroup (split, kv_head) takes the split's cache rows for the G query heads that share kv_head
// (each K and V row is read once for the whole group) and writes, per head, a partial record
// (o = sum_j p_j v_j, m = max_j score_j, l = sum_j p_j, with p_j = exp(score_j - m)) over its rows. It walks the split
// in tiles of TILE keys with a running maximum per head (online softmax, Milakov & Gimelshein 2018):
//   1. scores: D_SPLIT consecutive lanes share a key (a "slot") and split the head dimension between them: lane d of a
//      slot reads the vec4s d, d + D_SPLIT, ... of the key's K row, so consecutive lanes read consecutive words and
//      a row is read in whole memory segments. The slot's partial dot products are summed with subgroup shuffles over
//      the lanes that share a subgroup (SUBGROUP, the adapter's smallest subgroup size, bounds them), through
//      workgroup memory across subgroups or without subgroups. The tile's scores go to workgroup memory;
//   2. softmax: lane g < GROUP finds head g's new maximum; then every score becomes p = exp(score - m), computed once;
//   3. values: lane (key group, column) rescales and adds p_j v_j for its vec4 columns of V over the keys j of its key
//      group, for every head: consecutive lanes read consecutive words of a V row.
// At the end the key groups' sums (they share m) are added up in workgroup memory, one key group after the other.
// `attention_combine`: one workgroup per query head merges the records of the active splits,
//     out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c,   M = max_c m_c.
//
// The context the token sees is split evenly at run time: a split holds a multiple of CHUNK keys, as few as keep the
// grid's n_splits splits busy (`split_keys`), so a short context runs in many small splits and a long one in at most
// n_splits. n_past and n_tokens are read from `step` when the dispatch runs; with n_tokens = 0 nothing is written.
//
// Macros: HEAD_DIM (a multiple of 4 * D_SPLIT), GROUP (n_head / n_head_kv), WORKGROUP (a multiple of D_SPLIT),
// D_SPLIT (lanes per key, a power of two), TILE (keys per tile, a multiple of WORKGROUP / D_SPLIT), CHUNK (the smallest
// split, a multiple of TILE), F16 (the caches are f16; q, out and all arithmetic are f32), SUBGROUPS with SUBGROUP
// (lanes guaranteed to share a subgroup: a power of two, at most WORKGROUP).
// With subgroups, lanes are numbered subgroup_id * subgroup_size + subgroup_invocation_id, so that the lanes a shuffle
// joins are the ones numbered together (every driver gives full subgroups to a workgroup whose size is a multiple of
// the subgroup size).

struct Params {
    n_head: u32,    // query heads
    n_head_kv: u32, // key/value heads
    ctx: u32,       // rows of the caches
    n_splits: u32,  // workgroups along the context: records per head in `partials`
    scale: f32,     // 1 / sqrt(HEAD_DIM)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;             // [n_head, HEAD_DIM / 4]
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<ACT>>;       // [ctx, n_head_kv, HEAD_DIM / 4]
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<ACT>>;       // [ctx, n_head_kv, HEAD_DIM / 4]
@group(0) @binding(4) var<storage, read> step: array<u32>;                // [4]: n_past, n_tokens, 0, 0
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<f32>>; // [n_head, n_splits, HEAD_DIM / 4 + 1]
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;      // [1, n_head * HEAD_DIM / 4]

const VEC = HEAD_DIM / 4u;         // vec4s per row
const DVECS = VEC / D_SPLIT;       // vec4s of a K row per lane (step 1)
const SLOTS = WORKGROUP / D_SPLIT; // keys scored at once (step 1)
const V_LANES = min(VEC, WORKGROUP); // lanes along a V row (step 3)
const V_COLUMNS = VEC / V_LANES;   // vec4 columns per lane (step 3)
const KEY_GROUPS = WORKGROUP / V_LANES; // lanes along the keys (step 3)
const RECORD = VEC + 1u;           // one partial record: o as VEC vec4s, then (m, l, 0, 0)
const NEG_BIG: f32 = -3.0e38;      // below every real score; exp(NEG_BIG - m) is 0
#ifdef SUBGROUPS
const SHUFFLE = min(D_SPLIT, SUBGROUP); // lanes of a slot summed by shuffles
#else
const SHUFFLE = 1u;
#endif
const PIECES = D_SPLIT / SHUFFLE; // partial dot products per slot summed through workgroup memory

var<workgroup> q_tile: array<vec4<f32>, GROUP * VEC>;   // [GROUP, HEAD_DIM / 4]: the group's queries, scaled; at
                                                        // the end, the sums of p v
var<workgroup> probs: array<f32, GROUP * TILE>;         // [GROUP, TILE]: the tile's scores, then p
var<workgroup> head_max: array<f32, GROUP>;             // per head: the running maximum m
var<workgroup> head_factor: array<f32, GROUP>;          // per head: exp(m_old - m) for this tile
var<workgroup> pieces: array<f32, SLOTS * PIECES * GROUP>; // [slot, piece, head]: dot products across subgroups
var<workgroup> merge_l: array<f32, GROUP>;              // per head: the sum of p over the split

// Cache rows the token sees: 0 ..= n_past (clamped to the cache), or none when the batch is empty.
fn kv_len() -> u32 {
    return select(0u, min(step[0], params.ctx - 1u) + 1u, step[1] > 0u);
}

// Keys per split for a context of `len` keys: a multiple of CHUNK, spreading the context over at most n_splits.
fn split_keys(len: u32) -> u32 {
    let chunks = (len + CHUNK - 1u) / CHUNK;
    return CHUNK * ((chunks + params.n_splits - 1u) / params.n_splits);
}

// Step 1 for keys first_key + t * SLOTS + slot, t < TILE / SLOTS: the scores of every head into `probs` (NEG_BIG
// from `end` on). Called in uniform control flow.
fn score_tile(first_key: u32, end: u32, kv_head: u32, slot: u32, d: u32) {
    for (var t = 0u; t < TILE / SLOTS; t++) {
        let j = t * SLOTS + slot;
        let key = first_key + j;
        var s: array<f32, GROUP>;
        for (var g = 0u; g < GROUP; g++) {
            s[g] = 0.0;
        }
        if key < end {
            let row = (key * params.n_head_kv + kv_head) * VEC + d;
            for (var i = 0u; i < DVECS; i++) {
                let k = vec4<f32>(k_cache[row + i * D_SPLIT]);
                for (var g = 0u; g < GROUP; g++) {
                    s[g] += dot(q_tile[g * VEC + d + i * D_SPLIT], k);
                }
            }
        }
#ifdef SUBGROUPS
        for (var offset = 1u; offset < SHUFFLE; offset <<= 1u) {
            for (var g = 0u; g < GROUP; g++) {
                s[g] += subgroupShuffleXor(s[g], offset);
            }
        }
#endif
        if PIECES == 1u {
            if d == 0u {
                for (var g = 0u; g < GROUP; g++) {
                    probs[g * TILE + j] = select(NEG_BIG, s[g], key < end);
                }
            }
        } else {
            workgroupBarrier(); // the previous key's pieces have been read
            if d % SHUFFLE == 0u {
                for (var g = 0u; g < GROUP; g++) {
                    pieces[(slot * PIECES + d / SHUFFLE) * GROUP + g] = s[g];
                }
            }
            workgroupBarrier();
            for (var g = d; g < GROUP; g += D_SPLIT) {
                var total = 0.0;
                for (var piece = 0u; piece < PIECES; piece++) {
                    total += pieces[(slot * PIECES + piece) * GROUP + g];
                }
                probs[g * TILE + j] = select(NEG_BIG, total, key < end);
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP)
fn attention_decode(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_id) subgroup_id: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
#endif
) {
#ifdef SUBGROUPS
    let lane = subgroup_id * subgroup_size + subgroup_lane;
#else
    let lane = local_index;
#endif
    let split = workgroup_id.x;
    let kv_head = workgroup_id.y;
    let len = kv_len();
    let first_key = split * split_keys(len);
    if first_key >= len {
        return; // a split past the context (the whole workgroup)
    }
    let end = min(first_key + split_keys(len), len);

    // The group's heads are consecutive: kv_head * GROUP + g.
    for (var i = lane; i < GROUP * VEC; i += WORKGROUP) {
        q_tile[i] = q[kv_head * GROUP * VEC + i] * params.scale;
    }
    if lane < GROUP {
        head_max[lane] = NEG_BIG;
    }

    let column = lane % V_LANES;    // step 3: columns column + c * V_LANES
    let key_group = lane / V_LANES; // step 3: keys key_group + i * KEY_GROUPS of a tile
    var o: array<vec4<f32>, GROUP * V_COLUMNS>; // [head, c]
    var l: array<f32, GROUP>;                   // per head: sum of p over this lane's keys
    for (var g = 0u; g < GROUP; g++) {
        l[g] = 0.0;
        for (var c = 0u; c < V_COLUMNS; c++) {
            o[g * V_COLUMNS + c] = vec4<f32>(0.0);
        }
    }

    for (var tile = first_key; tile < end; tile += TILE) {
        workgroupBarrier(); // the previous tile's p have been used (the first time: q_tile and head_max are written)
        score_tile(tile, end, kv_head, lane / D_SPLIT, lane % D_SPLIT);
        workgroupBarrier();

        // 2. The new maximum per head, then p for every score.
        if lane < GROUP {
            var m_new = head_max[lane];
            for (var j = 0u; j < TILE; j++) {
                m_new = max(m_new, probs[lane * TILE + j]);
            }
            head_factor[lane] = exp(head_max[lane] - m_new);
            head_max[lane] = m_new;
        }
        workgroupBarrier();
        for (var i = lane; i < GROUP * TILE; i += WORKGROUP) {
            probs[i] = exp(probs[i] - head_max[i / TILE]);
        }
        workgroupBarrier();

        // 3. o = o * factor + p . V over this lane's keys of the tile.
        let n_keys = min(end - tile, TILE);
        for (var g = 0u; g < GROUP; g++) {
            let factor = head_factor[g];
            l[g] *= factor;
            for (var c = 0u; c < V_COLUMNS; c++) {
                o[g * V_COLUMNS + c] *= factor;
            }
        }
        if key_group < KEY_GROUPS {
            for (var j = key_group; j < n_keys; j += KEY_GROUPS) {
                let row = ((tile + j) * params.n_head_kv + kv_head) * VEC + column;
                for (var c = 0u; c < V_COLUMNS; c++) {
                    let v = vec4<f32>(v_cache[row + c * V_LANES]);
                    for (var g = 0u; g < GROUP; g++) {
                        o[g * V_COLUMNS + c] += probs[g * TILE + j] * v;
                    }
                }
                if column == 0u { // the key group's sums of p (the same for every column)
                    for (var g = 0u; g < GROUP; g++) {
                        l[g] += probs[g * TILE + j];
                    }
                }
            }
        }
    }

    // The key groups' sums (they share m), added up in turns in workgroup memory (q_tile is free now), then the
    // heads' records for this split. The loops over heads hold no barrier, so o stays in registers.
    for (var turn = 0u; turn < KEY_GROUPS; turn++) {
        workgroupBarrier(); // the previous turn's sums are written (the first time: the last tile's scores are done)
        if key_group == turn {
            for (var g = 0u; g < GROUP; g++) {
                for (var c = 0u; c < V_COLUMNS; c++) {
                    let at = g * VEC + column + c * V_LANES;
                    q_tile[at] = select(vec4<f32>(0.0), q_tile[at], turn > 0u) + o[g * V_COLUMNS + c];
                }
                if column == 0u {
                    merge_l[g] = select(0.0, merge_l[g], turn > 0u) + l[g];
                }
            }
        }
    }
    workgroupBarrier();
    for (var i = lane; i < GROUP * VEC; i += WORKGROUP) {
        let g = i / VEC;
        partials[((kv_head * GROUP + g) * params.n_splits + split) * RECORD + i % VEC] = q_tile[i];
    }
    if lane < GROUP {
        let at = ((kv_head * GROUP + lane) * params.n_splits + split) * RECORD + VEC;
        partials[at] = vec4<f32>(head_max[lane], merge_l[lane], 0.0, 0.0);
    }
}

// The combine pass: COMBINE invocations per head, PARTS of them per column of the output.
const COMBINE = 128u;
const PARTS = COMBINE / VEC;

var<workgroup> combine_max: array<f32, COMBINE>;
var<workgroup> combine_o: array<vec4<f32>, COMBINE>; // [part, HEAD_DIM / 4]
var<workgroup> combine_l: array<f32, COMBINE>;

@compute @workgroup_size(COMBINE)
fn attention_combine(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let head = flat_workgroup(workgroup_id, num_workgroups);
    let len = kv_len();
    if head >= params.n_head || len == 0u {
        return;
    }
    let n_active = (len + split_keys(len) - 1u) / split_keys(len);
    let base = head * params.n_splits * RECORD;

    // M = the largest m of the active splits: a tree over the invocations' maxima.
    var m_max = NEG_BIG;
    for (var c = lane; c < n_active; c += COMBINE) {
        m_max = max(m_max, partials[base + c * RECORD + VEC].x);
    }
    combine_max[lane] = m_max;
    workgroupBarrier();
    for (var stride = COMBINE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            combine_max[lane] = max(combine_max[lane], combine_max[lane + stride]);
        }
        workgroupBarrier();
    }
    m_max = combine_max[0];

    // Invocation (part, column) adds the splits part, part + PARTS, ...; then the parts are added up.
    let column = lane % VEC;
    let part = lane / VEC;
    if part < PARTS {
        var acc = vec4<f32>(0.0);
        var total = 0.0;
        for (var c = part; c < n_active; c += PARTS) {
            let ml = partials[base + c * RECORD + VEC];
            let w = exp(ml.x - m_max);
            acc += w * partials[base + c * RECORD + column];
            total += w * ml.y;
        }
        combine_o[lane] = acc;
        combine_l[lane] = total;
    }
    workgroupBarrier();
    if part == 0u {
        var acc = vec4<f32>(0.0);
        var total = 0.0;
        for (var p = 0u; p < PARTS; p++) {
            acc += combine_o[p * VEC + column];
            total += combine_l[p * VEC + column];
        }
        out[head * VEC + column] = acc / total;
    }
}
