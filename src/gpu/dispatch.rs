//! A prepared kernel launch: pipeline, bind group and workgroup count, built once and recorded as often as needed.
//!
//! Op functions ([`crate::gpu::ops`]) validate their tensors, pick the shader variant and return a [`Dispatch`]; they
//! never submit. The forward pass builds its list of dispatches once per shape and replays it, one command buffer per
//! step (ARCHITECTURE.md §5): building allocates (a small uniform buffer of parameters, a bind group), recording does
//! not.

use super::context::Gpu;
use super::preprocess::Macros;
use super::profile::{op_kind, Access, Bound, Submission};
use super::tensor::Tensor;
use crate::{err, Result};

/// One kernel launch, ready to record.
#[derive(Debug, Clone)]
pub struct Dispatch {
    label: String,
    /// What a profile groups it under ([`crate::gpu::profile::op_kind`]).
    op: String,
    /// The buffer ranges bound and how the kernel touches them, for the profile's byte counts.
    bound: Vec<Bound>,
    /// The kernel, its macros and its parameters, for comparing dispatch lists ([`Dispatch::describe`]).
    signature: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl Dispatch {
    /// Records the launch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    /// The op kind and weight type a profile groups this dispatch under (`matmul_vec Q4_K`, `rms_norm`).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// Every binding's buffer range and what the kernel reads and writes of it ([`crate::gpu::profile`]).
    pub fn bound(&self) -> &[Bound] {
        &self.bound
    }

    /// One line that names the kernel (`shader::entry`), its macros, its workgroup grid and its parameters (the
    /// uniform's words: the shapes it runs at). Two dispatch lists that describe alike run the same kernels at the
    /// same shapes.
    pub fn describe(&self) -> String {
        let [x, y, z] = self.workgroups;
        format!("{} grid {x}x{y}x{z} {}", self.label, self.signature)
    }
}

impl Gpu {
    /// Records `dispatches` in order into one compute pass of `encoder`, counted in [`Gpu::dispatches_encoded`].
    /// Each dispatch sees the writes of the ones before it (WebGPU orders storage accesses between dispatches of a
    /// pass).
    pub fn encode<'d>(&self, encoder: &mut wgpu::CommandEncoder, dispatches: impl IntoIterator<Item = &'d Dispatch>) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        let mut n = 0;
        for dispatch in dispatches {
            dispatch.record(&mut pass);
            n += 1;
        }
        self.count_dispatches(n);
    }

    /// Submits `dispatches` as one command buffer.
    pub fn submit<'d>(&self, dispatches: impl IntoIterator<Item = &'d Dispatch>) -> Submission {
        let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        self.encode(&mut encoder, dispatches);
        self.submit_commands([encoder.finish()])
    }
}

