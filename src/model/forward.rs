//! The forward pass as an explicit list of dispatches, built once per batch size and replayed for every step
//! (DESIGN decisions 5 and 6; in the manner of llama2.c's `forward()`).
//!
//! Per step the engine writes three tiny buffers (the token ids, their positions, and `step = [n_past, n_tokens]`)
//! and submits the list as one command buffer; the last dispatch samples the next token on the GPU, so only its id
//! (4 bytes) comes back. Perplexity uses the same trunk with a scoring head: logits for every token and, on the GPU,
//! the negative log-likelihood of the token that follows each, one `f32` per token back.

use super::kv_cache::KvCache;
use super::weights::Weights;
use crate::config::ModelConfig;
use crate::gpu::ops::{self, AttentionIo, AttentionShape, RopeParams};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};
use crate::{err, Result};

/// Inputs the engine writes before each submit.
#[derive(Debug)]
pub struct StepInputs {
    /// `u32 [batch]`: the tokens of this step.
    pub ids: Tensor,
    /// `u32 [batch]`: their positions in the sequence.
    pub pos: Tensor,
    /// `u32 [4]`: `[n_past, n_tokens, 0, 0]`.
    pub step: Tensor,
}

/// Activations of one batch size, `[batch, width]` each.
#[derive(Debug)]
struct Activations {
    x: Tensor,
    xn: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: Tensor,
    h: Tensor,
    gate: Tensor,
    up: Tensor,
    /// `[1, n_embd]`: the last token's normed state.
    last: Tensor,
    /// The decode attention's scratch (batch 1 only), shared by the layers, which run one after another.
    partials: Option<Tensor>,
}

