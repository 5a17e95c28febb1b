//! The forward pass as an explicit list of dispatches, built once and replayed for every step (ARCHITECTURE.md §5
//! and §6; in the manner of llama2.c's `forward()`). A session has at most three: the decode step's (one token), the
//! prefill's and the scoring's (up to their batch of tokens each, the count read from `step` when they run, so a
//! prompt of any length is chunks through the same list).
//!
//! A step's inputs are two small buffers that every graph of a session shares ([`StepInputs`]): the token ids and
//! `step = [n_past, n_tokens, 0, 0]`. The engine writes them for a prompt; for decoding, the sampler's last pass writes
//! them itself (the token it picked, and the position after it), so the next decode step can be submitted before the
//! token is read back (the token loop in `src/engine/session.rs`). Per layer the decode step is 9 dispatches (10 when
//! Q, K and V have different quantisation types): RMSNorm; Q, K and V with their biases in one product; RoPE and the
//! KV store in one; attention (2: the context's chunks, then their combination); the output projection added onto the
//! residual stream; RMSNorm; gate, up and SwiGLU in one; the down projection added onto the residual stream. After the
//! layers the sampling head is the final norm, the LM head and the sampler: 2 dispatches for greedy decoding, 20 for
//! sampling. Perplexity uses the same trunk with a scoring head: logits for every token and, on the GPU, the negative
//! log-likelihood of the token that follows each, one `f32` per token back.

use super::kv_cache::KvCache;
use super::weights::{GateUp, Weights};
use crate::config::ModelConfig;
use crate::gpu::ops::sample::scratch_shapes as sample_scratch_shapes;
use crate::gpu::ops::{self, AttentionIo, AttentionShape, Epilogue, NextStep, NormRows, RopeParams, RopeStoreIo};
use crate::gpu::{DType, Dispatch, Gpu, SplitWeight, Tensor};
use crate::{err, Result};

/// The inputs of a step, shared by all the graphs of a session.
#[derive(Debug)]
pub struct StepInputs {
    /// `u32 [capacity, 1]`: the tokens of this step (element 0 written by the sampler for the next decode step).
    pub ids: Tensor,
    /// `u32 [4]`: `[n_past, n_tokens, 0, 0]`.
    pub step: Tensor,
}

impl StepInputs {
    /// Inputs for steps of up to `capacity` tokens.
    pub fn new(gpu: &Gpu, capacity: usize) -> Result<StepInputs> {
        let mut buffers = Buffers::allocate(gpu, Self::shapes(capacity))?;
        let inputs = StepInputs { ids: buffers.take("ids")?, step: buffers.take("step")? };
        buffers.finish()?;
        Ok(inputs)
    }

    /// The buffers [`StepInputs::new`] allocates (the memory plan counts them, `crate::model::plan`).
    pub fn shapes(capacity: usize) -> Vec<ActivationShape> {
        vec![ActivationShape::u32("ids", &[capacity.max(1), 1]), ActivationShape::u32("step", &[4])]
    }

    /// Writes a step of `tokens` after `n_past` cached ones (queued: it takes effect for work submitted afterwards).
    pub fn write(&self, gpu: &Gpu, tokens: &[u32], n_past: usize) -> Result<()> {
        if tokens.len() > self.ids.len() {
            return Err(err!(Usage, "{} tokens for step inputs of {}", tokens.len(), self.ids.len()));
        }
        gpu.write_buffer(self.ids.buffer(), 0, bytemuck::cast_slice(tokens))?;
        let step = [n_past as u32, tokens.len() as u32, 0, 0];
        gpu.write_buffer(self.step.buffer(), 0, bytemuck::cast_slice(&step))
    }
}

/// Activations of one batch size, `[batch, width]` each.
#[derive(Debug)]
struct Activations {
    /// The residual stream.
    x: Tensor,
    /// Its RMSNorm.
    xn: Tensor,
    /// Q, K and V side by side, as the projections leave them.
    qkv: Tensor,
    /// The rotated queries.
    q: Tensor,
    attn: Tensor,
    /// `silu(gate) ⊙ up`.
    ffn: Tensor,
    /// Gate and up apart, for layers whose SwiGLU is not one dispatch (`None` when every layer's is).
    gate_up: Option<(Tensor, Tensor)>,
    /// `[1, n_embd]`: the last token's normed state.
    last: Tensor,
    /// The decode attention's scratch (batch 1 only), shared by the layers, which run one after another.
    partials: Option<Tensor>,
}

