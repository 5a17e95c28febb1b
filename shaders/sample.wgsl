#include "common.wgsl"
// Choosing the next token on the GPU: argmax, and sampling with llama.cpp's sampler chain in its default order
// (top-k -> top-p -> min-p -> temperature -> draw), seeded by a counter-based random number of (seed, step). Only the
// chosen id is written out; the engine reads back that one u32.
//
// Every logit is ranked by an order key: its f32 bits mapped to a u32 that sorts like the float (NaN counts as -inf,
// -0 as +0). The candidates in their sorted order are "key descending, then id ascending" (llama.cpp leaves the order of
// equal logits unspecified; webr1 ranks the lower id first). Each filter keeps a prefix of that order, so the survivors
// are always
//
//     key > cut_key, or key == cut_key and among the first cut_ties of those (by id)
//
// and every filter is a threshold search on keys, never a sort:
// - argmax: the workgroups of `reduce_max` each find the best (key, lowest id) of a chunk; one workgroup reduces those.
// - top-k: a radix select for the k-th largest key, 8 bits per round over 4 rounds: `histogram` counts the candidates
//   whose key starts with the bits chosen so far by their next 8 bits, `select_top_k` picks the bucket where the count
//   from the top reaches k. What is left of k after the last round is the number of ties kept at the threshold.
// - top-p: the same radix search on probability mass instead of counts. Masses are exp(logit - max) at temperature 1
//   (llama.cpp applies the temperature last) in 2^31 fixed point, summed exactly in 64 bits with integer atomics (WGSL has
//   no float atomics), so the result does not depend on the order the GPU adds them in. The goal is
//   top_p * (mass of the top-k set); the smallest prefix whose mass reaches it is kept, as llama.cpp's cumulative sum does.
// - min-p: keep key >= order_key(max + log(min_p)), a threshold computed once.
// - draw: `draw_partial` sums the survivors' exp((logit - max) / temperature) per chunk; `draw` draws u in [0, 1),
//   finds the chunk whose prefix sum passes u * total, then the element within it by a prefix sum over the chunk.
//
// Passes (one dispatch each, in this order): reduce_max, then argmax_final for argmax; or prepare, 4 x (histogram,
// select_top_k), 4 x (histogram, select_top_p), draw_partial, draw for sampling. Searches that are switched off for
// this step skip their work at run time: the dispatch list never changes, only the SamplingParams buffer does.
//
// With NEXT, the pass that writes the token (argmax_final, draw) also writes the next decode step's inputs: the token
// as `next_ids[0]`, and the engine's step tensor moved on past this step's tokens to [n_past + n_tokens, 1]. So the
// next step can be submitted before this token reaches the CPU (the token loop in src/engine/session.rs).
//
// Macros: WORKGROUP_SIZE (256: one radix bucket per invocation), ITEMS (elements per invocation of a chunk: a chunk is
// WORKGROUP_SIZE * ITEMS logits), SUBGROUPS with MIN_SUBGROUP_SIZE (subgroup reductions; shared memory otherwise),
// NEXT.

struct Params {
    n: u32,         // logits in the row (n_vocab)
    offset: u32,    // element offset of the row in `logits`
    n_groups: u32,  // chunks of the row: ceil(n / CHUNK), one workgroup each in the multi-workgroup passes
    out_index: u32, // the element of `out` that receives the token id
    round: u32,     // histogram, select_*: the radix round, 0 (the key's top 8 bits) to 3 (its low 8 bits)
    search: u32,    // histogram: SEARCH_TOP_K (counts) or SEARCH_TOP_P (masses)
    _pad0: u32,
    _pad1: u32,
}

