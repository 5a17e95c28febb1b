//! Choosing the next token on the GPU (`shaders/sample.wgsl`): [`argmax`] and [`sample`], so that only the chosen id
//! (one `u32`) crosses back to the CPU (ARCHITECTURE.md §5).
//!
//! # Semantics
//! [`sample`] follows llama.cpp's sampler chain (`src/llama-sampling.cpp`) in its default order for these samplers:
//! top-k → top-p → min-p → temperature → dist. Candidates are ranked by logit, descending; llama.cpp leaves the order
//! of equal logits unspecified, webr1 ranks the lower id first, and every rule below that "keeps the first m" keeps them
//! in that order. With the settings of [`SamplingParams`]:
//! 1. **greedy** when `temperature <= 0` (or NaN), `top_k == 1` or the vocabulary has one token: the argmax, the lowest
//!    id among equal maxima (as llama.cpp's greedy sampler picks the first). Nothing else is read.
//! 2. **top-k** (`0 < top_k < n_vocab`): keep the first `top_k` candidates.
//! 3. **top-p** (`top_p < 1`): with `p_i = softmax(logits)` over the top-k survivors at temperature 1, keep the smallest
//!    prefix whose summed probability reaches `top_p` (the token that crosses it is kept; `top_p <= 0` keeps one).
//! 4. **min-p** (`min_p > 0`): keep the survivors with `logit >= max_logit + ln(min_p)` (the largest always stays).
//! 5. **temperature and draw**: `p_i ∝ exp((logit_i - max) / temperature)` over the survivors; `u` in `[0, 1)` from
//!    [`draw_uniform`]`(seed, step)`; the token is the first survivor, in id order, whose running sum of `p_i` passes
//!    `u · Σ p_i`.
//!
//! Differences from llama.cpp that a user could observe: the random stream (llama.cpp uses `std::mt19937`), the id
//! order of the draw (llama.cpp walks the candidates in its current order), and rounding: top-p masses are summed in
//! 2^-31 fixed point (probabilities below ~2^-32 of the largest count as zero), the draw's in f32.
//!
//! # How
//! Thresholds on order-preserving `u32` keys of the logits instead of a sort: top-k is a radix select (4 rounds of an
//! 8-bit histogram, Alabi et al. 2012, "Fast k-selection algorithms for graphics processing units"), top-p the same
//! search on exact integer masses, and the draw a two-level prefix sum (per 4096-logit chunk, then within the chosen
//! chunk). The shader's header comment has the details. A [`sample`] list is 20 dispatches over ~10 reads of the row;
//! searches switched off by the parameters return at once.
//!
//! # Settings at run time
//! The dispatch list is built once and replayed every token, so the per-request settings live in GPU memory: a
//! [`SamplingParams`] tensor that the engine writes with [`SamplingParams::write`] before a step. The draw uses its
//! `step` and then adds 1 to it on the GPU, so a replayed list draws fresh numbers without any write, and writing
//! `step` back replays a sequence.

