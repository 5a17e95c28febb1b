#include "common.wgsl"
// Causal grouped-query attention for a batch of tokens (prefill), flash-style (Dao et al. 2022, "FlashAttention"):
//
//     out[t, h, :] = sum_j softmax_j(q[t, h, :] . k[j, h / G, :] / sqrt(HEAD_DIM)) v[j, h / G, :],  j <= n_past + t
//
// where G = n_head / n_head_kv query heads share a key/value head. n_past and n_tokens are read from `step` at run
// time; tokens from n_tokens on are padding: they are not computed and their rows of `out` are not written, and a
// workgroup whose rows are all padding returns at once (the grid covers the batch capacity).
//
// The (token, query head of the group) pairs of one key/value head are numbered row = token * G + head_in_group, and
// a workgroup takes BR consecutive rows, so the query heads of a group (and neighbouring tokens) share every K/V tile
// it stages. It walks the cache in tiles of BC keys up to the last key its last row sees (the tiles past it, fully
// masked for every row, are never visited), keeping per row a running maximum m and sum l (online softmax, Milakov
// & Gimelshein 2018). Per tile:
//   1. S = Q K^T as a GEMM over the head dimension in steps of DK dimensions: the step's slices of Q (f32, scaled) and
//      K go to workgroup memory, and invocation (rg, kg) accumulates the TM x TN scores of rows rg + i * RG and keys
//      kg + t * KG in registers (with DK = HEAD_DIM the Q tile is staged once for all tiles);
//   2. each invocation masks its scores causally, the row maxima go through workgroup memory, and every invocation
//      turns its scores into p = exp(s - m_new) (written to workgroup memory) and its share of l;
//   3. O = O * exp(m_old - m_new) + P V: the V tile is staged VC keys at a time, and invocation (org, oc)
//      accumulates rows org + i * ORG and vec4 columns oc + c * OCOLS of O in registers.
// At the end the row sums are gathered and O / l is written. Neighbouring invocations take neighbouring keys (step 1)
// or columns (step 3) of the same rows, so their reads of Q and P are broadcasts; the K slices are padded by one vec4
// per row so that neighbouring keys fall in different memory banks.
//
// Macros: HEAD_DIM, BR (rows per workgroup), BC (keys per tile), DK (dimensions per step of S, dividing HEAD_DIM),
// VC (keys per V staging step, dividing BC), WORKGROUP = (BR / TM) * (BC / TN) = (BR / TMO) * (HEAD_DIM / 4 / OV),
// TM x TN (the score tile of an invocation), OV (vec4 columns of O per invocation; TMO follows), F16 (the caches are
// f16; K and V are staged as f16, q, out and all arithmetic are f32)).

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

const VEC = HEAD_DIM / 4u;       // vec4s per row
const DKV = DK / 4u;             // vec4s per row of a step of S
const QS = DKV + 1u;             // the padded row length of the Q and K slices, in vec4s
const RG = BR / TM;              // invocations along the rows (step 1)
const KG = BC / TN;              // invocations along the keys (step 1)
const OCOLS = VEC / OV;          // invocations along the columns of O (step 3)
const ORG = WORKGROUP / OCOLS;   // invocations along the rows of O (step 3)
const TMO = BR / ORG;            // rows of O per invocation
const STAGE = max(BC * QS, VC * VEC); // a K slice, or VC rows of V
const NEG_BIG: f32 = -3.0e38;    // below every real score; exp(NEG_BIG - m) is 0

var<workgroup> q_tile: array<vec4<f32>, BR * QS>;  // [BR, DK / 4 (+1)]: the rows' queries, scaled
var<workgroup> kv_tile: array<vec4<ACT>, STAGE>;   // [BC, DK / 4 (+1)] keys, or [VC, HEAD_DIM / 4] values
var<workgroup> p_tile: array<f32, BR * BC>;        // [BR, BC]: p of the tile
var<workgroup> row_part: array<f32, BR * KG>;      // [BR, KG]: per row, each key lane's maximum (at the end, its l)
var<workgroup> row_factor: array<f32, BR>;         // per row: exp(m_old - m_new) for this tile

// Stages rows first_row .. first_row + BR of q, vec4 columns first .. first + DKV, scaled (zeros past n_rows).
fn stage_q(first_row: u32, n_rows: u32, kv_head: u32, first: u32, lane: u32) {
    for (var i = lane; i < BR * DKV; i += WORKGROUP) {
        let r = i / DKV;
        let row = first_row + r;
        var v = vec4<f32>(0.0);
        if row < n_rows {
            let head = kv_head * params.group + row % params.group;
            v = q[((row / params.group) * params.n_head + head) * VEC + first + i % DKV] * params.scale;
        }
        q_tile[r * QS + i % DKV] = v;
    }
}

