//! A loaded model ready to compute: the GPU, the weights, the KV cache and the dispatch lists, and the two moves of
//! generation: feed tokens (prefill or one decode step), then read the sampled token (4 bytes) or, for tests and
//! perplexity, the logits.

use crate::config::ModelConfig;
use crate::gpu::ops::SamplingParams;
use crate::gpu::{DType, Gpu, Readback, Tensor};
use crate::model::{Graph, Head, HeadKind, KvCache, Weights};
use crate::{err, Result};
use std::collections::HashMap;

/// How many prompt tokens one prefill dispatch list takes at most.
pub const DEFAULT_PREFILL_BATCH: usize = 64;
/// Dispatch lists of odd sizes (the last chunk of a prompt) kept besides the decode and full-chunk ones.
pub(crate) const ODD_GRAPHS_KEPT: usize = 4;

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

/// The model on the GPU with its cache.
pub struct Session {
    pub gpu: Gpu,
    pub config: ModelConfig,
    pub weights: Weights,
    pub cache: KvCache,
    prefill_batch: usize,
    graphs: HashMap<(usize, HeadKind), Graph>,
    /// The odd graphs, oldest first.
    odd_graphs: Vec<(usize, HeadKind)>,
    sampling: Tensor,
    readback: Readback,
    /// The sampling graph that ran last (its `logits` and `token` hold the latest results).
    last_batch: Option<usize>,
}

impl Session {
    pub fn new(gpu: Gpu, config: ModelConfig, weights: Weights, ctx: usize, prefill_batch: usize) -> Result<Session> {
        let cache = KvCache::new(&gpu, &config, ctx)?;
        let sampling = Tensor::new(&gpu, "sampling", &[SamplingParams::WORDS], DType::U32)?;
        let readback = Readback::new(&gpu, (config.n_vocab as u64 * 4).max(16))?;
        let mut session = Session {
            gpu,
            config,
            weights,
            cache,
            prefill_batch: prefill_batch.max(1),
            graphs: HashMap::new(),
            odd_graphs: Vec::new(),
            sampling,
            readback,
            last_batch: None,
        };
        session.ensure_graph(1, HeadKind::Sample)?;
        Ok(session)
    }

    /// Sets how the next tokens are chosen.
    pub fn set_sampling(&self, params: &SamplingParams) -> Result<()> {
        self.gpu.write_buffer(self.sampling.buffer(), 0, bytemuck::bytes_of(params))
    }

    /// Builds the dispatch list for `batch` tokens ending as `kind` says on first use.
    fn ensure_graph(&mut self, batch: usize, kind: HeadKind) -> Result<()> {
        let key = (batch, kind);
        if !self.graphs.contains_key(&key) {
            let graph = Graph::build(&self.gpu, &self.config, &self.weights, &self.cache, batch, kind, &self.sampling)?;
            if key != (1, HeadKind::Sample) && batch != self.prefill_batch {
                self.odd_graphs.push(key);
                if self.odd_graphs.len() > ODD_GRAPHS_KEPT {
                    let old = self.odd_graphs.remove(0);
                    self.graphs.remove(&old);
                }
            }
            self.graphs.insert(key, graph);
        }
        Ok(())
    }

    fn check_room(&self, n: usize) -> Result<()> {
        if self.cache.len() + n > self.cache.ctx() {
            return Err(err!(
                ContextFull,
                "the context holds {} tokens; {n} more do not fit in {}",
                self.cache.len(),
                self.cache.ctx()
            ));
        }
        Ok(())
    }

