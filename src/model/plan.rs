//! The memory plan: every GPU buffer a model will need, computed from its header and the device's limits before a
//! single weight buffer is created (README: "Memory planning").
//!
//! WebGPU has no way to ask how much memory is free, so webr1 decides up front what it will allocate and refuses what
//! cannot fit: a row of a weight larger than one binding, one layer's keys larger than one binding, or more bytes in all
//! than a budget the user gives (`--gpu-memory`, `gpuMemory`). The plan lists:
//!
//! - **weights**: each weight the loader creates ([`weight_layout`]: GGUF tensors stacked as the loader stacks them,
//!   Q, K and V, and gate and up where they can share a buffer) and how it is split by rows across buffers of at most
//!   the binding size ([`crate::gpu::split_rows`], the split the loader makes);
//! - **KV cache**: keys and values of every layer for the context, f16 with `shader-f16` and f32 otherwise
//!   ([`KvCache::layer_shape`]);
//! - **activations**: the buffers of the decode dispatch list and of the prefill's (with the decode attention's
//!   scratch and the sampler's), the only two lists generation builds ([`Graph::activation_shapes`], the list
//!   `Graph::build` allocates; the batches are the session's, [`step_batches`]);
//! - **scratch**: the session's own buffers ([`crate::engine::session_scratch_bytes`]): the step inputs every list
//!   shares, the sampling settings, the readback staging buffer, the ring the sampled tokens are copied into, and
//!   structured output's token mask.
//!
//! Not counted: each dispatch's uniform of parameters (16-32 bytes), well under 0.1 % of any model. The scoring lists of perplexity and teacher-forced logits are planned apart
//! ([`MemoryPlan::scoring`]): generation never builds them.
//!
//! The context rule, for every shell: a context that is given must lie within the model's own (a longer one is a
//! `usage` error, not a silent clamp); with none given, the largest that fits the device and the budget, up to the
//! model's own context and [`EngineOptions`]'s `max_context` (32768 natively, 8192 in the browser).
//!
//! [`EngineOptions`]: crate::engine::EngineOptions

use super::forward::{ActivationShape, Graph, HeadKind};
use super::kv_cache::KvCache;
use super::weights::{weight_layout, WeightShape};
use crate::config::ModelConfig;
use crate::engine::{context_length, session_scratch_bytes, step_batches};
use crate::gguf::TensorInfo;
use crate::gpu::{buffer_bytes, split_rows, tensor_bytes, DType, Gpu};
use crate::{err, Result};

/// With no context given, a budget that leaves room for fewer tokens than this (or the model's own context, when
/// shorter) is refused rather than giving a context too short to answer in.
pub const MIN_AUTO_CONTEXT: usize = 256;

/// One buffer of a weight: rows `first_row .. first_row + n_rows`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartPlan {
    pub first_row: usize,
    pub n_rows: usize,
    /// The buffer's size.
    pub bytes: u64,
}

/// One weight the loader creates (GGUF tensors stacked by rows, or a vector) and its buffers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WeightPlan {
    /// The GGUF tensors it holds, joined by `+`.
    pub name: String,
    #[serde(serialize_with = "dtype_name")]
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<PartPlan>,
}

impl WeightPlan {
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// The KV cache: `2 · n_layer` buffers of `[ctx, kv_dim]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KvPlan {
    #[serde(serialize_with = "dtype_name")]
    pub dtype: DType,
    pub ctx: usize,
    pub n_layer: usize,
    /// One layer's keys (or values).
    pub layer_bytes: u64,
}

impl KvPlan {
    pub fn bytes(&self) -> u64 {
        2 * self.n_layer as u64 * self.layer_bytes
    }
}

/// The buffers of one dispatch list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GraphPlan {
    pub batch: usize,
    /// The largest of its buffers.
    pub largest: u64,
    pub bytes: u64,
}

impl GraphPlan {
    /// `gate_up_stacked`: whether every layer's gate and up share a stack ([`weight_layout`]).
    fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        gate_up_stacked: bool,
        ctx: usize,
        batch: usize,
        kind: HeadKind,
    ) -> Result<GraphPlan> {
        let shapes = Graph::activation_shapes(gpu, config, gate_up_stacked, ctx, batch, kind)?;
        let sizes = shapes.iter().map(shape_bytes).collect::<Result<Vec<u64>>>()?;
        Ok(GraphPlan { batch, largest: sizes.iter().copied().max().unwrap_or(0), bytes: sizes.iter().sum() })
    }
}

