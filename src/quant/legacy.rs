//! CPU reference dequantisers of the plain float types (F32, F16, BF16) and of ggml's 32-element "legacy" block
//! formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
//!
//! Each follows the matching `dequantize_row_*` of ggml's `ggml-quants.c` operation for operation, in f32, so the
//! results are bit-identical to ggml's reference (and to the `gguf` Python package the golden tests come from).

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
use half::f16;

/// F32: little-endian IEEE singles, copied bit for bit.
pub(crate) fn dequantize_f32(bytes: &[u8], out: &mut [f32]) {
    for (chunk, y) in bytes.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

/// F16: little-endian IEEE halves, widened exactly (ggml `GGML_FP16_TO_FP32`).
pub(crate) fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    for (chunk, y) in bytes.chunks_exact(2).zip(out.iter_mut()) {
        *y = f16::from_le_bytes([chunk[0], chunk[1]]).to_f32();
    }
}

/// BF16: the top 16 bits of an f32 (ggml `GGML_BF16_TO_FP32`: a plain shift, NaN payloads kept as they are).
pub(crate) fn dequantize_bf16(bytes: &[u8], out: &mut [f32]) {
    for (chunk, y) in bytes.chunks_exact(2).zip(out.iter_mut()) {
        *y = f32::from_bits(u32::from(u16::from_le_bytes([chunk[0], chunk[1]])) << 16);
    }
}

/// Element `j`'s nibble and element `j + 16`'s nibble of a 4-bit legacy block: `qs[j]` low and high.
fn nibbles(q: u8) -> (u8, u8) {
    (q & 0x0F, q >> 4)
}

/// Bit 4 of the 5-bit quants `j` and `j + 16` of a Q5 block: bits `j` and `j + 16` of the little-endian `qh`.
fn fifth_bits(qh: u32, j: usize) -> (u8, u8) {
    let bit = |i: usize| (((qh >> i) & 1) as u8) << 4;
    (bit(j), bit(j + QK / 2))
}

impl BlockQ4_0 {
    /// ggml `dequantize_row_q4_0`: `y = (q - 8) * d`.
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((&q, y0), y1) in self.qs.iter().zip(lo).zip(hi) {
            let (q0, q1) = nibbles(q);
            *y0 = (i32::from(q0) - 8) as f32 * d;
            *y1 = (i32::from(q1) - 8) as f32 * d;
        }
    }
}

impl BlockQ4_1 {
    /// ggml `dequantize_row_q4_1`: `y = q * d + m`.
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((&q, y0), y1) in self.qs.iter().zip(lo).zip(hi) {
            let (q0, q1) = nibbles(q);
            *y0 = f32::from(q0) * d + m;
            *y1 = f32::from(q1) * d + m;
        }
    }
}

impl BlockQ5_0 {
    /// ggml `dequantize_row_q5_0`: `y = (q - 16) * d` with the fifth bit of `q` from `qh`.
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for (j, ((&q, y0), y1)) in self.qs.iter().zip(lo).zip(hi).enumerate() {
            let ((q0, q1), (h0, h1)) = (nibbles(q), fifth_bits(qh, j));
            *y0 = (i32::from(q0 | h0) - 16) as f32 * d;
            *y1 = (i32::from(q1 | h1) - 16) as f32 * d;
        }
    }
}

impl BlockQ5_1 {
    /// ggml `dequantize_row_q5_1`: `y = q * d + m` with the fifth bit of `q` from `qh`.
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let qh = u32::from_le_bytes(self.qh);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for (j, ((&q, y0), y1)) in self.qs.iter().zip(lo).zip(hi).enumerate() {
            let ((q0, q1), (h0, h1)) = (nibbles(q), fifth_bits(qh, j));
            *y0 = f32::from(q0 | h0) * d + m;
            *y1 = f32::from(q1 | h1) * d + m;
        }
    }
}

impl BlockQ8_0 {
    /// ggml `dequantize_row_q8_0`: `y = q * d`.
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (&q, y) in self.qs.iter().zip(y.iter_mut()) {
            *y = f32::from(q) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> f16 {
        f16::from_f32(x)
    }

    #[test]
    fn q8_0_is_signed_byte_times_d() {
        let mut qs = [0i8; QK];
        qs[..4].copy_from_slice(&[-2, -1, 1, 127]);
        qs[31] = -128;
        let mut y = [f32::NAN; QK];
        BlockQ8_0 { d: h(0.5), qs }.dequantize(&mut y);
        assert_eq!(y[..5], [-1.0, -0.5, 0.5, 63.5, 0.0]);
        assert_eq!(y[31], -64.0);
    }

    #[test]
    fn q4_0_low_nibbles_first_then_high_nibbles() {
        // qs[0] = 0x9F: element 0 gets 0xF - 8 = 7, element 16 gets 0x9 - 8 = 1. 0x88 means zero for both.
        let mut qs = [0x88u8; QK / 2];
        qs[0] = 0x9F;
        qs[15] = 0x03; // element 15: 3 - 8 = -5, element 31: 0 - 8 = -8
        let mut y = [f32::NAN; QK];
        BlockQ4_0 { d: h(-0.25), qs }.dequantize(&mut y);
        assert_eq!((y[0], y[16]), (-1.75, -0.25));
        assert_eq!((y[15], y[31]), (1.25, 2.0));
        assert!(y[1..15].iter().chain(&y[17..31]).all(|&v| v == 0.0));
    }

    #[test]
    fn q4_1_adds_the_min() {
        let mut qs = [0u8; QK / 2];
        qs[0] = 0xF1;
        let mut y = [f32::NAN; QK];
        BlockQ4_1 { d: h(2.0), m: h(-3.0), qs }.dequantize(&mut y);
        assert_eq!((y[0], y[16], y[1]), (-1.0, 27.0, -3.0));
    }

    #[test]
    fn q5_0_takes_bit_j_of_qh_as_bit_4() {
        // qh bit 0 -> element 0, bit 16 -> element 16, bit 31 -> element 31.
        let qh = (1u32 | 1 << 16 | 1 << 31).to_le_bytes();
        let mut y = [f32::NAN; QK];
        BlockQ5_0 { d: h(1.0), qh, qs: [0u8; QK / 2] }.dequantize(&mut y);
        assert_eq!((y[0], y[16], y[31]), (0.0, 0.0, 0.0));
        assert_eq!((y[1], y[17]), (-16.0, -16.0));
    }

    #[test]
    fn q5_1_reaches_31() {
        let mut y = [f32::NAN; QK];
        BlockQ5_1 { d: h(1.0), m: h(0.5), qh: [0xFF; 4], qs: [0xFF; QK / 2] }.dequantize(&mut y);
        assert!(y.iter().all(|&v| v == 31.5));
    }

    #[test]
    fn float_types_decode_little_endian() {
        let mut y = [0.0f32; 2];
        dequantize_f32(&[0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0], &mut y);
        assert_eq!(y, [1.0, -2.0]);
        dequantize_f16(&[0x00, 0x3C, 0x00, 0xC4], &mut y);
        assert_eq!(y, [1.0, -4.0]);
        dequantize_bf16(&[0x80, 0x3F, 0x49, 0x40], &mut y);
        assert_eq!(y, [1.0, f32::from_bits(0x4049_0000)]);
    }
}