/// What a bind group entry binds.
pub enum Bind<'a> {
    /// A whole tensor.
    Tensor(&'a Tensor),
    /// A range of a buffer (offset a multiple of `min_storage_buffer_offset_alignment`, usually 256).
    Buffer(wgpu::BufferBinding<'a>),
    /// A whole tensor of which the kernel touches what `Access` says, where that differs from what its WGSL
    /// declaration implies (see [`crate::gpu::profile`]): part of it that the step decides, or a `read_write` binding
    /// that is also read. Only the profile's byte counts use it.
    Declared(&'a Tensor, Access),
}

/// What an op function supplies to build a [`Dispatch`].
pub struct Launch<'a> {
    /// The shader's file stem (`"rms_norm"`) and entry point.
    pub shader: &'static str,
    pub entry: &'static str,
    pub macros: Macros,
    /// The bytes of the uniform at binding 0 (a WGSL `Params` struct; padded here to a multiple of 16 bytes), or
    /// empty when the shader has no uniform.
    pub params: &'a [u8],
    /// The other bindings, numbered on from the uniform (1, 2, ...; from 0 without one); `None` skips a number whose
    /// binding this entry point does not use.
    pub bindings: Vec<Option<Bind<'a>>>,
    pub workgroups: [u32; 3],
}

impl Dispatch {
    /// Compiles (or reuses) the pipeline and builds the bind group for `launch`. This allocates the uniform buffer:
    /// build dispatches once per shape, not per step.
    pub fn new(gpu: &Gpu, launch: Launch<'_>) -> Result<Dispatch> {
        let pipeline = gpu.pipelines().get(gpu.device(), launch.shader, launch.entry, &launch.macros)?;
        let label = format!("{}::{}", launch.shader, launch.entry);
        let words: Vec<String> =
            launch.params.chunks(4).map(|w| w.iter().rev().map(|b| format!("{b:02x}")).collect()).collect();
        let signature = format!("[{}] params [{}]", launch.macros.describe(), words.join(" "));
        let uniform = match launch.params.is_empty() {
            true => None,
            false => {
                let mut bytes = launch.params.to_vec();
                bytes.resize(bytes.len().next_multiple_of(16), 0);
                let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
                let buffer = gpu.create_buffer(&format!("{label} params"), bytes.len() as u64, usage)?;
                gpu.write_buffer(&buffer, 0, &bytes)?;
                Some(buffer)
            }
        };
        let first = u32::from(uniform.is_some());
        let declared = gpu.pipelines().declared_bindings(launch.shader, &launch.macros)?;
        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = Vec::new();
        let mut bound = Vec::new();
        if let Some(buffer) = &uniform {
            entries.push(wgpu::BindGroupEntry { binding: 0, resource: buffer.as_entire_binding() });
            bound.push(Bound {
                binding: 0,
                buffer: buffer.clone(),
                offset: 0,
                size: buffer.size(),
                access: Access::READ,
            });
        }
        for (i, bind) in launch.bindings.iter().enumerate() {
            let binding = first + i as u32;
            let default = declared.get(&binding).map_or(Access::READ, |d| d.default_access());
            let (resource, record) = match bind {
                Some(Bind::Tensor(t)) => (t.binding(), tensor_range(binding, t, default)),
                Some(Bind::Declared(t, access)) => (t.binding(), tensor_range(binding, t, *access)),
                Some(Bind::Buffer(b)) => {
                    let size = b.size.map_or(b.buffer.size().saturating_sub(b.offset), |s| s.get());
                    let record = Bound { binding, buffer: b.buffer.clone(), offset: b.offset, size, access: default };
                    (wgpu::BindingResource::Buffer(b.clone()), record)
                }
                None => continue,
            };
            if let wgpu::BindingResource::Buffer(b) = &resource {
                gpu.count_binding(b.size.map_or(b.buffer.size().saturating_sub(b.offset), |s| s.get()));
            }
            entries.push(wgpu::BindGroupEntry { binding, resource });
            bound.push(record);
        }
        let bind_group = gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let op = op_kind(launch.shader, launch.entry, &launch.macros);
        Ok(Dispatch { label, op, bound, signature, pipeline, bind_group, workgroups: launch.workgroups })
    }
}

/// The data bytes a tensor binding covers ([`Tensor::binding`] rounds the range up to whole words; the padding is not
/// counted).
fn tensor_range(binding: u32, t: &Tensor, access: Access) -> Bound {
    Bound { binding, buffer: t.buffer().clone(), offset: t.offset(), size: t.byte_size(), access }
}

/// The grid for `groups` workgroups in a row: `[groups, 1, 1]`, or folded into two dimensions when `groups` passes
/// the device's `max_compute_workgroups_per_dimension` (shaders unfold it with `flat_workgroup` from common.wgsl and
/// ignore the spare workgroups at the end).
pub fn grid(gpu: &Gpu, what: &str, groups: u32) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension.max(1);
    if groups <= max {
        return Ok([groups, 1, 1]);
    }
    let y = groups.div_ceil(max);
    if y > max {
        return Err(err!(GpuLimits, "{what}: {groups} workgroups are more than this GPU can launch ({max} × {max})"));
    }
    Ok([groups.div_ceil(y), y, 1])
}