impl Activations {
    /// Whether a layer computes its SwiGLU in one dispatch: gate and up stacked, and few enough tokens for the
    /// vector kernel.
    fn fused_swiglu(gate_up: &GateUp, batch: usize) -> bool {
        matches!(gate_up, GateUp::Stacked(_)) && batch <= ops::MAX_VEC_TOKENS
    }

    /// Whether a pass of `batch` tokens needs gate and up activations apart: some layer's SwiGLU is not one dispatch
    /// (see [`Activations::fused_swiglu`]; `gate_up_stacked` is [`Weights::gate_up_stacked`]).
    fn separate_gate_up(gate_up_stacked: bool, batch: usize) -> bool {
        !gate_up_stacked || batch > ops::MAX_VEC_TOKENS
    }

    /// Takes the activations from the buffers of [`Graph::activation_shapes`].
    fn take(buffers: &mut Buffers, separate_gate_up: bool) -> Result<Activations> {
        Ok(Activations {
            x: buffers.take("x")?,
            xn: buffers.take("xn")?,
            qkv: buffers.take("qkv")?,
            q: buffers.take("q")?,
            attn: buffers.take("attn")?,
            ffn: buffers.take("ffn")?,
            gate_up: match separate_gate_up {
                true => Some((buffers.take("gate")?, buffers.take("up")?)),
                false => None,
            },
            last: buffers.take("last")?,
            partials: buffers.take_optional("attention partials"),
        })
    }
}

/// One buffer a dispatch list (or the session) allocates: see [`Graph::activation_shapes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationShape {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl ActivationShape {
    fn f32(name: &'static str, shape: &[usize]) -> ActivationShape {
        ActivationShape { name, shape: shape.to_vec(), dtype: DType::F32 }
    }

    fn u32(name: &'static str, shape: &[usize]) -> ActivationShape {
        ActivationShape { name, shape: shape.to_vec(), dtype: DType::U32 }
    }
}

/// The buffers of a list of [`ActivationShape`]s, allocated, until the pass takes each by name; every one must be
/// taken ([`Buffers::finish`]), so that what is allocated is exactly what is listed (and planned).
struct Buffers(Vec<(&'static str, Tensor)>);

impl Buffers {
    fn allocate(gpu: &Gpu, shapes: Vec<ActivationShape>) -> Result<Buffers> {
        let tensors = shapes.into_iter().map(|s| Ok((s.name, Tensor::new(gpu, s.name, &s.shape, s.dtype)?)));
        Ok(Buffers(tensors.collect::<Result<_>>()?))
    }

    fn take_optional(&mut self, name: &str) -> Option<Tensor> {
        let at = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.remove(at).1)
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.take_optional(name).ok_or_else(|| err!(Usage, "the forward pass has no buffer '{name}' in its list"))
    }

    /// The buffers taken in order (the sampler's scratch).
    fn take_all(&mut self, names: &[&str]) -> Result<Vec<Tensor>> {
        names.iter().map(|name| self.take(name)).collect()
    }

    fn finish(self) -> Result<()> {
        match self.0.first() {
            Some((name, _)) => Err(err!(Usage, "the forward pass allocated a buffer '{name}' it does not use")),
            None => Ok(()),
        }
    }
}

/// The attention's shape for a cache of `ctx` tokens and batches of `batch`.
fn attention_shape(c: &ModelConfig, ctx: usize, batch: usize) -> AttentionShape {
    AttentionShape {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
        ctx: ctx as u32,
        batch: batch as u32,
    }
}

/// What the pass ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// Generation: the final norm and LM head on the last token only, then the sampler.
    Sample,
    /// Perplexity: the final norm and LM head on every token, then each token's NLL of its target (the next token).
    Score,
}