// The per-step settings (`ops::sample::SamplingParams`), written by the engine; `draw` advances `step`.
struct SamplingParams {
    temperature: f32, // <= 0: greedy
    top_k: u32,       // 0: off
    top_p: f32,       // >= 1: off
    min_p: f32,       // <= 0: off
    seed_lo: u32,
    seed_hi: u32,
    step: u32,        // the draw's counter; `draw` adds 1 after using it
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;             // [.., n]: the row starts at params.offset
@group(0) @binding(2) var<storage, read_write> sampling: SamplingParams; // [8] u32 words
@group(0) @binding(3) var<storage, read_write> state: array<u32>;        // [S_PARTIALS + 2 * n_groups]
@group(0) @binding(4) var<storage, read_write> hist: array<atomic<u32>>; // [BUCKETS, 3]: count, mass lo, mass hi
@group(0) @binding(5) var<storage, read_write> out: array<u32>;          // [..]: the id goes to params.out_index
#ifdef NEXT
@group(0) @binding(6) var<storage, read_write> next_ids: array<u32>;     // [batch]: the next step's tokens
@group(0) @binding(7) var<storage, read_write> next_step: array<u32>;    // [4]: n_past, n_tokens, 0, 0
#endif

// Writes the chosen token (one invocation).
fn emit(token: u32) {
    out[params.out_index] = token;
#ifdef NEXT
    next_ids[0] = token;
    next_step[0] = next_step[0] + next_step[1];
    next_step[1] = 1u;
#endif
}

const ALL: u32 = 0xffffffffu;
const CHUNK: u32 = WORKGROUP_SIZE * ITEMS;
const BUCKETS: u32 = 256u;           // radix of the threshold searches: 8 bits of the key per round
const LAST_ROUND: u32 = 3u;
const FIXED_ONE: f32 = 2147483648.0; // 2^31: a weight of 1 in the fixed point of the top-p masses
const SEARCH_TOP_K: u32 = 0u;
const SEARCH_TOP_P: u32 = 1u;

// `state` words (STATE_WORDS in Rust is S_PARTIALS).
const S_MAX_KEY: u32 = 0u;    // key of the largest logit
const S_ARGMAX: u32 = 1u;     // its lowest id
const S_FLAGS: u32 = 2u;      // FLAG_*: what this step does
const S_PREFIX: u32 = 3u;     // radix search: the key bits chosen so far
const S_REMAIN_LO: u32 = 4u;  // radix search: the count (top-k) or mass (top-p) still to cover, 64 bits
const S_REMAIN_HI: u32 = 5u;
const S_TOPK_KEY: u32 = 6u;   // top-k's result: its threshold key ...
const S_TOPK_TIES: u32 = 7u;  // ... and how many ties at it are kept
const S_CUT_KEY: u32 = 8u;    // the survivors of top-k and top-p (see the top of the file)
const S_CUT_TIES: u32 = 9u;
const S_MINP_KEY: u32 = 10u;  // min-p: key >= this
const S_PARTIALS: u32 = 16u;  // 2 words per chunk: (key, id) after reduce_max, (mass bits, ties) after draw_partial

const FLAG_GREEDY: u32 = 1u;
const FLAG_TOP_K: u32 = 2u;
const FLAG_TOP_P: u32 = 4u;

struct Invocation {
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_id) subgroup_id: u32,
    @builtin(num_subgroups) num_subgroups: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Keys, weights, random numbers

// A u32 that orders like the logit: positive floats get the top bit set, negative ones are inverted.
fn order_key(logit: f32) -> u32 {
    var bits = bitcast<u32>(logit);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        bits = 0xff800000u; // NaN ranks as -inf
    }
    if bits == 0x80000000u {
        bits = 0u; // -0 ties with +0
    }
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn key_logit(key: u32) -> f32 {
    if (key & 0x80000000u) != 0u {
        return bitcast<f32>(key & 0x7fffffffu);
    }
    return bitcast<f32>(~key);
}

fn row_key(i: u32) -> u32 {
    return order_key(logits[params.offset + i]);
}

// exp(logit - max) in 2^31 fixed point: the unnormalised probability at temperature 1 that top-p adds up.
fn fixed_weight(key: u32, max_key: u32) -> u32 {
    if key == max_key {
        return 0x80000000u;
    }
    return u32(exp(key_logit(key) - key_logit(max_key)) * FIXED_ONE + 0.5);
}

// exp((logit - max) / temperature): the unnormalised probability the draw uses.
fn draw_weight(key: u32, max_key: u32, temperature: f32) -> f32 {
    if key == max_key {
        return 1.0;
    }
    return exp((key_logit(key) - key_logit(max_key)) / temperature);
}

// xxhash32 of three words (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering"): a counter-based generator,
// so (seed, step) alone fixes the draw. Mirrored by `ops::sample::draw_uniform` in Rust.
fn xxhash32(p: vec3<u32>) -> u32 {
    var h = p.z + 374761393u + p.x * 3266489917u;
    h = 668265263u * ((h << 17u) | (h >> 15u));
    h += p.y * 3266489917u;
    h = 668265263u * ((h << 17u) | (h >> 15u));
    h = 2246822519u * (h ^ (h >> 15u));
    h = 3266489917u * (h ^ (h >> 13u));
    return h ^ (h >> 16u);
}

// u in [0, 1) with 24 random bits.
fn draw_uniform(seed_lo: u32, seed_hi: u32, step: u32) -> f32 {
    return f32(xxhash32(vec3<u32>(seed_lo, seed_hi, step)) >> 8u) * (1.0 / 16777216.0);
}

// ---------------------------------------------------------------------------------------------------------------
// 64-bit unsigned integers as vec2(lo, hi)

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

fn ge64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x >= b.x);
}