fn shape_bytes(s: &ActivationShape) -> Result<u64> {
    Ok(buffer_bytes(tensor_bytes(s.name, &s.shape, s.dtype)?))
}

/// What a model will allocate on this device for a context of `kv.ctx` tokens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemoryPlan {
    /// The most one binding and one buffer may hold here ([`Gpu::max_binding_bytes`], [`Gpu::max_buffer_bytes`]).
    pub max_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub weights: Vec<WeightPlan>,
    pub kv: KvPlan,
    /// The decode list (batch 1).
    pub decode: GraphPlan,
    /// The prefill's list (chunks of up to its batch).
    pub prefill: GraphPlan,
    /// The session's own buffers: step inputs, sampling settings, readback staging buffer, token ring, token mask.
    pub scratch_bytes: u64,
    /// Perplexity and teacher-forced logits: a full chunk's scoring list (its logits are `[batch, n_vocab]` f32), not
    /// part of [`MemoryPlan::total`].
    pub scoring: GraphPlan,
    /// The budget the plan was checked against, if one was given.
    pub budget: Option<u64>,
}

/// What [`MemoryPlan::choose`] needs to know beyond the model and the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    /// The context asked for; `None` chooses one.
    pub context: Option<usize>,
    /// With no context asked for, choose at most this many tokens.
    pub max_context: usize,
    pub prefill_batch: usize,
    /// Bytes of GPU memory webr1 may use in all.
    pub budget: Option<u64>,
}