/// The outputs of the pass.
#[derive(Debug)]
pub enum Head {
    Sample {
        /// `f32 [1, n_vocab]`: the last token's logits.
        logits: Tensor,
        /// `u32 [1]`: the sampled token.
        token: Tensor,
        /// Final norm, LM head and argmax: for greedy decoding.
        greedy: Vec<Dispatch>,
        /// Final norm, LM head and the whole sampler chain.
        sampled: Vec<Dispatch>,
        /// Where the sampler starts in `greedy` and in `sampled` (after the LM head): the place of a constrained
        /// step's mask.
        sampler_at: usize,
    },
    Score {
        /// `u32 [batch]`: the token each position should predict (written before each submit).
        targets: Tensor,
        /// `f32 [batch, n_vocab]`: every token's logits.
        logits: Tensor,
        /// `f32 [batch]`: `-log p(targets[i])` after token `i`.
        nll: Tensor,
        /// Final norm, LM head and NLL.
        dispatches: Vec<Dispatch>,
    },
}

/// The dispatch list of one batch size and the buffers it reads and writes.
#[derive(Debug)]
pub struct Graph {
    pub batch: usize,
    pub head: Head,
    /// The embedding lookup and the layers.
    trunk: Vec<Dispatch>,
    acts: Activations,
}