    /// Computes `tokens` after those already in the cache, in chunks of at most the prefill batch; afterwards the
    /// logits and sampled token of the last one are ready. Fails when the context would overflow.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_room(tokens.len())?;
        for chunk in tokens.chunks(self.prefill_batch) {
            let n_past = self.cache.len();
            self.ensure_graph(chunk.len(), HeadKind::Sample)?;
            self.graphs[&(chunk.len(), HeadKind::Sample)].submit(&self.gpu, chunk, n_past)?;
            self.cache.extend(chunk);
            self.last_batch = Some(chunk.len());
        }
        Ok(())
    }

    /// Computes `tokens` after those already in the cache, like [`Session::feed`], and returns for each position `i`
    /// the negative log-likelihood (natural log) of `targets[i]` given the tokens up to and including `tokens[i]`.
    /// The logits stay on the GPU: 4 bytes per token come back. Afterwards no sampled token is ready.
    pub async fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>> {
        self.check_scoring(tokens, targets)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (chunk, want) in tokens.chunks(self.prefill_batch).zip(targets.chunks(self.prefill_batch)) {
            let (nll, _) = self.submit_scoring(chunk, want)?;
            let bytes = self.readback.read(&self.gpu, nll.buffer(), nll.offset(), nll.byte_size()).await?;
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
        for (chunk, want) in tokens.chunks(self.prefill_batch).zip(targets.chunks(self.prefill_batch)) {
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
        self.check_room(tokens.len())?;
        self.last_batch = None;
        Ok(())
    }

    /// Submits one chunk of at most the prefill batch through its scoring graph; returns the graph's NLL
    /// (`f32 [chunk]`) and logits (`f32 [chunk, n_vocab]`) tensors, ready once the submission has run.
    fn submit_scoring(&mut self, chunk: &[u32], targets: &[u32]) -> Result<(Tensor, Tensor)> {
        let n_past = self.cache.len();
        self.ensure_graph(chunk.len(), HeadKind::Score)?;
        let graph = &self.graphs[&(chunk.len(), HeadKind::Score)];
        graph.set_targets(&self.gpu, targets)?;
        graph.submit(&self.gpu, chunk, n_past)?;
        let Head::Score { nll, logits, .. } = &graph.head else { return Err(err!(Usage, "not a scoring graph")) };
        let tensors = (nll.clone(), logits.clone());
        self.cache.extend(chunk);
        Ok(tensors)
    }

    /// Keeps only the first `n` cached tokens (to reuse a shared prefix).
    pub fn rewind(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    /// The last sampling graph's logits and sampled token.
    fn last_head(&self) -> Result<(&Tensor, &Tensor)> {
        match &self.last_graph()?.head {
            Head::Sample { logits, token } => Ok((logits, token)),
            Head::Score { .. } => Err(err!(Usage, "no tokens were fed since the last rewind or scoring")),
        }
    }

    /// The sampling graph that ran last.
    fn last_graph(&self) -> Result<&Graph> {
        let graph = self.last_batch.and_then(|b| self.graphs.get(&(b, HeadKind::Sample)));
        graph.ok_or_else(|| err!(Usage, "no tokens were fed since the last rewind or scoring"))
    }

    /// The token sampled after the last fed token (reads back 4 bytes).
    pub async fn sampled(&mut self) -> Result<u32> {
        let buffer = self.last_head()?.1.buffer().clone();
        let bytes = self.readback.read(&self.gpu, &buffer, 0, 4).await?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The logits after the last fed token.
    pub async fn logits(&mut self) -> Result<Vec<f32>> {
        let logits = self.last_head()?.0.clone();
        let bytes = self.readback.read(&self.gpu, logits.buffer(), logits.offset(), logits.byte_size()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The residual stream after the last layer for the last fed tokens, `[batch, n_embd]` (for tests).
    pub async fn hidden_state(&mut self) -> Result<Vec<f32>> {
        let x = self.last_graph()?.hidden().clone();
        Ok(bytemuck::pod_collect_to_vec(&x.read_bytes(&self.gpu).await?))
    }

    /// The dispatch list that generation runs for a batch of `batch` tokens, one line per dispatch
    /// ([`crate::gpu::Dispatch::describe`]); built now if it was not yet.
    pub fn dispatch_list(&mut self, batch: usize) -> Result<Vec<String>> {
        self.ensure_graph(batch, HeadKind::Sample)?;
        Ok(self.graphs[&(batch, HeadKind::Sample)].describe())
    }

    /// Prompt tokens per prefill dispatch list.
    pub fn prefill_batch(&self) -> usize {
        self.prefill_batch
    }

    /// Dispatches per decode step.
    pub fn decode_dispatches(&self) -> usize {
        self.graphs.get(&(1, HeadKind::Sample)).map_or(0, Graph::len)
    }
}
