//! What the GPU was asked to do, counted where it happens: the measuring side of `webr1 bench --profile`
//! (README.md, `bench --profile`).
//!
//! - **Counters** on [`Gpu`]: dispatches encoded ([`Gpu::encode`] and [`DispatchTimer::submit`] count them as they
//!   record them), submissions ([`Gpu::submit_commands`], which every submit of the engine goes through), and waits
//!   ([`Gpu::wait`], the one function through which webr1 waits for the GPU: natively `device.poll`, in the browser
//!   the `mapAsync` of a readback).
//! - **Idle waits**: a wait is *idle* when nothing was submitted after the work it waits for, so the GPU runs dry and
//!   sits idle until the CPU submits again; it is *overlapped* when later submissions are queued behind that work
//!   (a token loop that submits step t+1 before reading token t waits overlapped). [`Gpu::waits`] counts both,
//!   [`Gpu::idle_waits`] the idle ones.
//! - **Bytes touched** per dispatch: [`Dispatch::new`](crate::gpu::Dispatch::new) records the buffer range bound to
//!   each binding and how the kernel touches it ([`Access`]): by default as the WGSL declares the binding
//!   (`var<storage, read>` and uniforms are read whole, `var<storage, read_write>` written whole), or as the op
//!   function declares it with [`Bind::Declared`](crate::gpu::Bind::Declared) where a kernel touches part of a
//!   binding that the step decides (the embedding rows of the step's tokens, the cache rows attention attends), or
//!   reads a `read_write` binding it updates in place. The counts are the distinct bytes a dispatch may touch, not how
//!   often it touches them (a tiled GEMM reads its tiles of x many times), and a kernel that skips work at run time
//!   (the sampler's searches under greedy settings) counts what it is bound to.
//! - **GPU time** per dispatch ([`DispatchTimer`]): with the adapter's `timestamp-query` feature, each dispatch in a
//!   compute pass of its own with timestamps at its start and end. This is a separate way of submitting, used only
//!   while profiling; the normal path ([`Gpu::submit`]) writes no timestamps and records one pass. (wgpu's
//!   `TIMESTAMP_QUERY_INSIDE_PASSES` is not used: browsers do not offer it, and pass timestamps work on both targets.)

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use super::context::Gpu;
use super::dispatch::Dispatch;
use super::preprocess::Macros;
use super::tensor::Readback;
use crate::{err, Result};

/// How much of a binding one run of a dispatch reads or writes, where the step decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Nothing,
    /// The whole bound range.
    Whole,
    /// `bytes` for each token of the step (the embedding rows of the step's tokens).
    PerToken(u64),
    /// `bytes` for every `rows` rows of the KV cache that the step attends (`n_past + n_tokens` rows, rounded up to a
    /// whole number of groups of `rows`).
    PerCachedRows {
        bytes: u64,
        rows: u64,
    },
}

impl Extent {
    /// Bytes for a step of `n_tokens` tokens after `n_past` cached ones, at most `bound` (the bound range).
    pub fn bytes(self, step: StepShape, bound: u64) -> u64 {
        let bytes = match self {
            Extent::Nothing => 0,
            Extent::Whole => bound,
            Extent::PerToken(bytes) => bytes.saturating_mul(step.n_tokens as u64),
            Extent::PerCachedRows { bytes, rows } => {
                let attended = (step.n_past + step.n_tokens) as u64;
                bytes.saturating_mul(attended.div_ceil(rows.max(1)))
            }
        };
        bytes.min(bound)
    }
}

/// What a dispatch reads and writes of one binding per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read: Extent,
    pub write: Extent,
}

impl Access {
    /// Read whole, not written: the default of a `var<storage, read>` binding or a uniform.
    pub const READ: Access = Access { read: Extent::Whole, write: Extent::Nothing };
    /// Written whole, not read: the default of a `var<storage, read_write>` binding.
    pub const WRITE: Access = Access { read: Extent::Nothing, write: Extent::Whole };
    /// Read and written whole: a binding updated in place.
    pub const READ_WRITE: Access = Access { read: Extent::Whole, write: Extent::Whole };

    /// Reads `extent`, writes nothing.
    pub fn reads(extent: Extent) -> Access {
        Access { read: extent, write: Extent::Nothing }
    }

