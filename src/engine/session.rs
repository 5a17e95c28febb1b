//! A loaded model ready to compute: the GPU, the weights, the KV cache and the dispatch lists, and the two moves of
//! generation: feed tokens (prefill or one decode step), then read the sampled token (4 bytes) or, for tests and
//! perplexity, the logits.

use crate::config::ModelConfig;
use crate::gpu::ops::SamplingParams;
use crate::gpu::{DType, Gpu, Readback, Tensor};
use crate::model::{Graph, KvCache, Weights};
use crate::{err, Result};
use std::collections::HashMap;

/// How many prompt tokens one prefill dispatch list takes at most.
pub const DEFAULT_PREFILL_BATCH: usize = 64;
/// Dispatch lists of odd sizes (the last chunk of a prompt) kept besides the decode and full-chunk ones.
const ODD_GRAPHS_KEPT: usize = 4;

/// The model on the GPU with its cache.
pub struct Session {
    pub gpu: Gpu,
    pub config: ModelConfig,
    pub weights: Weights,
    pub cache: KvCache,
    prefill_batch: usize,
    graphs: HashMap<usize, Graph>,
    /// Batch sizes of the odd graphs, oldest first.
    odd_graphs: Vec<usize>,
    sampling: Tensor,
    readback: Readback,
    /// The graph that ran last (its `logits` and `token` hold the latest results).
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
        session.ensure_graph(1)?;
        Ok(session)
    }

    /// Sets how the next tokens are chosen.
    pub fn set_sampling(&self, params: &SamplingParams) -> Result<()> {
        self.gpu.write_buffer(self.sampling.buffer(), 0, bytemuck::bytes_of(params))
    }

    /// Builds the dispatch list for `batch` tokens on first use.
    fn ensure_graph(&mut self, batch: usize) -> Result<()> {
        if !self.graphs.contains_key(&batch) {
            let graph = Graph::build(&self.gpu, &self.config, &self.weights, &self.cache, batch, &self.sampling)?;
            if batch != 1 && batch != self.prefill_batch {
                self.odd_graphs.push(batch);
                if self.odd_graphs.len() > ODD_GRAPHS_KEPT {
                    let old = self.odd_graphs.remove(0);
                    self.graphs.remove(&old);
                }
            }
            self.graphs.insert(batch, graph);
        }
        Ok(())
    }

    /// Computes `tokens` after those already in the cache, in chunks of at most the prefill batch; afterwards the
    /// logits and sampled token of the last one are ready. Fails when the context would overflow.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        if self.cache.len() + tokens.len() > self.cache.ctx() {
            return Err(err!(
                ContextFull,
                "the context holds {} tokens; {} more do not fit in {}",
                self.cache.len(),
                tokens.len(),
                self.cache.ctx()
            ));
        }
        for chunk in tokens.chunks(self.prefill_batch) {
            let n_past = self.cache.len();
            self.ensure_graph(chunk.len())?;
            let graph = self.graphs.get(&chunk.len()).ok_or_else(|| err!(Usage, "no graph of {}", chunk.len()))?;
            graph.submit(&self.gpu, chunk, n_past)?;
            self.cache.extend(chunk);
            self.last_batch = Some(chunk.len());
        }
        Ok(())
    }

    /// Keeps only the first `n` cached tokens (to reuse a shared prefix).
    pub fn rewind(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    fn last_graph(&self) -> Result<&Graph> {
        self.last_batch.and_then(|b| self.graphs.get(&b)).ok_or_else(|| err!(Usage, "no tokens were fed yet"))
    }

    /// The token sampled after the last fed token (reads back 4 bytes).
    pub async fn sampled(&mut self) -> Result<u32> {
        let buffer = self.last_graph()?.token.buffer().clone();
        let bytes = self.readback.read(&self.gpu, &buffer, 0, 4).await?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The logits after the last fed token.
    pub async fn logits(&mut self) -> Result<Vec<f32>> {
        let logits = self.last_graph()?.logits.clone();
        let bytes = self.readback.read(&self.gpu, logits.buffer(), logits.offset(), logits.byte_size()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Dispatches per decode step.
    pub fn decode_dispatches(&self) -> usize {
        self.graphs.get(&1).map_or(0, Graph::len)
    }
}