// a * b, exactly.
fn mul64(a: u32, b: u32) -> vec2<u32> {
    let ll = (a & 0xffffu) * (b & 0xffffu);
    let lh = (a & 0xffffu) * (b >> 16u);
    let hl = (a >> 16u) * (b & 0xffffu);
    let hh = (a >> 16u) * (b >> 16u);
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return vec2<u32>((ll & 0xffffu) | (mid << 16u), hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

fn f32_of64(a: vec2<u32>) -> f32 {
    return f32(a.y) * 4294967296.0 + f32(a.x);
}

fn u64_of_f32(x: f32) -> vec2<u32> {
    let hi = floor(x / 4294967296.0);
    return vec2<u32>(u32(x - hi * 4294967296.0), u32(hi));
}

// The smallest q in [1, most] with q * w >= r (most when there is none).
fn ceil_div64(r: vec2<u32>, w: u32, most: u32) -> u32 {
    var q = min(u32(clamp(ceil(f32_of64(r) / f32(w)), 1.0, 4294967295.0)), most);
    // The f32 estimate is off by a unit or so; settle it with exact products.
    for (var i = 0u; i < 64u && q < most && !ge64(mul64(q, w), r); i++) {
        q += 1u;
    }
    for (var i = 0u; i < 64u && q > 1u && ge64(mul64(q - 1u, w), r); i++) {
        q -= 1u;
    }
    return q;
}

// ---------------------------------------------------------------------------------------------------------------
// Workgroup reductions and scans

// (key, id) pairs: the larger key wins, the lower id on ties.
fn better(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    if b.x > a.x || (b.x == a.x && b.y < a.y) {
        return b;
    }
    return a;
}

#ifdef SUBGROUPS
var<workgroup> best_partial: array<vec2<u32>, WORKGROUP_SIZE / MIN_SUBGROUP_SIZE>; // one per subgroup
var<workgroup> sum_partial: array<vec2<f32>, WORKGROUP_SIZE / MIN_SUBGROUP_SIZE>;

fn subgroup_best(v: vec2<u32>) -> vec2<u32> {
    let key = subgroupMax(v.x);
    return vec2<u32>(key, subgroupMin(select(ALL, v.y, v.x == key)));
}

fn workgroup_best(v: vec2<u32>, inv: Invocation) -> vec2<u32> {
    let best = subgroup_best(v);
    if inv.subgroup_lane == 0u {
        best_partial[inv.subgroup_id] = best;
    }
    workgroupBarrier();
    // Every subgroup reduces the per-subgroup results itself: no second barrier.
    var total = vec2<u32>(0u, ALL);
    for (var s = inv.subgroup_lane; s < inv.num_subgroups; s += inv.subgroup_size) {
        total = better(total, best_partial[s]);
    }
    return subgroup_best(total);
}

fn workgroup_sum(v: vec2<f32>, inv: Invocation) -> vec2<f32> {
    let sum = subgroupAdd(v);
    if inv.subgroup_lane == 0u {
        sum_partial[inv.subgroup_id] = sum;
    }
    workgroupBarrier();
    var total = vec2<f32>(0.0);
    for (var s = inv.subgroup_lane; s < inv.num_subgroups; s += inv.subgroup_size) {
        total += sum_partial[s];
    }
    return subgroupAdd(total);
}
#else
var<workgroup> best_partial: array<vec2<u32>, WORKGROUP_SIZE>; // one per invocation, then a tree
var<workgroup> sum_partial: array<vec2<f32>, WORKGROUP_SIZE>;

fn workgroup_best(v: vec2<u32>, inv: Invocation) -> vec2<u32> {
    best_partial[inv.lane] = v;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if inv.lane < stride {
            best_partial[inv.lane] = better(best_partial[inv.lane], best_partial[inv.lane + stride]);
        }
        workgroupBarrier();
    }
    return best_partial[0];
}

fn workgroup_sum(v: vec2<f32>, inv: Invocation) -> vec2<f32> {
    sum_partial[inv.lane] = v;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if inv.lane < stride {
            sum_partial[inv.lane] += sum_partial[inv.lane + stride];
        }
        workgroupBarrier();
    }
    return sum_partial[0];
}
#endif

// Prefix sums over the 256 invocations in two levels of 16 (SCAN_BLOCK² == WORKGROUP_SIZE): 16 invocations each add
// up a block of 16 values in order, one adds up the 16 block totals, and every invocation reads its result. Four
// barriers instead of the 16 of a Hillis-Steele scan (barriers are what a software GPU pays for), and the running sums
// grow monotonically in lane order, so consecutive lanes' ranges tile exactly.
const SCAN_BLOCK: u32 = 16u;

