//! GGML tensor types: their block layouts and byte sizes, and a CPU reference dequantiser for each type webr1 computes
//! with.
//!
//! The layouts follow ggml's `ggml-common.h` (the `block_q4_0` ... `block_q6_K` structs) and the dequantisers follow
//! `ggml-quants.c`. The CPU dequantiser is the reference the GPU kernels are tested against.

mod blocks;
mod kquants;
mod legacy;

pub use blocks::{
    read_block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, K_SCALE_SIZE, QK, QK_K,
};

use crate::{err, Result};
use blocks::dequantize_blocks;

/// A GGML tensor type, with the id GGUF files store for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// (type, GGUF id, elements per block, bytes per block), from ggml's `type_traits` table.
const TYPE_TABLE: &[(GgmlType, u32, u64, u64)] = &[
    (GgmlType::F32, 0, 1, 4),
    (GgmlType::F16, 1, 1, 2),
    (GgmlType::Q4_0, 2, 32, 18),
    (GgmlType::Q4_1, 3, 32, 20),
    (GgmlType::Q5_0, 6, 32, 22),
    (GgmlType::Q5_1, 7, 32, 24),
    (GgmlType::Q8_0, 8, 32, 34),
    (GgmlType::Q8_1, 9, 32, 36),
    (GgmlType::Q2_K, 10, 256, 84),
    (GgmlType::Q3_K, 11, 256, 110),
    (GgmlType::Q4_K, 12, 256, 144),
    (GgmlType::Q5_K, 13, 256, 176),
    (GgmlType::Q6_K, 14, 256, 210),
    (GgmlType::Q8_K, 15, 256, 292),
    (GgmlType::IQ2_XXS, 16, 256, 66),
    (GgmlType::IQ2_XS, 17, 256, 74),
    (GgmlType::IQ3_XXS, 18, 256, 98),
    (GgmlType::IQ1_S, 19, 256, 50),
    (GgmlType::IQ4_NL, 20, 32, 18),
    (GgmlType::IQ3_S, 21, 256, 110),
    (GgmlType::IQ2_S, 22, 256, 82),
    (GgmlType::IQ4_XS, 23, 256, 136),
    (GgmlType::I8, 24, 1, 1),
    (GgmlType::I16, 25, 1, 2),
    (GgmlType::I32, 26, 1, 4),
    (GgmlType::I64, 27, 1, 8),
    (GgmlType::F64, 28, 1, 8),
    (GgmlType::IQ1_M, 29, 256, 56),
    (GgmlType::BF16, 30, 1, 2),
    (GgmlType::TQ1_0, 34, 256, 54),
    (GgmlType::TQ2_0, 35, 256, 66),
    (GgmlType::MXFP4, 39, 32, 17),
];

