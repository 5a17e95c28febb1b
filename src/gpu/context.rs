//! The adapter and the device: what webr1 asked for, what it got, and how device errors become [`crate::Error`]s.
//!
//! The device is created with the adapter's **own** limits (WebGPU hands out only the spec's defaults unless more is
//! asked for: a 128 MiB storage binding instead of the 2-4 GiB many GPUs allow) and with `shader-f16`, `subgroups` and
//! `timestamp-query` only when the adapter offers them (ARCHITECTURE.md §2, §3). Errors the device reports later
//! are captured, never left to wgpu's default handler (which panics natively): allocation failures through
//! [`AllocScope`], everything else through [`Gpu::check`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::profile::Counters;
use super::shaders::PipelineCache;
use crate::{err, Error, ErrorCode, Result};

/// How to choose and configure the GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuOptions {
    /// Use the f32 path only: `shader-f16` and `subgroups` are not enabled even when the adapter has them.
    pub force_f32: bool,
    /// webr1's own cap on the bytes of one storage binding (`maxStorageBufferBindingSize`), below the device limit.
    /// Browsers round a small requested limit up (to 128 MiB), so a cap asked of the device would not hold; webr1
    /// enforces this one itself.
    pub max_binding_bytes: Option<u64>,
    /// webr1's own cap on the bytes of one buffer (`maxBufferSize`), below the device limit, enforced the same way:
    /// with [`GpuOptions::max_binding_bytes`] it makes a desktop GPU behave like a phone's (README: "Phone-sized
    /// limits").
    pub max_buffer_bytes: Option<u64>,
    pub power_preference: wgpu::PowerPreference,
    /// For tests of the failure path: once this many bytes of buffers exist, the next buffer is asked of the device
    /// at a size it rejects, so the failure reaches webr1 through the error scopes as a real out-of-memory would
    /// (WebGPU gives no other way to make one happen on purpose).
    #[doc(hidden)]
    pub fail_allocations_after: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            force_f32: false,
            max_binding_bytes: None,
            max_buffer_bytes: None,
            power_preference: wgpu::PowerPreference::HighPerformance,
            fail_allocations_after: None,
        }
    }
}

/// Which adapter runs webr1, for logs and bug reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterSummary {
    /// Whether this adapter runs on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader, a browser's fallback adapter):
    /// kernels whose best shape differs there ask this (see `src/gpu/ops/matmul_vec.rs`).
    pub fn is_software(&self) -> bool {
        let name = self.name.to_ascii_lowercase();
        self.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader"].iter().any(|n| name.contains(n))
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}, {:?})", self.name, self.backend, self.device_type)?;
        match (self.driver.is_empty(), self.driver_info.is_empty()) {
            (true, true) => Ok(()),
            _ => write!(f, ", driver {} {}", self.driver, self.driver_info),
        }
    }
}

/// Optional device features. [`Gpu::features`] is what was enabled (f16 and subgroups are off under
/// [`GpuOptions::force_f32`]); [`Gpu::adapter_features`] is what the adapter offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuFeatures {
    /// WGSL `enable f16;` may be used (f16 storage and arithmetic).
    pub shader_f16: bool,
    /// WGSL subgroup builtins (`subgroupAdd`, `subgroup_id`, ...) may be used.
    pub subgroups: bool,
    /// The adapter's subgroup sizes (meaningful when `subgroups`; the WebGPU backend reports the generic 4..128).
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// GPU timestamps may be written (for profiling).
    pub timestamp_query: bool,
}

impl fmt::Display for GpuFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "shader-f16 {}, subgroups {} ({}..{}), timestamp-query {}",
            on(self.shader_f16),
            on(self.subgroups),
            self.subgroup_min_size,
            self.subgroup_max_size,
            on(self.timestamp_query)
        )
    }
}

/// Device errors reported outside an error scope, and device loss; read by [`Gpu::check`].
#[derive(Default)]
struct ErrorSink {
    first: Mutex<Option<Error>>,
    lost: Mutex<Option<String>>,
}

impl ErrorSink {
    fn record(&self, error: wgpu::Error) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| from_wgpu_error(&error, "a GPU operation"));
    }

    fn lose(&self, reason: wgpu::DeviceLostReason, message: String) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.get_or_insert_with(|| format!("{reason:?}: {message}"));
    }
}

