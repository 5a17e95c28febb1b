//! A loaded model ready to compute: the GPU, the weights, the KV cache and the dispatch lists, and the two moves of
//! generation: feed tokens (prefill or one decode step), then read the sampled token (4 bytes) or, for tests and
//! perplexity, the logits.

use crate::config::ModelConfig;
use crate::gpu::ops::mask_words;
use crate::gpu::ops::SamplingParams;
use crate::gpu::profile::{Submission, SubmitStep};
use crate::gpu::tensor::read_mapped;
use crate::gpu::{buffer_bytes, tensor_bytes, DType, Dispatch, Gpu, Readback, StepShape, Tensor};
use crate::model::{ActivationShape, Graph, Head, HeadKind, KvCache, StepInputs, Weights};
use crate::{err, Result};
use std::collections::{HashMap, VecDeque};

/// How many prompt tokens one prefill step takes at most (fewer where the device's bindings are smaller: see
/// [`Session::new`]).
pub const DEFAULT_PREFILL_BATCH: usize = 256;

/// One position's highest logits, highest first (ties: lower id first), and the log-sum-exp over the vocabulary,
/// so that `logit - lse` is a log-probability: what the golden fixtures record per step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopLogits {
    pub top: Vec<(u32, f32)>,
    pub lse: f32,
}

impl TopLogits {
    /// The `k` highest of `logits` and their log-sum-exp (computed in f64).
    pub fn of(logits: &[f32], k: usize) -> TopLogits {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let k = k.min(order.len());
        if k > 0 && k < order.len() {
            order.select_nth_unstable_by(k - 1, by_logit);
        }
        order.truncate(k);
        order.sort_by(by_logit);
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = logits.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        TopLogits { top: order.iter().map(|&i| (i, logits[i as usize])).collect(), lse: (max + sum.ln()) as f32 }
    }
}

/// Staging buffers the sampled tokens are copied into at the end of each sampling step, so that a step's token can be
/// read back while the steps after it run.
struct TokenRing {
    slots: Vec<wgpu::Buffer>,
    next: usize,
}

/// Staging buffers: a step may be read while one more runs, and a dropped one may still be in flight.
const RING_SLOTS: usize = 4;
/// A sampled token: one `u32`.
const TOKEN_BYTES: u64 = 4;

impl TokenRing {
    fn new(gpu: &Gpu) -> Result<TokenRing> {
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let slots = (0..RING_SLOTS)
            .map(|i| gpu.create_buffer(&format!("token {i}"), TOKEN_BYTES, usage))
            .collect::<Result<_>>()?;
        Ok(TokenRing { slots, next: 0 })
    }

    fn take(&mut self) -> usize {
        let slot = self.next;
        self.next = (self.next + 1) % self.slots.len();
        slot
    }
}

/// The shape of the sampling settings' tensor ([`SamplingParams`]).
const SAMPLING_SHAPE: [usize; 1] = [SamplingParams::WORDS];

/// The readback staging buffer holds one row of logits (the largest read besides tokens).
fn readback_capacity(config: &ModelConfig) -> u64 {
    (u64::from(config.n_vocab) * 4).max(16)
}

/// Bytes of the buffers a session allocates besides the KV cache and its dispatch lists: the step inputs
/// ([`StepInputs::shapes`]), the sampling settings, the readback staging buffer, the token ring, and the token mask of
/// structured output (made on first use, [`Session::set_mask`]). The memory plan counts these (`crate::model::plan`).
pub fn scratch_bytes(config: &ModelConfig, prefill_batch: usize) -> Result<u64> {
    let mut tensors = StepInputs::shapes(prefill_batch.max(1));
    tensors.push(ActivationShape { name: "sampling", shape: SAMPLING_SHAPE.to_vec(), dtype: DType::U32 });
    let mask = vec![mask_words(config.n_vocab as usize)];
    tensors.push(ActivationShape { name: "token mask", shape: mask, dtype: DType::U32 });
    let mut bytes = Readback::buffer_size(readback_capacity(config)) + RING_SLOTS as u64 * TOKEN_BYTES;
    for t in tensors {
        bytes += buffer_bytes(tensor_bytes(t.name, &t.shape, t.dtype)?);
    }
    Ok(bytes)
}