impl GgmlType {
    /// The type with GGUF id `id`, or `None` for an id ggml does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPE_TABLE.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, u32, u64, u64) {
        TYPE_TABLE.iter().find(|row| row.0 == self).expect("every GgmlType has a row in TYPE_TABLE")
    }

    /// The id GGUF files store for this type.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// Elements per block (1 for plain float and integer types).
    pub fn block_size(self) -> u64 {
        self.row().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.row().3
    }

    /// ggml's name for the type, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
            Self::IQ2_XXS => "IQ2_XXS",
            Self::IQ2_XS => "IQ2_XS",
            Self::IQ3_XXS => "IQ3_XXS",
            Self::IQ1_S => "IQ1_S",
            Self::IQ4_NL => "IQ4_NL",
            Self::IQ3_S => "IQ3_S",
            Self::IQ2_S => "IQ2_S",
            Self::IQ4_XS => "IQ4_XS",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::I32 => "I32",
            Self::I64 => "I64",
            Self::F64 => "F64",
            Self::IQ1_M => "IQ1_M",
            Self::BF16 => "BF16",
            Self::TQ1_0 => "TQ1_0",
            Self::TQ2_0 => "TQ2_0",
            Self::MXFP4 => "MXFP4",
        }
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole number of blocks (or overflows).
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        if n % self.block_size() != 0 {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Every type webr1 can dequantise (and so compute with).
    pub const SUPPORTED: [GgmlType; 13] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
    ];

    /// Whether webr1 can dequantise (and so compute with) this type.
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }

    /// `Ok(())` for a supported type, else a `quant.unsupported_type` error naming it.
    pub fn check_supported(self) -> Result<()> {
        if self.is_supported() {
            Ok(())
        } else {
            Err(err!(
                QuantUnsupportedType,
                "tensor type {} is not supported by webr1 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, \
                 Q2_K, Q3_K, Q4_K, Q5_K, Q6_K); use a GGUF quantised as Q4_K_M, Q5_K_M, Q6_K or Q8_0",
                self.name()
            ))
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantises `out.len()` elements of type `ty` from `bytes`, the raw little-endian GGUF data of whole blocks (a row,
/// or any run of rows), into `out`. Bit-identical to ggml's `dequantize_row_*` (see the module docs).
///
/// Errors: `quant.unsupported_type` for a type webr1 does not compute with; `usage` when `out.len()` is not a whole
/// number of blocks or `bytes` is not exactly the size of that many blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    ty.check_supported()?;
    check_lengths(ty, bytes.len(), out.len())?;
    match ty {
        GgmlType::F32 => legacy::dequantize_f32(bytes, out),
        GgmlType::F16 => legacy::dequantize_f16(bytes, out),
        GgmlType::BF16 => legacy::dequantize_bf16(bytes, out),
        GgmlType::Q4_0 => dequantize_blocks(bytes, out, BlockQ4_0::dequantize),
        GgmlType::Q4_1 => dequantize_blocks(bytes, out, BlockQ4_1::dequantize),
        GgmlType::Q5_0 => dequantize_blocks(bytes, out, BlockQ5_0::dequantize),
        GgmlType::Q5_1 => dequantize_blocks(bytes, out, BlockQ5_1::dequantize),
        GgmlType::Q8_0 => dequantize_blocks(bytes, out, BlockQ8_0::dequantize),
        GgmlType::Q2_K => dequantize_blocks(bytes, out, BlockQ2K::dequantize),
        GgmlType::Q3_K => dequantize_blocks(bytes, out, BlockQ3K::dequantize),
        GgmlType::Q4_K => dequantize_blocks(bytes, out, BlockQ4K::dequantize),
        GgmlType::Q5_K => dequantize_blocks(bytes, out, BlockQ5K::dequantize),
        GgmlType::Q6_K => dequantize_blocks(bytes, out, BlockQ6K::dequantize),
        other => return Err(err!(QuantUnsupportedType, "no dequantiser for tensor type {other}")),
    }
    Ok(())
}

/// [`dequantize`] into a new vector of `n` elements. The lengths are checked against `bytes` before anything is
/// allocated, so `n` may come from an untrusted header.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    ty.check_supported()?;
    check_lengths(ty, bytes.len(), n)?;
    let mut out = vec![0.0; n];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// `Ok(())` when `n` elements of `ty` are whole blocks that take exactly `n_bytes` bytes.
fn check_lengths(ty: GgmlType, n_bytes: usize, n: usize) -> Result<()> {
    let block_size = ty.block_size();
    if n as u64 % block_size != 0 {
        return Err(err!(
            Usage,
            "cannot dequantise {n} elements of {ty}: not a whole number of {block_size}-element blocks"
        ));
    }
    match ty.row_bytes(n as u64) {
        Some(expected) if expected == n_bytes as u64 => Ok(()),
        Some(expected) => {
            Err(err!(Usage, "{n} elements of {ty} take {expected} bytes, but {n_bytes} bytes were given"))
        }
        None => Err(err!(Usage, "{n} elements of {ty} overflow a 64-bit byte count")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn dequantize_checks_lengths() {
        let mut out = [0.0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], &mut out).is_ok());
        let short = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).unwrap_err();
        assert_eq!(short.code, ErrorCode::Usage);
        let partial = dequantize(GgmlType::Q8_0, &[0u8; 34], &mut out[..31]).unwrap_err();
        assert_eq!(partial.code, ErrorCode::Usage);
        let unsupported = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0.0; 256]).unwrap_err();
        assert_eq!(unsupported.code, ErrorCode::QuantUnsupportedType);
    }

    #[test]
    fn dequantize_to_vec_does_not_trust_n() {
        let huge = dequantize_to_vec(GgmlType::Q4_K, &[0u8; 144], usize::MAX / 2 / 256 * 256).unwrap_err();
        assert_eq!(huge.code, ErrorCode::Usage);
        assert_eq!(dequantize_to_vec(GgmlType::Q4_K, &[0u8; 144], 256).map(|v| v.len()), Ok(256));
    }
}
