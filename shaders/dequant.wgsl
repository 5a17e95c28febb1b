#include "common.wgsl"
// Raw GGML blocks read straight from a storage buffer and dequantised in registers (ARCHITECTURE.md §1): one
// `dequant_<type>` per GGML type webr1 supports (Q4_K and Q5_K share `dequant_k_nibbles`), and the byte-offset loads
// they share. Block layouts follow ggml's `ggml-common.h` (webr1's `src/quant/blocks.rs`), the arithmetic follows
// `ggml-quants.c` (`src/quant/{legacy, kquants}.rs`) operation for operation, in f32, in the same order.
//
// The including shader declares the weight buffer under the fixed name `w` (core WGSL cannot pass storage pointers):
//
//     @group(0) @binding(1) var<storage, read> w: array<u32>; // [rows, cols] raw GGML blocks
//
// and defines exactly one TYPE_<name> macro (TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q5_0,
// TYPE_Q5_1, TYPE_Q8_0, TYPE_Q2_K, TYPE_Q3_K, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K). This file then defines
//
//     BLOCK_SIZE   elements per block (the float types are read in "blocks" of 4 elements, so their rows must be a
//                  multiple of 4 long)
//     BLOCK_BYTES  bytes per block
//     PARTS        parts per block: a part is what one call dequantises, PART_VECS vec4s of weights
//     PART_VECS    vec4s per part (8 for the quantised types: 32 weights; 1 for the float types)
//     SPAN         the parts of a block come in runs that together cover SPAN consecutive elements: parts
//                  s * SPAN / (4 * PART_VECS) .. (s + 1) * SPAN / (4 * PART_VECS) hold exactly elements
//                  s * SPAN .. (s + 1) * SPAN of the block (a tiled kernel dequantises whole spans)
//
//     fn dequant_part(block: u32, part: u32) -> array<vec4<f32>, PART_VECS>
//         the weights of `part` of the block that starts at byte `block` of `w`;
//     fn part_offset(part: u32, g: u32) -> u32
//         the element (within the block) where vec4 `g` of `part` starts: every vec4 holds 4 consecutive elements.
//
// A part gathers the weights that share the words it loads, so that few words are loaded per weight (storage loads
// are what a software GPU spends its time on): the 32 weights of a Q4_K part are the low and the high nibbles of 16
// bytes of qs, elements 64j + 16l .. +16 and 64j + 32 + 16l .. +16. Blocks of 18, 22, 34, 110 and 210 bytes start
// at any even byte: their words are loaded from the word holding the block's first byte on, without branches, and
// re-joined by `word0`/`word2`. Halves are unpacked with unpack2x16float (no shader-f16 needed), bf16 by shifting.

// ---------------------------------------------------------------------------------------------------------------
// Words of a block that starts `a` bytes (0 or 2) into word `lo` of `w`.

// The bytes 2..4 of `lo` followed by bytes 0..2 of `hi`.
fn join_halves(lo: u32, hi: u32) -> u32 {
    return (lo >> 16u) | (hi << 16u);
}

// The 4 bytes at block offset o ≡ 0 (mod 4), from words lo = (o / 4) and hi = (o / 4 + 1) of the block's window.
fn word0(lo: u32, hi: u32, a: u32) -> u32 {
    return select(join_halves(lo, hi), lo, a == 0u);
}

// The 4 bytes at block offset o ≡ 2 (mod 4), from words lo = (o / 4) and hi = (o / 4 + 1) of the block's window.
fn word2(lo: u32, hi: u32, a: u32) -> u32 {
    return select(hi, join_halves(lo, hi), a == 0u);
}

// The f16 at block offset 0 of a window whose first word is `lo`, as f32.
fn half0(lo: u32, a: u32) -> f32 {
    return unpack2x16float(lo >> (8u * a)).x;
}

// The f16 at byte `b` (even) of `w`, as f32.
fn w_half(b: u32) -> f32 {
    return unpack2x16float(w[b >> 2u] >> ((b & 2u) * 8u)).x;
}