/// A `wgpu::Error` as a webr1 error, naming what was being done.
pub(crate) fn from_wgpu_error(error: &wgpu::Error, doing: &str) -> Error {
    match error {
        wgpu::Error::OutOfMemory { .. } => err!(
            GpuOutOfMemory,
            "the GPU ran out of memory during {doing}: close other GPU-heavy tabs or programs, or use a smaller model or context"
        ),
        wgpu::Error::Validation { description, .. } => err!(GpuValidation, "{doing} was rejected by the GPU: {description}"),
        wgpu::Error::Internal { description, .. } => err!(GpuValidation, "{doing} failed inside the GPU driver: {description}"),
    }
}

/// Buffers created by every [`Gpu`] of this process (or wasm instance): a failed load can be checked to have created
/// none after its device is gone.
static BUFFERS_CREATED_IN_PROCESS: AtomicU64 = AtomicU64::new(0);

/// Buffers created through [`Gpu::create_buffer`] by every device of this process (or wasm instance) so far.
pub fn buffers_created_in_process() -> u64 {
    BUFFERS_CREATED_IN_PROCESS.load(Ordering::Relaxed)
}

/// Writes are flushed (submitted, and natively waited for) after this many bytes, so the staging copies the driver
/// keeps for `queue.write_buffer` stay bounded while a multi-gigabyte model streams in (ARCHITECTURE.md §4).
const FLUSH_BYTES: u64 = 64 << 20;
/// The largest single `queue.write_buffer` call.
pub(crate) const WRITE_CHUNK: usize = 8 << 20;

/// The GPU webr1 computes on: device, queue, what they can do, and the shared pipeline cache.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: AdapterSummary,
    adapter_features: GpuFeatures,
    features: GpuFeatures,
    limits: wgpu::Limits,
    max_binding_bytes: u64,
    max_buffer_bytes: u64,
    fail_allocations_after: Option<u64>,
    pipelines: PipelineCache,
    errors: Arc<ErrorSink>,
    buffers_created: AtomicU64,
    bytes_created: AtomicU64,
    largest_buffer: AtomicU64,
    largest_binding: AtomicU64,
    bytes_read_back: AtomicU64,
    unflushed_bytes: AtomicU64,
    counters: Counters,
}

