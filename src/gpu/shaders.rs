//! The WGSL sources, embedded in the binary, and the cache of compiled compute pipelines.
//!
//! One file per op family in `shaders/` (`shaders/rms_norm.wgsl` holds what [`crate::gpu::ops::rms_norm()`] dispatches).
//! A pipeline is compiled once per (shader, entry point, [`Macros`]) and reused; the shader module is shared by the
//! entry points of one (shader, macros) pair.
//!
//! Pipelines use **automatic layouts** (`layout: None`): the bind group layout is derived from what the entry point
//! actually uses, so a shader and its bindings cannot drift apart, and `#ifdef`ed bindings need no matching Rust code.
//! The price, which callers must respect:
//! - a bind group must be created from `pipeline.get_bind_group_layout(0)` of the pipeline it is used with (WebGPU
//!   does not let two pipelines share an automatic layout), which [`crate::gpu::Dispatch`] does;
//! - a binding that the entry point never reads is not in its layout and must not be in its bind group (the element-wise
//!   `scale` entry has no `b`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::preprocess::{preprocess, Macros};
use super::profile::{declared_bindings, Declarations};
use crate::{err, Result};

/// Every embedded shader: file stem → source. `#include "x.wgsl"` resolves here too.
pub const SHADERS: &[(&str, &str)] = &[
    ("attention_decode", include_str!("../../shaders/attention_decode.wgsl")),
    ("attention_prefill", include_str!("../../shaders/attention_prefill.wgsl")),
    ("common", include_str!("../../shaders/common.wgsl")),
    ("dequant", include_str!("../../shaders/dequant.wgsl")),
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("get_rows", include_str!("../../shaders/get_rows.wgsl")),
    ("kv_store", include_str!("../../shaders/kv_store.wgsl")),
    ("mask", include_str!("../../shaders/mask.wgsl")),
    ("matmul_tiled", include_str!("../../shaders/matmul_tiled.wgsl")),
    ("matmul_vec", include_str!("../../shaders/matmul_vec.wgsl")),
    ("nll", include_str!("../../shaders/nll.wgsl")),
    ("rms_norm", include_str!("../../shaders/rms_norm.wgsl")),
    ("rope", include_str!("../../shaders/rope.wgsl")),
    ("sample", include_str!("../../shaders/sample.wgsl")),
];

/// The source of an embedded shader, by file stem (`"rms_norm"`).
pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The WGSL of shader `name` specialised with `macros`, as the GPU will compile it.
pub fn preprocess_shader(name: &str, macros: &Macros) -> Result<String> {
    preprocess(name, macros, &shader_source)
}

/// What identifies a compiled pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub macros: Macros,
}

/// Compiled pipelines and shader modules, created on first use. Shared by all users of one [`crate::gpu::Gpu`].
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<(&'static str, Macros), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Each module's binding declarations (read, read_write, uniform), for the profile's byte counts.
    declared: Mutex<HashMap<(&'static str, Macros), Declarations>>,
}

impl PipelineCache {
    /// The pipeline for `entry` of `shader` with `macros`, compiling it the first time.
    ///
    /// Preprocessing errors come back here as `gpu.shader`; WGSL compilation errors are reported by the device
    /// asynchronously and surface from [`crate::gpu::Gpu::check`] (and so from every readback).
    pub fn get(
        &self,
        device: &wgpu::Device,
        shader: &'static str,
        entry: &'static str,
        macros: &Macros,
    ) -> Result<wgpu::ComputePipeline> {
        let key = PipelineKey { shader, entry, macros: macros.clone() };
        if let Some(pipeline) = lock(&self.pipelines).get(&key) {
            return Ok(pipeline.clone());
        }
        let module = self.module(device, shader, macros)?;
        let label = format!("{shader}::{entry} [{}]", macros.describe());
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        lock(&self.pipelines).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// How many pipelines have been compiled.
    pub fn len(&self) -> usize {
        lock(&self.pipelines).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How shader `shader` with `macros` declares its bindings, by binding number (`gpu::profile`).
    pub fn declared_bindings(&self, shader: &'static str, macros: &Macros) -> Result<Declarations> {
        let key = (shader, macros.clone());
        if let Some(declared) = lock(&self.declared).get(&key) {
            return Ok(declared.clone());
        }
        let declared = Arc::new(declared_bindings(&preprocess_shader(shader, macros)?));
        lock(&self.declared).insert(key, declared.clone());
        Ok(declared)
    }

    fn module(&self, device: &wgpu::Device, shader: &'static str, macros: &Macros) -> Result<wgpu::ShaderModule> {
        let key = (shader, macros.clone());
        if let Some(module) = lock(&self.modules).get(&key) {
            return Ok(module.clone());
        }
        if shader_source(shader).is_none() {
            return Err(err!(GpuShader, "unknown shader '{shader}'"));
        }
        let source = preprocess_shader(shader, macros)?;
        lock(&self.declared).insert(key.clone(), Arc::new(declared_bindings(&source)));
        let label = format!("{shader}.wgsl [{}]", macros.describe());
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        lock(&self.modules).insert(key, module.clone());
        Ok(module)
    }
}

/// Locks a cache map; a poisoned lock (a panic elsewhere while holding it) still holds a consistent map.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_shader_preprocesses_in_its_variants() {
        let variants = [
            Macros::new().u32("WORKGROUP_SIZE", 256),
            Macros::new().u32("WORKGROUP_SIZE", 64).bool("F16", true),
            Macros::new().u32("WORKGROUP_SIZE", 256).bool("SUBGROUPS", true).u32("MIN_SUBGROUP_SIZE", 4),
            Macros::new().u32("WORKGROUP_SIZE", 256).bool("IN_PLACE", true).bool("F16", true),
        ];
        for (name, _) in SHADERS {
            for macros in &variants {
                let wgsl = preprocess_shader(name, macros).unwrap_or_else(|e| panic!("{name}: {e}"));
                let directive = wgsl.lines().find(|l| l.trim_start().starts_with('#'));
                assert_eq!(directive, None, "{name} [{}]: a directive survived", macros.describe());
                let enables_f16 = wgsl.lines().any(|l| l.trim() == "enable f16;");
                assert_eq!(enables_f16, macros.is_defined("F16"), "{name} [{}]", macros.describe());
            }
        }
    }

    #[test]
    fn shader_files_follow_the_house_rules() {
        for (name, source) in SHADERS {
            if *name != "common" {
                assert!(source.starts_with("#include \"common.wgsl\""), "{name}.wgsl must include common.wgsl first");
            }
            for line in source.lines().filter(|l| l.contains("@binding(") && l.contains("var<storage")) {
                assert!(line.contains("// ["), "{name}.wgsl: a storage binding without a shape comment: {line}");
            }
        }
    }
}
