//! The bytes of a synthetic tensor, made directly as GGML blocks: random quants with per-block scales chosen so that
//! the dequantised values have the standard deviation the tensor table asks for (no quantiser involved).
//!
//! A tensor's bytes are cut into chunks of whole blocks ([`chunk_bytes`]), and chunk `c` of tensor `t` is filled from
//! its own random generator, seeded from `(seed, t, c)`: any thread may fill any chunk, in any order, and a file (or
//! an upload) is the same for the same seed.
//!
//! The quants are uniform and the scales fixed per tensor, so every value is one of evenly spaced levels centred on
//! zero (the sign of a block's scale alternates where the levels are not symmetric, to keep the mean at zero). Every
//! scale is a normal f16 for the six shapes (see `table.rs`), so no GPU flushes one to zero.

use super::table::{Role, SynthTensor, LOUD_ROW_EVERY, LOUD_ROW_GAIN};
use crate::quant::GgmlType;
use half::f16;

/// The largest chunk, in bytes.
pub const CHUNK_BYTES: u64 = 4 << 20;

/// The size of every chunk of a `ty` tensor but the last: whole blocks, at most [`CHUNK_BYTES`].
pub fn chunk_bytes(ty: GgmlType) -> u64 {
    CHUNK_BYTES / ty.type_size() * ty.type_size()
}