impl Gpu {
    /// Finds an adapter (natively `WGPU_BACKEND=vulkan|metal|dx12|gl` chooses the backend) and creates the device.
    pub async fn new(options: GpuOptions) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: options.power_preference,
                // The adapter's real limits: webr1 sizes its tensors from them.
                apply_limit_buckets: false,
                ..Default::default()
            })
            .await
            .map_err(|e| no_adapter(&e))?;
        Self::from_adapter(adapter, options).await
    }

    /// Creates the device on a given adapter (for callers that enumerate adapters themselves).
    pub async fn from_adapter(adapter: wgpu::Adapter, options: GpuOptions) -> Result<Gpu> {
        if options.max_binding_bytes.is_some_and(|cap| cap < 4) {
            return Err(err!(Usage, "max_binding_bytes must be at least 4 bytes"));
        }
        if options.max_buffer_bytes.is_some_and(|cap| cap < 4) {
            return Err(err!(Usage, "max_buffer_bytes must be at least 4 bytes"));
        }
        let info = adapter.get_info();
        let summary = AdapterSummary {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        };
        let offered = adapter.features();
        let adapter_features = GpuFeatures {
            shader_f16: offered.contains(wgpu::Features::SHADER_F16),
            subgroups: offered.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamp_query: offered.contains(wgpu::Features::TIMESTAMP_QUERY),
        };
        let features = GpuFeatures {
            shader_f16: adapter_features.shader_f16 && !options.force_f32,
            subgroups: adapter_features.subgroups && !options.force_f32,
            ..adapter_features
        };
        let (device, queue) = request_device(&adapter, &features, &summary).await?;
        let limits = device.limits();
        let max_buffer_bytes =
            options.max_buffer_bytes.map_or(limits.max_buffer_size, |cap| cap.min(limits.max_buffer_size));
        let device_max = limits.max_storage_buffer_binding_size.min(max_buffer_bytes);
        let max_binding_bytes = options.max_binding_bytes.map_or(device_max, |cap| cap.min(device_max)) & !3;

        let errors = Arc::new(ErrorSink::default());
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e| sink.record(e)));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| sink.lose(reason, message));

        Ok(Gpu {
            device,
            queue,
            adapter: summary,
            adapter_features,
            features,
            limits,
            max_binding_bytes,
            max_buffer_bytes,
            fail_allocations_after: options.fail_allocations_after,
            pipelines: PipelineCache::default(),
            errors,
            buffers_created: AtomicU64::new(0),
            bytes_created: AtomicU64::new(0),
            largest_buffer: AtomicU64::new(0),
            largest_binding: AtomicU64::new(0),
            bytes_read_back: AtomicU64::new(0),
            unflushed_bytes: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.adapter
    }

    /// The optional features enabled on the device; shaders choose their variants from these.
    pub fn features(&self) -> GpuFeatures {
        self.features
    }

    /// The optional features the adapter offered (what the device would have without `force_f32`).
    pub fn adapter_features(&self) -> GpuFeatures {
        self.adapter_features
    }

    /// The device's limits: the adapter's own, as requested.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The most bytes one storage binding (and so one [`crate::gpu::Tensor`]) may hold: the device's
    /// `max_storage_buffer_binding_size` (and `max_buffer_size`), lowered to [`GpuOptions::max_binding_bytes`], a
    /// multiple of 4.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    /// The most bytes one buffer may hold: the device's `max_buffer_size`, lowered to [`GpuOptions::max_buffer_bytes`].
    pub fn max_buffer_bytes(&self) -> u64 {
        self.max_buffer_bytes
    }

    pub fn pipelines(&self) -> &PipelineCache {
        &self.pipelines
    }

    /// The adapter, features and limits of note, in one line per topic.
    pub fn summary(&self) -> String {
        let l = &self.limits;
        format!(
            "adapter: {}\nfeatures enabled: {}\nadapter offers: {}\nlimits: storage binding {} B, buffer {} B, \
             workgroup storage {} B, invocations/workgroup {}, workgroups/dimension {}, storage buffers/stage {}; \
             binding cap used {} B, buffer cap used {} B",
            self.adapter,
            self.features,
            self.adapter_features,
            l.max_storage_buffer_binding_size,
            l.max_buffer_size,
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
            self.max_binding_bytes,
            self.max_buffer_bytes,
        )
    }

    /// Creates a buffer, counted in [`Gpu::buffers_created`]. Sizes above [`Gpu::max_buffer_bytes`] are a
    /// `gpu.limits` error; to learn whether the allocation itself succeeded, create it inside an [`AllocScope`].
    pub fn create_buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        if size > self.max_buffer_bytes {
            return Err(err!(
                GpuLimits,
                "{label}: a buffer of {size} bytes is larger than the {} bytes one buffer may hold here \
                 (max_buffer_size)",
                self.max_buffer_bytes
            ));
        }
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
        BUFFERS_CREATED_IN_PROCESS.fetch_add(1, Ordering::Relaxed);
        let before = self.bytes_created.fetch_add(size, Ordering::Relaxed);
        self.largest_buffer.fetch_max(size, Ordering::Relaxed);
        let fail = self.fail_allocations_after.is_some_and(|after| before + size > after);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: if fail { self.limits.max_buffer_size.saturating_add(4) } else { size },
            usage,
            mapped_at_creation: false,
        }))
    }

    /// Buffers created through [`Gpu::create_buffer`] so far (tensors, uniforms, staging): decode must not add any.
    pub fn buffers_created(&self) -> u64 {
        self.buffers_created.load(Ordering::Relaxed)
    }

    /// The largest buffer created through [`Gpu::create_buffer`] so far, in bytes.
    pub fn largest_buffer(&self) -> u64 {
        self.largest_buffer.load(Ordering::Relaxed)
    }

    /// The largest range of a buffer bound to a dispatch so far ([`crate::gpu::Dispatch::new`]), in bytes: never
    /// more than [`Gpu::max_binding_bytes`] for storage bindings.
    pub fn largest_binding(&self) -> u64 {
        self.largest_binding.load(Ordering::Relaxed)
    }

    pub(crate) fn count_binding(&self, bytes: u64) {
        self.largest_binding.fetch_max(bytes, Ordering::Relaxed);
    }

    /// Bytes copied from the GPU to the CPU through [`crate::gpu::Readback`] since the device was created.
    pub fn bytes_read_back(&self) -> u64 {
        self.bytes_read_back.load(Ordering::Relaxed)
    }

    pub(crate) fn count_read_back(&self, bytes: u64) {
        self.bytes_read_back.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of the buffers counted by [`Gpu::buffers_created`].
    pub fn bytes_created(&self) -> u64 {
        self.bytes_created.load(Ordering::Relaxed)
    }

    /// Writes `data` at `offset` of `buffer` through the queue, in bounded chunks, flushing every 64 MiB.
    /// `offset` and `data.len()` must be multiples of 4 (WebGPU's copy alignment).
    pub fn write_buffer(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        if offset % 4 != 0 || data.len() % 4 != 0 {
            return Err(err!(Usage, "buffer writes need 4-byte alignment (offset {offset}, {} bytes)", data.len()));
        }
        if offset + data.len() as u64 > buffer.size() {
            return Err(err!(
                Usage,
                "a write of {} bytes at {offset} passes the end of a {}-byte buffer",
                data.len(),
                buffer.size()
            ));
        }
        for (i, chunk) in data.chunks(WRITE_CHUNK).enumerate() {
            self.queue.write_buffer(buffer, offset + (i * WRITE_CHUNK) as u64, chunk);
            let pending = self.unflushed_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            if pending >= FLUSH_BYTES {
                self.flush_writes()?;
            }
        }
        Ok(())
    }

    /// Submits the queued writes, and natively waits for them so their staging memory is released.
    pub fn flush_writes(&self) -> Result<()> {
        self.unflushed_bytes.store(0, Ordering::Relaxed);
        self.submit_commands(std::iter::empty());
        self.wait_idle()
    }

    /// What [`Gpu::wait`] and [`Gpu::dispatches_encoded`] count (`gpu::profile`).
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Natively, blocks in `device.poll` until `until` (or all submitted work) has finished and runs pending callbacks
    /// (buffer maps). Only [`Gpu::wait`] calls it, so that every wait is counted.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn poll_until(&self, until: Option<&super::profile::Submission>) -> Result<()> {
        let poll = wgpu::PollType::Wait { submission_index: until.map(|s| s.index().clone()), timeout: None };
        self.device.poll(poll).map_err(|e| match self.lost_reason() {
            Some(why) => lost(&why),
            None => err!(GpuDeviceLost, "waiting for the GPU failed: {e}"),
        })?;
        Ok(())
    }

    /// The first error the device reported outside an error scope since the last check (a rejected dispatch, a
    /// shader that did not compile), or the loss of the device. Readbacks call it, so a failed kernel is never read
    /// as data. The error is cleared by reading it; device loss is permanent.
    pub fn check(&self) -> Result<()> {
        if let Some(why) = self.lost_reason() {
            return Err(lost(&why));
        }
        match self.errors.first.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// A `gpu.device_lost` error when the device was lost (a driver reset, [`wgpu::Device::destroy`], a browser that
    /// reclaimed it): permanent, unlike the errors [`Gpu::check`] clears. A new [`Gpu`] is needed to go on.
    pub fn lost(&self) -> Option<Error> {
        self.lost_reason().map(|why| lost(&why))
    }

    /// After an operation failed: gives a device loss time to be reported. In the browser (up to ~100 ms),
    /// `GPUDevice.lost` resolves on a later turn of the event loop than the failed `mapAsync`. Natively, a destroyed
    /// device refuses maps at once but reports its loss only from a `device.poll` that finds its queue empty, so this
    /// waits for the queue, up to ~2 s.
    pub async fn settle_loss(&self) {
        for _ in 0..20 {
            if self.lost_reason().is_some() {
                return;
            }
            #[cfg(target_arch = "wasm32")]
            next_tick(5).await;
            #[cfg(not(target_arch = "wasm32"))]
            {
                // Waits (bounded) for what was submitted to finish; an error here is the loss itself or the timeout,
                // and either way the loop looks again.
                let all = wgpu::PollType::Wait {
                    submission_index: None,
                    timeout: Some(std::time::Duration::from_millis(100)),
                };
                let _ = self.device.poll(all);
            }
        }
    }

    fn lost_reason(&self) -> Option<String> {
        self.errors.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts catching allocation failures: buffers created until [`AllocScope::finish`] report out-of-memory and
    /// validation errors there, as values (WebGPU has no way to ask for free memory beforehand).
    pub fn alloc_scope(&self) -> AllocScope {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        AllocScope { out_of_memory, validation }
    }
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter)
            .field("features", &self.features)
            .field("max_binding_bytes", &self.max_binding_bytes)
            .finish_non_exhaustive()
    }
}