impl MemoryPlan {
    /// The plan for a context of `ctx` tokens and prefill chunks of `prefill_batch`. Fails (`gpu.limits`,
    /// `model.too_large`) when a row of a weight, one layer's keys or an activation does not fit one binding.
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        tensors: &[TensorInfo],
        ctx: usize,
        prefill_batch: usize,
    ) -> Result<MemoryPlan> {
        if ctx == 0 {
            return Err(err!(Usage, "a context of 0 tokens"));
        }
        let max_binding = gpu.max_binding_bytes();
        let layout = weight_layout(gpu, config, tensors)?;
        let weights = plan_weights(tensors, &layout.weights, max_binding)?;
        let stacked = layout.gate_up_stacked;
        let kv = KvPlan {
            dtype: KvCache::dtype(gpu),
            ctx,
            n_layer: config.n_layer as usize,
            layer_bytes: buffer_bytes(tensor_bytes(
                "k_cache",
                &KvCache::layer_shape(config, ctx),
                KvCache::dtype(gpu),
            )?),
        };
        if kv.layer_bytes > max_binding {
            let row = kv.layer_bytes / ctx as u64;
            return Err(err!(
                ModelTooLarge,
                "a context of {ctx} tokens needs {} per layer for keys, more than one GPU binding holds here ({}); \
                 use a context of at most {} tokens",
                human(kv.layer_bytes),
                human(max_binding),
                max_binding / row.max(1)
            ));
        }
        let (batch, score_batch) = step_batches(gpu, config, ctx, prefill_batch);
        let decode = GraphPlan::new(gpu, config, stacked, ctx, 1, HeadKind::Sample)?;
        let prefill = GraphPlan::new(gpu, config, stacked, ctx, batch, HeadKind::Sample)?;
        for graph in [&decode, &prefill] {
            if graph.largest > max_binding {
                return Err(err!(
                    GpuLimits,
                    "an activation of a batch of {} tokens needs {}, more than one GPU binding holds here ({}); \
                     use a smaller prefill batch",
                    graph.batch,
                    human(graph.largest),
                    human(max_binding)
                ));
            }
        }
        let scratch_bytes = session_scratch_bytes(config, batch)?;
        let scoring = GraphPlan::new(gpu, config, stacked, ctx, score_batch, HeadKind::Score)?;
        Ok(MemoryPlan {
            max_binding_bytes: max_binding,
            max_buffer_bytes: gpu.max_buffer_bytes(),
            weights,
            kv,
            decode,
            prefill,
            scratch_bytes,
            scoring,
            budget: None,
        })
    }

    /// Applies the context rule (see the module docs) and the budget: the plan to load with, or the one error that
    /// says what does not fit and what to do.
    pub fn choose(gpu: &Gpu, config: &ModelConfig, tensors: &[TensorInfo], request: PlanRequest) -> Result<MemoryPlan> {
        let model_ctx = config.context_length as usize;
        let plan_at = |ctx: usize| MemoryPlan::new(gpu, config, tensors, ctx, request.prefill_batch);
        // A context given must lie within the model's own (the one rule every shell shares, `engine::request`).
        let mut plan = match request.context {
            Some(ctx) => plan_at(context_length(Some(ctx), model_ctx, request.max_context)?)?,
            None => {
                let cap = context_length(None, model_ctx, request.max_context)?.max(1);
                // The longest context whose keys fit one binding.
                let row = KvCache::dtype(gpu).row_bytes(u64::from(config.kv_dim())).unwrap_or(1).max(1);
                let by_binding = (gpu.max_binding_bytes() / row) as usize;
                plan_at(cap.min(by_binding).max(1))?
            }
        };
        if let Some(budget) = request.budget {
            if plan.total() > budget {
                let floor = match request.context {
                    Some(_) => 1,
                    None => MIN_AUTO_CONTEXT.min(plan.kv.ctx),
                };
                let fits = largest_fitting(floor, plan.kv.ctx, budget, &plan_at)?;
                match (request.context, fits) {
                    (None, Some(smaller)) => plan = smaller,
                    (None, None) => return Err(over_budget(&plan_at(floor)?, budget, false, None)),
                    (Some(_), fits) => return Err(over_budget(&plan, budget, true, fits.as_ref())),
                }
            }
            plan.budget = Some(budget);
        }
        Ok(plan)
    }

    pub fn weight_bytes(&self) -> u64 {
        self.weights.iter().map(WeightPlan::bytes).sum()
    }

    /// The dispatch lists of generation: decode and prefill.
    pub fn activation_bytes(&self) -> u64 {
        self.decode.bytes + self.prefill.bytes
    }

    /// Everything generation allocates at most: weights, KV cache, activations and scratch.
    pub fn total(&self) -> u64 {
        self.weight_bytes() + self.kv.bytes() + self.activation_bytes() + self.scratch_bytes
    }

    /// Weights stored in more than one buffer.
    pub fn split_weights(&self) -> impl Iterator<Item = &WeightPlan> {
        self.weights.iter().filter(|w| w.parts.len() > 1)
    }

    /// The largest buffer of the plan.
    pub fn largest_buffer(&self) -> u64 {
        let weights = self.weights.iter().flat_map(|w| w.parts.iter().map(|p| p.bytes));
        weights.chain([self.kv.layer_bytes, self.decode.largest, self.prefill.largest]).max().unwrap_or(0)
    }

    /// One line per part of the plan, for `webr1 info --plan` and logs.
    pub fn summary(&self) -> String {
        // Layers' tensors of the same shape are one line: `blk.*.ffn_down.weight (183.8 MiB Q6_K) in 2 buffers × 44`.
        let mut split: Vec<(String, usize)> = Vec::new();
        for w in self.split_weights() {
            let name = any_layer(&w.name);
            let line = format!("{name} ({} {}) in {} buffers", human(w.bytes()), w.dtype.name(), w.parts.len());
            match split.iter_mut().find(|(l, _)| *l == line) {
                Some((_, count)) => *count += 1,
                None => split.push((line, 1)),
            }
        }
        let split: Vec<String> =
            split.into_iter().map(|(line, n)| if n > 1 { format!("{line} × {n}") } else { line }).collect();
        let kv = &self.kv;
        let mut lines = vec![
            format!(
                "limits      one binding {}, one buffer {}",
                human(self.max_binding_bytes),
                human(self.max_buffer_bytes)
            ),
            format!(
                "weights     {} in {} buffers ({} weights, Q, K and V and gate and up stacked where they can be; largest \
                 buffer {})",
                human(self.weight_bytes()),
                self.weights.iter().map(|w| w.parts.len()).sum::<usize>(),
                self.weights.len(),
                human(self.weights.iter().flat_map(|w| w.parts.iter().map(|p| p.bytes)).max().unwrap_or(0))
            ),
            format!("split       {}", if split.is_empty() { "none".to_string() } else { split.join(", ") }),
            format!(
                "KV cache    {} for {} tokens ({} layers × keys and values of {} each, {})",
                human(kv.bytes()),
                kv.ctx,
                kv.n_layer,
                human(kv.layer_bytes),
                kv.dtype.name()
            ),
            format!(
                "activations {} (decode {}, prefill of up to {} tokens {})",
                human(self.activation_bytes()),
                human(self.decode.bytes),
                self.prefill.batch,
                human(self.prefill.bytes)
            ),
            format!("scratch     {}", human(self.scratch_bytes)),
            format!("total       {}", human(self.total())),
        ];
        if let Some(budget) = self.budget {
            lines.push(format!("budget      {} ({} left)", human(budget), human(budget.saturating_sub(self.total()))));
        }
        lines.push(format!(
            "scoring     {} more for perplexity and teacher-forced logits (a list of {} tokens{})",
            human(self.scoring.bytes),
            self.scoring.batch,
            if self.scoring.largest > self.max_binding_bytes { "; its logits pass one binding here" } else { "" }
        ));
        lines.join("\n")
    }
}