@compute @workgroup_size(WORKGROUP)
fn attention_prefill(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let kv_head = workgroup_id.y;
    let first_row = workgroup_id.x * BR;
    let n_past = min(step[0], params.ctx);
    let n_rows = min(step[1], params.batch) * params.group;
    if first_row >= n_rows {
        return; // padding rows only: the grid covers the batch capacity
    }
    // The tile's last row belongs to its latest token, which sees the most keys.
    let last_token = (min(first_row + BR, n_rows) - 1u) / params.group;
    let kv_end = min(n_past + last_token + 1u, params.ctx);

    let kg = lane % KG; // step 1: keys kg + t * KG
    let rg = lane / KG; // step 1: rows rg + i * RG
    let oc = lane % OCOLS; // step 3: columns oc + c * OCOLS
    let org = lane / OCOLS; // step 3: rows org + i * ORG
    var row_end: array<u32, TM>; // step 1: the keys row rg + i * RG sees (0 for padding rows)
    var m: array<f32, TM>;       // and its running maximum
    var l: array<f32, TM>;       // and its running sum of p over this invocation's keys
    for (var i = 0u; i < TM; i++) {
        let row = first_row + rg + i * RG;
        row_end[i] = select(0u, min(n_past + row / params.group + 1u, params.ctx), row < n_rows);
        m[i] = NEG_BIG;
        l[i] = 0.0;
    }
    var o: array<vec4<f32>, TMO * OV>; // step 3: [row i, column c]
    for (var i = 0u; i < TMO * OV; i++) {
        o[i] = vec4<f32>(0.0);
    }
    if DK == HEAD_DIM {
        stage_q(first_row, n_rows, kv_head, 0u, lane); // once: the whole Q tile fits
    }

    for (var first_key = 0u; first_key < kv_end; first_key += BC) {
        // 1. Scores of a TM x TN tile, over the head dimension in steps of DK.
        // Initialised explicitly: a loop-local `var` without an initialiser is not re-zeroed on each iteration by
        // every compiler (Tint in Chromium keeps the previous tile's sums).
        var s: array<f32, TM * TN>;
        for (var i = 0u; i < TM * TN; i++) {
            s[i] = 0.0;
        }
        for (var first = 0u; first < VEC; first += DKV) {
            workgroupBarrier(); // the previous users of q_tile and kv_tile are done
            if DK != HEAD_DIM {
                stage_q(first_row, n_rows, kv_head, first, lane);
            }
            for (var i = lane; i < BC * DKV; i += WORKGROUP) {
                let key = first_key + i / DKV;
                var k = vec4<ACT>(0.0);
                if key < kv_end {
                    k = k_cache[(key * params.n_head_kv + kv_head) * VEC + first + i % DKV];
                }
                kv_tile[(i / DKV) * QS + i % DKV] = k;
            }
            workgroupBarrier();
            for (var d = 0u; d < DKV; d++) {
                var k: array<vec4<f32>, TN>;
                for (var t = 0u; t < TN; t++) {
                    k[t] = vec4<f32>(kv_tile[(kg + t * KG) * QS + d]);
                }
                for (var i = 0u; i < TM; i++) {
                    let qv = q_tile[(rg + i * RG) * QS + d];
                    for (var t = 0u; t < TN; t++) {
                        s[i * TN + t] += dot(qv, k[t]);
                    }
                }
            }
        }

        // 2. Causal mask, the rows' new maxima, p and l.
        for (var i = 0u; i < TM; i++) {
            var tile_max = NEG_BIG;
            for (var t = 0u; t < TN; t++) {
                let seen = first_key + kg + t * KG < row_end[i];
                s[i * TN + t] = select(NEG_BIG, s[i * TN + t], seen);
                tile_max = max(tile_max, s[i * TN + t]);
            }
            row_part[(rg + i * RG) * KG + kg] = tile_max;
        }
        workgroupBarrier();
        for (var i = 0u; i < TM; i++) {
            let r = rg + i * RG;
            var m_new = m[i];
            for (var j = 0u; j < KG; j++) {
                m_new = max(m_new, row_part[r * KG + j]);
            }
            let factor = exp(m[i] - m_new);
            m[i] = m_new;
            l[i] *= factor;
            for (var t = 0u; t < TN; t++) {
                let j = kg + t * KG;
                let p = select(0.0, exp(s[i * TN + t] - m_new), first_key + j < row_end[i]);
                p_tile[r * BC + j] = p;
                l[i] += p;
            }
            if kg == 0u {
                row_factor[r] = factor;
            }
        }
        workgroupBarrier();

        // 3. O = O * factor + P V, staging V in steps of VC keys.
        for (var i = 0u; i < TMO; i++) {
            let factor = row_factor[org + i * ORG];
            for (var c = 0u; c < OV; c++) {
                o[i * OV + c] *= factor;
            }
        }
        for (var first_v = 0u; first_v < BC; first_v += VC) {
            if first_v > 0u {
                workgroupBarrier(); // the previous values have been used
            }
            for (var i = lane; i < VC * VEC; i += WORKGROUP) {
                let key = first_key + first_v + i / VEC;
                var v = vec4<ACT>(0.0);
                if key < kv_end {
                    v = v_cache[(key * params.n_head_kv + kv_head) * VEC + i % VEC];
                }
                kv_tile[i] = v;
            }
            workgroupBarrier();
            for (var j = 0u; j < VC; j++) {
                var v: array<vec4<f32>, OV>;
                for (var c = 0u; c < OV; c++) {
                    v[c] = vec4<f32>(kv_tile[j * VEC + oc + c * OCOLS]);
                }
                for (var i = 0u; i < TMO; i++) {
                    let p = p_tile[(org + i * ORG) * BC + first_v + j];
                    for (var c = 0u; c < OV; c++) {
                        o[i * OV + c] += p * v[c];
                    }
                }
            }
        }
    }

    // The rows' sums l over the key invocations, then out = O / l. (row_part was last read before the last tile's
    // p were written.)
    for (var i = 0u; i < TM; i++) {
        row_part[(rg + i * RG) * KG + kg] = l[i];
    }
    workgroupBarrier();
    for (var i = 0u; i < TMO; i++) {
        let r = org + i * ORG;
        let row = first_row + r;
        if row < n_rows {
            var total = 0.0;
            for (var j = 0u; j < KG; j++) {
                total += row_part[r * KG + j];
            }
            let head = kv_head * params.group + row % params.group;
            let base = ((row / params.group) * params.n_head + head) * VEC;
            for (var c = 0u; c < OV; c++) {
                out[base + oc + c * OCOLS] = o[i * OV + c] / total;
            }
        }
    }
}
