//! CPU reference dequantisers of ggml's "k-quant" super-block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): 256 weights per
//! block, split into sub-blocks of 16 or 32 that each carry a small integer scale (and, for Q2_K/Q4_K/Q5_K, a min)
//! relative to the block's f16 `d` (and `dmin`).
//!
//! Each follows the matching `dequantize_row_*_K` of ggml's `ggml-quants.c` (QK_K = 256) operation for operation, in
//! f32 and in the same order (`d * sc` first, then times the quant, then minus `dmin * m`), so the results are
//! bit-identical to ggml's reference and to the `gguf` Python package the golden tests come from.

use super::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, K_SCALE_SIZE, QK_K};

/// Sub-block `j` (0..8) scale and min of Q4_K/Q5_K, 6 bits each (ggml `get_scale_min_k4`). Bytes 0..4 hold scales
/// 0..4 and bytes 4..8 mins 0..4 in their low 6 bits; scales and mins 4..8 have their low 4 bits in bytes 8..12 and
/// their top 2 bits in the top bits of bytes 0..4 (scales) and 4..8 (mins).
fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 16 scales of a Q3_K block, 6 bits each, minus 32. Scale `k` has its low 4 bits in byte `k` (low nibble,
/// `k < 8`) or byte `k - 8` (high nibble), and its top 2 bits at bit `2 * (k / 4)` of byte `8 + k % 4`.
fn q3k_scales(packed: &[u8; 12]) -> [i32; QK_K / 16] {
    std::array::from_fn(|k| {
        let low = if k < 8 { packed[k] & 0x0F } else { packed[k - 8] >> 4 };
        let high = (packed[8 + k % 4] >> (2 * (k / 4))) & 3;
        i32::from(low | (high << 4)) - 32
    })
}

impl BlockQ2K {
    /// ggml `dequantize_row_q2_K`. Each half of the block (128 weights) reads 32 bytes of `qs` four times, two bits
    /// further each time; each pass fills two sub-blocks of 16 (bytes 0..16 and 16..32), with
    /// `y = d * sc * q - dmin * m`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let (d, min) = (self.d.to_f32(), self.dmin.to_f32());
        for (half, (qs, y)) in self.qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
            for (k, y) in y.chunks_exact_mut(16).enumerate() {
                let sc = self.scales[8 * half + k];
                let (dl, ml) = (d * f32::from(sc & 0x0F), min * f32::from(sc >> 4));
                let shift = 2 * (k / 2);
                let qs = &qs[16 * (k % 2)..][..16];
                for (y, &q) in y.iter_mut().zip(qs) {
                    *y = dl * f32::from((q >> shift) & 3) - ml;
                }
            }
        }
    }
}

impl BlockQ3K {
    /// ggml `dequantize_row_q3_K`: as Q2_K's layout, with a signed scale and no min, `y = d * (sc - 32) * (q - 4)`
    /// where the `- 4` is skipped when the quant's bit in `hmask` is set.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let scales = q3k_scales(&self.scales);
        for (half, (qs, y)) in self.qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
            for (k, y) in y.chunks_exact_mut(16).enumerate() {
                let dl = d * scales[8 * half + k] as f32;
                let (shift, mask) = (2 * (k / 2), 1u8 << (4 * half + k / 2));
                let offset = 16 * (k % 2);
                for ((y, &q), &hm) in y.iter_mut().zip(&qs[offset..][..16]).zip(&self.hmask[offset..][..16]) {
                    let minus = if hm & mask != 0 { 0 } else { 4 };
                    *y = dl * (i32::from((q >> shift) & 3) - minus) as f32;
                }
            }
        }
    }
}

impl BlockQ4K {
    /// ggml `dequantize_row_q4_K`: 4 passes over 32 bytes of `qs`, low nibbles then high nibbles, each nibble run a
    /// sub-block of 32 with `y = d * sc * q - dmin * m`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let (d, min) = (self.d.to_f32(), self.dmin.to_f32());
        for (j, (qs, y)) in self.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (lo, hi) = y.split_at_mut(32);
            for (sub, y, nibble_shift) in [(2 * j, lo, 0), (2 * j + 1, hi, 4)] {
                let (sc, m) = scale_min_k4(sub, &self.scales);
                let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
                for (y, &q) in y.iter_mut().zip(qs) {
                    *y = d1 * f32::from((q >> nibble_shift) & 0x0F) - m1;
                }
            }
        }
    }
}

