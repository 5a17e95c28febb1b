#include "common.wgsl"
// Causal grouped-query attention for a batch of tokens (prefill), flash-style (Dao et al. 2022, "FlashAttention"):
//
//     out[t, h, :] = sum_j softmax_j(q[t, h, :] . k[j, h / G, :] / sqrt(HEAD_DIM)) v[j, h / G, :],  j <= n_past + t
//
// where G = n_head / n_head_kv query heads share a key/value head. n_past and n_tokens are read from `step` at run
// time; tokens from n_tokens on are padding: they are not computed and their rows of `out` are not written.
//
// The (token, query head of the group) pairs of one key/value head are numbered row = token * G + head_in_group, and
// a workgroup takes ROWS consecutive rows, so the query heads of a group (and neighbouring tokens) share every K/V
// tile it loads. It walks the cache in tiles of BLOCK_KV keys, up to what its last token may see, keeping a running
// maximum m and sum l per row (online softmax, Milakov & Gimelshein 2018). Per tile:
//   1. the K tile goes to workgroup memory; invocation (rg, kg) computes the scores of rows rg + i * ROW_GROUPS
//      (i < 2) against keys kg + t * KEY_GROUPS (t < 2): a 2 x 2 register tile, so each vec4 read from workgroup
//      memory feeds two dot products;
//   2. invocation r < ROWS turns row r's scores into p = exp(score - m_new) and the factor exp(m - m_new) that
//      rescales the row's accumulators, while the V tile replaces the K tile;
//   3. invocation (rg, cg) rescales and accumulates sum_j p_j v_j for its 2 rows and the 4-wide columns
//      cg + c * COLUMN_GROUPS (c < COLUMNS), in registers.
// Neighbouring invocations take neighbouring rows and the same keys and columns, so their K and V reads are
// broadcasts; the tiles are padded by one vec4 per row so that their q reads fall in different memory banks.
//
// Macros: HEAD_DIM (a multiple of 2 * BLOCK_KV), ROWS and BLOCK_KV (even; the workgroup has ROWS / 2 * BLOCK_KV / 2
// invocations, at least ROWS), F16 (the caches are f16; q, out and all math are f32).