use super::{index_u32, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::Access;
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// Logits per invocation of a chunk.
const ITEMS: u32 = 16;
/// Logits per workgroup of the passes over the row.
pub const CHUNK: u32 = WORKGROUP_SIZE * ITEMS;
/// Words of `state` before the per-chunk partials (`S_PARTIALS` in the shader).
const STATE_WORDS: usize = 16;
/// Radix buckets of the threshold searches: one per invocation of the select passes.
const BUCKETS: usize = 256;
const ROUNDS: u32 = 4;
const SEARCH_TOP_K: u32 = 0;
const SEARCH_TOP_P: u32 = 1;

const _: () = assert!(WORKGROUP_SIZE as usize == BUCKETS, "select_top_k/p take one bucket per invocation");

/// The per-step sampling settings, as the GPU reads them: 8 little-endian 32-bit words in a `DType::U32` tensor of
/// shape `[8]` ([`SamplingParams::tensor`]), mirrored by the `SamplingParams` struct of `shaders/sample.wgsl`.
///
/// | word | field | meaning |
/// |---|---|---|
/// | 0 | `temperature: f32` | `<= 0` (or NaN): greedy |
/// | 1 | `top_k: u32` | `0`: off (and `>= n_vocab` changes nothing) |
/// | 2 | `top_p: f32` | `>= 1`: off |
/// | 3 | `min_p: f32` | `<= 0`: off |
/// | 4, 5 | `seed_lo`, `seed_hi: u32` | the 64-bit seed, low word first |
/// | 6 | `step: u32` | the draw counter: the draw uses it, then the GPU adds 1 |
/// | 7 | padding | zero |
///
/// The module docs give the exact semantics.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<SamplingParams>() == SamplingParams::WORDS * 4);

impl SamplingParams {
    /// 32-bit words of the GPU layout.
    pub const WORDS: usize = 8;

    /// Settings for a request at draw counter `step` (0 for the first token). Any values are accepted and have a
    /// meaning: a NaN temperature is greedy, a NaN top-p or min-p is off, an infinite temperature draws uniformly from
    /// the survivors.
    pub fn new(temperature: f32, top_k: u32, top_p: f32, min_p: f32, seed: u64, step: u32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            step,
            _pad: 0,
        }
    }

    /// Greedy decoding: always the argmax.
    pub fn greedy() -> SamplingParams {
        SamplingParams::new(0.0, 0, 1.0, 0.0, 0, 0)
    }

    /// The same settings at draw counter `step`.
    pub fn at_step(self, step: u32) -> SamplingParams {
        SamplingParams { step, ..self }
    }

    pub fn seed(&self) -> u64 {
        (u64::from(self.seed_hi) << 32) | u64::from(self.seed_lo)
    }

    /// Whether these settings always pick the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0 || self.top_k == 1
    }

    /// A new `U32 [8]` tensor holding these settings, for [`sample`].
    pub fn tensor(&self, gpu: &Gpu, label: &str) -> Result<Tensor> {
        Tensor::from_u32(gpu, label, &[Self::WORDS], bytemuck::cast_slice(&[*self]))
    }

    /// Writes these settings into a tensor made by [`SamplingParams::tensor`] (queued: it takes effect for work
    /// submitted afterwards).
    pub fn write(&self, gpu: &Gpu, tensor: &Tensor) -> Result<()> {
        check_params_tensor("SamplingParams::write", tensor)?;
        tensor.upload(gpu, bytemuck::bytes_of(self))
    }

    /// Reads the settings back (the `step` the next draw will use).
    pub async fn read(gpu: &Gpu, tensor: &Tensor) -> Result<SamplingParams> {
        check_params_tensor("SamplingParams::read", tensor)?;
        let words = tensor.read_u32(gpu).await?;
        Ok(bytemuck::pod_read_unaligned(bytemuck::cast_slice(&words)))
    }
}

/// The draw's uniform number in `[0, 1)` for `(seed, step)`, exactly as the shader computes it: the top 24 bits of
/// xxhash32 of the words `(seed_lo, seed_hi, step)` (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering").
pub fn draw_uniform(seed: u64, step: u32) -> f32 {
    let (x, y, z) = (seed as u32, (seed >> 32) as u32, step);
    let rotate = |h: u32| h.rotate_left(17).wrapping_mul(668_265_263);
    let mut h = z.wrapping_add(374_761_393).wrapping_add(x.wrapping_mul(3_266_489_917));
    h = rotate(h);
    h = rotate(h.wrapping_add(y.wrapping_mul(3_266_489_917)));
    h = (h ^ (h >> 15)).wrapping_mul(2_246_822_519);
    h = (h ^ (h >> 13)).wrapping_mul(3_266_489_917);
    h ^= h >> 16;
    (h >> 8) as f32 / 16_777_216.0
}