/// The prefill and scoring batches of a session of `ctx` tokens asked for chunks of `requested`: at most the context,
/// and few enough tokens that a step's widest activation (`[batch, width]` f32) and, for scoring, a row of logits per
/// token fit one binding. The memory plan sizes the same batches (`crate::model::plan`).
pub fn step_batches(gpu: &Gpu, config: &ModelConfig, ctx: usize, requested: usize) -> (usize, usize) {
    let c = config;
    let widest = [c.n_ff, c.q_dim() + 2 * c.kv_dim(), c.n_embd].into_iter().max().unwrap_or(1).max(1);
    let rows_fitting = |width: u32| (gpu.max_binding_bytes() / (u64::from(width) * 4)).max(1) as usize;
    let prefill = requested.clamp(1, rows_fitting(widest).min(ctx.max(1)));
    (prefill, prefill.min(rows_fitting(c.n_vocab.max(1))))
}

/// What the token loop did (see [`Session`]): for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Sampled tokens read back.
    pub reads: u64,
    /// Of those, the ones read while the next decode step was already submitted (the GPU kept working).
    pub reads_ahead: u64,
}

/// A submitted sampling step whose token has not been read yet.
struct Pending {
    slot: usize,
    submission: Submission,
}

/// One submitted step, as the profiler's trace records it ([`Session::trace`]).
#[derive(Debug, Clone, Copy)]
pub struct TracedStep {
    /// The graph: its batch and head.
    pub graph: (usize, HeadKind),
    /// Whether the head ran, and which sampling head.
    pub with_head: bool,
    pub greedy: bool,
    pub shape: StepShape,
}

/// The model on the GPU with its cache.
///
/// # The token loop
/// Every sampling step ends with the sampler writing its token into the next decode step's inputs on the GPU, and a
/// copy of it into a staging buffer. So decoding never waits for the CPU: [`Session::advance`] submits the next
/// decode step (which consumes the token that is still on its way back) before [`Session::next_token`] reads the
/// previous one; the caller then [`Session::keep`]s that token (it is in the cache now) or [`Session::discard`]s the
/// step in flight (end of generation: the cache forgets the row that step wrote).
pub struct Session {
    pub gpu: Gpu,
    pub config: ModelConfig,
    pub weights: Weights,
    pub cache: KvCache,
    prefill_batch: usize,
    /// Tokens per scoring step: the prefill batch, or fewer when a row of logits per token would not fit one binding.
    score_batch: usize,
    inputs: StepInputs,
    /// At most three: the decode step's, the prefill's and the scoring's, each built on first use and kept.
    graphs: HashMap<(usize, HeadKind), Graph>,
    /// Graphs built since the session began (tests check that none is built after the first prompt).
    graphs_built: usize,
    sampling: Tensor,
    /// Whether the sampling settings are greedy: steps run the argmax head.
    greedy: bool,
    readback: Readback,
    tokens: TokenRing,
    pending: VecDeque<Pending>,
    /// The next decode step's inputs on the GPU hold a sampled token no step has consumed yet.
    next_ready: bool,
    /// Cache rows written by steps in flight for tokens not yet kept (0 or 1).
    provisional: usize,
    /// The sampling graph that ran last (its `logits` and `token` hold the latest results) and its step's tokens.
    last: Option<((usize, HeadKind), usize)>,
    stats: LoopStats,
    /// The steps submitted since tracing began, when it did ([`Session::trace`]).
    trace: Option<Vec<TracedStep>>,
    /// Constrained decoding: the allowed-token bits (`u32 [n_vocab / 32]`, made on first use), the mask dispatch of
    /// each sampling graph that used it, and whether the next [`Session::feed`] applies it.
    mask: Option<Tensor>,
    mask_dispatches: HashMap<usize, Dispatch>,
    mask_armed: bool,
    /// Steps submitted with a token mask (tests check that unconstrained decoding has none).
    masked_steps: u64,
}

