#include "common.wgsl"
// Rotary position embedding, in place, as llama.cpp's `ggml_rope_ext` computes it for llama and qwen2 (no YaRN):
//
//     angle(t, i) = freq_scale * pos[t] * theta_scale^i / freq_factors[i]      i = 0 .. rope_dim / 2
//     (x_a, x_b) <- (x_a cos(angle) - x_b sin(angle), x_a sin(angle) + x_b cos(angle))
//
// with theta_scale = theta^(-2 / rope_dim) and freq_scale = 1 / (linear scaling factor), both computed in f32 on the
// CPU exactly as ggml computes them. The pair (a, b) of head dimension pair i is (2i, 2i + 1) normally (llama) and
// (i, i + rope_dim / 2) in NeoX style (qwen2). Dimensions from rope_dim on are left as they are.
//
// theta_scale^i is evaluated as exp2(i * log2(theta_scale)) with the logarithm taken on the CPU: WGSL's pow(a, b) may
// be exp2(b * log2(a)) with log2 good only to 2^-21 absolute, which b then multiplies (a relative error of up to 1e-5
// at i = 30), while exp2 alone is good to (3 + 2|x|) ulps.
//
// The angle is an f32 as in ggml (at position 100000 one ulp is ~0.008 rad); it is reduced to [-pi, pi] before cos and
// sin, which GPUs only promise to evaluate accurately there.
//
// One invocation per rotated pair. Every row of the batch capacity is rotated: rows past the batch's real tokens are
// padding, and rotating them is harmless.
//
// Macros: WORKGROUP_SIZE, F16 (x is f16; the math stays f32), NEOX (NeoX pairing), FREQ_FACTORS (divide each
// frequency by freq_factors[i]: Llama 3.1's rope_freqs.weight).