impl Graph {
    /// Builds the forward pass for steps of `batch` tokens (1: a decode step), or of up to `batch` tokens when
    /// `batch` > 1 (the count read from `inputs.step` when it runs) over `cache`, reading `inputs`, ending as `kind`
    /// says; a sampler reads its settings from `sampling` (see [`crate::gpu::ops::SamplingParams`]) and writes the
    /// next decode step's inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        gpu: &Gpu,
        config: &ModelConfig,
        weights: &Weights,
        cache: &KvCache,
        inputs: &StepInputs,
        batch: usize,
        kind: HeadKind,
        sampling: &Tensor,
    ) -> Result<Graph> {
        if batch == 0 || batch > inputs.ids.len() {
            return Err(err!(Usage, "a batch of {batch} tokens (the step inputs hold {})", inputs.ids.len()));
        }
        let c = config;
        let stacked = weights.gate_up_stacked();
        let mut buffers = Buffers::allocate(gpu, Self::activation_shapes(gpu, c, stacked, cache.ctx(), batch, kind)?)?;
        let a = Activations::take(&mut buffers, Activations::separate_gate_up(stacked, batch))?;
        let rope = RopeParams::from_config(c, weights.rope_freqs.as_ref());
        let shape = attention_shape(c, cache.ctx(), batch);
        let mut d: Vec<Dispatch> = Vec::new();
        let eps = c.rms_norm_eps;
        let residual = Epilogue { accumulate: true, ..Epilogue::default() };
        // A graph of more than one token serves every step of up to `batch` tokens: its kernels read the step's
        // token count from `step` when they run (the norms and products skip the rows past it).
        let step = (batch > 1).then_some(&inputs.step);
        let norm_rows = match step {
            Some(step) => NormRows::Step(step),
            None => NormRows::All,
        };

        // x = embedding of the tokens                                     [batch, n_embd]
        let ids = inputs.ids.view_rows(gpu, 0, batch)?;
        d.extend(ops::get_rows(gpu, &weights.token_embd, &ids, &a.x)?);
        for (l, w) in weights.layers.iter().enumerate() {
            // Attention block: xn = norm(x); [q | k | v] = xn · [Wq; Wk; Wv]ᵀ + bias   [batch, (n_head + 2 n_head_kv) · head_dim]
            d.push(ops::rms_norm_rows(gpu, &a.x, &w.attn_norm, &a.xn, eps, norm_rows)?);
            let mut column = 0;
            for stack in &w.qkv {
                let epilogue = Epilogue { bias: stack.bias.as_ref(), column, ..Epilogue::default() };
                d.extend(project(gpu, &stack.weight, &a.xn, &a.qkv, epilogue, step)?);
                column += stack.weight.rows();
            }
            // q = RoPE(q); the cache's rows n_past.. = RoPE(k), v. Attention reads rows 0..=n_past + t.
            let store =
                RopeStoreIo { qkv: &a.qkv, step: &inputs.step, q: &a.q, k_cache: &cache.k[l], v_cache: &cache.v[l] };
            d.push(ops::rope_store(gpu, store, c.n_head, c.n_head_kv, c.head_dim, &rope)?);
            let io =
                AttentionIo { q: &a.q, k_cache: &cache.k[l], v_cache: &cache.v[l], out: &a.attn, step: &inputs.step };
            match &a.partials {
                Some(partials) => d.extend(ops::attention_decode_with(gpu, io, shape, partials)?),
                None => d.push(ops::attention_prefill(gpu, io, shape)?),
            }
            // x += attn · Woᵀ                                             [batch, n_embd]
            d.extend(project(gpu, &w.wo, &a.attn, &a.x, residual, step)?);
            // Feed-forward block: x += (silu(xn · Wgateᵀ) ⊙ xn · Wupᵀ) · Wdownᵀ
            d.push(ops::rms_norm_rows(gpu, &a.x, &w.ffn_norm, &a.xn, eps, norm_rows)?);
            d.extend(swiglu(gpu, &w.gate_up, &a, batch, step)?); //             [batch, n_ff]
            d.extend(project(gpu, &w.w_down, &a.ffn, &a.x, residual, step)?);
        }
        let head = match kind {
            HeadKind::Sample => sample_head(gpu, c, weights, inputs, &a, &mut buffers, batch, sampling)?,
            HeadKind::Score => score_head(gpu, c, weights, inputs, &a, &mut buffers, batch)?,
        };
        buffers.finish()?;
        Ok(Graph { batch, head, trunk: d, acts: a })
    }

    /// Every buffer [`Graph::build`] allocates for batches of `batch` tokens over a cache of `ctx` tokens, ending as
    /// `kind` says: the activations, the decode attention's scratch (batch 1), and the head's outputs and scratch.
    /// `gate_up_stacked` is [`Weights::gate_up_stacked`] (before loading: [`super::weights::weight_layout`]'s). `build`
    /// allocates exactly this list and the memory plan (`crate::model::plan`) counts it, so the two cannot drift. The
    /// step inputs are the session's ([`StepInputs::shapes`]).
    pub fn activation_shapes(
        gpu: &Gpu,
        config: &ModelConfig,
        gate_up_stacked: bool,
        ctx: usize,
        batch: usize,
        kind: HeadKind,
    ) -> Result<Vec<ActivationShape>> {
        if batch == 0 {
            return Err(err!(Usage, "a batch of zero tokens"));
        }
        let c = config;
        let (e, q_dim, kv_dim, ff) = (c.n_embd as usize, c.q_dim() as usize, c.kv_dim() as usize, c.n_ff as usize);
        let n_vocab = c.n_vocab as usize;
        let f32 = ActivationShape::f32;
        let u32 = ActivationShape::u32;
        let mut list = vec![
            f32("x", &[batch, e]),
            f32("xn", &[batch, e]),
            f32("qkv", &[batch, q_dim + 2 * kv_dim]),
            f32("q", &[batch, q_dim]),
            f32("attn", &[batch, q_dim]),
            f32("ffn", &[batch, ff]),
        ];
        if Activations::separate_gate_up(gate_up_stacked, batch) {
            list.extend([f32("gate", &[batch, ff]), f32("up", &[batch, ff])]);
        }
        list.push(f32("last", &[1, e]));
        if batch == 1 {
            let partials = ops::attention_decode_partials_shape(gpu, attention_shape(c, ctx, batch))?;
            list.push(f32("attention partials", &partials));
        }
        match kind {
            HeadKind::Sample => {
                list.extend([f32("logits", &[1, n_vocab]), u32("token", &[1])]);
                for sampled in [false, true] {
                    list.extend(sample_scratch_shapes(n_vocab, sampled).into_iter().map(|(n, shape)| u32(n, &shape)));
                }
            }
            HeadKind::Score => {
                list.extend([u32("targets", &[batch]), f32("logits", &[batch, n_vocab]), f32("nll", &[batch])])
            }
        }
        Ok(list)
    }

    /// Records the pass into `encoder`: the dispatches of [`Graph::dispatches`], with `mask` (from
    /// [`Graph::mask_dispatch`]) between the LM head and the sampler when a constrained step gives one.
    pub fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        with_head: bool,
        greedy: bool,
        mask: Option<&Dispatch>,
    ) {
        match (mask, &self.head, with_head) {
            (Some(mask), Head::Sample { greedy: g, sampled, sampler_at, .. }, true) => {
                let head = if greedy { g } else { sampled };
                let (before, sampler) = head.split_at(*sampler_at);
                gpu.encode(encoder, self.trunk.iter().chain(before).chain([mask]).chain(sampler));
            }
            _ => gpu.encode(encoder, self.dispatches(greedy, with_head)),
        }
    }

    // --- Constrained decoding (README.md, "Structured output"): the one hook into the pass. ---

    /// The dispatch that masks this graph's logits with `allowed` (see [`ops::apply_mask`]); a sampling graph only.
    pub fn mask_dispatch(&self, gpu: &Gpu, allowed: &Tensor) -> Result<Dispatch> {
        match &self.head {
            Head::Sample { logits, .. } => ops::apply_mask(gpu, logits, 0, logits.cols(), allowed),
            Head::Score { .. } => Err(err!(Usage, "a scoring graph samples nothing to mask")),
        }
    }

    // --- End of the constrained-decoding hook. ---

    /// Writes the targets of a scoring pass (one per token of the step: at most the batch); see [`HeadKind::Score`].
    pub fn set_targets(&self, gpu: &Gpu, targets: &[u32]) -> Result<()> {
        match &self.head {
            Head::Score { targets: buffer, .. } if targets.len() <= self.batch => {
                gpu.write_buffer(buffer.buffer(), 0, bytemuck::cast_slice(targets))
            }
            Head::Score { .. } => Err(err!(Usage, "{} targets for a graph of batch {}", targets.len(), self.batch)),
            Head::Sample { .. } => Err(err!(Usage, "a sampling graph has no targets")),
        }
    }

    /// The residual stream after the last layer (before the final norm): `f32 [batch, n_embd]`, for tests.
    pub fn hidden(&self) -> &Tensor {
        &self.acts.x
    }

    /// The dispatches a step runs, in order: the trunk, then the head unless `with_head` is false (the chunks of a
    /// prompt before its last need no logits); `greedy` picks the sampling head's argmax list over the sampler chain.
    pub fn dispatches(&self, greedy: bool, with_head: bool) -> impl Iterator<Item = &Dispatch> {
        let head: &[Dispatch] = match (&self.head, with_head) {
            (_, false) => &[],
            (Head::Sample { greedy: list, .. }, true) if greedy => list,
            (Head::Sample { sampled, .. }, true) => sampled,
            (Head::Score { dispatches, .. }, true) => dispatches,
        };
        self.trunk.iter().chain(head)
    }

    /// One line per dispatch of a greedy step ([`Dispatch::describe`]): what `webr1 bench --dispatches` prints.
    pub fn describe(&self) -> Vec<String> {
        self.dispatches(true, true).map(Dispatch::describe).collect()
    }

    /// Dispatches in a greedy step (for reports and tests).
    pub fn len(&self) -> usize {
        self.dispatches(true, true).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `ffn = silu(xn · Wgateᵀ) ⊙ (xn · Wupᵀ)`: one dispatch when gate and up are stacked and the batch is small; else
/// the two products (views of a stack, or the two weights) and the element-wise SwiGLU.
fn swiglu(gpu: &Gpu, gate_up: &GateUp, a: &Activations, batch: usize, step: Option<&Tensor>) -> Result<Vec<Dispatch>> {
    if Activations::fused_swiglu(gate_up, batch) {
        if let GateUp::Stacked(w) = gate_up {
            return ops::silu_mul_vec(gpu, w, &a.xn, &a.ffn);
        }
    }
    let (gate, up) = a.gate_up.as_ref().ok_or_else(|| err!(Usage, "no gate and up activations for a SwiGLU"))?;
    let mut d = Vec::new();
    match gate_up {
        GateUp::Stacked(w) => {
            let n_ff = w.rows() / 2;
            d.extend(project(gpu, &w.view_rows(gpu, 0, n_ff)?, &a.xn, gate, Epilogue::default(), step)?);
            d.extend(project(gpu, &w.view_rows(gpu, n_ff, n_ff)?, &a.xn, up, Epilogue::default(), step)?);
        }
        GateUp::Separate { gate: wg, up: wu } => {
            d.extend(project(gpu, wg, &a.xn, gate, Epilogue::default(), step)?);
            d.extend(project(gpu, wu, &a.xn, up, Epilogue::default(), step)?);
        }
    }
    d.push(match step {
        Some(step) => ops::silu_mul_rows(gpu, gate, up, &a.ffn, step)?,
        None => ops::silu_mul(gpu, gate, up, &a.ffn)?,
    });
    Ok(d)
}

/// `y = x · Wᵀ` with `epilogue`. With `step` (a graph serving steps of up to x's rows), the tiled kernel computes
/// only the step's rows; the vector kernel (x of at most [`ops::MAX_VEC_TOKENS`] rows) computes all of x's rows, the
/// rows past the step's holding values that nothing reads.
fn project(
    gpu: &Gpu,
    w: &SplitWeight,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
    step: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    match step {
        Some(step) if x.rows() > ops::MAX_VEC_TOKENS => ops::matmul_tiled_steps(gpu, w, x, y, epilogue, step),
        _ => ops::matmul_into(gpu, w, x, y, epilogue),
    }
}

/// The sampling head: the last token's final norm and logits, then argmax (greedy) or the sampler chain; the
/// token also becomes the next decode step's input.
#[allow(clippy::too_many_arguments)]
fn sample_head(
    gpu: &Gpu,
    c: &ModelConfig,
    weights: &Weights,
    inputs: &StepInputs,
    a: &Activations,
    buffers: &mut Buffers,
    batch: usize,
    sampling: &Tensor,
) -> Result<Head> {
    let n_vocab = c.n_vocab as usize;
    let (logits, token) = (buffers.take("logits")?, buffers.take("token")?);
    let scratch = |sampled| sample_scratch_shapes(n_vocab, sampled).into_iter().map(|(name, _)| name).collect();
    let (argmax_scratch, sample_scratch): (Vec<_>, Vec<_>) = (scratch(false), scratch(true));
    let (argmax_scratch, sample_scratch) = (buffers.take_all(&argmax_scratch)?, buffers.take_all(&sample_scratch)?);
    // Only the last token's logits are needed: final norm and LM head on that row (the step's last). [1, n_vocab]
    let eps = c.rms_norm_eps;
    let mut logits_of_last = match batch {
        1 => vec![ops::rms_norm(gpu, &a.x, &weights.output_norm, &a.last, eps)?],
        _ => {
            vec![ops::rms_norm_rows(gpu, &a.x, &weights.output_norm, &a.last, eps, NormRows::LastOfStep(&inputs.step))?]
        }
    };
    logits_of_last.extend(ops::matmul(gpu, weights.lm_head(), &a.last, &logits)?);
    // The next token, chosen on the GPU, written to `token` and to the next step's inputs.             u32 [1]
    let next = Some(NextStep { ids: &inputs.ids, step: &inputs.step });
    let sampler_at = logits_of_last.len();
    let mut greedy = logits_of_last.clone();
    greedy.extend(ops::argmax_next_with(gpu, &logits, 0, n_vocab, &token, 0, next, &argmax_scratch)?);
    let mut sampled = logits_of_last;
    sampled.extend(ops::sample_next_with(gpu, &logits, 0, n_vocab, sampling, &token, 0, next, &sample_scratch)?);
    Ok(Head::Sample { logits, token, greedy, sampled, sampler_at })
}

/// The scoring head: every token's logits and the NLL of the token that follows it.    [batch, n_vocab], [batch]
/// Rows past the step's hold values that nothing reads.
fn score_head(
    gpu: &Gpu,
    c: &ModelConfig,
    weights: &Weights,
    inputs: &StepInputs,
    a: &Activations,
    buffers: &mut Buffers,
    batch: usize,
) -> Result<Head> {
    let (targets, logits, nll) = (buffers.take("targets")?, buffers.take("logits")?, buffers.take("nll")?);
    let step = (batch > 1).then_some(&inputs.step);
    let rows = step.map_or(NormRows::All, NormRows::Step);
    let mut dispatches = vec![ops::rms_norm_rows(gpu, &a.x, &weights.output_norm, &a.xn, c.rms_norm_eps, rows)?];
    dispatches.extend(project(gpu, weights.lm_head(), &a.xn, &logits, Epilogue::default(), step)?);
    dispatches.push(ops::nll(gpu, &logits, &targets, &nll)?);
    Ok(Head::Score { targets, logits, nll, dispatches })
}
