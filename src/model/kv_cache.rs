//! The KV cache: keys and values of every layer for a preallocated context (ARCHITECTURE.md §7), f16 when the device
//! has `shader-f16`, f32 otherwise, and the tokens they belong to, so that a new prompt that extends them (the next turn
//! of a chat) only computes its new suffix.

use crate::config::ModelConfig;
use crate::gpu::{DType, Gpu, Tensor};
use crate::{err, Result};

/// Keys and values per layer, `[ctx, n_head_kv · head_dim]` each.
#[derive(Debug)]
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    ctx: usize,
    /// The tokens whose keys and values are in the cache, in order.
    tokens: Vec<u32>,
}

impl KvCache {
    /// The element type of the cache on this device: f16 with `shader-f16`, f32 otherwise.
    pub fn dtype(gpu: &Gpu) -> DType {
        if gpu.features().shader_f16 {
            DType::F16
        } else {
            DType::F32
        }
    }

    /// The shape of one layer's keys (and of its values) for `ctx` tokens: `[ctx, n_head_kv · head_dim]`.
    pub fn layer_shape(config: &ModelConfig, ctx: usize) -> [usize; 2] {
        [ctx, config.kv_dim() as usize]
    }

    /// Bytes the cache takes for `ctx` tokens on this device.
    pub fn bytes_for(gpu: &Gpu, config: &ModelConfig, ctx: usize) -> u64 {
        let elem = if gpu.features().shader_f16 { 2 } else { 4 };
        2 * config.n_layer as u64 * ctx as u64 * config.kv_dim() as u64 * elem
    }

    /// Checks that a cache of `ctx` tokens can be allocated: within the model's context, and each layer's keys in one
    /// GPU binding. The error names the numbers.
    pub fn check_fits(gpu: &Gpu, config: &ModelConfig, ctx: usize) -> Result<()> {
        if ctx == 0 || ctx > config.context_length as usize {
            return Err(err!(Usage, "context length {ctx} is outside 1..={} for this model", config.context_length));
        }
        let row_bytes = config.kv_dim() as u64 * if gpu.features().shader_f16 { 2 } else { 4 };
        let layer_bytes = ctx as u64 * row_bytes;
        if layer_bytes > gpu.max_binding_bytes() {
            return Err(err!(
                ModelTooLarge,
                "a context of {ctx} tokens needs {layer_bytes} bytes per layer for keys, more than one GPU binding \
                 holds here ({} bytes); use a context of at most {} tokens",
                gpu.max_binding_bytes(),
                gpu.max_binding_bytes() / row_bytes
            ));
        }
        Ok(())
    }

    /// Allocates the cache for `ctx` tokens (see [`KvCache::check_fits`]).
    pub fn new(gpu: &Gpu, config: &ModelConfig, ctx: usize) -> Result<KvCache> {
        Self::check_fits(gpu, config, ctx)?;
        let (dtype, shape) = (Self::dtype(gpu), Self::layer_shape(config, ctx));
        let mut k = Vec::with_capacity(config.n_layer as usize);
        let mut v = Vec::with_capacity(config.n_layer as usize);
        for layer in 0..config.n_layer {
            k.push(Tensor::new(gpu, &format!("k_cache.{layer}"), &shape, dtype)?);
            v.push(Tensor::new(gpu, &format!("v_cache.{layer}"), &shape, dtype)?);
        }
        Ok(KvCache { k, v, ctx, tokens: Vec::new() })
    }

    /// Tokens the cache can hold.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// The tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many leading tokens of `prompt` the cache already holds (at most `prompt.len() - 1`, so that the last
    /// prompt token is always computed again: its logits are needed).
    pub fn reusable_prefix(&self, prompt: &[u32]) -> usize {
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        common.min(prompt.len().saturating_sub(1))
    }

    /// Forgets every token from `n` on (their rows are overwritten by the next ones).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }

    /// Records that `tokens` were appended (their keys and values written by the forward pass).
    pub fn extend(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }
}