/// The id of the largest of `n_vocab` f32 logits starting at element `offset` of `logits` (the lowest id among equal
/// maxima; NaN counts as -inf), written as a `u32` to element `out_index` of `out`.
///
/// Two dispatches: every 4096-logit chunk's best in parallel, then one workgroup over the chunks.
pub fn argmax(
    gpu: &Gpu,
    logits: &Tensor,
    offset: usize,
    n_vocab: usize,
    out: &Tensor,
    out_index: usize,
) -> Result<Vec<Dispatch>> {
    argmax_next(gpu, logits, offset, n_vocab, out, out_index, None)
}

/// The engine's inputs of the next decode step, written by the pass that picks the token (see [`argmax_next`]).
#[derive(Debug, Clone, Copy)]
pub struct NextStep<'a> {
    /// `u32 [batch]`: the token goes to element 0.
    pub ids: &'a Tensor,
    /// The engine's `u32` tensor `[n_past, n_tokens, 0, 0]`: it becomes `[n_past + n_tokens, 1, 0, 0]`.
    pub step: &'a Tensor,
}

/// [`argmax`] that also writes the token and the next position into `next` (when given), so the next decode step
/// can run without the CPU (see `shaders/sample.wgsl`, NEXT).
pub fn argmax_next(
    gpu: &Gpu,
    logits: &Tensor,
    offset: usize,
    n_vocab: usize,
    out: &Tensor,
    out_index: usize,
    next: Option<NextStep<'_>>,
) -> Result<Vec<Dispatch>> {
    let scratch = scratch_tensors(gpu, n_vocab, false)?;
    argmax_next_with(gpu, logits, offset, n_vocab, out, out_index, next, &scratch)
}

/// [`argmax_next`] with its scratch tensors given: `u32` tensors of [`scratch_shapes`]`(n_vocab, false)`.
#[allow(clippy::too_many_arguments)]
pub fn argmax_next_with(
    gpu: &Gpu,
    logits: &Tensor,
    offset: usize,
    n_vocab: usize,
    out: &Tensor,
    out_index: usize,
    next: Option<NextStep<'_>>,
    scratch_tensors: &[Tensor],
) -> Result<Vec<Dispatch>> {
    let mut row = Row::check(gpu, "argmax", logits, offset, n_vocab, out, out_index)?;
    row.next = check_next("argmax", next, &[logits, out])?;
    let [state] = check_scratch("argmax", scratch_tensors, n_vocab, false, &[logits, out])?;
    let mut last = vec![None, None, scratch(state), None, bind(out)];
    last.extend(next_bindings(next));
    Ok(vec![
        row.launch(gpu, "reduce_max", [0, 0], vec![bind(logits), None, scratch(state)])?,
        row.launch(gpu, "argmax_final", [0, 0], last)?,
    ])
}

/// Checks the tensors of a [`NextStep`]; returns whether there is one.
fn check_next(op: &str, next: Option<NextStep<'_>>, others: &[&Tensor]) -> Result<bool> {
    let Some(NextStep { ids, step }) = next else { return Ok(false) };
    if ids.dtype() != DType::U32 || ids.is_empty() || step.dtype() != DType::U32 || step.len() < 2 {
        return Err(err!(
            Usage,
            "{op}: the next step needs u32 ids [batch ≥ 1] and a u32 step [4], got {} {:?} and {} {:?}",
            ids.dtype().name(),
            ids.shape(),
            step.dtype().name(),
            step.shape()
        ));
    }
    if ids.same_buffer(step) || others.iter().any(|t| t.same_buffer(ids) || t.same_buffer(step)) {
        return Err(err!(Usage, "{op}: the next step's ids and step need buffers of their own"));
    }
    Ok(true)
}