/// Error scopes around a group of allocations; see [`Gpu::alloc_scope`]. Scopes nest: finish them in reverse order of
/// creation. Natively the scope stack is per thread: finish a scope on the thread that opened it.
#[must_use = "an allocation scope reports its errors only from finish()"]
pub struct AllocScope {
    // Dropped (popped) in declaration order: the inner scope first.
    out_of_memory: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl AllocScope {
    /// Ends the scope: `gpu.out_of_memory` if an allocation failed, `gpu.validation` if an operation was rejected.
    /// `what` names the allocations for the message ("the weights of layer 3").
    pub async fn finish(self, what: &str) -> Result<()> {
        let out_of_memory = self.out_of_memory.pop().await;
        let validation = self.validation.pop().await;
        match out_of_memory.or(validation) {
            Some(error) => Err(from_wgpu_error(&error, &format!("allocating {what}"))),
            None => Ok(()),
        }
    }
}

async fn request_device(
    adapter: &wgpu::Adapter,
    features: &GpuFeatures,
    summary: &AdapterSummary,
) -> Result<(wgpu::Device, wgpu::Queue)> {
    let mut required = wgpu::Features::empty();
    required.set(wgpu::Features::SHADER_F16, features.shader_f16);
    required.set(wgpu::Features::SUBGROUP, features.subgroups);
    required.set(wgpu::Features::TIMESTAMP_QUERY, features.timestamp_query);
    adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("webr1"),
            required_features: required,
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            // A few large buffers: favour memory over sub-allocation speed.
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
        })
        .await
        .map_err(|e| err!(GpuDevice, "the GPU adapter {summary} refused to create a device ({features}): {e}"))
}