/// One buffer of a dispatch list: see [`Graph::activation_shapes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationShape {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// The buffers of [`Graph::activation_shapes`], allocated, until the pass takes each by name.
struct Buffers(Vec<(&'static str, Tensor)>);

impl Buffers {
    fn allocate(gpu: &Gpu, shapes: Vec<ActivationShape>) -> Result<Buffers> {
        let tensors = shapes.into_iter().map(|s| Ok((s.name, Tensor::new(gpu, s.name, &s.shape, s.dtype)?)));
        Ok(Buffers(tensors.collect::<Result<_>>()?))
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        let at = self.0.iter().position(|(n, _)| *n == name);
        let at = at.ok_or_else(|| err!(Usage, "the forward pass has no buffer '{name}' in its list"))?;
        Ok(self.0.swap_remove(at).1)
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
    },
    Score {
        /// `u32 [batch]`: the token each position should predict (written before each submit).
        targets: Tensor,
        /// `f32 [batch, n_vocab]`: every token's logits.
        logits: Tensor,
        /// `f32 [batch]`: `-log p(targets[i])` after token `i`.
        nll: Tensor,
    },
}

/// The dispatch list of one batch size and the buffers it reads and writes.
#[derive(Debug)]
pub struct Graph {
    pub batch: usize,
    pub inputs: StepInputs,
    pub head: Head,
    dispatches: Vec<Dispatch>,
    acts: Activations,
}

impl Graph {
    /// Builds the forward pass for batches of exactly `batch` tokens over `cache`, ending as `kind` says; a sampler
    /// reads its settings from `sampling` (see [`crate::gpu::ops::SamplingParams`]).
    pub fn build(
        gpu: &Gpu,
        config: &ModelConfig,
        weights: &Weights,
        cache: &KvCache,
        batch: usize,
        kind: HeadKind,
        sampling: &Tensor,
    ) -> Result<Graph> {
        if batch == 0 {
            return Err(err!(Usage, "a batch of zero tokens"));
        }
        let c = config;
        let mut buffers = Buffers::allocate(gpu, Self::activation_shapes(gpu, c, cache.ctx(), batch, kind)?)?;
        let inputs = StepInputs { ids: buffers.take("ids")?, pos: buffers.take("pos")?, step: buffers.take("step")? };
        let a = Activations {
            x: buffers.take("x")?,
            xn: buffers.take("xn")?,
            q: buffers.take("q")?,
            k: buffers.take("k")?,
            v: buffers.take("v")?,
            attn: buffers.take("attn")?,
            h: buffers.take("h")?,
            gate: buffers.take("gate")?,
            up: buffers.take("up")?,
            last: buffers.take("last")?,
            partials: buffers.take("attention partials").ok(),
        };

        let rope = RopeParams::from_config(c, weights.rope_freqs.as_ref());
        let shape = attention_shape(c, cache.ctx(), batch);
        let mut d: Vec<Dispatch> = Vec::new();
        let eps = c.rms_norm_eps;

        // x = embedding of the tokens                                     [batch, n_embd]
        d.extend(ops::get_rows(gpu, &weights.token_embd, &inputs.ids, &a.x)?);
        for (l, w) in weights.layers.iter().enumerate() {
            // Attention block: xn = norm(x); q, k, v = projections (+ bias); RoPE on q and k.
            d.push(ops::rms_norm(gpu, &a.x, &w.attn_norm, &a.xn, eps)?);
            d.extend(ops::matmul(gpu, &w.wq, &a.xn, &a.q)?); //                [batch, n_head · head_dim]
            d.extend(ops::matmul(gpu, &w.wk, &a.xn, &a.k)?); //                [batch, n_head_kv · head_dim]
            d.extend(ops::matmul(gpu, &w.wv, &a.xn, &a.v)?);
            if let Some([bq, bk, bv]) = &w.bias {
                d.push(ops::add(gpu, &a.q, bq, &a.q)?);
                d.push(ops::add(gpu, &a.k, bk, &a.k)?);
                d.push(ops::add(gpu, &a.v, bv, &a.v)?);
            }
            d.push(ops::rope(gpu, &a.q, &inputs.pos, c.n_head, c.head_dim, &rope)?);
            d.push(ops::rope(gpu, &a.k, &inputs.pos, c.n_head_kv, c.head_dim, &rope)?);
            // The batch's keys and values join the cache at rows n_past..; attention reads rows 0..=n_past + t.
            d.push(ops::kv_store(gpu, &a.k, &cache.k[l], &inputs.step)?);
            d.push(ops::kv_store(gpu, &a.v, &cache.v[l], &inputs.step)?);
            let io =
                AttentionIo { q: &a.q, k_cache: &cache.k[l], v_cache: &cache.v[l], out: &a.attn, step: &inputs.step };
            match &a.partials {
                Some(partials) => d.extend(ops::attention_decode_with(gpu, io, shape, partials)?),
                None => d.push(ops::attention_prefill(gpu, io, shape)?),
            }
            // x += attn · Wo                                              [batch, n_embd]
            d.extend(ops::matmul(gpu, &w.wo, &a.attn, &a.h)?);
            d.push(ops::add(gpu, &a.x, &a.h, &a.x)?);
            // Feed-forward block: x += W_down · (silu(W_gate · xn) ⊙ W_up · xn)
            d.push(ops::rms_norm(gpu, &a.x, &w.ffn_norm, &a.xn, eps)?);
            d.extend(ops::matmul(gpu, &w.w_gate, &a.xn, &a.gate)?); //         [batch, n_ff]
            d.extend(ops::matmul(gpu, &w.w_up, &a.xn, &a.up)?);
            d.push(ops::silu_mul(gpu, &a.gate, &a.up, &a.gate)?);
            d.extend(ops::matmul(gpu, &w.w_down, &a.gate, &a.h)?);
            d.push(ops::add(gpu, &a.x, &a.h, &a.x)?);
        }
        let n_vocab = c.n_vocab as usize;
        let head = match kind {
            HeadKind::Sample => {
                // Only the last token's logits are needed: final norm and LM head on that row.   [1, n_vocab]
                let (logits, token) = (buffers.take("logits")?, buffers.take("token")?);
                let last_row = a.x.view_rows(gpu, batch - 1, 1)?;
                d.push(ops::rms_norm(gpu, &last_row, &weights.output_norm, &a.last, eps)?);
                d.extend(ops::matmul(gpu, weights.lm_head(), &a.last, &logits)?);
                // The next token, sampled on the GPU.                                            u32 [1]
                d.extend(ops::sample(gpu, &logits, 0, n_vocab, sampling, &token, 0)?);
                Head::Sample { logits, token }
            }
            HeadKind::Score => {
                // Every token's logits, and the NLL of the token that follows it.       [batch, n_vocab], [batch]
                let (targets, logits, nll) = (buffers.take("targets")?, buffers.take("logits")?, buffers.take("nll")?);
                d.push(ops::rms_norm(gpu, &a.x, &weights.output_norm, &a.xn, eps)?);
                d.extend(ops::matmul(gpu, weights.lm_head(), &a.xn, &logits)?);
                d.push(ops::nll(gpu, &logits, &targets, &nll)?);
                Head::Score { targets, logits, nll }
            }
        };
        Ok(Graph { batch, inputs, head, dispatches: d, acts: a })
    }

    /// Every buffer [`Graph::build`] allocates for batches of `batch` tokens over a cache of `ctx` tokens, ending as
    /// `kind` says: the step inputs, the activations, the decode attention's scratch and the head's outputs. `build`
    /// allocates exactly this list, and the memory plan (`crate::model::plan`) counts it, so the two cannot drift.
    pub fn activation_shapes(
        gpu: &Gpu,
        config: &ModelConfig,
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
        let f32 = |name, shape: &[usize]| ActivationShape { name, shape: shape.to_vec(), dtype: DType::F32 };
        let u32 = |name, shape: &[usize]| ActivationShape { name, shape: shape.to_vec(), dtype: DType::U32 };
        let mut list = vec![u32("ids", &[batch]), u32("pos", &[batch]), u32("step", &[4])];
        for (name, width) in [("x", e), ("xn", e), ("q", q_dim), ("k", kv_dim), ("v", kv_dim), ("attn", q_dim)] {
            list.push(f32(name, &[batch, width]));
        }
        list.extend([f32("h", &[batch, e]), f32("gate", &[batch, ff]), f32("up", &[batch, ff]), f32("last", &[1, e])]);
        if batch == 1 {
            let partials = ops::attention_decode_partials_shape(gpu, attention_shape(c, ctx, batch))?;
            list.push(f32("attention partials", &partials));
        }
        match kind {
            HeadKind::Sample => list.extend([f32("logits", &[1, n_vocab]), u32("token", &[1])]),
            HeadKind::Score => {
                list.extend([u32("targets", &[batch]), f32("logits", &[batch, n_vocab]), f32("nll", &[batch])])
            }
        }
        Ok(list)
    }

    /// Writes the step's inputs and submits the whole pass as one command buffer. `tokens.len()` must equal the batch.
    pub fn submit(&self, gpu: &Gpu, tokens: &[u32], n_past: usize) -> Result<()> {
        if tokens.len() != self.batch {
            return Err(err!(Usage, "{} tokens for a graph of batch {}", tokens.len(), self.batch));
        }
        let pos: Vec<u32> = (0..tokens.len()).map(|i| (n_past + i) as u32).collect();
        gpu.write_buffer(self.inputs.ids.buffer(), 0, bytemuck::cast_slice(tokens))?;
        gpu.write_buffer(self.inputs.pos.buffer(), 0, bytemuck::cast_slice(&pos))?;
        let step = [n_past as u32, tokens.len() as u32, 0, 0];
        gpu.write_buffer(self.inputs.step.buffer(), 0, bytemuck::cast_slice(&step))?;
        gpu.submit(&self.dispatches);
        Ok(())
    }

    /// Writes the targets of a scoring pass (`targets.len()` must equal the batch); see [`HeadKind::Score`].
    pub fn set_targets(&self, gpu: &Gpu, targets: &[u32]) -> Result<()> {
        match &self.head {
            Head::Score { targets: buffer, .. } if targets.len() == self.batch => {
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

    /// One line per dispatch ([`Dispatch::describe`]): what `webr1 bench --dispatches` prints.
    pub fn describe(&self) -> Vec<String> {
        self.dispatches.iter().map(Dispatch::describe).collect()
    }

    /// Dispatches in the pass (for reports and tests).
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
}