impl BlockQ5K {
    /// ggml `dequantize_row_q5_K`: Q4_K plus 16 for each quant whose bit in `qh` is set (bit `2j` for the low
    /// nibbles of pass `j`, bit `2j + 1` for the high nibbles).
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let (d, min) = (self.d.to_f32(), self.dmin.to_f32());
        for (j, (qs, y)) in self.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (lo, hi) = y.split_at_mut(32);
            for (sub, y, nibble_shift) in [(2 * j, lo, 0), (2 * j + 1, hi, 4)] {
                let (sc, m) = scale_min_k4(sub, &self.scales);
                let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
                let high_bit = 1u8 << sub;
                for ((y, &q), &qh) in y.iter_mut().zip(qs).zip(&self.qh) {
                    let q = ((q >> nibble_shift) & 0x0F) + if qh & high_bit != 0 { 16 } else { 0 };
                    *y = d1 * f32::from(q) - m1;
                }
            }
        }
    }
}

impl BlockQ6K {
    /// ggml `dequantize_row_q6_K`: each half (128 weights) reads 64 bytes of `ql` and 32 of `qh`; quarter `r` of the
    /// half takes the low (r < 2) or high nibble of `ql[32 * (r % 2) + l]` and bits `2r..2r + 2` of `qh[l]`, and
    /// `y = d * sc * (q - 32)` with a signed scale per 16 weights.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let halves = self.ql.chunks_exact(64).zip(self.qh.chunks_exact(32)).zip(self.scales.chunks_exact(8));
        for (((ql, qh), sc), y) in halves.zip(y.chunks_exact_mut(128)) {
            for (r, y) in y.chunks_exact_mut(32).enumerate() {
                let ql = &ql[32 * (r % 2)..][..32];
                let nibble_shift = if r < 2 { 0 } else { 4 };
                for (l, ((y, &low), &high)) in y.iter_mut().zip(ql).zip(qh).enumerate() {
                    let q = ((low >> nibble_shift) & 0x0F) | (((high >> (2 * r)) & 3) << 4);
                    *y = d * f32::from(sc[l / 16 + 2 * r]) * (i32::from(q) - 32) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn h(x: f32) -> f16 {
        f16::from_f32(x)
    }

    #[test]
    fn scale_min_k4_unpacks_6_bit_pairs() {
        // Sub-block 0: scale = byte 0 low 6 bits, min = byte 4 low 6 bits.
        // Sub-block 4: scale = byte 8 low nibble | byte 0 top 2 bits << 4,
        //              min = byte 8 high nibble | byte 4 top 2 bits << 4.
        let mut q = [0u8; K_SCALE_SIZE];
        q[0] = 0b10_000101; // scale 0 = 5, top bits 0b10 -> scale 4 gets 32
        q[4] = 0b01_000011; // min 0 = 3, top bits 0b01 -> min 4 gets 16
        q[8] = 0x7A; // scale 4 low = 0xA, min 4 low = 0x7
        assert_eq!(scale_min_k4(0, &q), (5, 3));
        assert_eq!(scale_min_k4(4, &q), (32 + 0xA, 16 + 0x7));
    }

    #[test]
    fn q3k_scales_unpack_and_centre() {
        let mut packed = [0u8; 12];
        packed[0] = 0x21; // scale 0 low = 1, scale 8 low = 2
        packed[8] = 0b00_00_11_10; // scale 0 high = 2, scale 4 high = 3
        let s = q3k_scales(&packed);
        assert_eq!(s[0], (1 | 2 << 4) - 32);
        assert_eq!(s[8], 2 - 32);
        assert_eq!(s[4], (3 << 4) - 32);
        assert_eq!(s[1], -32);
    }

    #[test]
    fn q2k_by_hand() {
        // Sub-block 0 (elements 0..16): scale 3, min 1. qs[0] = 0b11_10_01_00: element 0 takes bits 0..2 (0),
        // element 32 (sub-block 2) bits 2..4 (1), element 64 bits 4..6 (2), element 96 bits 6..8 (3).
        let mut block = BlockQ2K { scales: [0x13; 16], qs: [0; 64], d: h(0.5), dmin: h(0.25) };
        block.qs[0] = 0b11_10_01_00;
        let mut y = [f32::NAN; QK_K];
        block.dequantize(&mut y);
        // y = 0.5 * 3 * q - 0.25 * 1
        assert_eq!([y[0], y[32], y[64], y[96]], [-0.25, 1.25, 2.75, 4.25]);
        assert_eq!(y[1], -0.25);
    }

    #[test]
    fn q3k_hmask_bit_removes_the_offset() {
        // Every scale is 0x1 | 0b10 << 4 = 33, so `sc - 32` = 1: low nibbles 0x11, top-bit pairs 0b10 in 0xAA.
        let mut scales = [0x11u8; 12];
        scales[8..].fill(0xAA);
        let mut block = BlockQ3K { hmask: [0; 32], qs: [0; 64], scales, d: h(2.0) };
        block.qs[0] = 0b11; // element 0: q = 3
        block.hmask[0] = 0b1; // element 0 keeps q; element 32 (bit 1 of hmask[0]) does not
        let mut y = [f32::NAN; QK_K];
        block.dequantize(&mut y);
        assert_eq!(y[0], 2.0 * 1.0 * 3.0);
        assert_eq!(y[1], 2.0 * 1.0 * -4.0);
        assert_eq!(y[32], 2.0 * 1.0 * -4.0);
    }

    #[test]
    fn q4k_by_hand() {
        // Sub-block 0 scale 2 min 1, sub-block 1 scale 4 min 0. qs[0] = 0x5F: element 0 = 15, element 32 = 5.
        let mut scales = [0u8; K_SCALE_SIZE];
        scales[0] = 2;
        scales[1] = 4;
        scales[4] = 1;
        let mut block = BlockQ4K { d: h(0.5), dmin: h(-1.0), scales, qs: [0; 128] };
        block.qs[0] = 0x5F;
        let mut y = [f32::NAN; QK_K];
        block.dequantize(&mut y);
        // y = 0.5 * sc * q - (-1.0) * m
        assert_eq!((y[0], y[1], y[32]), (16.0, 1.0, 10.0));
        assert_eq!(y[64], 0.0); // sub-block 2: scale 0, min 0
    }

    #[test]
    fn q5k_high_bits_add_16() {
        let mut scales = [0u8; K_SCALE_SIZE];
        scales[0] = 1;
        scales[1] = 1;
        let mut block = BlockQ5K { d: h(1.0), dmin: h(0.0), scales, qh: [0; 32], qs: [0; 128] };
        block.qh[3] = 0b10; // element 32 + 3 (high nibbles of pass 0) gets +16
        block.qs[3] = 0x21;
        let mut y = [f32::NAN; QK_K];
        block.dequantize(&mut y);
        assert_eq!((y[3], y[35]), (1.0, 18.0));
    }

    #[test]
    fn q6k_by_hand() {
        // Element 0: ql[0] low nibble 0xF, qh[0] bits 0..2 = 0b11 -> q = 63 -> 31; scale 0 = -2, d = 0.5.
        // Element 96: ql[32] high nibble 0x1, qh[0] bits 6..8 = 0b00 -> q = 1 -> -31; scale 6 = 3.
        let mut scales = [0i8; 16];
        scales[0] = -2;
        scales[6] = 3;
        let mut block = BlockQ6K { ql: [0; 128], qh: [0; 64], scales, d: h(0.5) };
        block.ql[0] = 0x0F;
        block.ql[32] = 0x10;
        block.qh[0] = 0b00_00_00_11;
        let mut y = [f32::NAN; QK_K];
        block.dequantize(&mut y);
        assert_eq!(y[0], 0.5 * -2.0 * 31.0);
        assert_eq!(y[96], 0.5 * 3.0 * -31.0);
        assert_eq!(y[16], 0.0); // scale 1 is 0
    }
}
