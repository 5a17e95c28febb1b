//! A profile of decode (and prefill) steps: what `webr1 bench --profile` prints and the browser's `profile` hook
//! returns (README.md, `bench --profile`).
//!
//! Every number is read where the work happens ([`crate::gpu::profile`]): dispatches from [`Gpu::dispatches_encoded`],
//! submissions and waits from [`Gpu::submits`], [`Gpu::waits`] and [`Gpu::idle_waits`], bytes from the buffer ranges
//! bound to each dispatch that was submitted ([`Dispatch::bound`]), GPU time from timestamp queries around each
//! dispatch ([`DispatchTimer`]). A profile runs the steps twice:
//!
//! 1. **counted**: the normal path ([`Session::feed`]'s submission, then [`Session::sampled`]) with the counters
//!    read before and after, the bytes of every submitted dispatch tallied, and the wall time measured;
//! 2. **timed** (where the adapter has `timestamp-query`): the same steps from the same positions, each dispatch in a
//!    compute pass of its own with timestamps, for GPU time per op. Without timestamps (browsers, mostly) the profile
//!    says so and gives wall time only.
//!
//! Decode runs `n` greedy steps of one token from an empty cache (positions `0 .. n`, as `bench`'s `tgN`); bytes read
//! per token are split into weights, the KV cache and activations (everything else: activations, parameters, scratch).
//! Buffers are told apart by identity: the [`Weights`]' tensors, the [`KvCache`]'s layers. A dispatch belongs to the
//! layer whose weights or cache it binds; one that binds neither belongs where the dispatch before it did; one that
//! binds a weight outside the layers (embedding, final norm, LM head) is outside the layers, as is what follows it.

use super::session::Session;
use crate::gpu::ops::SamplingParams;
use crate::gpu::{Dispatch, DispatchTimer, Gpu, StepShape};
use crate::model::{KvCache, Weights};
use crate::Result;
use serde::Serialize;
use std::collections::HashMap;
use web_time::Instant;

/// One op kind (shader, entry point and weight type: [`Dispatch::op`]) in a profile, per token.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    pub op: String,
    /// `gemm` (shaders named `matmul*`), `attention` (`attention*`) or `other`.
    pub class: &'static str,
    pub calls_per_token: f64,
    pub bytes_read_per_token: f64,
    /// From timestamp queries; `None` without them.
    pub gpu_ms_per_token: Option<f64>,
    /// Of the GPU time of all ops.
    pub share: Option<f64>,
    /// Bytes read / GPU time, in 10^9 bytes per second.
    pub gb_per_s: Option<f64>,
}

/// GEMM, attention and the rest: the op rows added up by class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    pub class: &'static str,
    pub calls_per_token: f64,
    pub bytes_read_per_token: f64,
    pub gpu_ms_per_token: Option<f64>,
    pub share: Option<f64>,
}

/// A profile of some steps; "per token" divides by the tokens computed (decode: one per step).
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// `decode` or `prefill`.
    pub phase: &'static str,
    pub tokens: usize,
    /// Submissions of the forward pass (prefill: one per chunk).
    pub steps: usize,
    /// Positions of the first and last token computed.
    pub positions: [usize; 2],
    pub n_layer: usize,
    /// Counted where encoded ([`Gpu::encode`]).
    pub dispatches_per_token: f64,
    /// Dispatches inside the layers per token, divided by `n_layer`.
    pub dispatches_per_layer: f64,
    pub dispatches_outside_layers_per_token: f64,
    pub submits_per_token: f64,
    /// Every wait for the GPU ([`Gpu::wait`]).
    pub waits_per_token: f64,
    /// The waits that left the GPU idle (nothing submitted after what was waited for).
    pub idle_waits_per_token: f64,
    /// Weights + KV + activations.
    pub bytes_read_per_token: f64,
    pub weight_bytes_read_per_token: f64,
    pub kv_bytes_read_per_token: f64,
    pub activation_bytes_read_per_token: f64,
    pub bytes_written_per_token: f64,
    /// The weights a decode token needs: every weight tensor, less the embedding rows it does not look up (all of
    /// the embedding when the LM head is tied to it).
    pub weight_bytes: u64,
    /// The KV cache bytes the steps attend (rows `0 .. n_past + n_tokens` of every layer's keys and values), per
    /// token: for decode, what a token at each profiled position needs, averaged.
    pub kv_bytes_needed_per_token: f64,
    /// Wall time of the counted run (the normal path), per token.
    pub wall_ms_per_token: f64,
    pub tokens_per_second: f64,
    /// `timestamp-query`, or `none` when the adapter has no timestamps (then only wall times).
    pub timing: &'static str,
    /// Sum of the dispatches' GPU times, per token.
    pub gpu_ms_per_token: Option<f64>,
    /// Wall time of the timed run (one compute pass per dispatch), per token.
    pub timed_wall_ms_per_token: Option<f64>,
    /// By GPU time (or, without timestamps, bytes read), largest first.
    pub ops: Vec<OpRow>,
    pub classes: Vec<ClassRow>,
}

