//! The prefill attention kernel (`shaders/attention_prefill.wgsl`): flash-style causal grouped-query attention of a
//! batch of tokens over the KV cache; see [`super::attention`] for the semantics both attention kernels share.
//!
//! The kernel's tiles ([`PrefillShape`]) are chosen from the device's workgroup memory by
//! [`PrefillShape::for_device`]; any valid shape can be forced with [`attention_prefill_with_shape`] (for tests and
//! tuning).

use super::attention::{cached_rows, check, check_workgroup, grid_2d, AttentionIo, AttentionShape};
use super::index_u32;
use crate::gpu::dispatch::{Bind, Dispatch, Launch};
use crate::gpu::{Gpu, Macros};
use crate::{err, Result};

/// The prefill kernel's tiles: see `shaders/attention_prefill.wgsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillShape {
    /// Query rows ((token, head of the group) pairs) per workgroup.
    pub rows: u32,
    /// Keys per K/V tile.
    pub keys: u32,
    /// Dimensions of Q and K staged per step of the scores: `head_dim` stages the whole Q tile once.
    pub dims: u32,
    /// Keys of V staged per step (dividing `keys`).
    pub v_keys: u32,
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// The scores of an invocation: `score_rows × score_keys`, with `(rows / score_rows) · (keys / score_keys)` =
    /// `workgroup`.
    pub score_rows: u32,
    pub score_keys: u32,
    /// vec4 columns of O per invocation (its rows follow from the workgroup size).
    pub out_vecs: u32,
}

/// The most workgroup memory the prefill tiles are chosen to take: what lavapipe (the tests' device) and browsers
/// offer, so that every shape a device can be given runs in the kernel tests.
pub const PREFILL_MEMORY_CAP: u32 = 32 << 10;

impl PrefillShape {
    /// The tiles for this device: see [`PrefillShape::for_memory`].
    pub fn for_device(gpu: &Gpu, shape: AttentionShape, f16: bool) -> PrefillShape {
        PrefillShape::for_memory(shape.head_dim, f16, gpu.limits().max_compute_workgroup_storage_size)
    }

    /// The tiles for `workgroup_bytes` of workgroup memory (used up to [`PREFILL_MEMORY_CAP`]): 32 rows × 32 keys with
    /// 128 invocations, each computing 2 × 4 scores and 4 rows × 8 (or 4) columns of O. Where the memory holds them
    /// (at head_dim 128, about 30 KiB with an f16 cache: desktop GPUs and browsers offer 32 KiB or more), the whole Q
    /// tile is staged once and K and V a tile at a time; within WebGPU's guaranteed 16 KiB, Q and K are staged 32
    /// dimensions at a time and V 32, 16, 8 or 4 keys at a time. The first of [`PrefillShape::candidates`] that fits.
    pub fn for_memory(head_dim: u32, f16: bool, workgroup_bytes: u32) -> PrefillShape {
        let limit = u64::from(workgroup_bytes.min(PREFILL_MEMORY_CAP));
        let shape = AttentionShape { n_head: 1, n_head_kv: 1, head_dim, ctx: 1, batch: 1 };
        let candidates = PrefillShape::candidates(head_dim);
        let fits = |s: &&PrefillShape| s.workgroup_bytes(shape, f16) <= limit && s.validate(shape).is_ok();
        *candidates.iter().find(fits).unwrap_or(&candidates[4])
    }

    /// Every shape [`PrefillShape::for_memory`] chooses from for `head_dim`, in its order of preference.
    pub fn candidates(head_dim: u32) -> [PrefillShape; 5] {
        let shape = AttentionShape { n_head: 1, n_head_kv: 1, head_dim, ctx: 1, batch: 1 };
        let whole = PrefillShape {
            rows: 32,
            keys: 32,
            dims: head_dim,
            v_keys: 32,
            workgroup: 128,
            score_rows: 2,
            score_keys: 4,
            out_vecs: 1,
        };
        // 2 columns of O per invocation at head_dim 128 (4 rows × 8 dimensions), else the fewest that tile.
        let preferred = if head_dim == 128 { 2 } else { 1 };
        let out_vecs = (preferred..=(head_dim / 4).max(1))
            .find(|&out_vecs| PrefillShape { out_vecs, ..whole }.validate(shape).is_ok())
            .unwrap_or(1);
        let whole = PrefillShape { out_vecs, ..whole };
        let dims = if head_dim % 32 == 0 { 32 } else { 16 };
        let sliced = |v_keys| PrefillShape { dims: dims.min(head_dim), v_keys, ..whole };
        [whole, sliced(32), sliced(16), sliced(8), sliced(4)]
    }

