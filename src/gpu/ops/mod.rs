//! The kernels, one module per shader file: `ops::rms_norm` dispatches `shaders/rms_norm.wgsl`, `ops::elementwise`
//! dispatches `shaders/elementwise.wgsl`.
//!
//! Every op function checks its tensors (dtypes, shapes, aliasing, device features), chooses the shader variant from
//! the tensors and [`crate::gpu::Gpu::features`], and returns a [`Dispatch`] to record; nothing is submitted. An f16
//! tensor needs the `shader-f16` feature: op functions return a `usage` error otherwise, never a device error.

pub mod attention;
pub mod attention_decode;
pub mod attention_prefill;
pub mod elementwise;
pub mod get_rows;
pub mod kv_store;
pub mod mask;
pub mod matmul;
pub mod matmul_tiled;
pub mod matmul_vec;
pub mod nll;
pub mod rms_norm;
pub mod rope;
pub mod sample;

pub use attention::{attention, AttentionIo, AttentionShape};
pub use attention_decode::{
    attention_decode, attention_decode_partials, attention_decode_partials_for, attention_decode_partials_shape,
    attention_decode_with, attention_decode_with_shape, DecodeShape,
};
pub use attention_prefill::{attention_prefill, attention_prefill_with_shape, PrefillShape, PREFILL_MEMORY_CAP};
pub use elementwise::{add, mul, scale, silu_mul, silu_mul_rows};
pub use get_rows::get_rows;
pub use kv_store::kv_store;
pub use mask::{apply_mask, mask_words};
pub use matmul::{matmul, matmul_into, Epilogue, MAX_VEC_TOKENS};
pub use matmul_tiled::{
    matmul_tiled, matmul_tiled_into, matmul_tiled_steps, matmul_tiled_with, tiled_kernel, TileShape, TiledKernel,
};
pub use matmul_vec::{matmul_vec, matmul_vec_into, matmul_vec_with, silu_mul_vec, silu_mul_vec_with, VecShape};
pub use nll::nll;
pub use rms_norm::{rms_norm, rms_norm_rows, NormRows};
pub use rope::{rope, rope_store, RopeParams, RopeStoreIo};
pub use sample::{
    argmax, argmax_next, argmax_next_with, draw_uniform, sample, sample_next, sample_next_with, NextStep,
    SamplingParams,
};

use super::context::Gpu;
use super::tensor::{DType, Tensor};
use crate::{err, Result};

#[cfg(doc)]
use super::dispatch::Dispatch;

/// Invocations per workgroup of the simple kernels: WebGPU guarantees 256 on every device.
pub const WORKGROUP_SIZE: u32 = 256;

/// Checks that `t` is an f32 or f16 activation this device can compute on; returns whether it is f16.
fn activation(gpu: &Gpu, op: &str, name: &str, t: &Tensor) -> Result<bool> {
    match t.dtype() {
        DType::F32 => Ok(false),
        DType::F16 if gpu.features().shader_f16 => Ok(true),
        DType::F16 => Err(err!(Usage, "{op}: {name} is f16 but this device has no shader-f16 (use f32 tensors)")),
        other => Err(err!(Usage, "{op}: {name} must be f32 or f16, not {}", other.name())),
    }
}

/// A `Params` struct of four 32-bit words, as the shaders declare it.
fn params(words: [u32; 4]) -> [u8; 16] {
    bytemuck::cast(words)
}

/// A length as the `u32` shaders index with.
fn index_u32(op: &str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| err!(GpuLimits, "{op}: {what} of {n} does not fit a 32-bit GPU index"))
}