var<workgroup> scan_mass: array<f32, WORKGROUP_SIZE>;
var<workgroup> block_mass: array<f32, 17>; // SCAN_BLOCK block offsets, then the total
var<workgroup> scan_count: array<u32, WORKGROUP_SIZE>;
var<workgroup> block_count: array<u32, 17>;
var<workgroup> scan_wide: array<vec2<u32>, BUCKETS>;
var<workgroup> block_wide: array<vec2<u32>, 17>;

// (the sum of `v` over the lanes before this one, the sum over all lanes).
fn prefix_mass(v: f32, lane: u32) -> vec2<f32> {
    scan_mass[lane] = v;
    workgroupBarrier();
    if lane < SCAN_BLOCK {
        var sum = 0.0;
        for (var i = lane * SCAN_BLOCK; i < (lane + 1u) * SCAN_BLOCK; i++) {
            sum += scan_mass[i];
            scan_mass[i] = sum;
        }
    }
    workgroupBarrier();
    if lane == 0u {
        var sum = 0.0;
        for (var block = 0u; block < SCAN_BLOCK; block++) {
            block_mass[block] = sum;
            sum += scan_mass[block * SCAN_BLOCK + SCAN_BLOCK - 1u];
        }
        block_mass[SCAN_BLOCK] = sum;
    }
    workgroupBarrier();
    let j = max(lane, 1u) - 1u; // the lane before
    let before = select(0.0, block_mass[j / SCAN_BLOCK] + scan_mass[j], lane > 0u);
    let result = vec2<f32>(before, block_mass[SCAN_BLOCK]);
    workgroupBarrier();
    return result;
}

// The sum of `v` over the lanes before this one.
fn prefix_count(v: u32, lane: u32) -> u32 {
    scan_count[lane] = v;
    workgroupBarrier();
    if lane < SCAN_BLOCK {
        var sum = 0u;
        for (var i = lane * SCAN_BLOCK; i < (lane + 1u) * SCAN_BLOCK; i++) {
            sum += scan_count[i];
            scan_count[i] = sum;
        }
    }
    workgroupBarrier();
    if lane == 0u {
        var sum = 0u;
        for (var block = 0u; block < SCAN_BLOCK; block++) {
            block_count[block] = sum;
            sum += scan_count[block * SCAN_BLOCK + SCAN_BLOCK - 1u];
        }
        block_count[SCAN_BLOCK] = sum;
    }
    workgroupBarrier();
    let j = max(lane, 1u) - 1u;
    let before = select(0u, block_count[j / SCAN_BLOCK] + scan_count[j], lane > 0u);
    workgroupBarrier();
    return before;
}

// Over the radix buckets, one per invocation: (the sum of the buckets >= this one, the sum of all), in 64 bits.
fn suffix_sum64(v: vec2<u32>, bucket: u32) -> vec4<u32> {
    let at = BUCKETS - 1u - bucket; // reversed, so a prefix sum is a suffix sum
    scan_wide[at] = v;
    workgroupBarrier();
    if at < SCAN_BLOCK {
        var sum = vec2<u32>(0u);
        for (var i = at * SCAN_BLOCK; i < (at + 1u) * SCAN_BLOCK; i++) {
            sum = add64(sum, scan_wide[i]);
            scan_wide[i] = sum;
        }
    }
    workgroupBarrier();
    if at == 0u {
        var sum = vec2<u32>(0u);
        for (var block = 0u; block < SCAN_BLOCK; block++) {
            block_wide[block] = sum;
            sum = add64(sum, scan_wide[block * SCAN_BLOCK + SCAN_BLOCK - 1u]);
        }
        block_wide[SCAN_BLOCK] = sum;
    }
    workgroupBarrier();
    let result = vec4<u32>(add64(block_wide[at / SCAN_BLOCK], scan_wide[at]), block_wide[SCAN_BLOCK]);
    workgroupBarrier();
    return result;
}

var<workgroup> uniform_flags: u32;

// The step's FLAG_* word, uniform across the workgroup, so a pass that is off can return before any barrier.
var<workgroup> uniform_group: u32;

// The flat workgroup index as a value WGSL's uniformity analysis accepts as uniform: the entry points take their
// builtins in one struct that also holds per-invocation values, and the analysis (Tint's, in browsers) then treats
// every member as varying, so a `return` on it before a barrier would be rejected.
fn uniform_workgroup(inv: Invocation) -> u32 {
    if inv.lane == 0u {
        uniform_group = flat_workgroup(inv.workgroup_id, inv.num_workgroups);
    }
    return workgroupUniformLoad(&uniform_group);
}

