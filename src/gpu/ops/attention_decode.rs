//! The decode attention kernels (`shaders/attention_decode.wgsl`): one token's grouped-query attention split over the
//! context ("flash decoding"), then a combine pass; see [`super::attention`] for the semantics both attention kernels
//! share.
//!
//! The kernel's shape ([`DecodeShape`]) is chosen from the adapter by [`DecodeShape::for_device`]: on GPUs, lanes
//! across the head dimension so that a key's row is read by consecutive lanes, their dot products summed with subgroup
//! shuffles where the device has subgroups (over the lanes the adapter's smallest subgroup size guarantees to share
//! one), in workgroup memory otherwise. Any shape can be forced with [`attention_decode_with_shape`] (for tests and
//! tuning).

use super::attention::{cached_rows, check, check_shape, check_workgroup, grid_2d, AttentionIo, AttentionShape};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// How the decode kernel lays its work out: see `shaders/attention_decode.wgsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeShape {
    /// Invocations per workgroup: a multiple of `d_split`.
    pub workgroup: u32,
    /// Lanes that share a key while scoring it, each reading `head_dim / (4 · d_split)` vec4s of its K row: a power
    /// of two dividing `head_dim / 4`.
    pub d_split: u32,
    /// Keys per tile of the online softmax: a multiple of `workgroup / d_split`.
    pub tile: u32,
    /// The smallest split of the context, in keys: a multiple of `tile`.
    pub chunk: u32,
    /// The most workgroups along the context: a long context is spread over at most this many splits.
    pub max_splits: u32,
}

impl DecodeShape {
    /// The shape for this device and `shape`'s heads.
    ///
    /// - GPUs with subgroups: 128 invocations, 16 lanes per key (a K row of 128 dimensions is then read as two
    ///   256-byte f16 or 512-byte f32 segments by 16 lanes; the dot products are summed by 4 shuffles), fewer where the
    ///   adapter's smallest subgroup is smaller (Intel: 8); tiles of 64 keys; splits of at least 64 keys and at most
    ///   128 of them, so R1-Distill-Qwen-1.5B's 2 KV heads make 256 workgroups at a 16 K context and 32 at 1 K.
    /// - GPUs without subgroups (browsers that do not offer them): 64 invocations, 4 lanes per key (each reads whole
    ///   32-byte sectors of the row), the dot products summed in workgroup memory.
    /// - CPU drivers (lavapipe, SwiftShader), which run a subgroup as one SIMD vector and pay for every load whose
    ///   address differs between lanes: one lane per key, so that the queries are read alike by every lane, 64
    ///   invocations and splits of at least 128 keys (fewer workgroups: each costs a fixed setup).
    pub fn for_device(gpu: &Gpu, shape: AttentionShape) -> DecodeShape {
        let features = gpu.features();
        let vec = shape.head_dim / 4;
        let widest = |at_most: u32| (0..=4).map(|i| 16 >> i).find(|&d: &u32| d <= at_most && vec % d == 0).unwrap_or(1);
        if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
            return DecodeShape { workgroup: 64, d_split: 1, tile: 64, chunk: 128, max_splits: 128 };
        }
        match features.subgroups {
            true => {
                let d_split = widest(16.min(features.subgroup_min_size.max(1)));
                DecodeShape { workgroup: 128, d_split, tile: 64, chunk: 64, max_splits: 128 }
            }
            false => DecodeShape { workgroup: 64, d_split: widest(4), tile: 64, chunk: 64, max_splits: 128 },
        }
    }

    /// Workgroups along the context of `shape`.
    fn n_splits(&self, shape: AttentionShape) -> u32 {
        shape.ctx.div_ceil(self.chunk).min(self.max_splits)
    }

    /// The lanes summed by shuffles: the adapter's smallest subgroup, within the workgroup; 1 without subgroups.
    fn shuffle_lanes(&self, gpu: &Gpu) -> u32 {
        let features = gpu.features();
        match features.subgroups {
            true => prev_power_of_two(features.subgroup_min_size.max(1)).min(self.workgroup),
            false => 1,
        }
    }

    /// Checks the shape against `shape` and the device; returns the macros it compiles to.
    fn compile(&self, gpu: &Gpu, shape: AttentionShape, f16: bool) -> Result<Macros> {
        let DecodeShape { workgroup, d_split, tile, chunk, max_splits } = *self;
        let vec = shape.head_dim / 4;
        let slots = workgroup / d_split.max(1);
        let valid = d_split.is_power_of_two()
            && vec % d_split == 0
            && workgroup % d_split == 0
            && tile % slots == 0
            && tile > 0
            && chunk % tile == 0
            && chunk > 0
            && max_splits > 0;
        if !valid {
            return Err(err!(
                Usage,
                "attention_decode: {self:?} needs d_split a power of two dividing head_dim / 4 ({vec}) and the \
                 workgroup, tile a multiple of workgroup / d_split, chunk a multiple of tile, and max_splits > 0"
            ));
        }
        let group = u64::from(shape.group());
        let shuffle = self.shuffle_lanes(gpu);
        let pieces = u64::from(slots) * u64::from(d_split / shuffle.min(d_split)) * group;
        // q_tile, probs, head_max, head_factor, merge_l and pieces.
        let shared = 16 * group * u64::from(vec) + 4 * group * u64::from(tile) + 12 * group + 4 * pieces;
        check_workgroup("attention_decode", gpu, workgroup, shared)?;
        let mut macros = Macros::new()
            .u32("HEAD_DIM", shape.head_dim)
            .u32("GROUP", shape.group())
            .u32("WORKGROUP", workgroup)
            .u32("D_SPLIT", d_split)
            .u32("TILE", tile)
            .u32("CHUNK", chunk)
            .bool("F16", f16);
        if gpu.features().subgroups {
            macros = macros.bool("SUBGROUPS", true).u32("SUBGROUP", shuffle);
        }
        Ok(macros)
    }
}