struct Params {
    n_head: u32,    // query heads
    n_head_kv: u32, // key/value heads
    group: u32,     // n_head / n_head_kv
    batch: u32,     // the batch capacity: rows of q and out
    ctx: u32,       // rows of the caches
    scale: f32,     // 1 / sqrt(HEAD_DIM)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;        // [batch, n_head, HEAD_DIM / 4]
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<ACT>>;  // [ctx, n_head_kv, HEAD_DIM / 4]
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<ACT>>;  // [ctx, n_head_kv, HEAD_DIM / 4]
@group(0) @binding(4) var<storage, read> step: array<u32>;           // [4]: n_past, n_tokens, 0, 0
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>; // [batch, n_head * HEAD_DIM / 4]

const ROW_GROUPS = ROWS / 2u;      // invocations along the rows; each takes 2 rows
const KEY_GROUPS = BLOCK_KV / 2u;  // invocations along a tile's keys; each takes 2 keys
const COLUMN_GROUPS = KEY_GROUPS;  // the same invocations along the columns of V
const WORKGROUP = ROW_GROUPS * KEY_GROUPS;
const VEC = HEAD_DIM / 4u;         // vec4s per row
const STRIDE = VEC + 1u;           // the padded row length of the tiles, in vec4s
const COLUMNS = VEC / COLUMN_GROUPS; // vec4 columns per invocation
const NEG_BIG: f32 = -3.0e38;      // below every real score; exp(NEG_BIG - m) is 0

var<workgroup> q_tile: array<vec4<f32>, ROWS * STRIDE>;      // [ROWS, HEAD_DIM / 4]: the rows' queries, scaled
var<workgroup> kv_tile: array<vec4<f32>, BLOCK_KV * STRIDE>; // [BLOCK_KV, HEAD_DIM / 4]: keys, then values
var<workgroup> scores: array<f32, ROWS * BLOCK_KV>;          // [ROWS, BLOCK_KV]: scores, then p
var<workgroup> row_factor: array<f32, ROWS>;                 // per row: exp(m - m_new) for this tile; 1 / l at the end
var<workgroup> row_end: array<u32, ROWS>;                    // per row: the keys it sees (0 for padding rows)

// Loads cache rows first_key .. first_key + BLOCK_KV of `kv_head` into kv_tile (zeros from `end` on).
fn load_tile(values: bool, first_key: u32, end: u32, kv_head: u32, lane: u32) {
    for (var i = lane; i < BLOCK_KV * VEC; i += WORKGROUP) {
        let key = first_key + i / VEC;
        var v = vec4<f32>(0.0);
        if key < end {
            let at = (key * params.n_head_kv + kv_head) * VEC + i % VEC;
            if values {
                v = vec4<f32>(v_cache[at]);
            } else {
                v = vec4<f32>(k_cache[at]);
            }
        }
        kv_tile[(i / VEC) * STRIDE + i % VEC] = v;
    }
}

@compute @workgroup_size(WORKGROUP)
fn attention_prefill(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let kv_head = workgroup_id.y;
    let first_row = workgroup_id.x * ROWS;
    let n_past = min(step[0], params.ctx);
    let n_rows = min(step[1], params.batch) * params.group;
    if first_row >= n_rows {
        return;
    }
    // The tile's last row belongs to its latest token, which sees the most keys.
    let last_token = (min(first_row + ROWS, n_rows) - 1u) / params.group;
    let kv_end = min(n_past + last_token + 1u, params.ctx);

    for (var i = lane; i < ROWS * VEC; i += WORKGROUP) {
        let r = i / VEC;
        let row = first_row + r;
        var v = vec4<f32>(0.0);
        if row < n_rows {
            let head = kv_head * params.group + row % params.group;
            v = q[((row / params.group) * params.n_head + head) * VEC + i % VEC] * params.scale;
        }
        q_tile[r * STRIDE + i % VEC] = v;
    }
    if lane < ROWS {
        let row = first_row + lane;
        row_end[lane] = select(0u, min(n_past + row / params.group + 1u, params.ctx), row < n_rows);
    }

    let rg = lane % ROW_GROUPS; // rows rg and rg + ROW_GROUPS (steps 1 and 3)
    let kg = lane / ROW_GROUPS; // keys kg and kg + KEY_GROUPS (step 1); columns kg + c * COLUMN_GROUPS (step 3)
    var m = NEG_BIG;            // step 2, invocation r < ROWS: row r's running maximum
    var l = 0.0;                // and running sum of exp(score - m)
    var o: array<vec4<f32>, 2u * COLUMNS>; // step 3: [row i, column c] at i * COLUMNS + c
    for (var first_key = 0u; first_key < kv_end; first_key += BLOCK_KV) {
        workgroupBarrier(); // the previous tile has been used (the first time: q_tile and row_end are written)
        load_tile(false, first_key, kv_end, kv_head, lane);
        workgroupBarrier();

        // 1. Scores of a 2 x 2 tile.
        // Initialised explicitly: every tile starts from zero scores (a loop-local `var` without an initialiser is
        // not re-zeroed on each iteration by every compiler; Tint in Chromium keeps the previous tile's sums).
        var s = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
        for (var d = 0u; d < VEC; d++) {
            let q0 = q_tile[rg * STRIDE + d];
            let q1 = q_tile[(rg + ROW_GROUPS) * STRIDE + d];
            let k0 = kv_tile[kg * STRIDE + d];
            let k1 = kv_tile[(kg + KEY_GROUPS) * STRIDE + d];
            s[0] += dot(q0, k0);
            s[1] += dot(q0, k1);
            s[2] += dot(q1, k0);
            s[3] += dot(q1, k1);
        }
        for (var i = 0u; i < 2u; i++) {
            let r = rg + i * ROW_GROUPS;
            for (var t = 0u; t < 2u; t++) {
                let j = kg + t * KEY_GROUPS;
                scores[r * BLOCK_KV + j] = select(NEG_BIG, s[i * 2u + t], first_key + j < row_end[r]);
            }
        }
        workgroupBarrier();

        // 2. Row `lane`'s probabilities and rescaling factor; the V tile replaces the K tile meanwhile.
        if lane < ROWS {
            var tile_max = NEG_BIG;
            for (var j = 0u; j < BLOCK_KV; j++) {
                tile_max = max(tile_max, scores[lane * BLOCK_KV + j]);
            }
            let m_new = max(m, tile_max);
            let factor = exp(m - m_new);
            var sum = 0.0;
            for (var j = 0u; j < BLOCK_KV; j++) {
                let p = select(0.0, exp(scores[lane * BLOCK_KV + j] - m_new), first_key + j < row_end[lane]);
                scores[lane * BLOCK_KV + j] = p;
                sum += p;
            }
            l = l * factor + sum;
            m = m_new;
            row_factor[lane] = factor;
        }
        load_tile(true, first_key, kv_end, kv_head, lane);
        workgroupBarrier();

        // 3. o = o * factor + p . V for 2 rows and COLUMNS columns.
        for (var i = 0u; i < 2u; i++) {
            let factor = row_factor[rg + i * ROW_GROUPS];
            for (var c = 0u; c < COLUMNS; c++) {
                o[i * COLUMNS + c] *= factor;
            }
        }
        for (var j = 0u; j < BLOCK_KV; j++) {
            let p0 = scores[rg * BLOCK_KV + j];
            let p1 = scores[(rg + ROW_GROUPS) * BLOCK_KV + j];
            for (var c = 0u; c < COLUMNS; c++) {
                let v = kv_tile[j * STRIDE + kg + c * COLUMN_GROUPS];
                o[c] += p0 * v;
                o[COLUMNS + c] += p1 * v;
            }
        }
    }

    workgroupBarrier();
    if lane < ROWS {
        row_factor[lane] = 1.0 / l;
    }
    workgroupBarrier();
    for (var i = 0u; i < 2u; i++) {
        let r = rg + i * ROW_GROUPS;
        let row = first_row + r;
        if row < n_rows {
            let head = kv_head * params.group + row % params.group;
            let base = ((row / params.group) * params.n_head + head) * VEC;
            for (var c = 0u; c < COLUMNS; c++) {
                out[base + kg + c * COLUMN_GROUPS] = o[i * COLUMNS + c] * row_factor[r];
            }
        }
    }
}