fn next_bindings(next: Option<NextStep<'_>>) -> Vec<Option<Bind<'_>>> {
    match next {
        Some(NextStep { ids, step }) => vec![scratch(ids), scratch(step)],
        None => Vec::new(),
    }
}

/// Draws a token from `n_vocab` f32 logits starting at element `offset` of `logits` with the settings in `params` (a
/// [`SamplingParams::tensor`]) and writes its id as a `u32` to element `out_index` of `out`; the module docs give the
/// semantics. The draw advances `params.step` by one.
///
/// The list allocates its scratch buffers here, once; replaying it allocates nothing.
pub fn sample(
    gpu: &Gpu,
    logits: &Tensor,
    offset: usize,
    n_vocab: usize,
    params: &Tensor,
    out: &Tensor,
    out_index: usize,
) -> Result<Vec<Dispatch>> {
    sample_next(gpu, logits, offset, n_vocab, params, out, out_index, None)
}

/// [`sample`] that also writes the token and the next position into `next` (when given), like [`argmax_next`].
#[allow(clippy::too_many_arguments)]
pub fn sample_next(
    gpu: &Gpu,
    logits: &Tensor,
    offset: usize,
    n_vocab: usize,
    params: &Tensor,
    out: &Tensor,
    out_index: usize,
    next: Option<NextStep<'_>>,
) -> Result<Vec<Dispatch>> {
    let scratch = scratch_tensors(gpu, n_vocab, true)?;
    sample_next_with(gpu, logits, offset, n_vocab, params, out, out_index, next, &scratch)
}

/// [`sample_next`] with its scratch tensors given: `u32` tensors of [`scratch_shapes`]`(n_vocab, true)`.
#[allow(clippy::too_many_arguments)]
pub fn sample_next_with(
    gpu: &Gpu,
    logits: &Tensor,
    offset: usize,
    n_vocab: usize,
    params: &Tensor,
    out: &Tensor,
    out_index: usize,
    next: Option<NextStep<'_>>,
    scratch_tensors: &[Tensor],
) -> Result<Vec<Dispatch>> {
    let mut row = Row::check(gpu, "sample", logits, offset, n_vocab, out, out_index)?;
    row.next = check_next("sample", next, &[logits, out, params])?;
    check_params_tensor("sample", params)?;
    if params.same_buffer(logits) || params.same_buffer(out) {
        return Err(err!(Usage, "sample: the SamplingParams tensor needs a buffer of its own"));
    }
    let [state, hist] = check_scratch("sample", scratch_tensors, n_vocab, true, &[logits, out, params])?;
    let mut list = vec![
        row.launch(gpu, "reduce_max", [0, 0], vec![bind(logits), None, scratch(state)])?,
        row.launch(gpu, "prepare", [0, 0], vec![None, scratch(params), scratch(state), scratch(hist)])?,
    ];
    for (search, select) in [(SEARCH_TOP_K, "select_top_k"), (SEARCH_TOP_P, "select_top_p")] {
        for round in 0..ROUNDS {
            let counted = vec![bind(logits), None, scratch(state), scratch(hist)];
            list.push(row.launch(gpu, "histogram", [round, search], counted)?);
            // Only top-p reads a setting (top_p itself) in its select pass.
            let settings = if search == SEARCH_TOP_P { scratch(params) } else { None };
            list.push(row.launch(gpu, select, [round, search], vec![None, settings, scratch(state), scratch(hist)])?);
        }
    }
    list.push(row.launch(gpu, "draw_partial", [0, 0], vec![bind(logits), scratch(params), scratch(state)])?);
    let mut last = vec![bind(logits), scratch(params), scratch(state), None, bind(out)];
    last.extend(next_bindings(next));
    list.push(row.launch(gpu, "draw", [0, 0], last)?);
    Ok(list)
}

/// Allocates the scratch tensors of [`scratch_shapes`].
fn scratch_tensors(gpu: &Gpu, n_vocab: usize, sampled: bool) -> Result<Vec<Tensor>> {
    scratch_shapes(n_vocab, sampled)
        .into_iter()
        .map(|(label, shape)| Tensor::new(gpu, label, &shape, DType::U32))
        .collect()
}

/// Checks scratch tensors given for a row of `n_vocab` logits against [`scratch_shapes`]: `N` of them, of those
/// shapes, in buffers of their own.
fn check_scratch<'t, const N: usize>(
    op: &str,
    tensors: &'t [Tensor],
    n_vocab: usize,
    sampled: bool,
    others: &[&Tensor],
) -> Result<[&'t Tensor; N]> {
    let want = scratch_shapes(n_vocab, sampled);
    let fits = want.len() == N
        && tensors.len() == N
        && tensors.iter().zip(&want).all(|(t, (_, shape))| t.dtype() == DType::U32 && t.shape() == shape.as_slice());
    let shared = tensors
        .iter()
        .enumerate()
        .any(|(i, t)| others.iter().any(|o| o.same_buffer(t)) || tensors[..i].iter().any(|u| u.same_buffer(t)));
    if !fits || shared {
        let want: Vec<_> = want.iter().map(|(_, shape)| shape).collect();
        return Err(err!(Usage, "{op}: the scratch tensors must be u32 {want:?} in buffers of their own"));
    }
    Ok(std::array::from_fn(|i| &tensors[i]))
}