/// The largest power of two not above `n` (n > 0).
fn prev_power_of_two(n: u32) -> u32 {
    1 << (31 - n.leading_zeros())
}

/// The decode kernels (batch capacity 1), as described at [`attention`]: the splits, then the combine pass, with a
/// scratch tensor of their own (see [`attention_decode_partials`]), kept alive by the dispatches.
pub fn attention_decode(gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<Vec<Dispatch>> {
    let partials = attention_decode_partials(gpu, shape)?;
    attention_decode_with(gpu, io, shape, &partials)
}

/// The scratch tensor of the decode kernels for `shape` on this device: f32 `[n_head, n_splits, head_dim + 4]`, one
/// record (the sum of p·v over the split's keys, then their maximum score and the sum of p) per query head and split
/// of the context. The layers of a model run one after another and may share one (see [`attention_decode_with`]).
pub fn attention_decode_partials(gpu: &Gpu, shape: AttentionShape) -> Result<Tensor> {
    check_shape("attention_decode", shape)?;
    attention_decode_partials_for(gpu, shape, DecodeShape::for_device(gpu, shape))
}

/// The shape of [`attention_decode_partials`] for `shape` on this device, without allocating it (for the memory plan,
/// `crate::model::plan`).
pub fn attention_decode_partials_shape(gpu: &Gpu, shape: AttentionShape) -> Result<[usize; 3]> {
    check_shape("attention_decode", shape)?;
    Ok(partials_dims(shape, DecodeShape::for_device(gpu, shape)))
}

/// [`attention_decode_partials`] for the kernel shape `decode`.
pub fn attention_decode_partials_for(gpu: &Gpu, shape: AttentionShape, decode: DecodeShape) -> Result<Tensor> {
    check_shape("attention_decode", shape)?;
    Tensor::new(gpu, "attention partials", &partials_dims(shape, decode), DType::F32)
}

fn partials_dims(shape: AttentionShape, decode: DecodeShape) -> [usize; 3] {
    [shape.n_head as usize, decode.n_splits(shape) as usize, shape.head_dim as usize + 4]
}

/// [`attention_decode`] with the scratch tensor `partials` given (from [`attention_decode_partials`] for this shape).
pub fn attention_decode_with(
    gpu: &Gpu,
    io: AttentionIo<'_>,
    shape: AttentionShape,
    partials: &Tensor,
) -> Result<Vec<Dispatch>> {
    check_shape("attention_decode", shape)?;
    attention_decode_with_shape(gpu, io, shape, DecodeShape::for_device(gpu, shape), partials)
}

/// [`attention_decode_with`] in the kernel shape `decode` (with `partials` from [`attention_decode_partials_for`]),
/// for tests and tuning: any valid shape runs on any device.
pub fn attention_decode_with_shape(
    gpu: &Gpu,
    io: AttentionIo<'_>,
    shape: AttentionShape,
    decode: DecodeShape,
    partials: &Tensor,
) -> Result<Vec<Dispatch>> {
    let f16 = check("attention_decode", gpu, io, shape)?;
    let AttentionIo { q, k_cache, v_cache, out, step } = io;
    if shape.batch != 1 {
        return Err(err!(Usage, "attention_decode: the batch capacity must be 1, got {}", shape.batch));
    }
    let dims = partials_dims(shape, decode);
    if partials.dtype() != DType::F32 || partials.shape() != dims {
        return Err(err!(
            Usage,
            "attention_decode: partials must be f32 {dims:?} for {shape:?}, got {} {:?}",
            partials.dtype().name(),
            partials.shape()
        ));
    }
    if [q, k_cache, v_cache, step, out].iter().any(|t| t.same_buffer(partials)) {
        return Err(err!(Usage, "attention_decode: partials needs a buffer of its own"));
    }
    let macros = decode.compile(gpu, shape, f16)?;
    let n_splits = decode.n_splits(shape);
    let words = [shape.n_head, shape.n_head_kv, shape.ctx, n_splits, shape.scale().to_bits(), 0, 0, 0];
    // Each CHUNK of keys the step attends keeps a split busy (up to n_splits of them): its records, one per query head,
    // are written by the splits and read by the combine pass.
    let record_bytes = u64::from(shape.n_head) * u64::from(shape.head_dim + 4) * 4;
    let records = Extent::PerCachedRows { bytes: record_bytes, rows: u64::from(decode.chunk) };
    let splits = Dispatch::new(
        gpu,
        Launch {
            shader: "attention_decode",
            entry: "attention_decode",
            macros: macros.clone(),
            params: bytemuck::cast_slice(&words),
            bindings: vec![
                Some(Bind::Tensor(q)),
                Some(Bind::Declared(k_cache, cached_rows(shape, k_cache))),
                Some(Bind::Declared(v_cache, cached_rows(shape, v_cache))),
                Some(Bind::Tensor(step)),
                Some(Bind::Declared(partials, Access::writes(records))),
                None,
            ],
            workgroups: grid_2d(gpu, "attention_decode", n_splits, shape.n_head_kv)?,
        },
    )?;
    let combine = Dispatch::new(
        gpu,
        Launch {
            shader: "attention_decode",
            entry: "attention_combine",
            macros,
            params: bytemuck::cast_slice(&words),
            bindings: vec![
                None,
                None,
                None,
                Some(Bind::Tensor(step)),
                Some(Bind::Declared(partials, Access::reads(records))),
                Some(Bind::Tensor(out)),
            ],
            workgroups: grid(gpu, "attention_combine", shape.n_head)?,
        },
    )?;
    Ok(vec![splits, combine])
}