impl Session {
    pub fn new(gpu: Gpu, config: ModelConfig, weights: Weights, ctx: usize, prefill_batch: usize) -> Result<Session> {
        let cache = KvCache::new(&gpu, &config, ctx)?;
        let (prefill_batch, score_batch) = step_batches(&gpu, &config, ctx, prefill_batch);
        let inputs = StepInputs::new(&gpu, prefill_batch)?;
        let sampling = Tensor::new(&gpu, "sampling", &SAMPLING_SHAPE, DType::U32)?;
        let readback = Readback::new(&gpu, readback_capacity(&config))?;
        let tokens = TokenRing::new(&gpu)?;
        let mut session = Session {
            gpu,
            config,
            weights,
            cache,
            prefill_batch,
            score_batch,
            inputs,
            graphs: HashMap::new(),
            graphs_built: 0,
            sampling,
            greedy: false,
            readback,
            tokens,
            pending: VecDeque::new(),
            next_ready: false,
            provisional: 0,
            last: None,
            stats: LoopStats::default(),
            trace: None,
            mask: None,
            mask_dispatches: HashMap::new(),
            mask_armed: false,
            masked_steps: 0,
        };
        session.ensure_graph((1, HeadKind::Sample))?;
        session.set_sampling(&SamplingParams::greedy())?;
        Ok(session)
    }

    /// Sets how the next tokens are chosen.
    pub fn set_sampling(&mut self, params: &SamplingParams) -> Result<()> {
        self.greedy = params.is_greedy();
        self.gpu.write_buffer(self.sampling.buffer(), 0, bytemuck::bytes_of(params))
    }

    /// The graph that runs a step of `n` tokens ending as `kind` says: one token samples through the decode graph,
    /// more through the prefill graph (which reads the count from the step's inputs); scoring has a graph of its own.
    fn key(&self, n: usize, kind: HeadKind) -> (usize, HeadKind) {
        match kind {
            HeadKind::Sample if n <= 1 => (1, kind),
            HeadKind::Sample => (self.prefill_batch, kind),
            HeadKind::Score => (self.score_batch, kind),
        }
    }

    /// Builds graph `key` on first use; the graphs are never rebuilt.
    fn ensure_graph(&mut self, key: (usize, HeadKind)) -> Result<()> {
        if !self.graphs.contains_key(&key) {
            let (c, w, cache, inputs) = (&self.config, &self.weights, &self.cache, &self.inputs);
            let graph = Graph::build(&self.gpu, c, w, cache, inputs, key.0, key.1, &self.sampling)?;
            self.graphs_built += 1;
            self.graphs.insert(key, graph);
        }
        Ok(())
    }

    /// Graphs built since the session began: the decode graph at load, then the prefill and scoring graphs on first
    /// use, and never again.
    pub fn graphs_built(&self) -> usize {
        self.graphs_built
    }

    fn check_room(&self, n: usize) -> Result<()> {
        if self.cache.len() + self.provisional + n > self.cache.ctx() {
            return Err(err!(
                ContextFull,
                "the context holds {} tokens; {n} more do not fit in {}",
                self.cache.len() + self.provisional,
                self.cache.ctx()
            ));
        }
        Ok(())
    }