struct Params {
    pairs: u32,        // rows * half_dim: the rotated pairs of the whole batch
    half_dim: u32,     // rope_dim / 2
    head_dim: u32,     // elements per head (a row of x)
    n_heads: u32,      // heads per token
    log2_theta_scale: f32, // log2(theta^(-2 / rope_dim)), from the f32 theta_scale
    freq_scale: f32,   // 1 / linear factor (1 without scaling)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<ACT>;   // [batch, n_heads, head_dim], rotated in place
@group(0) @binding(2) var<storage, read> pos: array<u32>;       // [batch]: the position of each token
#ifdef FREQ_FACTORS
@group(0) @binding(3) var<storage, read> freq_factors: array<f32>; // [rope_dim / 2]
#endif

const TWO_PI_HI: f32 = 6.28125;                // 2 pi to 8 bits: k * TWO_PI_HI is exact for |k| < 2^16
const TWO_PI_LO: f32 = 1.9353071795864769e-3;  // 2 pi - TWO_PI_HI
const INV_TWO_PI: f32 = 0.15915494309189535;

// `a` minus the nearest multiple of 2 pi (Cody-Waite, two parts): within an ulp of `a` of the exact remainder.
fn reduce_angle(a: f32) -> f32 {
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn rope(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let pair = flat_workgroup(workgroup_id, num_workgroups) * WORKGROUP_SIZE + lane;
    if pair >= params.pairs {
        return;
    }
    let row = pair / params.half_dim; // (token, head)
    let i = pair % params.half_dim;
    let token = row / params.n_heads;

    var angle = f32(pos[token]) * exp2(f32(i) * params.log2_theta_scale);
#ifdef FREQ_FACTORS
    angle = angle / freq_factors[i];
#endif
    angle = reduce_angle(params.freq_scale * angle);
    let c = cos(angle);
    let s = sin(angle);

#ifdef NEOX
    let a = row * params.head_dim + i;
    let b = a + params.half_dim;
#else
    let a = row * params.head_dim + 2u * i;
    let b = a + 1u;
#endif
    let xa = f32(x[a]);
    let xb = f32(x[b]);
    x[a] = ACT(xa * c - xb * s);
    x[b] = ACT(xa * s + xb * c);
}

// ---------------------------------------------------------------------------------------------------------------
// `rope_store`: the step's queries, keys and values, side by side in one row of `qkv` (the stacked Q/K/V projection's
// output: [batch, (n_head + 2 n_head_kv) * head_dim]), finish their way into attention in one dispatch:
//
//     q[t]                    = rope(Q of qkv[t])         (f32 [batch, n_head * head_dim])
//     k_cache[n_past + t]     = rope(K of qkv[t])         (the caches' dtype: f16 with F16)
//     v_cache[n_past + t]     = V of qkv[t]
//
// for t < n_tokens, at position n_past + t, with n_past and n_tokens read from the engine's `step` tensor when the
// dispatch runs (rows past the cache are never written). One invocation per pair of a head's dimensions: rotated
// below rope_dim, copied above it; and one per two elements of V. The rotation is `rope`'s, above.
//
// Macros: WORKGROUP_SIZE, NEOX, FREQ_FACTORS, F16 (the caches are f16; qkv and q stay f32).

struct StoreParams {
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    half_dim: u32,         // rope_dim / 2
    log2_theta_scale: f32,
    freq_scale: f32,
    batch: u32,            // rows of qkv and q: the batch capacity
    ctx: u32,              // rows of the caches
}

@group(0) @binding(0) var<uniform> store_params: StoreParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;                   // [batch, (n_head + 2 n_head_kv) * head_dim]
@group(0) @binding(2) var<storage, read> step: array<u32>;                  // [4]: n_past, n_tokens, 0, 0
@group(0) @binding(3) var<storage, read_write> q_out: array<f32>;           // [batch, n_head * head_dim]
@group(0) @binding(4) var<storage, read_write> k_cache: array<ACT>;     // [ctx, n_head_kv * head_dim]
@group(0) @binding(5) var<storage, read_write> v_cache: array<ACT>;     // [ctx, n_head_kv * head_dim]
#ifdef FREQ_FACTORS
@group(0) @binding(6) var<storage, read> store_freq_factors: array<f32>;    // [rope_dim / 2]
#endif

// The rotated pair `i` of a head at `position`: (cos, sin) of its angle.
fn rotation(position: u32, i: u32) -> vec2<f32> {
    let p = store_params;
    var angle = f32(position) * exp2(f32(i) * p.log2_theta_scale);
#ifdef FREQ_FACTORS
    angle = angle / store_freq_factors[i];
#endif
    angle = reduce_angle(p.freq_scale * angle);
    return vec2<f32>(cos(angle), sin(angle));
}

// The two elements (within a head) of pair slot `i`: the rotated pair below half_dim, two copied ones above.
fn pair_slot(i: u32) -> vec2<u32> {
    let half_dim = store_params.half_dim;
    if i >= half_dim {
        let d = 2u * half_dim + 2u * (i - half_dim);
        return vec2<u32>(d, d + 1u);
    }
#ifdef NEOX
    return vec2<u32>(i, i + half_dim);
#else
    return vec2<u32>(2u * i, 2u * i + 1u);
#endif
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn rope_store(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let p = store_params;
    let slots = p.head_dim / 2u;
    let kv_dim = p.n_head_kv * p.head_dim;
    let per_token = (p.n_head + p.n_head_kv) * slots + kv_dim / 2u;
    let i = flat_workgroup(workgroup_id, num_workgroups) * WORKGROUP_SIZE + lane;
    if i >= p.batch * per_token {
        return;
    }
    let t = i / per_token;
    let item = i % per_token;
    let n_past = step[0];
    // Written so that nothing overflows, whatever `step` holds.
    if t >= step[1] || n_past >= p.ctx || t >= p.ctx - n_past {
        return;
    }
    let row = n_past + t;
    let width = (p.n_head + 2u * p.n_head_kv) * p.head_dim;
    let src = t * width;
    if item >= (p.n_head + p.n_head_kv) * slots {
        // Two elements of V.
        let e = 2u * (item - (p.n_head + p.n_head_kv) * slots);
        let v_at = src + (p.n_head + p.n_head_kv) * p.head_dim + e;
        v_cache[row * kv_dim + e] = ACT(qkv[v_at]);
        v_cache[row * kv_dim + e + 1u] = ACT(qkv[v_at + 1u]);
        return;
    }
    let head = item / slots; // query heads first, then key heads
    let slot = item % slots;
    let d = pair_slot(slot);
    let base = src + head * p.head_dim;
    var a = qkv[base + d.x];
    var b = qkv[base + d.y];
    if slot < p.half_dim {
        let cs = rotation(row, slot);
        let ra = a * cs.x - b * cs.y;
        b = a * cs.y + b * cs.x;
        a = ra;
    }
    if head < p.n_head {
        let at = (t * p.n_head + head) * p.head_dim;
        q_out[at + d.x] = a;
        q_out[at + d.y] = b;
    } else {
        let at = row * kv_dim + (head - p.n_head) * p.head_dim;
        k_cache[at + d.x] = ACT(a);
        k_cache[at + d.y] = ACT(b);
    }
}