/// `name` with each layer number written `*`: `blk.3.ffn_gate.weight+blk.3.ffn_up.weight` is
/// `blk.*.ffn_gate.weight+blk.*.ffn_up.weight`.
fn any_layer(name: &str) -> String {
    let one = |part: &str| match part.strip_prefix("blk.").and_then(|rest| rest.split_once('.')) {
        Some((layer, tail)) if !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit()) => {
            format!("blk.*.{tail}")
        }
        _ => part.to_string(),
    };
    name.split('+').map(one).collect::<Vec<_>>().join("+")
}

/// The plans of each weight the loader creates ([`weight_layout`]), split as the loader splits them.
fn plan_weights(tensors: &[TensorInfo], layout: &[WeightShape], max_binding: u64) -> Result<Vec<WeightPlan>> {
    for t in tensors {
        t.ty.check_supported()?;
    }
    layout
        .iter()
        .map(|w| {
            let row_bytes = tensor_bytes(&w.label, &[w.cols], w.dtype)?;
            let ranges = match w.matrix {
                true => {
                    split_rows(&w.label, w.rows, row_bytes, max_binding).map_err(|e| row_too_large(e, max_binding))?
                }
                false if row_bytes > max_binding => {
                    return Err(row_too_large(
                        err!(GpuLimits, "{}: {row_bytes} bytes do not fit one binding", w.label),
                        max_binding,
                    ))
                }
                false => vec![(0, 1)],
            };
            let parts = ranges
                .into_iter()
                .map(|(first_row, n_rows)| PartPlan {
                    first_row,
                    n_rows,
                    bytes: buffer_bytes(n_rows as u64 * row_bytes),
                })
                .collect();
            Ok(WeightPlan { name: w.label.clone(), dtype: w.dtype, rows: w.rows, cols: w.cols, parts })
        })
        .collect()
}

fn row_too_large(e: crate::Error, max_binding: u64) -> crate::Error {
    err!(
        ModelTooLarge,
        "{}; this GPU cannot hold the model with a binding cap of {} (a smaller quantisation has shorter rows)",
        e.message,
        human(max_binding)
    )
}

/// The plan of the largest context in `lo..=hi` whose total fits `budget`, if any (totals grow with the context).
fn largest_fitting(
    lo: usize,
    hi: usize,
    budget: u64,
    plan_at: &dyn Fn(usize) -> Result<MemoryPlan>,
) -> Result<Option<MemoryPlan>> {
    let lowest = plan_at(lo)?;
    if lowest.total() > budget {
        return Ok(None);
    }
    let (mut best, mut lo, mut hi) = (lowest, lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let plan = plan_at(mid)?;
        if plan.total() <= budget {
            (best, lo) = (plan, mid);
        } else {
            hi = mid - 1;
        }
    }
    Ok(Some(best))
}