    /// Submits one step of graph `key` (its inputs already written): the head too when `with_head`, and then the
    /// copy of a sampled token to a staging buffer, queued for [`Session::next_token`].
    fn submit(&mut self, key: (usize, HeadKind), n: usize, with_head: bool) -> Result<Submission> {
        self.record(key, n, with_head);
        // A constrained step (Session::set_mask): the mask goes between the LM head and the sampler.
        let masked = with_head && key.1 == HeadKind::Sample && std::mem::take(&mut self.mask_armed);
        if masked && !self.mask_dispatches.contains_key(&key.0) {
            let mask = self.mask.as_ref().ok_or_else(|| err!(Usage, "no token mask was set"))?;
            let dispatch = self.graphs[&key].mask_dispatch(&self.gpu, mask)?;
            self.mask_dispatches.insert(key.0, dispatch);
        }
        let mask = if masked { self.mask_dispatches.get(&key.0) } else { None };
        self.masked_steps += u64::from(masked);
        let graph = &self.graphs[&key];
        let mut encoder = self.gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        graph.encode(&self.gpu, &mut encoder, with_head, self.greedy, mask);
        let slot = self.copy_token(&mut encoder, key, with_head);
        let submission = self.gpu.submit_commands([encoder.finish()]);
        self.queue_token(key, n, slot, &submission);
        Ok(submission)
    }

    /// Records the copy of a sampling step's token into a staging buffer; returns the buffer's slot.
    fn copy_token(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        key: (usize, HeadKind),
        with_head: bool,
    ) -> Option<usize> {
        match (&self.graphs[&key].head, with_head) {
            (Head::Sample { token, .. }, true) => {
                let slot = self.tokens.take();
                encoder.copy_buffer_to_buffer(token.buffer(), token.offset(), &self.tokens.slots[slot], 0, 4);
                Some(slot)
            }
            _ => None,
        }
    }

    /// After a submission: its token (when it sampled one) waits to be read, and is the next step's input.
    fn queue_token(&mut self, key: (usize, HeadKind), n: usize, slot: Option<usize>, submission: &Submission) {
        if let Some(slot) = slot {
            self.pending.push_back(Pending { slot, submission: submission.clone() });
            self.last = Some((key, n));
        }
        self.next_ready = slot.is_some();
    }

    /// Adds a step about to be submitted to the trace, when tracing.
    fn record(&mut self, graph: (usize, HeadKind), n_tokens: usize, with_head: bool) {
        let n_past = self.cache.len() + self.provisional;
        if let Some(trace) = &mut self.trace {
            trace.push(TracedStep { graph, with_head, greedy: self.greedy, shape: StepShape { n_past, n_tokens } });
        }
    }

    /// Starts recording the steps submitted (`true`), or stops and returns them (`false`): the profiler's view of the
    /// normal path (`engine::profile`).
    pub fn trace(&mut self, on: bool) -> Vec<TracedStep> {
        let steps = self.trace.take().unwrap_or_default();
        self.trace = on.then(Vec::new);
        steps
    }

    /// The dispatches a traced step ran, in order.
    pub fn traced_dispatches(&self, step: &TracedStep) -> Vec<&Dispatch> {
        match self.graphs.get(&step.graph) {
            Some(graph) => graph.dispatches(step.greedy, step.with_head).collect(),
            None => Vec::new(),
        }
    }

    /// [`Session::feed`] with each chunk's dispatches handed to `submit` instead of one command buffer (the profiler's
    /// timed run, which puts each dispatch in a pass of its own: `engine::profile`); the copy of the token follows in a
    /// submission of its own.
    pub fn feed_with(&mut self, tokens: &[u32], submit: &mut SubmitStep<'_>) -> Result<()> {
        self.discard();
        self.check_room(tokens.len())?;
        let chunks = tokens.len().div_ceil(self.prefill_batch);
        for (i, chunk) in tokens.chunks(self.prefill_batch).enumerate() {
            let n_past = self.cache.len();
            let key = self.key(chunk.len(), HeadKind::Sample);
            self.ensure_graph(key)?;
            self.inputs.write(&self.gpu, chunk, n_past)?;
            let with_head = i + 1 == chunks;
            let list: Vec<Dispatch> = self.graphs[&key].dispatches(self.greedy, with_head).cloned().collect();
            submit(&self.gpu, &list, StepShape { n_past, n_tokens: chunk.len() })?;
            let mut encoder = self.gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let slot = self.copy_token(&mut encoder, key, with_head);
            let submission = self.gpu.submit_commands([encoder.finish()]);
            self.queue_token(key, chunk.len(), slot, &submission);
            self.cache.extend(chunk);
        }
        Ok(())
    }