/// The `u32` state of a pass over `n_groups` chunks of logits: the settings and results, then two words per chunk.
fn state_shape(n_groups: u32) -> [usize; 1] {
    [STATE_WORDS + 2 * n_groups as usize]
}

/// The `u32` histogram of the sampler's searches: three counters per bucket.
const HISTOGRAM_SHAPE: [usize; 2] = [BUCKETS, 3];

/// The `u32` scratch tensors (label and shape) that [`argmax_next`] (`sampled` false) or [`sample_next`] (`sampled`
/// true) allocates for a row of `n_vocab` logits, without allocating them: the memory plan counts them
/// (`crate::model::plan`).
pub fn scratch_shapes(n_vocab: usize, sampled: bool) -> Vec<(&'static str, Vec<usize>)> {
    let state = state_shape(n_vocab.div_ceil(CHUNK as usize) as u32).to_vec();
    match sampled {
        false => vec![("argmax state", state)],
        true => vec![("sample state", state), ("sample histogram", HISTOGRAM_SHAPE.to_vec())],
    }
}

fn bind(tensor: &Tensor) -> Option<Bind<'_>> {
    Some(Bind::Tensor(tensor))
}

/// A `read_write` binding the passes read as well as write (the settings, the state, the histogram).
fn scratch(tensor: &Tensor) -> Option<Bind<'_>> {
    Some(Bind::Declared(tensor, Access::READ_WRITE))
}

fn check_params_tensor(op: &str, params: &Tensor) -> Result<()> {
    if params.dtype() != DType::U32 || params.len() != SamplingParams::WORDS {
        return Err(err!(
            Usage,
            "{op}: the sampling parameters must be a u32 tensor [{}] (SamplingParams::tensor), got {} {:?}",
            SamplingParams::WORDS,
            params.dtype().name(),
            params.shape()
        ));
    }
    Ok(())
}

/// A checked row of logits and where its token id goes: what every pass of the shader shares.
struct Row {
    n: u32,
    offset: u32,
    n_groups: u32,
    out_index: u32,
    /// The passes that write the token also write the next step's inputs (the shader's NEXT).
    next: bool,
}