    /// Workgroup memory the kernel takes for `shape`.
    pub fn workgroup_bytes(&self, shape: AttentionShape, f16: bool) -> u64 {
        let (rows, keys) = (u64::from(self.rows), u64::from(self.keys));
        let padded = u64::from(self.dims / 4 + 1);
        let stage = (keys * padded).max(u64::from(self.v_keys) * u64::from(shape.head_dim / 4));
        let key_lanes = keys / u64::from(self.score_keys.max(1));
        16 * rows * padded + if f16 { 8 } else { 16 } * stage + 4 * rows * keys + 4 * rows * key_lanes + 4 * rows
    }

    /// Checks the divisibility the kernel needs.
    fn validate(&self, shape: AttentionShape) -> Result<()> {
        let PrefillShape { rows, keys, dims, v_keys, workgroup, score_rows, score_keys, out_vecs } = *self;
        let vec = shape.head_dim / 4;
        let nonzero = [rows, keys, dims, v_keys, workgroup, score_rows, score_keys, out_vecs].iter().all(|&x| x > 0);
        let scores_fit = nonzero
            && rows % score_rows == 0
            && keys % score_keys == 0
            && (rows / score_rows) * (keys / score_keys) == workgroup;
        let columns = if nonzero && vec % out_vecs == 0 { vec / out_vecs } else { 0 };
        let out_fits = columns > 0 && workgroup % columns == 0 && rows % (workgroup / columns) == 0;
        let steps_fit = nonzero && dims % 4 == 0 && shape.head_dim % dims == 0 && keys % v_keys == 0;
        match scores_fit && out_fits && steps_fit {
            true => Ok(()),
            false => Err(err!(
                Usage,
                "attention_prefill: {self:?} does not tile head_dim {}: the score tiles must cover rows × keys with \
                 the workgroup, out_vecs divide head_dim / 4 into columns that divide the workgroup and the rows, \
                 dims divide head_dim (a multiple of 4) and v_keys divide keys",
                shape.head_dim
            )),
        }
    }
}

/// The prefill kernel (any batch capacity), as described at [`attention`]: one dispatch, in the tiles
/// [`PrefillShape::for_device`] chooses.
pub fn attention_prefill(gpu: &Gpu, io: AttentionIo<'_>, shape: AttentionShape) -> Result<Dispatch> {
    let f16 = check("attention_prefill", gpu, io, shape)?;
    attention_prefill_with_shape(gpu, io, shape, PrefillShape::for_device(gpu, shape, f16))
}

/// [`attention_prefill`] in the tiles `tiles` (for tests and tuning): any valid shape whose workgroup memory fits
/// the device runs on any device.
pub fn attention_prefill_with_shape(
    gpu: &Gpu,
    io: AttentionIo<'_>,
    shape: AttentionShape,
    tiles: PrefillShape,
) -> Result<Dispatch> {
    let op = "attention_prefill";
    let f16 = check(op, gpu, io, shape)?;
    let AttentionIo { q, k_cache, v_cache, out, step } = io;
    let AttentionShape { n_head, n_head_kv, head_dim, ctx, batch } = shape;
    tiles.validate(shape)?;
    check_workgroup(op, gpu, tiles.workgroup, tiles.workgroup_bytes(shape, f16))?;
    let row_tiles = (u64::from(batch) * u64::from(shape.group())).div_ceil(u64::from(tiles.rows));
    let row_tiles = index_u32(op, "the query tiles", row_tiles as usize)?;
    let workgroups = grid_2d(gpu, op, row_tiles, n_head_kv)?;
    let words = [n_head, n_head_kv, shape.group(), batch, ctx, shape.scale().to_bits(), 0, 0];
    let macros = Macros::new()
        .u32("HEAD_DIM", head_dim)
        .u32("BR", tiles.rows)
        .u32("BC", tiles.keys)
        .u32("DK", tiles.dims)
        .u32("VC", tiles.v_keys)
        .u32("WORKGROUP", tiles.workgroup)
        .u32("TM", tiles.score_rows)
        .u32("TN", tiles.score_keys)
        .u32("OV", tiles.out_vecs)
        .bool("F16", f16);
    Dispatch::new(
        gpu,
        Launch {
            shader: "attention_prefill",
            entry: "attention_prefill",
            macros,
            params: bytemuck::cast_slice(&words),
            bindings: vec![
                Some(Bind::Tensor(q)),
                Some(Bind::Declared(k_cache, cached_rows(shape, k_cache))),
                Some(Bind::Declared(v_cache, cached_rows(shape, v_cache))),
                Some(Bind::Tensor(step)),
                Some(Bind::Tensor(out)),
            ],
            workgroups,
        },
    )
}