/// What a buffer is to the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A weight of a layer, or outside the layers (`None`).
    Weight(Option<usize>),
    Kv(usize),
}

#[derive(Debug, Default)]
struct OpTotals {
    calls: u64,
    read: u64,
    gpu_ns: f64,
}

/// The running sums of a profile.
struct Tally {
    roles: HashMap<wgpu::Buffer, Role>,
    ops: Vec<(String, OpTotals)>,
    index: HashMap<String, usize>,
    tokens: usize,
    steps: usize,
    first_position: Option<usize>,
    last_position: usize,
    in_layers: u64,
    weights_read: u64,
    kv_read: u64,
    other_read: u64,
    written: u64,
    kv_needed: u64,
    kv_row_bytes: u64,
    gpu_ns: f64,
}

impl Tally {
    // A buffer's hash and equality are its identity, which its interior state (mapping) does not change.
    #[allow(clippy::mutable_key_type)]
    fn new(weights: &Weights, cache: &KvCache) -> Tally {
        let mut roles = HashMap::new();
        for (layer, _, tensor) in weights.tensors() {
            roles.insert(tensor.buffer().clone(), Role::Weight(layer));
        }
        for (l, (k, v)) in cache.k.iter().zip(&cache.v).enumerate() {
            roles.insert(k.buffer().clone(), Role::Kv(l));
            roles.insert(v.buffer().clone(), Role::Kv(l));
        }
        let kv_row_bytes =
            cache.k.iter().chain(&cache.v).map(|t| t.byte_size() / cache.ctx().max(1) as u64).sum::<u64>();
        Tally {
            roles,
            ops: Vec::new(),
            index: HashMap::new(),
            tokens: 0,
            steps: 0,
            first_position: None,
            last_position: 0,
            in_layers: 0,
            weights_read: 0,
            kv_read: 0,
            other_read: 0,
            written: 0,
            kv_needed: 0,
            kv_row_bytes,
            gpu_ns: 0.0,
        }
    }

    fn op_index(&mut self, op: &str) -> usize {
        if let Some(&i) = self.index.get(op) {
            return i;
        }
        self.ops.push((op.to_string(), OpTotals::default()));
        self.index.insert(op.to_string(), self.ops.len() - 1);
        self.ops.len() - 1
    }

    /// Adds the bytes, calls and layer membership of one submitted step.
    fn add_step(&mut self, list: &[Dispatch], step: StepShape) {
        self.steps += 1;
        self.tokens += step.n_tokens;
        self.first_position.get_or_insert(step.n_past);
        self.last_position = step.n_past + step.n_tokens.saturating_sub(1);
        // The step attends cache rows 0 .. n_past + n_tokens (token t: rows 0 ..= n_past + t).
        self.kv_needed += (step.n_past + step.n_tokens) as u64 * self.kv_row_bytes;
        let mut layer: Option<usize> = None;
        for dispatch in list {
            let (mut in_layer, mut outside) = (None, false);
            let mut read = 0;
            for bound in dispatch.bound() {
                let bytes = bound.bytes_read(step);
                read += bytes;
                self.written += bound.bytes_written(step);
                match self.roles.get(&bound.buffer) {
                    Some(Role::Weight(Some(l))) => {
                        in_layer = Some(*l);
                        self.weights_read += bytes;
                    }
                    Some(Role::Weight(None)) => {
                        outside = true;
                        self.weights_read += bytes;
                    }
                    Some(Role::Kv(l)) => {
                        in_layer = Some(*l);
                        self.kv_read += bytes;
                    }
                    None => self.other_read += bytes,
                }
            }
            layer = match (in_layer, outside) {
                (Some(l), _) => Some(l),
                (None, true) => None,
                (None, false) => layer,
            };
            self.in_layers += u64::from(layer.is_some());
            let i = self.op_index(dispatch.op());
            self.ops[i].1.calls += 1;
            self.ops[i].1.read += read;
        }
    }
}

/// The GPU's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counts {
    dispatches: u64,
    submits: u64,
    waits: u64,
    idle_waits: u64,
}

