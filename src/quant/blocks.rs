//! The GGML quantised block layouts, field for field as ggml's `ggml-common.h` declares them (`block_q4_0` ...
//! `block_q6_K`).
//!
//! Every block is `#[repr(C)]` and [`bytemuck::Pod`]: the halves are [`half::f16`] (alignment 2), and every layout is
//! padding-free, which the `size_of` asserts below pin to ggml's byte sizes. GGUF tensor data is not aligned for these
//! types in general, so blocks are read with [`read_block`] (an unaligned copy), never by casting a byte slice.
//!
//! The dequantisers of these blocks live in `legacy.rs` (the 32-element formats) and `kquants.rs` (the 256-element
//! "k-quant" super-blocks).

use bytemuck::{Pod, Zeroable};
use half::f16;
use std::mem::size_of;

/// Elements per block of the legacy formats (ggml's `QK4_0`, `QK4_1`, `QK5_0`, `QK5_1`, `QK8_0`).
pub const QK: usize = 32;

/// Elements per k-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// Bytes of the packed 6-bit scales and mins of Q4_K and Q5_K (ggml's `K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// Q4_0: 32 weights `w = d * (q - 8)` with 4-bit `q`. `qs[j]` holds element `j` (low nibble) and `j + 16` (high).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// Q4_1: 32 weights `w = d * q + m` with 4-bit `q`, nibbles packed as in Q4_0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// Q5_0: 32 weights `w = d * (q - 16)` with 5-bit `q`: low 4 bits as in Q4_0, bit 4 of element `j` is bit `j` of
/// the little-endian `qh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q5_1: 32 weights `w = d * q + m` with 5-bit `q`, bits packed as in Q5_0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q8_0: 32 weights `w = d * q` with signed 8-bit `q`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// Q2_K: 16 sub-blocks of 16 weights, `w = d * sc * q - dmin * m` with a 4-bit scale `sc` and min `m` per sub-block
/// (`scales[i]`: low nibble scale, high nibble min) and 2-bit quants.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

/// Q3_K: 16 sub-blocks of 16 weights, `w = d * (sc - 32) * q` with 6-bit scales packed in 12 bytes and 3-bit signed
/// quants (2 low bits in `qs`, the high bit in `hmask`, set meaning "no -4 offset").
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}

/// Q4_K: 8 sub-blocks of 32 weights, `w = d * sc * q - dmin * m` with 6-bit scales and mins packed in 12 bytes and
/// 4-bit quants.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// Q5_K: Q4_K with a fifth quant bit per weight in `qh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// Q6_K: 16 sub-blocks of 16 weights, `w = d * sc * (q - 32)` with signed 8-bit scales and 6-bit quants (4 low bits
/// in `ql`, 2 high bits in `qh`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

// The byte sizes of ggml's `type_traits` table (`GgmlType::type_size`); tests check the two agree.
const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(size_of::<BlockQ5_1>() == 24);
const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(size_of::<BlockQ2K>() == 84);
const _: () = assert!(size_of::<BlockQ3K>() == 110);
const _: () = assert!(size_of::<BlockQ4K>() == 144);
const _: () = assert!(size_of::<BlockQ5K>() == 176);
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// Reads one block from the start of `bytes`, which may be unaligned; `None` when fewer than `size_of::<B>()` bytes
/// are left.
pub fn read_block<B: Pod>(bytes: &[u8]) -> Option<B> {
    bytes.get(..size_of::<B>()).map(bytemuck::pod_read_unaligned)
}

/// Dequantises whole blocks of type `B` (`N` elements each) from `bytes` into `out`, one `dequantize_block` call per
/// block, stopping at whichever of `bytes` and `out` runs out first. Callers check the two lengths agree beforehand.
pub(crate) fn dequantize_blocks<B: Pod, const N: usize>(
    bytes: &[u8],
    out: &mut [f32],
    dequantize_block: impl Fn(&B, &mut [f32; N]),
) {
    for (chunk, y) in bytes.chunks_exact(size_of::<B>()).zip(out.chunks_exact_mut(N)) {
        if let (Some(block), Ok(y)) = (read_block::<B>(chunk), <&mut [f32; N]>::try_from(y)) {
            dequantize_block(&block, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_block_accepts_unaligned_bytes() {
        let mut bytes = vec![0u8; 1 + size_of::<BlockQ8_0>()];
        bytes[1..3].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        bytes[3] = 0xFE; // qs[0] = -2
        let block: BlockQ8_0 = read_block(&bytes[1..]).expect("enough bytes");
        assert_eq!(block.d, f16::from_f32(0.5));
        assert_eq!(block.qs[0], -2);
    }

    #[test]
    fn read_block_refuses_short_input() {
        assert!(read_block::<BlockQ4K>(&[0u8; 143]).is_none());
    }

    #[test]
    fn fields_sit_at_ggml_offsets() {
        // block_q2_K and block_q3_K keep their halves at the end, block_q6_K too.
        let mut bytes = [0u8; 210];
        bytes[208..210].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        let q6: BlockQ6K = read_block(&bytes).expect("210 bytes");
        assert_eq!(q6.d, f16::from_f32(2.0));

        let mut bytes = [0u8; 84];
        bytes[80..82].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        bytes[82..84].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        let q2: BlockQ2K = read_block(&bytes).expect("84 bytes");
        assert_eq!((q2.d, q2.dmin), (f16::from_f32(1.0), f16::from_f32(-1.0)));
    }
}
