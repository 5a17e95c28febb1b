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