/// The `model.too_large` error of a plan over its budget, with what would fit.
fn over_budget(plan: &MemoryPlan, budget: u64, asked: bool, fits: Option<&MemoryPlan>) -> crate::Error {
    let needs = format!(
        "with a context of {} tokens the model needs {} of GPU memory (weights {}, KV cache {}, activations and \
         scratch {}), more than the budget of {}",
        plan.kv.ctx,
        human(plan.total()),
        human(plan.weight_bytes()),
        human(plan.kv.bytes()),
        human(plan.activation_bytes() + plan.scratch_bytes),
        human(budget)
    );
    let todo = match (asked, fits) {
        (true, Some(fits)) => {
            format!("a context of at most {} tokens fits; ask for that, or use a smaller quantisation", fits.kv.ctx)
        }
        _ if plan.weight_bytes() >= budget => {
            "the weights alone do not fit: use a smaller quantisation (Q4_K_M, Q4_0) or a smaller model".to_string()
        }
        _ => format!(
            "not even a context of {} tokens fits: use a smaller quantisation (Q4_K_M, Q4_0) or a smaller model",
            if asked { 1 } else { plan.kv.ctx }
        ),
    };
    err!(ModelTooLarge, "{needs}; {todo}")
}

/// Bytes for a person: `4.66 GiB`, `306.3 MiB`, `12.0 KiB`, `100 B`.
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Reads a size as users write it: a number of bytes, or a number with a suffix, K/M/G/T (powers of 1000, also KB,
/// MB, ...) or KiB/MiB/GiB/TiB (powers of 1024), case-insensitive: `8GiB`, `7.5G`, `512 MiB`, `134217728`. Zero, a
/// negative number or anything else is a `usage` error naming `what`.
pub fn parse_bytes(text: &str, what: &str) -> Result<u64> {
    let bad = || {
        err!(
            Usage,
            "{what} must be a size above 0, in bytes or with a suffix (K, M, G, T for powers of 1000; KiB, MiB, GiB, \
             TiB for powers of 1024), like 8GiB or 512MiB; got {text:?}"
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = match number.split_once('.') {
        None => number.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)),
        Some((whole, frac)) if !frac.contains('.') && frac.len() <= 9 => {
            let whole = whole.parse::<u64>().ok().and_then(|n| n.checked_mul(scale));
            let frac_part =
                frac.parse::<u64>().ok().map(|f| (f as u128 * scale as u128 / 10u128.pow(frac.len() as u32)) as u64);
            whole.zip(frac_part).and_then(|(w, f)| w.checked_add(f))
        }
        Some(_) => None,
    };
    match bytes {
        Some(n) if n > 0 => Ok(n),
        _ => Err(bad()),
    }
}

fn dtype_name<S: serde::Serializer>(dtype: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(dtype.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        for (text, want) in [
            ("134217728", 134_217_728),
            ("8GiB", 8 << 30),
            ("8 gib", 8 << 30),
            ("512MiB", 512 << 20),
            ("128mib", 128 << 20),
            ("7.5G", 7_500_000_000),
            ("1.5GiB", 3 << 29),
            ("2K", 2_000),
            ("2KB", 2_000),
            ("4KiB", 4096),
            ("1TiB", 1 << 40),
            ("100B", 100),
        ] {
            assert_eq!(parse_bytes(text, "size").unwrap(), want, "{text}");
        }
        for text in
            ["0", "0GiB", "-1", "-8GiB", "", "GiB", "8 GiBs", "8XB", "1.2.3G", ".5G", "5.G", "0.0001B", "99999999999T"]
        {
            let e = parse_bytes(text, "--gpu-memory").unwrap_err();
            assert_eq!(e.code(), "usage", "{text:?}");
            assert!(e.message.contains("--gpu-memory"), "{}", e.message);
        }
    }

    #[test]
    fn layers_of_a_stack_group_as_one() {
        assert_eq!(any_layer("blk.12.ffn_down.weight"), "blk.*.ffn_down.weight");
        assert_eq!(any_layer("blk.3.ffn_gate.weight+blk.3.ffn_up.weight"), "blk.*.ffn_gate.weight+blk.*.ffn_up.weight");
        assert_eq!(any_layer("output.weight"), "output.weight");
        assert_eq!(any_layer("blk.x.a"), "blk.x.a");
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(human(100), "100 B");
        assert_eq!(human(128 << 20), "128.0 MiB");
        assert_eq!(human(5 << 30), "5.00 GiB");
    }
}