// ---------------------------------------------------------------------------------------------------------------
// Bit fields of 4 packed bytes, one vec4 lane per byte (byte 0 in .x).

fn bytes4(q: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFFu);
}

fn low_nibbles(q: u32) -> vec4<u32> {
    return bytes4(q) & vec4<u32>(0xFu);
}

fn high_nibbles(q: u32) -> vec4<u32> {
    return bytes4(q) >> vec4<u32>(4u);
}

// Bits shift..shift+2 of each byte.
fn crumbs(q: u32, shift: u32) -> vec4<u32> {
    return (bytes4(q) >> vec4<u32>(shift)) & vec4<u32>(3u);
}

// Bit `bit` of each byte.
fn byte_bits(q: u32, bit: u32) -> vec4<u32> {
    return (bytes4(q) >> vec4<u32>(bit)) & vec4<u32>(1u);
}

// Bits first..first+4 of `q`, one per lane.
fn bits4(q: u32, first: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 1u, 2u, 3u) + first)) & vec4<u32>(1u);
}

// Each byte as a signed 8-bit integer.
fn signed_bytes(q: u32) -> vec4<i32> {
    return bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
}

// Byte `i` of a packed word, sign-extended.
fn signed_byte(q: u32, i: u32) -> i32 {
    return bitcast<i32>(q << (24u - 8u * i)) >> 24u;
}

fn byte_of(q: u32, i: u32) -> u32 {
    return (q >> (8u * i)) & 0xFFu;
}

// ---------------------------------------------------------------------------------------------------------------
// F32, F16, BF16: "blocks" of 4 elements, one vec4 (rows of a multiple of 4 elements keep them 8-byte aligned).

#ifdef TYPE_F32
#define DEQUANT dequant_f32
#define BLOCK_SIZE 4u
#define BLOCK_BYTES 16u
#define PARTS 1u
#define PART_VECS 1u
#define SPAN 4u

fn dequant_f32(block: u32, part: u32) -> array<vec4<f32>, 1> {
    let i = block >> 2u;
    return array<vec4<f32>, 1>(bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u])));
}
#endif

#ifdef TYPE_F16
#define DEQUANT dequant_f16
#define BLOCK_SIZE 4u
#define BLOCK_BYTES 8u
#define PARTS 1u
#define PART_VECS 1u
#define SPAN 4u

// ggml GGML_FP16_TO_FP32: exact widening.
fn dequant_f16(block: u32, part: u32) -> array<vec4<f32>, 1> {
    let i = block >> 2u;
    return array<vec4<f32>, 1>(vec4<f32>(unpack2x16float(w[i]), unpack2x16float(w[i + 1u])));
}
#endif

#ifdef TYPE_BF16
#define DEQUANT dequant_bf16
#define BLOCK_SIZE 4u
#define BLOCK_BYTES 8u
#define PARTS 1u
#define PART_VECS 1u
#define SPAN 4u