/// wyrand: a small, fast generator (64 bits of state), good enough for weights nobody reads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, tensor: usize, chunk: u64) -> Rng {
        let mut s = splitmix(seed);
        s = splitmix(s ^ tensor as u64);
        Rng(splitmix(s ^ chunk))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    fn fill(&mut self, out: &mut [u8]) {
        let mut words = out.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Standard deviations of uniform integer quants: 16 levels (4 bits), 32 levels (5 bits), 64 levels (6 bits).
const STD_4BIT: f32 = 4.609_772;
const STD_5BIT: f32 = 9.233_093;
const STD_6BIT: f32 = 18.472_953;

/// Fills `out` with chunk `chunk` of tensor `t` (number `index` in the table) for `seed`. `out` must be exactly that
/// chunk's length: [`chunk_bytes`], or less for the last chunk.
pub fn fill_chunk(t: &SynthTensor, index: usize, seed: u64, chunk: u64, out: &mut [u8]) {
    let mut rng = Rng::new(seed, index, chunk);
    let first_block = chunk * chunk_bytes(t.ty) / t.ty.type_size();
    let blocks = Blocks { first: first_block, std: t.role.std(), gain: Gain::of(t, seed) };
    match t.ty {
        GgmlType::F32 => fill_f32(t, first_block as usize, &mut rng, out),
        GgmlType::F16 => {
            let amp = blocks.std * 3f32.sqrt();
            for (i, v) in out.chunks_exact_mut(2).enumerate() {
                let x = amp * blocks.gain(i) * rng.symmetric();
                v.copy_from_slice(&f16::from_f32(x).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => fill_q8_0(&mut rng, &blocks, out),
        GgmlType::Q4_0 => fill_q4_0(&mut rng, &blocks, out),
        GgmlType::Q4_K => fill_kquant(&mut rng, &blocks, STD_4BIT, 2.5, &Q4K_SCALES, out, 144),
        GgmlType::Q5_K => fill_kquant(&mut rng, &blocks, STD_5BIT, 0.5, &Q5K_SCALES, out, 176),
        GgmlType::Q6_K => fill_q6k(&mut rng, &blocks, out),
        other => unreachable!("the tensor table has no {other} tensors"),
    }
}

/// The blocks of one chunk: the index of the first in the tensor, the deviation asked for, and each block's gain.
struct Blocks {
    first: u64,
    std: f32,
    gain: Gain,
}

impl Blocks {
    /// The gain of the chunk's block `i` (for F16, element `i`).
    fn gain(&self, i: usize) -> f32 {
        match self.gain {
            Gain::One => 1.0,
            Gain::LoudRows { blocks_per_row, seed } => {
                let row = (self.first + i as u64) / blocks_per_row;
                if splitmix(seed ^ splitmix(row)) % LOUD_ROW_EVERY == 0 {
                    LOUD_ROW_GAIN
                } else {
                    1.0
                }
            }
        }
    }

    /// The sign that cancels the mean of levels that are not symmetric: + for even blocks, - for odd ones.
    fn sign(&self, i: usize) -> f32 {
        if (self.first + i as u64) % 2 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// How a block's deviation relates to the tensor's.
#[derive(Clone, Copy)]
enum Gain {
    One,
    /// The LM head's loud rows ([`Role::LmHead`]).
    LoudRows {
        blocks_per_row: u64,
        seed: u64,
    },
}

impl Gain {
    fn of(t: &SynthTensor, seed: u64) -> Gain {
        match t.role {
            Role::LmHead { .. } => {
                Gain::LoudRows { blocks_per_row: (t.dims[0] / t.ty.block_size()).max(1), seed: splitmix(!seed) }
            }
            _ => Gain::One,
        }
    }
}

fn fill_f32(t: &SynthTensor, first: usize, rng: &mut Rng, out: &mut [u8]) {
    for (i, v) in out.chunks_exact_mut(4).enumerate() {
        let x = match &t.role {
            Role::Norm => 1.0,
            Role::RopeFactors(f) => f[first + i],
            Role::Bias { std } | Role::Matrix { std } | Role::LmHead { std } => std * 3f32.sqrt() * rng.symmetric(),
        };
        v.copy_from_slice(&x.to_le_bytes());
    }
}

/// Q8_0 (`d`, 32 × i8): quants in -16..15 (the top bits of a random byte), so that `d` stays a normal f16 for the
/// smallest deviations; `d`'s sign alternates by block to cancel the levels' mean of -1/2.
fn fill_q8_0(rng: &mut Rng, b: &Blocks, out: &mut [u8]) {
    rng.fill(out);
    for (i, block) in out.chunks_exact_mut(34).enumerate() {
        let d = b.sign(i) * b.gain(i) * b.std / STD_5BIT;
        block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for q in &mut block[2..] {
            *q = ((*q as i8) >> 3) as u8;
        }
    }
}

/// Q4_0 (`d`, 16 bytes of nibbles): `w = d (q - 8)`, `d`'s sign alternating by block.
fn fill_q4_0(rng: &mut Rng, b: &Blocks, out: &mut [u8]) {
    rng.fill(out);
    for (i, block) in out.chunks_exact_mut(18).enumerate() {
        let d = b.sign(i) * b.gain(i) * b.std / STD_4BIT;
        block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }
}

/// The packed 6-bit scales and mins of every sub-block, for `w = d * sc * q - dmin * m`: Q4_K with `sc = 1, m = 3`
/// (and `dmin = 2.5 d`, so the mean of `q` in 0..15, 7.5, maps to zero) and Q5_K with `sc = 1, m = 31` (`dmin =
/// d / 2`, the mean of `q` in 0..31 being 15.5). Bytes 0-3 hold scales 0-3, bytes 4-7 mins 0-3, bytes 8-11 the low
/// nibbles of scales and mins 4-7, and the top two bits of bytes 0-7 their high bits.
const Q4K_SCALES: [u8; 12] = [1, 1, 1, 1, 3, 3, 3, 3, 0x31, 0x31, 0x31, 0x31];
const Q5K_SCALES: [u8; 12] = [1, 1, 1, 1, 95, 95, 95, 95, 0xF1, 0xF1, 0xF1, 0xF1];

/// Q4_K and Q5_K (`d`, `dmin`, 12 bytes of scales, then random quant bits): step `d = std / level_std`,
/// `dmin = min_ratio * d`.
fn fill_kquant(
    rng: &mut Rng,
    b: &Blocks,
    level_std: f32,
    min_ratio: f32,
    scales: &[u8; 12],
    out: &mut [u8],
    block_bytes: usize,
) {
    rng.fill(out);
    for (i, block) in out.chunks_exact_mut(block_bytes).enumerate() {
        let d = f16::from_f32(b.gain(i) * b.std / level_std);
        let dmin = f16::from_f32(min_ratio * d.to_f32());
        block[..2].copy_from_slice(&d.to_le_bytes());
        block[2..4].copy_from_slice(&dmin.to_le_bytes());
        block[4..16].copy_from_slice(scales);
    }
}

/// Q6_K (128 bytes of low bits, 64 of high bits, 16 signed scales, `d`): `w = d * sc * (q - 32)`, the scales
/// alternating +1 and -1 so that the levels' mean of -1/2 cancels.
fn fill_q6k(rng: &mut Rng, b: &Blocks, out: &mut [u8]) {
    rng.fill(out);
    for (i, block) in out.chunks_exact_mut(210).enumerate() {
        for (j, s) in block[192..208].iter_mut().enumerate() {
            *s = if j % 2 == 0 { 1 } else { (-1i8) as u8 };
        }
        block[208..].copy_from_slice(&f16::from_f32(b.gain(i) * b.std / STD_6BIT).to_le_bytes());
    }
}