/// Resolves after `ms` milliseconds on the browser's event loop (`setTimeout`, in a page or a worker).
#[cfg(target_arch = "wasm32")]
async fn next_tick(ms: i32) {
    use wasm_bindgen::{JsCast, JsValue};
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let set_timeout = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"));
        if let Ok(f) = set_timeout.and_then(|f| f.dyn_into::<js_sys::Function>()) {
            let _ = f.call2(&JsValue::NULL, &resolve, &JsValue::from(ms));
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

fn lost(why: &str) -> Error {
    Error::new(ErrorCode::GpuDeviceLost, format!("the GPU device was lost ({why}); reload the model to continue"))
}

fn no_adapter(e: &wgpu::RequestAdapterError) -> Error {
    #[cfg(target_arch = "wasm32")]
    let how = "this browser offers no WebGPU adapter. Use a browser with WebGPU switched on: Chrome or Edge 113+ \
               (on Linux start it with --enable-unsafe-webgpu --enable-features=Vulkan, or set \
               chrome://flags/#enable-unsafe-webgpu), Safari 26+, or Firefox 141+ on Windows; WebGPU also needs a \
               secure context (https:// or localhost) and a GPU driver the browser does not block";
    #[cfg(not(target_arch = "wasm32"))]
    let how =
        "no GPU adapter was found. webr1 needs Vulkan (Linux, Windows), Metal (macOS) or DX12 (Windows) drivers; \
               on Linux without a GPU, Mesa's software Vulkan driver works (Debian/Ubuntu: apt install \
               mesa-vulkan-drivers). WGPU_BACKEND=vulkan|metal|dx12|gl chooses a backend";
    err!(WebgpuUnavailable, "{how} ({e})")
}