    /// `n` greedy decode steps after `first` (fed by the CPU), as generation runs them: each step is submitted before
    /// the previous step's token is read. The loop `bench`'s `tgN` and the profiler measure.
    pub async fn decode_greedy(&mut self, first: u32, n: usize) -> Result<()> {
        self.set_sampling(&SamplingParams::greedy())?;
        self.feed(&[first])?;
        for step in 1..=n {
            if step < n {
                self.advance()?;
            }
            let token = self.next_token().await?;
            if step < n {
                self.keep(token)?;
            }
        }
        Ok(())
    }

    /// Computes `tokens` after those already in the cache, in chunks of at most the prefill batch; afterwards the
    /// token sampled after the last one is on its way ([`Session::next_token`]), and the next decode step's inputs are
    /// set. Steps in flight are dropped first ([`Session::discard`]). Fails when the context would overflow.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.discard();
        self.check_room(tokens.len())?;
        let chunks = tokens.len().div_ceil(self.prefill_batch);
        for (i, chunk) in tokens.chunks(self.prefill_batch).enumerate() {
            let n_past = self.cache.len();
            let key = self.key(chunk.len(), HeadKind::Sample);
            self.ensure_graph(key)?;
            self.inputs.write(&self.gpu, chunk, n_past)?;
            // Only the last chunk's logits are needed.
            self.submit(key, chunk.len(), i + 1 == chunks)?;
            self.cache.extend(chunk);
        }
        Ok(())
    }

    /// Submits one decode step on the token sampled last, which is still on the GPU (its inputs were written there by
    /// the sampler), without waiting for it: call it before [`Session::next_token`] reads that token. The token's
    /// cache row is then written; [`Session::keep`] records which token it was, [`Session::discard`] forgets it.
    pub fn advance(&mut self) -> Result<()> {
        if !self.next_ready || self.provisional > 0 {
            return Err(err!(Usage, "advance: no sampled token to continue from, or one step is already in flight"));
        }
        self.check_room(1)?;
        self.ensure_graph((1, HeadKind::Sample))?;
        self.submit((1, HeadKind::Sample), 1, true)?;
        self.provisional = 1;
        Ok(())
    }

    /// Reads the oldest sampled token not read yet (4 bytes; natively this waits for its step only, not for a step
    /// submitted after it).
    pub async fn next_token(&mut self) -> Result<u32> {
        let pending = self
            .pending
            .pop_front()
            .ok_or_else(|| err!(Usage, "no tokens were fed since the last rewind or scoring"))?;
        self.stats.reads += 1;
        self.stats.reads_ahead += u64::from(!self.pending.is_empty());
        let buffer = &self.tokens.slots[pending.slot];
        let bytes = read_mapped(&self.gpu, buffer, 4, &pending.submission).await?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Records that the step in flight (from [`Session::advance`]) consumed `token`, the one just read: its cache row
    /// is now the cache's.
    pub fn keep(&mut self, token: u32) -> Result<()> {
        if self.provisional == 0 {
            return Err(err!(Usage, "keep: no decode step is in flight"));
        }
        self.provisional = 0;
        self.cache.extend(&[token]);
        Ok(())
    }

    /// Forgets the steps in flight and the tokens not read: their cache rows are overwritten by the next step.
    pub fn discard(&mut self) {
        self.pending.clear();
        self.next_ready = false;
        self.provisional = 0;
    }

    /// Constrained decoding (README.md, "Structured output"): the token sampled after the next [`Session::feed`] is
    /// one whose bit is set in `allowed` (one bit per token id, 32 to a word, least significant first: llguidance's
    /// mask words). One upload of n_vocab / 8 bytes; the feed after that one samples freely again.
    pub fn set_mask(&mut self, allowed: &[u32]) -> Result<()> {
        let words = mask_words(self.config.n_vocab as usize);
        if allowed.len() < words {
            return Err(err!(Usage, "a token mask of {} words for a vocabulary of {words} words", allowed.len()));
        }
        if self.mask.is_none() {
            self.mask = Some(Tensor::new(&self.gpu, "token mask", &[words], DType::U32)?);
        }
        let mask = self.mask.as_ref().ok_or_else(|| err!(Usage, "no token mask"))?;
        self.gpu.write_buffer(mask.buffer(), 0, bytemuck::cast_slice(&allowed[..words]))?;
        self.mask_armed = true;
        Ok(())
    }

    /// Computes `tokens` after those already in the cache, like [`Session::feed`], and returns for each position `i`
    /// the negative log-likelihood (natural log) of `targets[i]` given the tokens up to and including `tokens[i]`.
    /// The logits stay on the GPU: 4 bytes per token come back. Afterwards no sampled token is ready.
    pub async fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>> {
        self.check_scoring(tokens, targets)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (chunk, want) in tokens.chunks(self.score_batch).zip(targets.chunks(self.score_batch)) {
            let (nll, _) = self.submit_scoring(chunk, want)?;
            // The graph's rows past the chunk's hold nothing of this step.
            let bytes = self.readback.read(&self.gpu, nll.buffer(), nll.offset(), 4 * chunk.len() as u64).await?;
            out.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
        }
        Ok(out)
    }

    /// Computes `tokens` after those already in the cache through the scoring graphs, like [`Session::score`], and
    /// returns each position's `top_k` highest logits and log-sum-exp (the teacher-forced logits the golden fixtures
    /// record). Every row of logits comes back to the CPU: for tests and cross-checks, not for speed.
    pub async fn teacher_forced(&mut self, tokens: &[u32], top_k: usize) -> Result<Vec<TopLogits>> {
        // The targets only feed the NLL kernel, whose result is not read here.
        let targets = vec![0; tokens.len()];
        self.check_scoring(tokens, &targets)?;
        let row_bytes = u64::from(self.config.n_vocab) * 4;
        let mut out = Vec::with_capacity(tokens.len());
        for (chunk, want) in tokens.chunks(self.score_batch).zip(targets.chunks(self.score_batch)) {
            let (_, logits) = self.submit_scoring(chunk, want)?;
            for row in 0..chunk.len() as u64 {
                let at = logits.offset() + row * row_bytes;
                let bytes = self.readback.read(&self.gpu, logits.buffer(), at, row_bytes).await?;
                out.push(TopLogits::of(&bytemuck::pod_collect_to_vec::<u8, f32>(&bytes), top_k));
            }
        }
        Ok(out)
    }

    fn check_scoring(&mut self, tokens: &[u32], targets: &[u32]) -> Result<()> {
        if tokens.len() != targets.len() {
            return Err(err!(Usage, "score: {} tokens but {} targets", tokens.len(), targets.len()));
        }
        if let Some(&bad) = targets.iter().find(|&&t| t >= self.config.n_vocab) {
            return Err(err!(Usage, "score: target {bad} is outside the vocabulary of {}", self.config.n_vocab));
        }
        self.discard();
        self.check_room(tokens.len())?;
        self.last = None;
        Ok(())
    }

    /// Submits one chunk of at most the prefill batch through its scoring graph; returns the graph's NLL
    /// (`f32 [chunk]`) and logits (`f32 [chunk, n_vocab]`) tensors, ready once the submission has run.
    fn submit_scoring(&mut self, chunk: &[u32], targets: &[u32]) -> Result<(Tensor, Tensor)> {
        let n_past = self.cache.len();
        let key = self.key(chunk.len(), HeadKind::Score);
        self.ensure_graph(key)?;
        self.graphs[&key].set_targets(&self.gpu, targets)?;
        self.inputs.write(&self.gpu, chunk, n_past)?;
        self.submit(key, chunk.len(), true)?;
        let Head::Score { nll, logits, .. } = &self.graphs[&key].head else {
            return Err(err!(Usage, "not a scoring graph"));
        };
        let tensors = (nll.clone(), logits.clone());
        self.cache.extend(chunk);
        Ok(tensors)
    }

    /// Keeps only the first `n` cached tokens (to reuse a shared prefix); steps in flight are dropped.
    pub fn rewind(&mut self, n: usize) {
        self.discard();
        self.cache.truncate(n);
    }

    /// The last sampling graph's logits and sampled token.
    fn last_head(&self) -> Result<(&Tensor, &Tensor)> {
        match &self.last_graph()?.head {
            Head::Sample { logits, token, .. } => Ok((logits, token)),
            Head::Score { .. } => Err(err!(Usage, "no tokens were fed since the last rewind or scoring")),
        }
    }

    /// The sampling graph that ran last.
    fn last_graph(&self) -> Result<&Graph> {
        let graph = self.last.and_then(|(key, _)| self.graphs.get(&key));
        graph.ok_or_else(|| err!(Usage, "no tokens were fed since the last rewind or scoring"))
    }

    /// The token sampled after the last fed token (reads back 4 bytes): [`Session::next_token`] when one step is in
    /// flight.
    pub async fn sampled(&mut self) -> Result<u32> {
        self.next_token().await
    }

    /// The logits after the last fed token.
    pub async fn logits(&mut self) -> Result<Vec<f32>> {
        let logits = self.last_head()?.0.clone();
        let bytes = self.readback.read(&self.gpu, logits.buffer(), logits.offset(), logits.byte_size()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The residual stream after the last layer for the last fed step's tokens, `[n_tokens, n_embd]` (for tests).
    pub async fn hidden_state(&mut self) -> Result<Vec<f32>> {
        let n = self.last.map_or(0, |(_, n)| n);
        let x = self.last_graph()?.hidden().view_rows(&self.gpu, 0, n)?;
        Ok(bytemuck::pod_collect_to_vec(&x.read_bytes(&self.gpu).await?))
    }

    /// The dispatch list that generation runs for a batch of `batch` tokens, one line per dispatch
    /// ([`crate::gpu::Dispatch::describe`]); built now if it was not yet.
    pub fn dispatch_list(&mut self, batch: usize) -> Result<Vec<String>> {
        let key = self.key(batch, HeadKind::Sample);
        self.ensure_graph(key)?;
        Ok(self.graphs[&key].describe())
    }

    /// Steps submitted with a token mask since the model was loaded (each uploaded one mask and ran one more
    /// dispatch than [`Session::decode_dispatches`]).
    pub fn masked_steps(&self) -> u64 {
        self.masked_steps
    }

    /// Prompt tokens per prefill dispatch list.
    pub fn prefill_batch(&self) -> usize {
        self.prefill_batch
    }

    /// What the token loop has done so far.
    pub fn loop_stats(&self) -> LoopStats {
        self.stats
    }

    /// Dispatches per decode step (greedy).
    pub fn decode_dispatches(&self) -> usize {
        self.graphs.get(&(1, HeadKind::Sample)).map_or(0, Graph::len)
    }

    /// The decode step's graph (for profiling: its dispatches and their order).
    pub fn decode_graph(&mut self) -> Result<&Graph> {
        self.ensure_graph((1, HeadKind::Sample))?;
        Ok(&self.graphs[&(1, HeadKind::Sample)])
    }
}