    /// Writes `extent`, reads nothing.
    pub fn writes(extent: Extent) -> Access {
        Access { read: Extent::Nothing, write: extent }
    }
}

/// A binding as a WGSL shader declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgslBinding {
    Uniform,
    /// `var<storage, read>` (or `var<storage>`).
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

impl WgslBinding {
    /// What a kernel touches of a binding declared so, unless its op function says otherwise.
    pub fn default_access(self) -> Access {
        match self {
            WgslBinding::Uniform | WgslBinding::Read => Access::READ,
            WgslBinding::ReadWrite => Access::WRITE,
        }
    }
}

/// The `@group(0) @binding(N) var<...>` declarations of preprocessed WGSL, by binding number (comments skipped).
pub fn declared_bindings(wgsl: &str) -> HashMap<u32, WgslBinding> {
    let mut out = HashMap::new();
    for line in wgsl.lines() {
        let code = line.split("//").next().unwrap_or("");
        let Some(at) = code.find("@binding(") else { continue };
        let rest = &code[at + "@binding(".len()..];
        let Some(number) = rest.split(')').next().and_then(|n| n.trim().parse::<u32>().ok()) else { continue };
        let compact: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
        let declared = if compact.contains("var<uniform>") {
            WgslBinding::Uniform
        } else if compact.contains("var<storage,read_write>") {
            WgslBinding::ReadWrite
        } else if compact.contains("var<storage,read>") || compact.contains("var<storage>") {
            WgslBinding::Read
        } else {
            continue;
        };
        out.insert(number, declared);
    }
    out
}

/// The buffer range bound to one binding of a dispatch and how the kernel touches it, recorded by
/// [`Dispatch::new`](crate::gpu::Dispatch::new).
#[derive(Debug, Clone)]
pub struct Bound {
    pub binding: u32,
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub access: Access,
}

impl Bound {
    pub fn bytes_read(&self, step: StepShape) -> u64 {
        self.access.read.bytes(step, self.size)
    }

    pub fn bytes_written(&self, step: StepShape) -> u64 {
        self.access.write.bytes(step, self.size)
    }
}

/// How a step's dispatches are submitted, given the step they compute: [`Gpu::submit`] normally; the profiler's
/// hook tallies or times them (`Session::feed_with`).
pub type SubmitStep<'a> = dyn FnMut(&Gpu, &[Dispatch], StepShape) -> Result<()> + 'a;

/// A shader's binding declarations by binding number ([`declared_bindings`]).
pub type Declarations = std::sync::Arc<HashMap<u32, WgslBinding>>;

/// The step a submission computes: `n_tokens` tokens after `n_past` cached ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepShape {
    pub n_past: usize,
    pub n_tokens: usize,
}

/// The name a profile groups a dispatch under: the shader file, its entry point where it differs (`elementwise::add`,
/// `attention_decode::attention_combine`), and the weight type its `TYPE_<name>` macro selects (`matmul_vec Q4_K`).
/// New kernels group themselves by these conventions.
pub fn op_kind(shader: &str, entry: &str, macros: &Macros) -> String {
    let mut name = match shader == entry {
        true => shader.to_string(),
        false => format!("{shader}::{entry}"),
    };
    let ty = macros.describe();
    let ty = ty.split(' ').filter_map(|def| def.strip_prefix("TYPE_")).filter_map(|def| def.split('=').next()).next();
    if let Some(ty) = ty {
        name.push(' ');
        name.push_str(ty);
    }
    name
}

/// Counters of what was asked of a [`Gpu`]; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    dispatches: AtomicU64,
    submits: AtomicU64,
    waits: AtomicU64,
    idle_waits: AtomicU64,
}

/// A command buffer submitted through [`Gpu::submit_commands`]: what [`Gpu::wait`] can wait for.
#[derive(Debug, Clone)]
pub struct Submission {
    index: wgpu::SubmissionIndex,
    /// 1 for the device's first submission, 2 for the next, ...
    serial: u64,
}

impl Submission {
    pub fn index(&self) -> &wgpu::SubmissionIndex {
        &self.index
    }
}

impl Gpu {
    /// Dispatches recorded into command buffers so far ([`Gpu::encode`], [`DispatchTimer::submit`]).
    pub fn dispatches_encoded(&self) -> u64 {
        self.counters().dispatches.load(Ordering::Relaxed)
    }

