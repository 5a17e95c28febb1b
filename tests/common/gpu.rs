//! GPU helpers for the integration tests: a [`Gpu`] or a loud skip, seeded random data, and a comparison that names the
//! first failing element.
//!
//! Include it from a test file with `#[path = "common/gpu.rs"] mod gpu_common;` (it does not depend on `common/mod.rs`).
//! Without a GPU adapter a test prints `SKIP` and passes, except under `CI=true`, where CI must have one (Mesa's
//! lavapipe: `apt install mesa-vulkan-drivers`) and a missing adapter fails the test.
#![allow(dead_code)]

use webr1::gpu::{Gpu, GpuOptions};
use webr1::ErrorCode;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A GPU with default options, or `None` (after a loud SKIP) when there is no adapter outside CI.
pub fn gpu() -> Option<Gpu> {
    gpu_with(GpuOptions::default())
}

/// A GPU forced onto the f32 path (no shader-f16, no subgroups), as on adapters that lack them.
pub fn gpu_f32() -> Option<Gpu> {
    gpu_with(GpuOptions { force_f32: true, ..GpuOptions::default() })
}

pub fn gpu_with(options: GpuOptions) -> Option<Gpu> {
    match pollster::block_on(Gpu::new(options)) {
        Ok(gpu) => Some(gpu),
        Err(e) if e.code == ErrorCode::WebgpuUnavailable => {
            assert!(!in_ci(), "no GPU adapter under CI=true: {e}");
            eprintln!("\n*** SKIP: no GPU adapter, this GPU test did not run: {e}\n");
            None
        }
        Err(e) => panic!("GPU device creation failed: {e}"),
    }
}

/// Both variants a kernel must pass on this machine: the forced-f32 device, then the default device (f16 and
/// subgroups when the adapter has them). Empty (after a SKIP) without an adapter.
pub fn gpus() -> Vec<(&'static str, Gpu)> {
    let mut out = Vec::new();
    if let Some(gpu) = gpu_f32() {
        out.push(("forced f32", gpu));
    }
    if let Some(gpu) = gpu() {
        out.push(("default", gpu));
    }
    out
}

/// SplitMix64: a tiny seeded generator, so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Panics unless `|got - want| <= atol + rtol * |want|` everywhere, naming the first failing index, both values, and
/// how many elements failed.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let bad = |(g, w): (&f32, &f32)| {
        let diff = (g - w).abs();
        diff.is_nan() || diff > atol + rtol * w.abs()
    };
    let failures = got.iter().zip(want).filter(|p| bad(*p)).count();
    if let Some(i) = got.iter().zip(want).position(bad) {
        panic!(
            "{what}: first failing index {i}: got {}, want {} (|diff| {:e}, tolerance {atol:e} + {rtol:e}·|want|); \
             {failures} of {} elements fail",
            got[i],
            want[i],
            (got[i] - want[i]).abs(),
            got.len()
        );
    }
}

/// `x` rounded to f16 and back, as the GPU sees an f16 tensor.
pub fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

pub fn to_f16(x: &[f32]) -> Vec<half::f16> {
    x.iter().map(|&v| half::f16::from_f32(v)).collect()
}