fn step_flags(lane: u32) -> u32 {
    if lane == 0u {
        uniform_flags = state[S_FLAGS];
    }
    return workgroupUniformLoad(&uniform_flags);
}

// ---------------------------------------------------------------------------------------------------------------
// Argmax (also the first step of sampling)

fn partial_best(g: u32) -> vec2<u32> {
    return vec2<u32>(state[S_PARTIALS + 2u * g], state[S_PARTIALS + 2u * g + 1u]);
}

// The best (key, id) of every chunk.
@compute @workgroup_size(WORKGROUP_SIZE)
fn reduce_max(inv: Invocation) {
    let g = flat_workgroup(inv.workgroup_id, inv.num_workgroups);
    // Spare workgroups of a folded grid see an empty chunk; they still reach every barrier.
    let n = select(0u, params.n, g < params.n_groups);
    var best = vec2<u32>(0u, ALL);
    for (var it = 0u; it < ITEMS; it++) {
        let i = g * CHUNK + it * WORKGROUP_SIZE + inv.lane;
        if i < n {
            best = better(best, vec2<u32>(row_key(i), i));
        }
    }
    best = workgroup_best(best, inv);
    if inv.lane == 0u && g < params.n_groups {
        state[S_PARTIALS + 2u * g] = best.x;
        state[S_PARTIALS + 2u * g + 1u] = best.y;
    }
}