    /// Command buffers (or flushes of queued writes) submitted through [`Gpu::submit_commands`] so far.
    pub fn submits(&self) -> u64 {
        self.counters().submits.load(Ordering::Relaxed)
    }

    /// Times webr1 waited for the GPU ([`Gpu::wait`]): natively every blocking `device.poll`, in the browser every
    /// awaited buffer map.
    pub fn waits(&self) -> u64 {
        self.counters().waits.load(Ordering::Relaxed)
    }

    /// The [`Gpu::waits`] that left the GPU idle: nothing had been submitted after the work waited for.
    pub fn idle_waits(&self) -> u64 {
        self.counters().idle_waits.load(Ordering::Relaxed)
    }

    pub(crate) fn count_dispatches(&self, n: u64) {
        self.counters().dispatches.fetch_add(n, Ordering::Relaxed);
    }

    /// Submits command buffers to the queue, counted in [`Gpu::submits`]; every submit of the engine goes through
    /// here, so that [`Gpu::wait`] knows whether a wait leaves the GPU idle.
    pub fn submit_commands(&self, buffers: impl IntoIterator<Item = wgpu::CommandBuffer>) -> Submission {
        let index = self.queue().submit(buffers);
        let serial = self.counters().submits.fetch_add(1, Ordering::Relaxed) + 1;
        Submission { index, serial }
    }

    /// The one function through which webr1 waits for the GPU, counted in [`Gpu::waits`] (and [`Gpu::idle_waits`]
    /// when nothing was submitted after `until`). `until` is a submission, or `None` for all submitted work; `mapped`
    /// is what the caller waits on (a buffer map's completion), returned once ready.
    ///
    /// Natively this blocks in `device.poll` until `until` has finished and callbacks have run, so `mapped` is ready
    /// at once. In the browser nothing can block: the wait is the `await` of `mapped` (a `mapAsync`), which the
    /// browser completes from its event loop.
    pub async fn wait<F: Future>(&self, until: Option<&Submission>, mapped: F) -> Result<F::Output> {
        let counters = self.counters();
        counters.waits.fetch_add(1, Ordering::Relaxed);
        let latest = counters.submits.load(Ordering::Relaxed);
        if until.is_none_or(|s| s.serial >= latest) {
            counters.idle_waits.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.poll_until(until)?;
        Ok(mapped.await)
    }

    /// Natively, blocks until all submitted work has finished (one [`Gpu::wait`]). In the browser this does nothing
    /// and counts nothing: only an awaited buffer map waits there.
    pub fn wait_idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(self.wait(None, std::future::ready(())))?;
        Ok(())
    }

    /// Natively, blocks until `submission` has finished (one [`Gpu::wait`], overlapped when later work is queued).
    /// In the browser this does nothing and counts nothing.
    pub fn wait_for(&self, submission: &Submission) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(self.wait(Some(submission), std::future::ready(())))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        Ok(())
    }
}

/// GPU time per dispatch from timestamp queries: each dispatch in a compute pass of its own, with timestamps written
/// at the start and end of the pass, resolved into a buffer and read back. Only while profiling (see the module docs).
pub struct DispatchTimer {
    sets: Vec<wgpu::QuerySet>,
    resolve: wgpu::Buffer,
    readback: Readback,
    capacity: usize,
    /// Dispatches of the last [`DispatchTimer::submit`].
    pending: usize,
    /// Nanoseconds per timestamp tick.
    period: f64,
}

/// Queries per query set: wgpu's `QUERY_SET_MAX_QUERIES`, two per dispatch.
const QUERIES_PER_SET: u32 = wgpu::QUERY_SET_MAX_QUERIES;