impl Row {
    fn check(
        gpu: &Gpu,
        op: &str,
        logits: &Tensor,
        offset: usize,
        n_vocab: usize,
        out: &Tensor,
        out_index: usize,
    ) -> Result<Row> {
        if logits.dtype() != DType::F32 {
            return Err(err!(Usage, "{op}: logits must be f32, not {}", logits.dtype().name()));
        }
        if n_vocab == 0 || offset.checked_add(n_vocab).is_none_or(|end| end > logits.len()) {
            return Err(err!(
                Usage,
                "{op}: {n_vocab} logits at element {offset} do not fit a tensor of {} elements",
                logits.len()
            ));
        }
        if out.dtype() != DType::U32 || out_index >= out.len() {
            return Err(err!(
                Usage,
                "{op}: out must be a u32 tensor with an element {out_index}, got {} {:?}",
                out.dtype().name(),
                out.shape()
            ));
        }
        if out.same_buffer(logits) {
            return Err(err!(Usage, "{op}: out must be a buffer of its own (not the logits')"));
        }
        // Chunk starts (g * CHUNK) and row indices must not overflow the shader's u32 arithmetic.
        let n = index_u32(op, "the vocabulary", n_vocab.next_multiple_of(CHUNK as usize))?;
        let row = Row {
            n: n_vocab as u32,
            offset: index_u32(op, "the logits' end", offset + n_vocab)? - n_vocab as u32,
            n_groups: n / CHUNK,
            out_index: index_u32(op, "out_index", out_index)?,
            next: false,
        };
        grid(gpu, op, row.n_groups)?;
        Ok(row)
    }

    /// One pass: `entry` with the shader's `Params` (`round`, `search` from `extra`) and `bindings` from 1 on.
    fn launch(
        &self,
        gpu: &Gpu,
        entry: &'static str,
        extra: [u32; 2],
        bindings: Vec<Option<Bind<'_>>>,
    ) -> Result<Dispatch> {
        let single = matches!(entry, "argmax_final" | "prepare" | "select_top_k" | "select_top_p" | "draw");
        let workgroups = if single { [1, 1, 1] } else { grid(gpu, entry, self.n_groups)? };
        let words = [self.n, self.offset, self.n_groups, self.out_index, extra[0], extra[1], 0, 0];
        Dispatch::new(
            gpu,
            Launch {
                shader: "sample",
                entry,
                macros: macros(gpu).bool("NEXT", self.next && matches!(entry, "argmax_final" | "draw")),
                params: bytemuck::cast_slice(&words),
                bindings,
                workgroups,
            },
        )
    }
}

fn macros(gpu: &Gpu) -> Macros {
    let macros = Macros::new().u32("WORKGROUP_SIZE", WORKGROUP_SIZE).u32("ITEMS", ITEMS);
    let features = gpu.features();
    match features.subgroups {
        true => {
            macros.bool("SUBGROUPS", true).u32("MIN_SUBGROUP_SIZE", features.subgroup_min_size.clamp(1, WORKGROUP_SIZE))
        }
        false => macros,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_have_the_documented_layout() {
        let p = SamplingParams::new(0.6, 40, 0.95, 0.05, 0x1234_5678_9abc_def0, 7);
        let words: [u32; 8] = bytemuck::cast(p);
        assert_eq!(words, [0.6f32.to_bits(), 40, 0.95f32.to_bits(), 0.05f32.to_bits(), 0x9abc_def0, 0x1234_5678, 7, 0]);
        assert_eq!(p.seed(), 0x1234_5678_9abc_def0);
        assert_eq!(p.at_step(9).step, 9);
        assert!(SamplingParams::greedy().is_greedy() && !p.is_greedy());
        assert!(SamplingParams::new(f32::NAN, 0, 1.0, 0.0, 0, 0).is_greedy());
    }

    #[test]
    fn draw_uniform_is_a_spread_of_24_bit_numbers() {
        let draws: Vec<f32> = (0..10_000).map(|step| draw_uniform(42, step)).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u) && (u * 16_777_216.0).fract() == 0.0));
        let mean = draws.iter().map(|&u| f64::from(u)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert_ne!(draw_uniform(42, 0), draw_uniform(43, 0));
        assert_ne!(draw_uniform(42, 0), draw_uniform(42 | 1 << 32, 0), "the high word of the seed counts");
    }
}