// The best of the chunks' bests: the argmax, lowest id on ties.
@compute @workgroup_size(WORKGROUP_SIZE)
fn argmax_final(inv: Invocation) {
    var best = vec2<u32>(0u, ALL);
    for (var g = inv.lane; g < params.n_groups; g += WORKGROUP_SIZE) {
        best = better(best, partial_best(g));
    }
    best = workgroup_best(best, inv);
    if inv.lane == 0u {
        emit(best.y);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Sampling

// The argmax, the settings of this step, and the starting state of the searches.
@compute @workgroup_size(WORKGROUP_SIZE)
fn prepare(inv: Invocation) {
    var best = vec2<u32>(0u, ALL);
    for (var g = inv.lane; g < params.n_groups; g += WORKGROUP_SIZE) {
        best = better(best, partial_best(g));
    }
    best = workgroup_best(best, inv);
    for (var b = inv.lane; b < 3u * BUCKETS; b += WORKGROUP_SIZE) {
        atomicStore(&hist[b], 0u);
    }
    if inv.lane != 0u {
        return;
    }
    let s = sampling;
    // A NaN temperature is greedy; a NaN top_p or min_p is off.
    let greedy = !(s.temperature > 0.0) || s.top_k == 1u || params.n == 1u;
    var flags = 0u;
    if greedy {
        flags = FLAG_GREEDY;
    } else {
        flags |= select(0u, FLAG_TOP_K, s.top_k > 0u && s.top_k < params.n);
        flags |= select(0u, FLAG_TOP_P, s.top_p < 1.0);
    }
    state[S_MAX_KEY] = best.x;
    state[S_ARGMAX] = best.y;
    state[S_FLAGS] = flags;
    state[S_PREFIX] = 0u;
    state[S_REMAIN_LO] = s.top_k;
    state[S_REMAIN_HI] = 0u;
    state[S_TOPK_KEY] = 0u;
    state[S_TOPK_TIES] = ALL;
    // Greedy keeps the first of the largest; otherwise everything until a search says otherwise.
    state[S_CUT_KEY] = select(0u, best.x, greedy);
    state[S_CUT_TIES] = select(ALL, 1u, greedy);
    var min_key = 0u;
    if !greedy && s.min_p > 0.0 {
        // llama.cpp keeps logit >= max + log(min_p), and always the largest.
        min_key = min(order_key(key_logit(best.x) + log(s.min_p)), best.x);
    }
    state[S_MINP_KEY] = min_key;
}

fn add_mass(b: u32, v: u32) {
    let old = atomicAdd(&local_hist[3u * b + 1u], v);
    if old + v < old {
        atomicAdd(&local_hist[3u * b + 2u], 1u);
    }
}

var<workgroup> local_hist: array<atomic<u32>, 768>; // [BUCKETS, 3] for this chunk

// One radix round of a search: the candidates whose key starts with the bits chosen so far, by their next 8 bits.
@compute @workgroup_size(WORKGROUP_SIZE)
fn histogram(inv: Invocation) {
    let g = uniform_workgroup(inv);
    let flags = step_flags(inv.lane);
    let top_p = params.search == SEARCH_TOP_P;
    if g >= params.n_groups || (flags & select(FLAG_TOP_K, FLAG_TOP_P, top_p)) == 0u {
        return;
    }
    let mask = ~(ALL >> (8u * params.round)); // the key bits fixed by earlier rounds
    let shift = 24u - 8u * params.round;
    let prefix = state[S_PREFIX] & mask;
    let max_key = state[S_MAX_KEY];
    // Top-p searches the top-k set: keys above top-k's threshold here, its ties at the threshold in select_top_p.
    let inside_top_k = top_p && (flags & FLAG_TOP_K) != 0u;
    let topk_key = state[S_TOPK_KEY];
    for (var b = inv.lane; b < 3u * BUCKETS; b += WORKGROUP_SIZE) {
        atomicStore(&local_hist[b], 0u);
    }
    workgroupBarrier();
    for (var it = 0u; it < ITEMS; it++) {
        let i = g * CHUNK + it * WORKGROUP_SIZE + inv.lane;
        if i >= params.n {
            continue;
        }
        let key = row_key(i);
        if (key & mask) != prefix || (inside_top_k && key <= topk_key) {
            continue;
        }
        let b = (key >> shift) & 0xffu;
        if top_p {
            // Logits whose weight rounds to zero cannot end the search (its last bucket has weight): skip them.
            let w = fixed_weight(key, max_key);
            if w == 0u {
                continue;
            }
            add_mass(b, w);
        }
        atomicAdd(&local_hist[3u * b], 1u);
    }
    workgroupBarrier();
    for (var b = inv.lane; b < BUCKETS; b += WORKGROUP_SIZE) {
        let count = atomicLoad(&local_hist[3u * b]);
        if count == 0u {
            continue;
        }
        atomicAdd(&hist[3u * b], count);
        let lo = atomicLoad(&local_hist[3u * b + 1u]);
        let old = atomicAdd(&hist[3u * b + 1u], lo);
        let hi = atomicLoad(&local_hist[3u * b + 2u]) + select(0u, 1u, old + lo < old);
        if hi != 0u {
            atomicAdd(&hist[3u * b + 2u], hi);
        }
    }
}

// Reads and clears the global histogram's bucket `b`: (count, mass lo, mass hi).
fn take_bucket(b: u32) -> vec3<u32> {
    let bucket = vec3<u32>(atomicLoad(&hist[3u * b]), atomicLoad(&hist[3u * b + 1u]), atomicLoad(&hist[3u * b + 2u]));
    atomicStore(&hist[3u * b], 0u);
    atomicStore(&hist[3u * b + 1u], 0u);
    atomicStore(&hist[3u * b + 2u], 0u);
    return bucket;
}

// Top-k, one round: the bucket in which the count from the top reaches the k still to find.
@compute @workgroup_size(WORKGROUP_SIZE)
fn select_top_k(inv: Invocation) {
    let b = inv.lane; // one bucket per invocation: WORKGROUP_SIZE == BUCKETS
    if (step_flags(inv.lane) & FLAG_TOP_K) == 0u {
        return; // the histogram is empty too
    }
    let remaining = state[S_REMAIN_LO];
    let prefix = select(state[S_PREFIX], 0u, params.round == 0u);
    storageBarrier(); // every read of `state` above happens before the one write below
    let count = take_bucket(b).x;
    let from_top = suffix_sum64(vec2<u32>(count, 0u), b).x; // counts fit 32 bits
    let above = from_top - count;
    if from_top >= remaining && above < remaining {
        let chosen = prefix | (b << (24u - 8u * params.round));
        let left = remaining - above;
        state[S_PREFIX] = chosen;
        state[S_REMAIN_LO] = left;
        if params.round == LAST_ROUND {
            // `chosen` is the k-th largest key; `left` of its ties, the lowest ids, complete the k.
            state[S_TOPK_KEY] = chosen;
            state[S_TOPK_TIES] = left;
            state[S_CUT_KEY] = chosen;
            state[S_CUT_TIES] = left;
        }
    }
}

// Top-p, one round: the bucket in which the mass from the top reaches the mass still to cover.
@compute @workgroup_size(WORKGROUP_SIZE)
fn select_top_p(inv: Invocation) {
    let b = inv.lane; // one bucket per invocation: WORKGROUP_SIZE == BUCKETS
    let flags = step_flags(inv.lane);
    if (flags & FLAG_TOP_P) == 0u {
        return; // the histogram is empty too
    }
    let radix_round = params.round;
    let mask = ~(ALL >> (8u * radix_round));
    let shift = 24u - 8u * radix_round;
    let prefix = select(state[S_PREFIX], 0u, radix_round == 0u);
    let carried = vec2<u32>(state[S_REMAIN_LO], state[S_REMAIN_HI]);
    let max_key = state[S_MAX_KEY];
    let topk_key = state[S_TOPK_KEY];
    let topk_ties = state[S_TOPK_TIES];
    let top_p = sampling.top_p;
    storageBarrier(); // every read of `state` above happens before the one write below
    let bucket = take_bucket(b);
    var count = bucket.x;
    var mass = bucket.yz;
    // The ties top-k kept at its threshold (the histogram skipped them): all have the threshold's weight.
    let k_tie_here = (flags & FLAG_TOP_K) != 0u && (topk_key & mask) == prefix && ((topk_key >> shift) & 0xffu) == b;
    if k_tie_here {
        count += topk_ties;
        mass = add64(mass, mul64(topk_ties, fixed_weight(topk_key, max_key)));
    }
    let sums = suffix_sum64(mass, b);
    let from_top = sums.xy;
    var remaining = carried;
    if radix_round == 0u {
        // top_p of the whole (top-k) mass, at least one unit so the largest logit is always kept.
        let total = sums.zw;
        remaining = u64_of_f32(top_p * f32_of64(total));
        if !ge64(total, remaining) {
            remaining = total;
        }
        if remaining.x == 0u && remaining.y == 0u {
            remaining = vec2<u32>(1u, 0u);
        }
    }
    let above = sub64(from_top, mass);
    if ge64(from_top, remaining) && !ge64(above, remaining) {
        let chosen = prefix | (b << shift);
        let left = sub64(remaining, above);
        state[S_PREFIX] = chosen;
        state[S_REMAIN_LO] = left.x;
        state[S_REMAIN_HI] = left.y;
        if radix_round == LAST_ROUND {
            // Every candidate in this bucket has the key `chosen` and one weight: keep as many (lowest ids first) as
            // it takes to cover what is left, as llama.cpp's cumulative sum includes the token that crosses top_p.
            state[S_CUT_KEY] = chosen;
            state[S_CUT_TIES] = ceil_div64(left, fixed_weight(chosen, max_key), count);
        }
    }
}

// The survivors' cut with min-p applied: (key, ties kept at that key).
fn survivor_cut() -> vec2<u32> {
    let cut = vec2<u32>(state[S_CUT_KEY], state[S_CUT_TIES]);
    let min_key = state[S_MINP_KEY];
    if min_key > cut.x {
        return vec2<u32>(min_key, ALL);
    }
    return cut;
}

// Per chunk: the draw weight of the survivors above the cut key, and how many logits sit at the cut key.
@compute @workgroup_size(WORKGROUP_SIZE)
fn draw_partial(inv: Invocation) {
    let g = uniform_workgroup(inv);
    if g >= params.n_groups || (step_flags(inv.lane) & FLAG_GREEDY) != 0u {
        return; // greedy: `draw` writes the argmax
    }
    let max_key = state[S_MAX_KEY];
    let cut = survivor_cut();
    let temperature = sampling.temperature;
    var acc = vec2<f32>(0.0); // (weight above the cut, logits at the cut): counts up to CHUNK are exact in f32
    for (var it = 0u; it < ITEMS; it++) {
        let i = g * CHUNK + it * WORKGROUP_SIZE + inv.lane;
        if i < params.n {
            let key = row_key(i);
            if key > cut.x {
                acc.x += draw_weight(key, max_key, temperature);
            } else if key == cut.x {
                acc.y += 1.0;
            }
        }
    }
    acc = workgroup_sum(acc, inv);
    if inv.lane == 0u {
        state[S_PARTIALS + 2u * g] = bitcast<u32>(acc.x);
        state[S_PARTIALS + 2u * g + 1u] = u32(acc.y);
    }
}

// The weight of chunk g given the ties at the cut key before it.
fn chunk_weight(g: u32, ties_before: u32, cut: vec2<u32>, tie_weight: f32) -> f32 {
    let ties = state[S_PARTIALS + 2u * g + 1u];
    let kept = min(ties, cut.y - min(cut.y, ties_before));
    let above = bitcast<f32>(state[S_PARTIALS + 2u * g]);
    // (No logit has the key 0 that keeps everything, and its weight is NaN: never multiply it by zero.)
    return select(above, above + f32(kept) * tie_weight, kept > 0u);
}

var<workgroup> chosen_lane: atomic<u32>;
var<workgroup> chosen_chunk: vec3<u32>; // chunk, ties at the cut before it, goal within it (f32 bits)
var<workgroup> chosen_id: u32;

// Marks the invocation whose range [before, before + weight) holds `goal`: the last one with weight that starts at
// or below it, so a goal past the total (rounding) still lands on a survivor.
fn choose_lane(weight: f32, before: f32, goal: f32, lane: u32) {
    if lane == 0u {
        atomicStore(&chosen_lane, 0u);
    }
    workgroupBarrier();
    if weight > 0.0 && before <= goal {
        atomicMax(&chosen_lane, lane);
    }
    workgroupBarrier();
}

// The draw: u in [0, 1) from (seed, step), then the survivor where the running weight (in id order) passes u * total.
@compute @workgroup_size(WORKGROUP_SIZE)
fn draw(inv: Invocation) {
    let lane = inv.lane;
    let greedy = (step_flags(lane) & FLAG_GREEDY) != 0u;
    let argmax = state[S_ARGMAX];
    let step = sampling.step;
    storageBarrier(); // every read of `sampling.step` happens before the write below
    if greedy {
        if lane == 0u {
            emit(argmax);
            sampling.step = step + 1u;
        }
        return;
    }
    let max_key = state[S_MAX_KEY];
    let cut = survivor_cut();
    let s = sampling;
    let u = draw_uniform(s.seed_lo, s.seed_hi, step);
    let tie_weight = draw_weight(cut.x, max_key, s.temperature);

    // 1. The chunk: each invocation takes a run of chunks.
    let per_lane = (params.n_groups + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
    let g0 = min(lane * per_lane, params.n_groups);
    let g1 = min(g0 + per_lane, params.n_groups);
    var ties = 0u;
    for (var g = g0; g < g1; g++) {
        ties += state[S_PARTIALS + 2u * g + 1u];
    }
    let ties_before = prefix_count(ties, lane);
    var weight = 0.0;
    var seen = ties_before;
    for (var g = g0; g < g1; g++) {
        weight += chunk_weight(g, seen, cut, tie_weight);
        seen += state[S_PARTIALS + 2u * g + 1u];
    }
    let sums = prefix_mass(weight, lane);
    let goal = u * sums.y;
    if lane == 0u {
        chosen_id = argmax;
        chosen_chunk = vec3<u32>(0u, 0u, 0u);
    }
    choose_lane(weight, sums.x, goal, lane);
    if lane == atomicLoad(&chosen_lane) && weight > 0.0 {
        var at = sums.x;
        seen = ties_before;
        var found = false;
        for (var g = g0; g < g1; g++) {
            let w = chunk_weight(g, seen, cut, tie_weight);
            if w > 0.0 && !found {
                chosen_chunk = vec3<u32>(g, seen, bitcast<u32>(goal - at));
                found = at + w > goal;
            }
            at += w;
            seen += state[S_PARTIALS + 2u * g + 1u];
        }
    }
    workgroupBarrier();

    // 2. The element: each invocation takes ITEMS consecutive logits of the chunk.
    let chunk = chosen_chunk;
    let local_goal = bitcast<f32>(chunk.z);
    let first = chunk.x * CHUNK + lane * ITEMS;
    let n = params.n;
    var at_cut = 0u;
    for (var j = 0u; j < ITEMS; j++) {
        let i = first + j;
        if i < n && row_key(i) == cut.x {
            at_cut += 1u;
        }
    }
    let rank_first = chunk.y + prefix_count(at_cut, lane);
    var mass = 0.0;
    var rank = rank_first;
    for (var j = 0u; j < ITEMS; j++) {
        let i = first + j;
        if i < n {
            mass += element_weight(row_key(i), &rank, cut, max_key, s.temperature, tie_weight);
        }
    }
    let element_sums = prefix_mass(mass, lane);
    choose_lane(mass, element_sums.x, local_goal, lane);
    if lane == atomicLoad(&chosen_lane) && mass > 0.0 {
        var at = element_sums.x;
        rank = rank_first;
        var found = false;
        for (var j = 0u; j < ITEMS; j++) {
            let i = first + j;
            if i < n {
                let w = element_weight(row_key(i), &rank, cut, max_key, s.temperature, tie_weight);
                if w > 0.0 && !found {
                    chosen_id = i;
                    found = at + w > local_goal;
                }
                at += w;
            }
        }
    }
    workgroupBarrier();
    if lane == 0u {
        emit(chosen_id);
        sampling.step = step + 1u;
    }
}

// The draw weight of a logit with `key`; `rank` counts the logits at the cut key seen so far (in id order).
fn element_weight(key: u32, rank: ptr<function, u32>, cut: vec2<u32>, max_key: u32, temperature: f32, tie_weight: f32) -> f32 {
    if key > cut.x {
        return draw_weight(key, max_key, temperature);
    }
    if key != cut.x {
        return 0.0;
    }
    let kept = *rank < cut.y;
    *rank += 1u;
    return select(0.0, tie_weight, kept);
}