impl DispatchTimer {
    /// A timer for lists of up to `capacity` dispatches, or `None` when the device has no `timestamp-query`.
    pub fn new(gpu: &Gpu, capacity: usize) -> Result<Option<DispatchTimer>> {
        if !gpu.features().timestamp_query {
            return Ok(None);
        }
        let queries = capacity.max(1) as u64 * 2;
        let n_sets = queries.div_ceil(u64::from(QUERIES_PER_SET));
        let sets = (0..n_sets)
            .map(|i| {
                let count = (queries - i * u64::from(QUERIES_PER_SET)).min(u64::from(QUERIES_PER_SET)) as u32;
                gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("dispatch timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                })
            })
            .collect();
        let bytes = queries * 8;
        let usage = wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC;
        let resolve = gpu.create_buffer("dispatch timestamps", bytes, usage)?;
        let readback = Readback::new(gpu, bytes)?;
        let period = f64::from(gpu.queue().get_timestamp_period());
        Ok(Some(DispatchTimer { sets, resolve, readback, capacity: capacity.max(1), pending: 0, period }))
    }

    /// Records `dispatches`, each in a compute pass of its own with timestamps, resolves the timestamps and submits.
    pub fn submit(&mut self, gpu: &Gpu, dispatches: &[Dispatch]) -> Result<Submission> {
        if dispatches.len() > self.capacity {
            return Err(err!(Usage, "{} dispatches for a timer of {}", dispatches.len(), self.capacity));
        }
        let mut encoder =
            gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timed dispatches") });
        let per_set = QUERIES_PER_SET as usize / 2;
        for (i, dispatch) in dispatches.iter().enumerate() {
            let first = ((i % per_set) * 2) as u32;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &self.sets[i / per_set],
                    beginning_of_pass_write_index: Some(first),
                    end_of_pass_write_index: Some(first + 1),
                }),
            });
            dispatch.record(&mut pass);
        }
        let queries = dispatches.len() * 2;
        for (s, set) in self.sets.iter().enumerate() {
            let start = s * QUERIES_PER_SET as usize;
            if start >= queries {
                break;
            }
            let count = (queries - start).min(QUERIES_PER_SET as usize) as u32;
            encoder.resolve_query_set(set, 0..count, &self.resolve, start as u64 * 8);
        }
        gpu.count_dispatches(dispatches.len() as u64);
        self.pending = dispatches.len();
        Ok(gpu.submit_commands([encoder.finish()]))
    }

    /// The GPU nanoseconds of each dispatch of the last [`DispatchTimer::submit`] (waits for it).
    pub async fn read(&mut self, gpu: &Gpu) -> Result<Vec<f64>> {
        let bytes = self.pending as u64 * 16;
        let data = self.readback.read(gpu, &self.resolve, 0, bytes).await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&data);
        Ok(ticks.chunks_exact(2).map(|t| t[1].saturating_sub(t[0]) as f64 * self.period).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_read_from_wgsl() {
        let wgsl = "@group(0) @binding(0) var<uniform> params: Params;\n\
                    // @group(0) @binding(1) var<storage, read_write> commented: array<u32>;\n\
                    @group(0) @binding(1) var<storage, read> w: array<u32>; // [rows, k]\n\
                    @group(0) @binding(2) var<storage> x: array<f32>;\n\
                    @group(0) @binding( 3 ) var<storage,read_write> y: array<f32>;\n";
        let d = declared_bindings(wgsl);
        assert_eq!(d.len(), 4);
        assert_eq!(d[&0], WgslBinding::Uniform);
        assert_eq!(d[&1], WgslBinding::Read);
        assert_eq!(d[&2], WgslBinding::Read);
        assert_eq!(d[&3], WgslBinding::ReadWrite);
    }

    #[test]
    fn extents_follow_the_step() {
        let step = StepShape { n_past: 9, n_tokens: 3 };
        assert_eq!(Extent::Whole.bytes(step, 100), 100);
        assert_eq!(Extent::Nothing.bytes(step, 100), 0);
        assert_eq!(Extent::PerToken(10).bytes(step, 100), 30);
        assert_eq!(Extent::PerToken(50).bytes(step, 100), 100, "never more than the bound range");
        assert_eq!(Extent::PerCachedRows { bytes: 4, rows: 1 }.bytes(step, 1000), 48);
        assert_eq!(Extent::PerCachedRows { bytes: 4, rows: 5 }.bytes(step, 1000), 12, "12 rows: 3 groups of 5");
    }

    #[test]
    fn ops_are_named_by_shader_entry_and_weight_type() {
        let q4k = Macros::new().bool("TYPE_Q4_K", true).u32("WORKGROUP_SIZE", 64).bool("F16", true);
        assert_eq!(op_kind("matmul_vec", "matmul_vec", &q4k), "matmul_vec Q4_K");
        assert_eq!(op_kind("elementwise", "add", &Macros::new()), "elementwise::add");
        assert_eq!(op_kind("get_rows", "get_rows", &Macros::new().bool("TYPE_F16", true)), "get_rows F16");
    }
}