impl Counts {
    fn of(gpu: &Gpu) -> Counts {
        Counts {
            dispatches: gpu.dispatches_encoded(),
            submits: gpu.submits(),
            waits: gpu.waits(),
            idle_waits: gpu.idle_waits(),
        }
    }
}

/// The greedy settings of step `step` (as `webr1 bench` measures).
fn greedy(step: u32) -> SamplingParams {
    SamplingParams::new(0.0, 1, 1.0, 0.0, 0, step)
}

/// A run of steps: what [`run`] repeats, the first time counted, the second time timed.
enum Steps<'a> {
    /// `n` greedy decode steps from an empty cache, starting with `first`.
    Decode { first: u32, n: usize },
    /// One prefill of `tokens` on an empty cache.
    Prefill { tokens: &'a [u32] },
}

impl Session {
    /// Profiles `n` greedy decode steps from an empty cache, the first fed `first` (after one unprofiled warm-up
    /// step when `warmup`). The cache is left holding the steps' tokens.
    pub async fn profile_decode(&mut self, first: u32, n: usize, warmup: bool) -> Result<Profile> {
        if warmup {
            run(self, &Steps::Decode { first, n: 1 }).await?;
        }
        profile(self, Steps::Decode { first, n: n.max(1) }).await
    }

    /// Profiles one prefill of `tokens` on an empty cache (after an unprofiled one when `warmup`).
    pub async fn profile_prefill(&mut self, tokens: &[u32], warmup: bool) -> Result<Profile> {
        if warmup {
            run(self, &Steps::Prefill { tokens }).await?;
        }
        profile(self, Steps::Prefill { tokens }).await
    }
}