// ggml GGML_BF16_TO_FP32: the top 16 bits of an f32.
fn dequant_bf16(block: u32, part: u32) -> array<vec4<f32>, 1> {
    let i = block >> 2u;
    let a = w[i];
    let b = w[i + 1u];
    let bits = vec4<u32>(a << 16u, a & 0xFFFF0000u, b << 16u, b & 0xFFFF0000u);
    return array<vec4<f32>, 1>(bitcast<vec4<f32>>(bits));
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// The 32-element legacy formats: one part per block, its 8 vec4s elements 0..32 in order. Byte j of qs holds element
// j (low nibble) and element j + 16 (high nibble); in Q5, bit j of qh is bit 4 of element j.

#ifdef TYPE_Q4_0
#define DEQUANT dequant_q4_0
#define BLOCK_SIZE 32u
#define BLOCK_BYTES 18u
#define PARTS 1u
#define PART_VECS 8u
#define SPAN 32u

// block_q4_0 { d: f16, qs: [u8; 16] }: y = (q - 8) * d.
fn dequant_q4_0(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let i = block >> 2u;
    let a = block & 3u;
    var v = array<u32, 5>(w[i], w[i + 1u], w[i + 2u], w[i + 3u], w[i + 4u]);
    let d = half0(v[0], a);
    var out: array<vec4<f32>, 8>;
    for (var k = 0u; k < 4u; k++) {
        let q = word2(v[k], v[k + 1u], a); // qs[4k..4k+4] at block offset 2 + 4k
        out[k] = (vec4<f32>(low_nibbles(q)) - 8.0) * d;
        out[k + 4u] = (vec4<f32>(high_nibbles(q)) - 8.0) * d;
    }
    return out;
}
#endif

#ifdef TYPE_Q4_1
#define DEQUANT dequant_q4_1
#define BLOCK_SIZE 32u
#define BLOCK_BYTES 20u
#define PARTS 1u
#define PART_VECS 8u
#define SPAN 32u

// block_q4_1 { d: f16, m: f16, qs: [u8; 16] }: y = q * d + m. Blocks are 4-byte aligned.
fn dequant_q4_1(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let i = block >> 2u;
    let dm = unpack2x16float(w[i]);
    var out: array<vec4<f32>, 8>;
    for (var k = 0u; k < 4u; k++) {
        let q = w[i + 1u + k];
        out[k] = vec4<f32>(low_nibbles(q)) * dm.x + dm.y;
        out[k + 4u] = vec4<f32>(high_nibbles(q)) * dm.x + dm.y;
    }
    return out;
}
#endif

#ifdef TYPE_Q5_0
#define DEQUANT dequant_q5_0
#define BLOCK_SIZE 32u
#define BLOCK_BYTES 22u
#define PARTS 1u
#define PART_VECS 8u
#define SPAN 32u

// block_q5_0 { d: f16, qh: [u8; 4], qs: [u8; 16] }: y = (q - 16) * d.
fn dequant_q5_0(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let i = block >> 2u;
    let a = block & 3u;
    var v = array<u32, 6>(w[i], w[i + 1u], w[i + 2u], w[i + 3u], w[i + 4u], w[i + 5u]);
    let d = half0(v[0], a);
    let qh = word2(v[0], v[1], a); // block offset 2
    var out: array<vec4<f32>, 8>;
    for (var k = 0u; k < 4u; k++) {
        let q = word2(v[k + 1u], v[k + 2u], a); // qs[4k..4k+4] at block offset 6 + 4k
        let lo = low_nibbles(q) | (bits4(qh, 4u * k) << vec4<u32>(4u));
        let hi = high_nibbles(q) | (bits4(qh, 4u * k + 16u) << vec4<u32>(4u));
        out[k] = (vec4<f32>(lo) - 16.0) * d;
        out[k + 4u] = (vec4<f32>(hi) - 16.0) * d;
    }
    return out;
}
#endif

#ifdef TYPE_Q5_1
#define DEQUANT dequant_q5_1
#define BLOCK_SIZE 32u
#define BLOCK_BYTES 24u
#define PARTS 1u
#define PART_VECS 8u
#define SPAN 32u

// block_q5_1 { d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] }: y = q * d + m. Blocks are 4-byte aligned.
fn dequant_q5_1(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let i = block >> 2u;
    let dm = unpack2x16float(w[i]);
    let qh = w[i + 1u];
    var out: array<vec4<f32>, 8>;
    for (var k = 0u; k < 4u; k++) {
        let q = w[i + 2u + k];
        let lo = low_nibbles(q) | (bits4(qh, 4u * k) << vec4<u32>(4u));
        let hi = high_nibbles(q) | (bits4(qh, 4u * k + 16u) << vec4<u32>(4u));
        out[k] = vec4<f32>(lo) * dm.x + dm.y;
        out[k + 4u] = vec4<f32>(hi) * dm.x + dm.y;
    }
    return out;
}
#endif

#ifdef TYPE_Q8_0
#define DEQUANT dequant_q8_0
#define BLOCK_SIZE 32u
#define BLOCK_BYTES 34u
#define PARTS 1u
#define PART_VECS 8u
#define SPAN 32u

// block_q8_0 { d: f16, qs: [i8; 32] }: y = q * d.
fn dequant_q8_0(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let i = block >> 2u;
    let a = block & 3u;
    var v = array<u32, 9>(w[i], w[i + 1u], w[i + 2u], w[i + 3u], w[i + 4u], w[i + 5u], w[i + 6u], w[i + 7u], w[i + 8u]);
    let d = half0(v[0], a);
    var out: array<vec4<f32>, 8>;
    for (var k = 0u; k < 8u; k++) {
        out[k] = vec4<f32>(signed_bytes(word2(v[k], v[k + 1u], a))) * d; // qs[4k..4k+4] at block offset 2 + 4k
    }
    return out;
}
#endif

#ifdef TYPE_Q4_0
#define LEGACY_PARTS
#endif
#ifdef TYPE_Q4_1
#define LEGACY_PARTS
#endif
#ifdef TYPE_Q5_0
#define LEGACY_PARTS
#endif
#ifdef TYPE_Q5_1
#define LEGACY_PARTS
#endif
#ifdef TYPE_Q8_0
#define LEGACY_PARTS
#endif
#ifdef LEGACY_PARTS
fn part_offset(part: u32, g: u32) -> u32 {
    return 4u * g;
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Q2_K and Q3_K: each half h of the block (128 weights) has 32 bytes of qs, read four times two bits further each
// time; in pass j, bytes 16m..16m+16 are the 16 weights of sub-block 8h + 2j + m. Part p = 4h + 2m + l takes two
// words of qs (bytes 32h + 16m + 8l .. +8) and all four of their 2-bit fields: vec4 2j + c is elements
// 128h + 32j + 16m + 8l + 4c .. +4. The 4 parts of a half cover it (SPAN 128).

#ifdef TYPE_Q2_K
#define DEQUANT dequant_q2_k
#define BLOCK_SIZE 256u
#define BLOCK_BYTES 84u
#define PARTS 8u
#define PART_VECS 8u
#define SPAN 128u
#define K_CRUMB_PARTS
#endif
#ifdef TYPE_Q3_K
#define DEQUANT dequant_q3_k
#define BLOCK_SIZE 256u
#define BLOCK_BYTES 110u
#define PARTS 8u
#define PART_VECS 8u
#define SPAN 128u
#define K_CRUMB_PARTS
#endif

#ifdef K_CRUMB_PARTS
fn part_offset(part: u32, g: u32) -> u32 {
    return 128u * (part >> 2u) + 32u * (g >> 1u) + 16u * ((part >> 1u) & 1u) + 8u * (part & 1u) + 4u * (g & 1u);
}
#endif

#ifdef TYPE_Q2_K
// block_q2_K { scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16 }: y = d * sc * q - dmin * m with the 4-bit scale
// sc (low nibble) and min m (high nibble) of the sub-block. Blocks are 4-byte aligned.
fn dequant_q2_k(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let h = part >> 2u;
    let m = (part >> 1u) & 1u;
    let i = block >> 2u;
    let qi = i + 4u + 8u * h + 4u * m + 2u * (part & 1u); // qs at byte 16
    let q = vec2<u32>(w[qi], w[qi + 1u]);
    // Sub-block 8h + 2j + m: byte m + 2j of the scale words 2h and 2h + 1.
    let s = vec2<u32>(w[i + 2u * h], w[i + 2u * h + 1u]);
    let dd = unpack2x16float(w[i + 20u]); // d, dmin at byte 80
    var out: array<vec4<f32>, 8>;
    for (var j = 0u; j < 4u; j++) {
        let sc = byte_of(s[j >> 1u], m + 2u * (j & 1u));
        let dl = dd.x * f32(sc & 0xFu);
        let ml = dd.y * f32(sc >> 4u);
        out[2u * j] = dl * vec4<f32>(crumbs(q.x, 2u * j)) - ml;
        out[2u * j + 1u] = dl * vec4<f32>(crumbs(q.y, 2u * j)) - ml;
    }
    return out;
}
#endif

#ifdef TYPE_Q3_K
// block_q3_K { hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16 }: y = d * (sc - 32) * (q - 4), the - 4
// skipped when the weight's bit 4h + j in hmask[16m + l] is set. Scale k (6 bits) has its low 4 bits in byte k % 8
// of scales (low nibble for k < 8, high nibble after) and its top 2 bits at bit 2 * (k / 4) of byte 8 + k % 4.
fn dequant_q3_k(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let h = part >> 2u;
    let m = (part >> 1u) & 1u;
    let l = part & 1u;
    let i = block >> 2u;
    let a = block & 3u;
    // Each run of words at block offsets ≡ 0 (mod 4), with one more word for blocks that start mid-word.
    let qi = i + 8u + 8u * h + 4u * m + 2u * l; // qs at block offset 32 + 32h + 16m + 8l
    let qv = vec3<u32>(w[qi], w[qi + 1u], w[qi + 2u]);
    let q = vec2<u32>(word0(qv.x, qv.y, a), word0(qv.y, qv.z, a));
    let hi = i + 4u * m + 2u * l; // hmask at block offset 16m + 8l
    let hv = vec3<u32>(w[hi], w[hi + 1u], w[hi + 2u]);
    let hm = vec2<u32>(word0(hv.x, hv.y, a), word0(hv.y, hv.z, a));
    let sv = vec4<u32>(w[i + 24u], w[i + 25u], w[i + 26u], w[i + 27u]); // scales and d at block offset 96
    let low = vec2<u32>(word0(sv.x, sv.y, a), word0(sv.y, sv.z, a)); // scale bytes 0..8
    let high = word0(sv.z, sv.w, a); // scale bytes 8..12
    let d = unpack2x16float(sv.w >> (8u * a)).x; // block offset 108
    var out: array<vec4<f32>, 8>;
    for (var j = 0u; j < 4u; j++) {
        // Sub-block k = 8h + 2j + m: low bits in byte 2j + m, high bits in byte 8 + (2j + m) % 4 at bit 2(2h + j/2).
        let lo4 = (byte_of(low[j >> 1u], m + 2u * (j & 1u)) >> (4u * h)) & 0xFu;
        let hi2 = (byte_of(high, m + 2u * (j & 1u)) >> (2u * (2u * h + (j >> 1u)))) & 3u;
        let dl = d * f32(i32(lo4 | (hi2 << 4u)) - 32);
        for (var c = 0u; c < 2u; c++) {
            let minus = select(vec4<i32>(4), vec4<i32>(0), byte_bits(hm[c], 4u * h + j) != vec4<u32>(0u));
            out[2u * j + c] = dl * vec4<f32>(vec4<i32>(crumbs(q[c], 2u * j)) - minus);
        }
    }
    return out;
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Q4_K and Q5_K: 4 passes over 32 bytes of qs; pass j's low nibbles are sub-block 2j (elements 64j..64j+32), its
// high nibbles sub-block 2j + 1. Part p = 2j + l holds bytes 16l..16l+16 of the pass: vec4 c (c < 4) is elements
// 64j + 16l + 4c .. +4 (low nibbles), vec4 4 + c elements 64j + 32 + 16l + 4c .. +4 (high nibbles). A pass is a
// SPAN of 64. Blocks are 16-byte aligned.

#ifdef TYPE_Q4_K
#define DEQUANT dequant_k_nibbles
#define BLOCK_SIZE 256u
#define BLOCK_BYTES 144u
#define PARTS 8u
#define PART_VECS 8u
#define SPAN 64u
#define K_NIBBLE_PARTS
#endif
#ifdef TYPE_Q5_K
#define DEQUANT dequant_k_nibbles
#define BLOCK_SIZE 256u
#define BLOCK_BYTES 176u
#define PARTS 8u
#define PART_VECS 8u
#define SPAN 64u
#define K_NIBBLE_PARTS
#endif

#ifdef K_NIBBLE_PARTS
fn part_offset(part: u32, g: u32) -> u32 {
    return 64u * (part >> 1u) + 16u * (part & 1u) + 4u * (g & 3u) + 32u * (g >> 2u);
}

// Byte n of the 12 packed scale bytes (words s.x, s.y, s.z).
fn k4_byte(s: vec3<u32>, n: u32) -> u32 {
    return byte_of(s[n >> 2u], n & 3u);
}

// ggml get_scale_min_k4, times d and dmin: (d * sc, dmin * m) of sub-block j.
fn k4_scales(dd: vec2<f32>, s: vec3<u32>, j: u32) -> vec2<f32> {
    var sc: u32;
    var m: u32;
    if j < 4u {
        sc = k4_byte(s, j) & 63u;
        m = k4_byte(s, j + 4u) & 63u;
    } else {
        sc = (k4_byte(s, j + 4u) & 0xFu) | ((k4_byte(s, j - 4u) >> 6u) << 4u);
        m = (k4_byte(s, j + 4u) >> 4u) | ((k4_byte(s, j) >> 6u) << 4u);
    }
    return vec2<f32>(dd.x * f32(sc), dd.y * f32(m));
}
#endif

#ifdef K_NIBBLE_PARTS
// block_q4_K { d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] }: y = d * sc * q - dmin * m.
// block_q5_K { d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }: Q4_K plus 16 for each weight
// whose bit in qh[l] is set (bit 2j for the low nibbles of pass j, bit 2j + 1 for the high nibbles).
//
// With W4 the including shader binds the weights a second time as `w4: array<vec4<u32>>` (these blocks are 16-byte
// aligned) and each part is read in two 128-bit loads, the block's header and the part's 16 bytes of qs (three with
// Q5_K's qh), instead of eight or twelve 32-bit ones.
fn dequant_k_nibbles(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let j = part >> 1u;
#ifdef W4
    let v = block >> 4u;
    let head = w4[v];
    let dd = unpack2x16float(head.x);
    let s = head.yzw;
#ifdef TYPE_Q5_K
    let qs = w4[v + 3u + 2u * j + (part & 1u)]; // qs at byte 48
    let qhs = w4[v + 1u + (part & 1u)]; // qh at byte 16
#else
    let qs = w4[v + 1u + 2u * j + (part & 1u)]; // qs at byte 16
#endif
#else
    let i = block >> 2u;
    let dd = unpack2x16float(w[i]);
    let s = vec3<u32>(w[i + 1u], w[i + 2u], w[i + 3u]);
#ifdef TYPE_Q5_K
    let qhi = i + 4u + 4u * (part & 1u); // qh at byte 16
    let qi = i + 12u + 8u * j + 4u * (part & 1u); // qs at byte 48
#else
    let qi = i + 4u + 8u * j + 4u * (part & 1u); // qs at byte 16
#endif
#endif
    let lo = k4_scales(dd, s, 2u * j);
    let hi = k4_scales(dd, s, 2u * j + 1u);
    var out: array<vec4<f32>, 8>;
    for (var c = 0u; c < 4u; c++) {
#ifdef W4
        let q = qs[c];
#else
        let q = w[qi + c];
#endif
        var q_lo = low_nibbles(q);
        var q_hi = high_nibbles(q);
#ifdef TYPE_Q5_K
#ifdef W4
        let qh = qhs[c];
#else
        let qh = w[qhi + c];
#endif
        q_lo |= byte_bits(qh, 2u * j) << vec4<u32>(4u);
        q_hi |= byte_bits(qh, 2u * j + 1u) << vec4<u32>(4u);
#endif
        out[c] = lo.x * vec4<f32>(q_lo) - lo.y;
        out[c + 4u] = hi.x * vec4<f32>(q_hi) - hi.y;
    }
    return out;
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Q6_K: each half h (128 weights) has 64 bytes of ql and 32 of qh; quarter r (32 weights) takes the low (r < 2) or
// high nibble of ql[32 * (r % 2) + l] and bits 2r..2r+2 of qh[l]. Part p = 4h + l8 covers bytes 8l8..8l8+8 of the
// half's qh and the ql bytes that go with them: vec4 2r + c is elements 128h + 32r + 8l8 + 4c .. +4. A half is a
// SPAN of 128.

#ifdef TYPE_Q6_K
#define DEQUANT dequant_q6_k
#define BLOCK_SIZE 256u
#define BLOCK_BYTES 210u
#define PARTS 8u
#define PART_VECS 8u
#define SPAN 128u

fn part_offset(part: u32, g: u32) -> u32 {
    return 128u * (part >> 2u) + 32u * (g >> 1u) + 8u * (part & 3u) + 4u * (g & 1u);
}

// Two words at block offset o ≡ 0 (mod 4), word index `at` of the window.
fn q6_k_words(at: u32, a: u32) -> vec2<u32> {
    let v = vec3<u32>(w[at], w[at + 1u], w[at + 2u]);
    return vec2<u32>(word0(v.x, v.y, a), word0(v.y, v.z, a));
}

// block_q6_K { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }: y = d * sc * (q - 32) with a signed scale
// per 16 weights (scale 8h + l / 16 + 2r).
fn dequant_q6_k(block: u32, part: u32) -> array<vec4<f32>, 8> {
    let h = part >> 2u;
    let l8 = part & 3u;
    let i = block >> 2u;
    let a = block & 3u;
    let ql_a = q6_k_words(i + 16u * h + 2u * l8, a); // quarters 0 (low nibbles) and 2 (high): offset 64h + 8l8
    let ql_b = q6_k_words(i + 16u * h + 8u + 2u * l8, a); // quarters 1 and 3: offset 64h + 32 + 8l8
    let qh = q6_k_words(i + 32u + 8u * h + 2u * l8, a); // offset 128 + 32h + 8l8
    let sc = q6_k_words(i + 48u + 2u * h, a); // scales 8h..8h+8 at offset 192 + 8h: byte l8 / 2 + 2r
    let d = w_half(block + 208u);
    let s = l8 >> 1u;
    var out: array<vec4<f32>, 8>;
    for (var c = 0u; c < 2u; c++) {
        var nib = array<vec4<u32>, 4>(
            low_nibbles(ql_a[c]), low_nibbles(ql_b[c]), high_nibbles(ql_a[c]), high_nibbles(ql_b[c]));
        for (var r = 0u; r < 4u; r++) {
            let q = nib[r] | (crumbs(qh[c], 2u * r) << vec4<u32>(4u));
            let scale = signed_byte(sc[r >> 1u], s + 2u * (r & 1u));
            out[2u * r + c] = (d * f32(scale)) * (vec4<f32>(q) - 32.0);
        }
    }
    return out;
}
#endif

// The entry every kernel calls: dequant_<type> of the TYPE_ macro.
fn dequant_part(block: u32, part: u32) -> array<vec4<f32>, PART_VECS> {
    return DEQUANT(block, part);
}

// Types without their own part_offset (the float types: one vec4 per part).
#ifndef LEGACY_PARTS
#ifndef K_CRUMB_PARTS
#ifndef K_NIBBLE_PARTS
#ifndef TYPE_Q6_K
fn part_offset(part: u32, g: u32) -> u32 {
    return 0u;
}
#endif
#endif
#endif
#endif
