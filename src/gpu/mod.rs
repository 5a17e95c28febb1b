//! The GPU layer: adapter and device, WGSL preprocessing and pipeline cache, tensors, and the kernels.
//!
//! Everything here works on both targets: natively on Vulkan, Metal or DX12 through wgpu, and in the browser on
//! WebGPU. Nothing blocks on the web: device creation and readback are `async`, and only native code polls the device.
//!
//! - [`Gpu`] ([`context`]): the device created with the adapter's own limits and with `shader-f16` / `subgroups` /
//!   `timestamp-query` when offered (or forced off with [`GpuOptions::force_f32`]); device errors as values.
//! - [`preprocess`]: `#define` / `#ifdef` / `#include` for WGSL, driven by the typed [`Macros`] builder.
//! - [`shaders`]: the embedded `shaders/*.wgsl` files and the [`PipelineCache`] keyed by (shader, entry, macros).
//! - [`Tensor`] ([`tensor`]): a buffer with shape and [`DType`]; chunked upload through [`ByteWriter`], readback
//!   through [`Readback`]. [`SplitWeight`] ([`weight`]): a weight split by rows to fit the binding limit.
//! - [`Dispatch`] ([`dispatch`]): a kernel launch built once and recorded many times.
//! - [`profile`]: what was asked of the GPU, counted where it happens (dispatches encoded, submissions, waits, the
//!   bytes bound to each dispatch) and GPU time per dispatch from timestamp queries: `webr1 bench --profile`.
//! - [`ops`]: one module per shader file (`rms_norm`, `elementwise`), each checked against a CPU reference in
//!   `tests/gpu_core.rs`.

pub mod context;
pub mod dispatch;
pub mod ops;
pub mod preprocess;
pub mod profile;
pub mod shaders;
pub mod tensor;
pub mod weight;

pub use context::{buffers_created_in_process, AdapterSummary, AllocScope, Gpu, GpuFeatures, GpuOptions};
pub use dispatch::{grid, Bind, Dispatch, Launch};
pub use preprocess::Macros;
pub use profile::{Access, DispatchTimer, Extent, StepShape, Submission};
pub use shaders::{PipelineCache, PipelineKey, SHADERS};
pub use tensor::{buffer_bytes, tensor_bytes, ByteWriter, DType, Readback, Tensor};
pub use weight::{split_rows, SplitWeight, WeightPart};

// Natively the engine may share the GPU and its tensors between threads (the server); keep it that way.
#[cfg(not(target_arch = "wasm32"))]
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Gpu>();
    shareable::<Tensor>();
    shareable::<SplitWeight>();
    shareable::<Dispatch>();
};