/// Runs `steps` on the normal path (for decode, the token loop `bench`'s `tgN` and generation run:
/// [`Session::decode_greedy`]); returns the wall time in seconds.
async fn run(session: &mut Session, steps: &Steps<'_>) -> Result<f64> {
    session.rewind(0);
    let start = Instant::now();
    match *steps {
        Steps::Decode { first, n } => session.decode_greedy(first, n).await?,
        Steps::Prefill { tokens } => {
            session.set_sampling(&greedy(0))?;
            session.feed(tokens)?;
            session.next_token().await?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn profile(session: &mut Session, steps: Steps<'_>) -> Result<Profile> {
    let mut tally = Tally::new(&session.weights, &session.cache);
    // 1. Counted: the normal path, its submitted steps traced; their bytes are tallied afterwards.
    let before = Counts::of(&session.gpu);
    session.trace(true);
    let wall = run(session, &steps).await;
    let traced = session.trace(false);
    let wall = wall?;
    let after = Counts::of(&session.gpu);
    for step in &traced {
        let list: Vec<Dispatch> = session.traced_dispatches(step).into_iter().cloned().collect();
        tally.add_step(&list, step.shape);
    }
    // 2. Timed, where the adapter has timestamps.
    let timed_wall = match session.gpu.features().timestamp_query {
        true => Some(time_ops(session, &steps, &mut tally).await?),
        false => None,
    };
    Ok(report(session, &steps, &tally, before, after, wall, timed_wall))
}

/// Runs `steps` again with timestamps around every dispatch and adds each op's GPU time to `tally`; returns the wall
/// time of the timed steps (timestamp readback excluded).
async fn time_ops(session: &mut Session, steps: &Steps<'_>, tally: &mut Tally) -> Result<f64> {
    let mut wall = 0.0;
    let n = match *steps {
        Steps::Decode { n, .. } => n,
        Steps::Prefill { .. } => 1,
    };
    let mut token = match *steps {
        Steps::Decode { first, .. } => first,
        Steps::Prefill { .. } => 0,
    };
    session.rewind(0);
    for step in 0..n {
        // One timer per submission (a prefill may take several), read once the step is done.
        let mut timers: Vec<(DispatchTimer, Vec<usize>)> = Vec::new();
        let mut submit = |gpu: &Gpu, list: &[Dispatch], _: StepShape| -> Result<()> {
            let Some(mut timer) = DispatchTimer::new(gpu, list.len())? else {
                gpu.submit(list);
                return Ok(());
            };
            timer.submit(gpu, list)?;
            timers.push((timer, list.iter().map(|d| tally.op_index(d.op())).collect()));
            Ok(())
        };
        session.set_sampling(&greedy(step as u32))?;
        let start = Instant::now();
        match *steps {
            Steps::Decode { .. } => {
                session.feed_with(&[token], &mut submit)?;
                token = session.next_token().await?;
            }
            Steps::Prefill { tokens } => {
                session.feed_with(tokens, &mut submit)?;
                session.next_token().await?;
            }
        }
        wall += start.elapsed().as_secs_f64();
        for (timer, ops) in &mut timers {
            let times = timer.read(&session.gpu).await?;
            for (&op, ns) in ops.iter().zip(times) {
                tally.ops[op].1.gpu_ns += ns;
                tally.gpu_ns += ns;
            }
        }
    }
    Ok(wall)
}

/// The weights a decode token needs: see [`Profile::weight_bytes`].
pub fn weight_bytes_needed(weights: &Weights) -> u64 {
    let all: u64 = weights.tensors().iter().map(|(_, _, t)| t.byte_size()).sum();
    match weights.output {
        Some(_) => all - weights.token_embd.byte_size() + weights.token_embd.row_bytes(),
        None => all,
    }
}

fn class_of(op: &str) -> &'static str {
    match op {
        _ if op.starts_with("matmul") => "gemm",
        _ if op.starts_with("attention") => "attention",
        _ => "other",
    }
}

fn report(
    session: &Session,
    steps: &Steps<'_>,
    tally: &Tally,
    before: Counts,
    after: Counts,
    wall: f64,
    timed_wall: Option<f64>,
) -> Profile {
    let tokens = tally.tokens.max(1) as f64;
    let per_token = |x: u64| x as f64 / tokens;
    let timed = timed_wall.is_some();
    let gpu_ms = |ns: f64| timed.then_some(ns / 1e6 / tokens);
    let share = |ns: f64| timed.then_some(if tally.gpu_ns > 0.0 { ns / tally.gpu_ns } else { 0.0 });
    let mut ops: Vec<OpRow> = tally
        .ops
        .iter()
        .map(|(op, t)| OpRow {
            op: op.clone(),
            class: class_of(op),
            calls_per_token: per_token(t.calls),
            bytes_read_per_token: per_token(t.read),
            gpu_ms_per_token: gpu_ms(t.gpu_ns),
            share: share(t.gpu_ns),
            gb_per_s: timed.then_some(if t.gpu_ns > 0.0 { t.read as f64 / t.gpu_ns } else { 0.0 }),
        })
        .collect();
    ops.sort_by(|a, b| {
        let key = |r: &OpRow| r.gpu_ms_per_token.unwrap_or(r.bytes_read_per_token);
        key(b).total_cmp(&key(a))
    });
    let classes = ["gemm", "attention", "other"]
        .into_iter()
        .map(|class| {
            let rows = tally.ops.iter().filter(|(op, _)| class_of(op) == class);
            let (calls, read, ns) = rows.fold((0, 0, 0.0), |(c, r, n), (_, t)| (c + t.calls, r + t.read, n + t.gpu_ns));
            ClassRow {
                class,
                calls_per_token: per_token(calls),
                bytes_read_per_token: per_token(read),
                gpu_ms_per_token: gpu_ms(ns),
                share: share(ns),
            }
        })
        .collect();
    let n_layer = session.weights.layers.len();
    let dispatches = after.dispatches - before.dispatches;
    let read = tally.weights_read + tally.kv_read + tally.other_read;
    Profile {
        phase: match steps {
            Steps::Decode { .. } => "decode",
            Steps::Prefill { .. } => "prefill",
        },
        tokens: tally.tokens,
        steps: tally.steps,
        positions: [tally.first_position.unwrap_or(0), tally.last_position],
        n_layer,
        dispatches_per_token: per_token(dispatches),
        dispatches_per_layer: per_token(tally.in_layers) / n_layer.max(1) as f64,
        dispatches_outside_layers_per_token: per_token(dispatches.saturating_sub(tally.in_layers)),
        submits_per_token: per_token(after.submits - before.submits),
        waits_per_token: per_token(after.waits - before.waits),
        idle_waits_per_token: per_token(after.idle_waits - before.idle_waits),
        bytes_read_per_token: per_token(read),
        weight_bytes_read_per_token: per_token(tally.weights_read),
        kv_bytes_read_per_token: per_token(tally.kv_read),
        activation_bytes_read_per_token: per_token(tally.other_read),
        bytes_written_per_token: per_token(tally.written),
        weight_bytes: weight_bytes_needed(&session.weights),
        kv_bytes_needed_per_token: per_token(tally.kv_needed),
        wall_ms_per_token: wall * 1e3 / tokens,
        tokens_per_second: tokens / wall.max(1e-9),
        timing: if timed { "timestamp-query" } else { "none" },
        gpu_ms_per_token: gpu_ms(tally.gpu_ns),
        timed_wall_ms_per_token: timed_wall.map(|w| w * 1e3 / tokens),
        ops,
        classes,
    }
}
