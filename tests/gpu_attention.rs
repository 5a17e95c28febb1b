//! RoPE, the KV cache append and attention (prefill and decode) on a real device (Mesa lavapipe in CI), each against
//! a CPU reference in f64 on seeded random data.
//!
//! Every kernel runs on the forced-f32 device and on the default one, with f16 tensors (x for RoPE, the caches for
//! kv_store and attention) when the adapter has shader-f16, as lavapipe does. What changes per step (`step` =
//! `[n_past, n_tokens, 0, 0]`, `pos`) is written to GPU memory before a submit and the dispatches are replayed, as the
//! engine does.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::time::Instant;

use gpu_common::{assert_close, gpu, gpus, round_f16, to_f16, Rng};
use pollster::block_on;
use webr1::config::{RopeScaling, RopeStyle};
use webr1::gpu::ops::{
    attention, attention_decode, attention_decode_partials, attention_decode_partials_for, attention_decode_with,
    attention_decode_with_shape, attention_prefill, attention_prefill_with_shape, kv_store, rope, rope_store,
    AttentionIo, AttentionShape, DecodeShape, PrefillShape, RopeParams, RopeStoreIo, PREFILL_MEMORY_CAP,
};
use webr1::gpu::{DType, Dispatch, Gpu, Readback, Tensor};
use webr1::ErrorCode;

fn io<'a>(
    q: &'a Tensor,
    k_cache: &'a Tensor,
    v_cache: &'a Tensor,
    out: &'a Tensor,
    step: &'a Tensor,
) -> AttentionIo<'a> {
    AttentionIo { q, k_cache, v_cache, out, step }
}

/// The cache (or RoPE activation) dtypes this device computes on: f32 always, f16 with shader-f16.
fn dtypes(gpu: &Gpu) -> Vec<DType> {
    match gpu.features().shader_f16 {
        true => vec![DType::F32, DType::F16],
        false => vec![DType::F32],
    }
}

/// A tensor holding `data` as `dtype`, and the values the GPU sees (rounded for f16).
fn tensor(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType, data: &[f32]) -> (Tensor, Vec<f32>) {
    match dtype {
        DType::F32 => (Tensor::from_f32(gpu, label, shape, data).unwrap(), data.to_vec()),
        DType::F16 => (Tensor::from_f16(gpu, label, shape, &to_f16(data)).unwrap(), round_f16(data)),
        other => panic!("no tensors of {other:?} here"),
    }
}

fn step_tensor(gpu: &Gpu, n_past: u32, n_tokens: u32) -> Tensor {
    Tensor::from_u32(gpu, "step", &[4], &[n_past, n_tokens, 0, 0]).unwrap()
}

fn set_step(gpu: &Gpu, step: &Tensor, n_past: u32, n_tokens: u32) {
    step.upload(gpu, bytemuck::cast_slice(&[n_past, n_tokens, 0, 0])).unwrap();
}

fn run(gpu: &Gpu, dispatches: &[Dispatch], out: &Tensor) -> Vec<f32> {
    gpu.submit(dispatches);
    block_on(out.read_f32(gpu)).unwrap_or_else(|e| panic!("{}: {e}", dispatches[0].label()))
}

/// Submits `dispatches` and reads `out` through a staging buffer made beforehand (so nothing is allocated).
fn run_into(gpu: &Gpu, dispatches: &[Dispatch], out: &Tensor, readback: &mut Readback) -> Vec<f32> {
    gpu.submit(dispatches);
    let bytes = block_on(readback.read(gpu, out.buffer(), out.offset(), out.byte_size()))
        .unwrap_or_else(|e| panic!("{}: {e}", dispatches[0].label()));
    match out.dtype() {
        DType::F16 => bytemuck::cast_slice::<u8, half::f16>(&bytes).iter().map(|h| h.to_f32()).collect(),
        _ => bytemuck::pod_collect_to_vec(&bytes),
    }
}

fn device(gpu: &Gpu, dtype: DType) -> String {
    let kind = if gpu.features().shader_f16 { "f16-capable" } else { "forced f32" };
    format!("[{kind} device, {}]", dtype.name())
}

// ---------------------------------------------------------------------------------------------------------------
// RoPE

/// One RoPE configuration under test.
struct RopeCase {
    style: RopeStyle,
    scaling: RopeScaling,
    head_dim: usize,
    rope_dim: usize,
}

/// ggml's rotation in f64, from the two scales ggml rounds to f32 (`theta_scale`, `freq_scale`): the exact result of
/// the formula the kernel evaluates in f32. Returns the rotated x and, per element, the angle it was rotated by.
fn cpu_rope(x: &[f32], pos: &[u32], n_heads: usize, case: &RopeCase, theta: f32, ff: &[f32]) -> (Vec<f32>, Vec<f64>) {
    let theta_scale = f64::from(theta.powf(-2.0 / case.rope_dim as f32));
    let freq_scale = match case.scaling {
        RopeScaling::Linear { factor } => f64::from(1.0 / factor),
        _ => 1.0,
    };
    let half = case.rope_dim / 2;
    let mut out: Vec<f32> = x.to_vec();
    let mut angles = vec![0.0; x.len()];
    for (row, chunk) in x.chunks(case.head_dim).enumerate() {
        let p = f64::from(pos[row / n_heads]);
        for i in 0..half {
            let divisor = ff.get(i).map_or(1.0, |&f| f64::from(f));
            let angle = freq_scale * p * theta_scale.powi(i as i32) / divisor;
            let (a, b) = match case.style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (xa, xb) = (f64::from(chunk[a]), f64::from(chunk[b]));
            let base = row * case.head_dim;
            out[base + a] = (xa * angle.cos() - xb * angle.sin()) as f32;
            out[base + b] = (xa * angle.sin() + xb * angle.cos()) as f32;
            angles[base + a] = angle;
            angles[base + b] = angle;
        }
    }
    (out, angles)
}

#[test]
fn rope_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A01);
    let (n_tokens, n_heads, theta) = (6, 3, 10000.0);
    let mut cases = 0;
    // Per dtype of x: (max |error|, max |error| / tolerance, the case of the latter).
    let mut worst = [(0.0f32, 0.0f32, String::new()), (0.0f32, 0.0f32, String::new())];
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            let worst = &mut worst[usize::from(dtype == DType::F16)];
            for style in [RopeStyle::Normal, RopeStyle::Neox] {
                for scaling in [RopeScaling::None, RopeScaling::Linear { factor: 4.0 }, RopeScaling::FreqFactors] {
                    for (head_dim, rope_dim) in [(64, 64), (128, 128), (128, 64), (64, 32)] {
                        let case = RopeCase { style, scaling: scaling.clone(), head_dim, rope_dim };
                        let what = format!(
                            "rope {style:?} {scaling:?} head_dim {head_dim} rope_dim {rope_dim} {}",
                            device(&gpu, dtype)
                        );
                        let err = rope_case(&gpu, dtype, &case, (n_tokens, n_heads, theta), &mut rng, &what);
                        if err.1 > worst.1 {
                            *worst = (err.0, err.1, what);
                        }
                        worst.0 = worst.0.max(err.0);
                        cases += 1;
                    }
                }
            }
        }
    }
    println!("rope: {cases} cases in {:.2?}", started.elapsed());
    for (dtype, (max_err, ratio, case)) in ["f32", "f16"].iter().zip(&worst) {
        println!("rope, x {dtype}: max |error| {max_err:e}; worst |error| / tolerance {ratio:.3} ({case})");
    }
}

/// Runs one RoPE case; returns (max |error|, max |error| / tolerance).
fn rope_case(
    gpu: &Gpu,
    dtype: DType,
    case: &RopeCase,
    (n_tokens, n_heads, theta): (usize, usize, f32),
    rng: &mut Rng,
    what: &str,
) -> (f32, f32) {
    let len = n_tokens * n_heads * case.head_dim;
    let (x, x_seen) = tensor(gpu, "x", &[n_tokens, n_heads, case.head_dim], dtype, &rng.vec(len, -2.0, 2.0));
    // The extremes, and random positions up to 100000.
    let mut pos = vec![0, 1, 100_000, 99_999];
    pos.extend((pos.len()..n_tokens).map(|_| rng.below(100_001) as u32));
    let pos_t = Tensor::from_u32(gpu, "pos", &[n_tokens], &pos).unwrap();
    let ff = match case.scaling {
        // Llama 3.1's factors: 1 for high frequencies, up to 8 for low ones.
        RopeScaling::FreqFactors => {
            (0..case.rope_dim / 2).map(|_| [1.0, 8.0, rng.uniform(1.0, 8.0)][rng.below(3)]).collect()
        }
        _ => Vec::new(),
    };
    let ff_t = (!ff.is_empty()).then(|| Tensor::from_f32(gpu, "freq_factors", &[ff.len()], &ff).unwrap());
    let params = RopeParams {
        style: case.style,
        rope_dim: case.rope_dim as u32,
        theta,
        scaling: case.scaling.clone(),
        freq_factors: ff_t.as_ref(),
    };
    let d = rope(gpu, &x, &pos_t, n_heads as u32, case.head_dim as u32, &params).unwrap();
    let got = run(gpu, &[d], &x);
    check_rotated(what, &got, &x_seen, &pos, n_heads, case, theta, &ff, dtype)
}

/// Checks `got` (the rotation of `x_seen`, tokens at `pos`, stored as `dtype`) against [`cpu_rope`]; returns (max
/// |error|, max |error| / tolerance).
#[allow(clippy::too_many_arguments)]
fn check_rotated(
    what: &str,
    got: &[f32],
    x_seen: &[f32],
    pos: &[u32],
    n_heads: usize,
    case: &RopeCase,
    theta: f32,
    ff: &[f32],
    dtype: DType,
) -> (f32, f32) {
    let len = x_seen.len();
    let (want, angles) = cpu_rope(x_seen, pos, n_heads, case, theta, ff);

    // The f32 angle is within (8 + 3|x|) ulps of the exact one, x = i·log2(theta_scale): exp2 is good to (3 + 2|x|)
    // ulps (the WebGPU/Vulkan bound), the f32 log2(theta_scale) adds ~0.7|x|, the products, the division and the
    // reduction to [-pi, pi] a few more. An element then moves by the pair's radius times that, plus the rounding of
    // the rotation itself and of f16 storage.
    let (mut max_err, mut max_ratio) = (0.0f32, 0.0f32);
    let radius = |i: usize| {
        let (row, d) = (i / case.head_dim * case.head_dim, i % case.head_dim);
        let partner = match (case.style, d < case.rope_dim) {
            (_, false) => d,
            (RopeStyle::Normal, true) => d ^ 1,
            (RopeStyle::Neox, true) => (d + case.rope_dim / 2) % case.rope_dim,
        };
        f64::from(x_seen[row + d]).hypot(f64::from(x_seen[row + partner]))
    };
    let log2_theta_scale = f64::from(theta.powf(-2.0 / case.rope_dim as f32)).log2();
    for i in 0..len {
        let r = radius(i);
        let d = i % case.head_dim;
        let pair = match case.style {
            RopeStyle::Normal => d / 2,
            RopeStyle::Neox => d % (case.rope_dim / 2),
        };
        let ulps = 8.0 + 3.0 * (pair as f64 * log2_theta_scale).abs();
        let storage =
            if dtype == DType::F16 { f64::from(want[i].abs()) * 2f64.powi(-11) + r * 2f64.powi(-12) } else { 0.0 };
        let tolerance = r * (angles[i].abs() * ulps * 2f64.powi(-24) + 2f64.powi(-21)) + storage + 1e-7;
        let err = (f64::from(got[i]) - f64::from(want[i])).abs();
        assert!(
            err <= tolerance,
            "{what}: first failing index {i} (token {}, pos {}): got {}, want {} (|diff| {err:e}, tol {tolerance:e})",
            i / (n_heads * case.head_dim),
            pos[i / (n_heads * case.head_dim)],
            got[i],
            want[i]
        );
        max_err = max_err.max(err as f32);
        max_ratio = max_ratio.max((err / tolerance) as f32);
    }
    (max_err, max_ratio)
}

/// `rope_store`: one dispatch rotates the step's queries (into q) and keys (into the cache at rows n_past..) and
/// stores its values, reading Q, K and V side by side from one row and n_past / n_tokens from the step tensor; q's
/// rows past the step and the cache's other rows are left as they were, and nothing is written past the cache.
#[test]
fn rope_store_rotates_q_and_k_and_stores_k_and_v_at_n_past() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A0F);
    let (n_head, n_head_kv, batch, ctx, theta) = (6usize, 2usize, 5usize, 12usize, 10000.0);
    let mut cases = 0;
    for (_, gpu) in gpus() {
        let cache_dtype = if gpu.features().shader_f16 { DType::F16 } else { DType::F32 };
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            for scaling in [RopeScaling::None, RopeScaling::FreqFactors] {
                for (head_dim, rope_dim) in [(64, 64), (64, 32)] {
                    let case = RopeCase { style, scaling: scaling.clone(), head_dim, rope_dim };
                    let (q_dim, kv_dim) = (n_head * head_dim, n_head_kv * head_dim);
                    let width = q_dim + 2 * kv_dim;
                    let ff: Vec<f32> = match scaling {
                        RopeScaling::FreqFactors => (0..rope_dim / 2).map(|_| rng.uniform(1.0, 8.0)).collect(),
                        _ => Vec::new(),
                    };
                    let ff_t = (!ff.is_empty()).then(|| Tensor::from_f32(&gpu, "ff", &[ff.len()], &ff).unwrap());
                    let params = RopeParams {
                        style,
                        rope_dim: rope_dim as u32,
                        theta,
                        scaling: scaling.clone(),
                        freq_factors: ff_t.as_ref(),
                    };
                    // (n_past, n_tokens): a partial batch, a full one, and one that runs past the cache's end.
                    for (n_past, n_tokens) in [(7usize, 3usize), (0, batch), (10, batch)] {
                        let what = format!(
                            "rope_store {style:?} {scaling:?} head_dim {head_dim} rope_dim {rope_dim}, n_past {n_past} \
                             n_tokens {n_tokens} ({} cache)",
                            cache_dtype.name()
                        );
                        let qkv_data = rng.vec(batch * width, -2.0, 2.0);
                        let qkv = Tensor::from_f32(&gpu, "qkv", &[batch, width], &qkv_data).unwrap();
                        let q_before = rng.vec(batch * q_dim, -9.0, 9.0);
                        let q = Tensor::from_f32(&gpu, "q", &[batch, q_dim], &q_before).unwrap();
                        let (k_cache, k_before) =
                            tensor(&gpu, "k", &[ctx, kv_dim], cache_dtype, &rng.vec(ctx * kv_dim, -9.0, 9.0));
                        let (v_cache, v_before) =
                            tensor(&gpu, "v", &[ctx, kv_dim], cache_dtype, &rng.vec(ctx * kv_dim, -9.0, 9.0));
                        let step = step_tensor(&gpu, n_past as u32, n_tokens as u32);
                        let io = RopeStoreIo { qkv: &qkv, step: &step, q: &q, k_cache: &k_cache, v_cache: &v_cache };
                        let d = rope_store(&gpu, io, n_head as u32, n_head_kv as u32, head_dim as u32, &params)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        let q_got = run(&gpu, std::slice::from_ref(&d), &q);
                        let k_got = block_on(k_cache.read_f32(&gpu)).unwrap();
                        let v_got = block_on(v_cache.read_f32(&gpu)).unwrap();
                        let stored = n_tokens.min(ctx - n_past);
                        let pos: Vec<u32> = (0..stored).map(|t| (n_past + t) as u32).collect();
                        let part = |t: usize, from: usize, n: usize| qkv_data[t * width + from..][..n].to_vec();
                        // Q of the step's tokens, rotated; later rows of q untouched.
                        let q_in: Vec<f32> = (0..stored).flat_map(|t| part(t, 0, q_dim)).collect();
                        check_rotated(
                            &format!("{what}: q"),
                            &q_got[..q_in.len()],
                            &q_in,
                            &pos,
                            n_head,
                            &case,
                            theta,
                            &ff,
                            DType::F32,
                        );
                        assert_eq!(q_got[n_tokens * q_dim..], q_before[n_tokens * q_dim..], "{what}: q past the step");
                        // K rotated and V as is, at rows n_past..; the other rows untouched.
                        let seen = |v: Vec<f32>| if cache_dtype == DType::F16 { round_f16(&v) } else { v };
                        let k_in: Vec<f32> = (0..stored).flat_map(|t| part(t, q_dim, kv_dim)).collect();
                        let rows = n_past * kv_dim..(n_past + stored) * kv_dim;
                        let k_dtype = cache_dtype;
                        check_rotated(
                            &format!("{what}: k"),
                            &k_got[rows.clone()],
                            &k_in,
                            &pos,
                            n_head_kv,
                            &case,
                            theta,
                            &ff,
                            k_dtype,
                        );
                        let v_in: Vec<f32> = (0..stored).flat_map(|t| part(t, q_dim + kv_dim, kv_dim)).collect();
                        assert_eq!(v_got[rows.clone()], seen(v_in)[..], "{what}: v");
                        for (name, got, before) in [("k", &k_got, &k_before), ("v", &v_got, &v_before)] {
                            let outside = (0..ctx * kv_dim).filter(|i| !rows.contains(i));
                            assert!(outside.into_iter().all(|i| got[i] == before[i]), "{what}: {name}'s other rows");
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    println!("rope_store: {cases} cases in {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// The KV cache append

#[test]
fn kv_store_writes_the_batch_at_n_past_and_never_past_the_cache() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A02);
    let (batch, ctx, row_len) = (8usize, 50usize, 2 * 64);
    let mut cases = 0;
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            let (cache, mut want) = tensor(&gpu, "cache", &[ctx, 2, 64], dtype, &rng.vec(ctx * row_len, -9.0, 9.0));
            let src = Tensor::new(&gpu, "k", &[batch, 2, 64], DType::F32).unwrap();
            let step = step_tensor(&gpu, 0, 0);
            let store = kv_store(&gpu, &src, &cache, &step).unwrap();
            let mut readback = Readback::new(&gpu, cache.byte_size()).unwrap();
            let buffers = gpu.buffers_created();
            // (n_past, n_tokens): a full batch, a partial one, one that reaches past the cache, one entirely past it,
            // one whose n_past + t would overflow, and an empty batch.
            for (n_past, n_tokens) in [(0, 8), (8, 3), (45, 8), (60, 8), (u32::MAX - 2, 8), (20, 0)] {
                let data = rng.vec(batch * row_len, -3.0, 3.0);
                src.upload(&gpu, bytemuck::cast_slice(&data)).unwrap();
                set_step(&gpu, &step, n_past, n_tokens);
                let got = run_into(&gpu, std::slice::from_ref(&store), &cache, &mut readback);
                for t in 0..n_tokens as usize {
                    let row = n_past as usize + t;
                    if row < ctx {
                        want[row * row_len..(row + 1) * row_len].copy_from_slice(&data[t * row_len..(t + 1) * row_len]);
                    }
                }
                // Exact in f32; f16 within one ulp (WGSL lets the conversion round either way).
                let (want_seen, rtol) = match dtype {
                    DType::F16 => (round_f16(&want), 1e-3),
                    _ => (want.clone(), 0.0),
                };
                let what = format!("kv_store n_past {n_past} n_tokens {n_tokens} {}", device(&gpu, dtype));
                assert_close(&what, &got, &want_seen, 0.0, rtol);
                cases += 1;
            }
            assert_eq!(gpu.buffers_created(), buffers, "replaying kv_store created buffers");
        }
    }
    println!("kv_store: {cases} cases in {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// Attention

/// `out[t, h, :]` for the batch's first `n_tokens` tokens, in f64: token t sees cache rows 0 ..= n_past + t.
fn cpu_attention<'a>(
    q: &[f32],
    k: &'a [f32],
    v: &'a [f32],
    s: AttentionShape,
    n_past: usize,
    n_tokens: usize,
) -> Vec<f32> {
    let (n_head, n_kv, d) = (s.n_head as usize, s.n_head_kv as usize, s.head_dim as usize);
    let group = n_head / n_kv;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Vec::with_capacity(n_tokens * n_head * d);
    for t in 0..n_tokens {
        let seen = (n_past + t + 1).min(s.ctx as usize);
        for h in 0..n_head {
            let qh = &q[(t * n_head + h) * d..][..d];
            let row = |cache: &'a [f32], j: usize| &cache[(j * n_kv + h / group) * d..][..d];
            let scores: Vec<f64> = (0..seen)
                .map(|j| row(k, j).iter().zip(qh).map(|(&k, &q)| f64::from(k) * f64::from(q)).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut acc = vec![0.0f64; d];
            let mut total = 0.0;
            for (j, s) in scores.iter().enumerate() {
                let w = (s - max).exp();
                total += w;
                acc.iter_mut().zip(row(v, j)).for_each(|(a, &v)| *a += w * f64::from(v));
            }
            out.extend(acc.iter().map(|a| (a / total) as f32));
        }
    }
    out
}

/// Random caches of `shape` as `dtype` on the GPU, and the values the GPU sees.
fn caches(gpu: &Gpu, shape: AttentionShape, dtype: DType, rng: &mut Rng) -> [(Tensor, Vec<f32>); 2] {
    let dims = [shape.ctx as usize, shape.n_head_kv as usize, shape.head_dim as usize];
    let len = dims.iter().product();
    [
        tensor(gpu, "k_cache", &dims, dtype, &rng.vec(len, -1.0, 1.0)),
        tensor(gpu, "v_cache", &dims, dtype, &rng.vec(len, -1.0, 1.0)),
    ]
}

const SENTINEL: f32 = 1234.5;
/// Attention in f32 against f64: accumulation over a few thousand keys and GPU `exp`.
const ATTENTION_TOL: (f32, f32) = (5e-5, 1e-4);

/// Runs `dispatches` for (n_past, n_tokens) and checks the first n_tokens rows against the CPU and the rest untouched.
#[allow(clippy::too_many_arguments)]
fn check_attention(
    gpu: &Gpu,
    dispatches: &[Dispatch],
    (step, out): (&Tensor, &Tensor),
    (q, k, v): (&[f32], &[f32], &[f32]),
    shape: AttentionShape,
    n_past: u32,
    n_tokens: u32,
    what: &str,
) -> f32 {
    out.upload(gpu, bytemuck::cast_slice(&vec![SENTINEL; out.len()])).unwrap();
    set_step(gpu, step, n_past, n_tokens);
    let got = run(gpu, dispatches, out);
    let rows = n_tokens as usize * (shape.n_head * shape.head_dim) as usize;
    let want = cpu_attention(q, k, v, shape, n_past as usize, n_tokens as usize);
    let (atol, rtol) = ATTENTION_TOL;
    assert_close(what, &got[..rows], &want, atol, rtol);
    if let Some(i) = got[rows..].iter().position(|&x| x != SENTINEL) {
        panic!("{what}: padding element {} was written: {}", rows + i, got[rows + i]);
    }
    got[..rows].iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

/// (n_head, n_head_kv): plain multi-head, R1-Distill-Qwen-7B's 28/4, R1-Distill-Qwen-1.5B's 12/2, and the test
/// models' own: smol135's 9/3 (a group of 3, which does not divide a tile of rows) and qwen05's 14/2.
const HEADS: [(u32, u32); 5] = [(4, 4), (28, 4), (12, 2), (9, 3), (14, 2)];

fn slow() -> bool {
    std::env::var("WEBR1_SLOW").is_ok_and(|v| v == "1")
}

/// The heads the tests of every kernel shape run: all of them with `WEBR1_SLOW=1`, else R1-Distill-Qwen-7B's 28/4
/// (a group of 7, which divides neither a tile of rows nor a workgroup).
fn shape_heads() -> &'static [(u32, u32)] {
    match slow() {
        true => &HEADS,
        false => &[(28, 4)],
    }
}

/// Random q and caches of `shape` as `dtype`, an output and a step tensor: an attention case on the GPU, with the
/// values the GPU sees.
struct Case {
    shape: AttentionShape,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    step: Tensor,
    seen: [Vec<f32>; 3],
}

impl Case {
    fn new(gpu: &Gpu, shape: AttentionShape, dtype: DType, rng: &mut Rng) -> Case {
        let AttentionShape { n_head, head_dim, batch, .. } = shape;
        let [(k, k_seen), (v, v_seen)] = caches(gpu, shape, dtype, rng);
        let q_data = rng.vec((batch * n_head * head_dim) as usize, -4.0, 4.0);
        let q = Tensor::from_f32(gpu, "q", &[batch as usize, n_head as usize, head_dim as usize], &q_data).unwrap();
        let out = Tensor::new(gpu, "out", &[batch as usize, (n_head * head_dim) as usize], DType::F32).unwrap();
        Case { shape, q, k, v, out, step: step_tensor(gpu, 0, 0), seen: [q_data, k_seen, v_seen] }
    }

    fn io(&self) -> AttentionIo<'_> {
        io(&self.q, &self.k, &self.v, &self.out, &self.step)
    }

    /// Runs `dispatches` at (n_past, n_tokens) against the CPU; returns the largest error.
    fn check(&self, gpu: &Gpu, dispatches: &[Dispatch], (n_past, n_tokens): (u32, u32), what: &str) -> f32 {
        let [q, k, v] = &self.seen;
        let what = format!("{what} n_past {n_past} n_tokens {n_tokens}");
        check_attention(gpu, dispatches, (&self.step, &self.out), (q, k, v), self.shape, n_past, n_tokens, &what)
    }
}

/// The macros a dispatch's pipeline was compiled with (`NAME=VALUE`), from [`Dispatch::describe`].
fn macros_of(d: &Dispatch) -> Vec<String> {
    let text = d.describe();
    let inside = text.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(m, _)| m).unwrap_or("");
    inside.split_whitespace().map(str::to_string).collect()
}

/// Panics unless `d` was compiled with every `NAME=VALUE` of `want`.
fn assert_macros(d: &Dispatch, want: &[String], what: &str) {
    let have = macros_of(d);
    for w in want {
        assert!(have.contains(w), "{what}: compiled without {w}: {}", d.describe());
    }
}

/// (batch capacity, runs of (n_past, n_tokens)) for prefill in a cache of 300 rows: a first chunk, a later one,
/// partial batches, one token, and a batch of 96 replayed for 7 tokens (most workgroups find only padding).
const PREFILL_RUNS: [(u32, &[(u32, u32)]); 4] =
    [(1, &[(0, 1), (299, 1)]), (5, &[(0, 5), (120, 3)]), (33, &[(0, 33), (267, 33)]), (96, &[(0, 96), (150, 7)])];

/// The macros of prefill tiles.
fn prefill_macros(t: PrefillShape) -> Vec<String> {
    let PrefillShape { rows, keys, dims, v_keys, workgroup, score_rows, score_keys, out_vecs } = t;
    [("BR", rows), ("BC", keys), ("DK", dims), ("VC", v_keys), ("WORKGROUP", workgroup)]
        .into_iter()
        .chain([("TM", score_rows), ("TN", score_keys), ("OV", out_vecs)])
        .map(|(name, value)| format!("{name}={value}u"))
        .collect()
}

#[test]
fn attention_prefill_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A03);
    let (mut cases, mut max_err) = (0, 0.0f32);
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            for (n_head, n_head_kv) in HEADS {
                for head_dim in [64, 128] {
                    for (batch, runs) in PREFILL_RUNS {
                        let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx: 300, batch };
                        let case = Case::new(&gpu, shape, dtype, &mut rng);
                        let d = attention_prefill(&gpu, case.io(), shape).unwrap();
                        let tiles = PrefillShape::for_device(&gpu, shape, dtype == DType::F16);
                        let what = format!(
                            "attention_prefill heads {n_head}/{n_head_kv} head_dim {head_dim} batch {batch} {}",
                            device(&gpu, dtype)
                        );
                        assert_macros(&d, &prefill_macros(tiles), &what);
                        for &run in runs {
                            max_err = max_err.max(case.check(&gpu, std::slice::from_ref(&d), run, &what));
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    println!("attention_prefill: {cases} cases in {:.2?}; max |error| {max_err:e}", started.elapsed());
}

/// Every tile shape a device can be given (at head_dim 64 and 128, and the shapes chosen at 80 and 256), forced on
/// this device, against the CPU.
#[test]
fn attention_prefill_every_tile_shape_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A09);
    let (mut cases, mut max_err) = (0, 0.0f32);
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            let f16 = dtype == DType::F16;
            let mut shapes: Vec<(u32, PrefillShape)> = Vec::new();
            for head_dim in [64, 128] {
                let one = AttentionShape { n_head: 1, n_head_kv: 1, head_dim, ctx: 1, batch: 1 };
                let fits = |t: &PrefillShape| t.workgroup_bytes(one, f16) <= u64::from(PREFILL_MEMORY_CAP);
                shapes.extend(PrefillShape::candidates(head_dim).into_iter().filter(fits).map(|t| (head_dim, t)));
            }
            for head_dim in [80, 256] {
                shapes.push((head_dim, PrefillShape::for_memory(head_dim, f16, 16 << 10)));
                shapes.push((head_dim, PrefillShape::for_memory(head_dim, f16, PREFILL_MEMORY_CAP)));
            }
            for (head_dim, tiles) in shapes {
                for &(n_head, n_head_kv) in shape_heads() {
                    let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx: 300, batch: 33 };
                    let case = Case::new(&gpu, shape, dtype, &mut rng);
                    let d = attention_prefill_with_shape(&gpu, case.io(), shape, tiles)
                        .unwrap_or_else(|e| panic!("{tiles:?} at head_dim {head_dim} does not run here: {e}"));
                    let what = format!(
                        "attention_prefill {tiles:?} heads {n_head}/{n_head_kv} head_dim {head_dim} {}",
                        device(&gpu, dtype)
                    );
                    assert_macros(&d, &prefill_macros(tiles), &what);
                    for run in [(0, 33), (267, 33), (40, 9)] {
                        max_err = max_err.max(case.check(&gpu, std::slice::from_ref(&d), run, &what));
                        cases += 1;
                    }
                }
            }
        }
    }
    println!(
        "attention_prefill, every tile shape: {cases} cases in {:.2?}; max |error| {max_err:e}",
        started.elapsed()
    );
}

/// The tiles chosen for a device's workgroup memory fit it (up to the cap the tests can run), and meet the kernel's
/// design: at least 64 invocations, 16 query rows and 32 keys per tile.
#[test]
fn prefill_tiles_fit_the_workgroup_memory_they_are_chosen_for() {
    for head_dim in [16, 64, 80, 128, 256] {
        let shape = AttentionShape { n_head: 1, n_head_kv: 1, head_dim, ctx: 1, batch: 1 };
        for f16 in [false, true] {
            for limit in [16 << 10, 32 << 10, 48 << 10, 64 << 10] {
                let t = PrefillShape::for_memory(head_dim, f16, limit);
                let bytes = t.workgroup_bytes(shape, f16);
                let what = format!("head_dim {head_dim} f16 {f16} limit {limit}: {t:?} ({bytes} bytes)");
                assert!(bytes <= u64::from(limit.min(PREFILL_MEMORY_CAP)), "{what} does not fit");
                assert!(t.workgroup >= 64 && t.rows >= 16 && t.keys >= 32, "{what} is too small");
                assert!(PrefillShape::candidates(head_dim).contains(&t), "{what} is not a tested candidate");
            }
        }
    }
    // The two shapes R1's head_dim 128 gets with an f16 cache: Q staged once where 32 KiB are offered, in slices
    // within WebGPU's default 16 KiB.
    assert_eq!(PrefillShape::for_memory(128, true, 32 << 10).dims, 128);
    assert_eq!(PrefillShape::for_memory(128, true, 16 << 10).dims, 32);
}

#[test]
fn attention_decode_matches_the_cpu_reference_at_every_context_length() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A04);
    let (mut cases, mut max_err) = (0, 0.0f32);
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            for (n_head, n_head_kv) in HEADS {
                for head_dim in [64, 128] {
                    // The context the token sees (n_past + 1), in a cache a little larger, or (at 2000) just full;
                    // either way the last split is partial.
                    for len in [1u32, 17, 300, 2000] {
                        let ctx = if len == 2000 { len } else { len.max(64) + 7 };
                        let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx, batch: 1 };
                        let case = Case::new(&gpu, shape, dtype, &mut rng);
                        let dispatches = attention(&gpu, case.io(), shape).unwrap();
                        assert_eq!(dispatches.len(), 2, "decode is the splits and the combine pass");
                        let splits = dispatches[0].workgroups()[0];
                        if len == 2000 {
                            assert!(splits >= 8, "ctx {ctx} runs in {splits} splits: the split path is not exercised");
                        }
                        let what = format!(
                            "attention_decode heads {n_head}/{n_head_kv} head_dim {head_dim} context {len} \
                             ({splits} splits) {}",
                            device(&gpu, dtype)
                        );
                        assert_macros(
                            &dispatches[0],
                            &decode_macros(&gpu, DecodeShape::for_device(&gpu, shape)),
                            &what,
                        );
                        max_err = max_err.max(case.check(&gpu, &dispatches, (len - 1, 1), &what));
                        cases += 1;
                    }
                }
            }
        }
    }
    println!("attention_decode: {cases} cases in {:.2?}; max |error| {max_err:e}", started.elapsed());
}

/// Every decode shape a device can be given: GPUs with subgroups of 16 or more, of 8 (Intel) and as browsers report
/// them (4); GPUs without subgroups; CPU drivers; and a shape with few splits of many tiles (a long context's case).
const DECODE_SHAPES: [DecodeShape; 6] = [
    DecodeShape { workgroup: 128, d_split: 16, tile: 64, chunk: 64, max_splits: 128 },
    DecodeShape { workgroup: 128, d_split: 8, tile: 64, chunk: 64, max_splits: 128 },
    DecodeShape { workgroup: 128, d_split: 4, tile: 64, chunk: 64, max_splits: 128 },
    DecodeShape { workgroup: 64, d_split: 4, tile: 64, chunk: 64, max_splits: 128 },
    DecodeShape { workgroup: 64, d_split: 1, tile: 64, chunk: 128, max_splits: 128 },
    DecodeShape { workgroup: 64, d_split: 2, tile: 32, chunk: 32, max_splits: 4 },
];

/// The macros of a decode shape on `gpu`.
fn decode_macros(gpu: &Gpu, s: DecodeShape) -> Vec<String> {
    let mut macros: Vec<String> = [("WORKGROUP", s.workgroup), ("D_SPLIT", s.d_split), ("TILE", s.tile)]
        .into_iter()
        .chain([("CHUNK", s.chunk)])
        .map(|(name, value)| format!("{name}={value}u"))
        .collect();
    if gpu.features().subgroups {
        macros.push("SUBGROUPS=true".into());
    }
    macros
}

/// Every decode shape (and the shape chosen at head_dim 80 and 256), forced on this device, against the CPU.
#[test]
fn attention_decode_every_shape_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A0A);
    let (mut cases, mut max_err) = (0, 0.0f32);
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            let mut shapes: Vec<(u32, Option<DecodeShape>)> = Vec::new();
            for head_dim in [64, 128] {
                shapes.extend(DECODE_SHAPES.map(|s| (head_dim, Some(s))));
            }
            shapes.extend([(80, None), (256, None)]);
            for (head_dim, forced) in shapes {
                for &(n_head, n_head_kv) in shape_heads() {
                    // A context of several splits of several tiles, and with WEBR1_SLOW=1 one of a single split.
                    for &len in if slow() { &[17u32, 2000][..] } else { &[2000] } {
                        let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx: len + 7, batch: 1 };
                        let decode = forced.unwrap_or_else(|| DecodeShape::for_device(&gpu, shape));
                        let case = Case::new(&gpu, shape, dtype, &mut rng);
                        let partials = attention_decode_partials_for(&gpu, shape, decode).unwrap();
                        let dispatches =
                            attention_decode_with_shape(&gpu, case.io(), shape, decode, &partials).unwrap();
                        let what = format!(
                            "attention_decode {decode:?} heads {n_head}/{n_head_kv} head_dim {head_dim} {}",
                            device(&gpu, dtype)
                        );
                        assert_macros(&dispatches[0], &decode_macros(&gpu, decode), &what);
                        max_err = max_err.max(case.check(&gpu, &dispatches, (len - 1, 1), &what));
                        cases += 1;
                    }
                }
            }
        }
    }
    println!("attention_decode, every shape: {cases} cases in {:.2?}; max |error| {max_err:e}", started.elapsed());
}

#[test]
fn attention_decode_with_an_empty_batch_writes_nothing() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(0x5EED_0A05);
    let shape = AttentionShape { n_head: 12, n_head_kv: 2, head_dim: 64, ctx: 200, batch: 1 };
    let [(k, _), (v, _)] = caches(&gpu, shape, DType::F32, &mut rng);
    let q = Tensor::from_f32(&gpu, "q", &[1, 12, 64], &rng.vec(12 * 64, -1.0, 1.0)).unwrap();
    let out = Tensor::from_f32(&gpu, "out", &[1, 12 * 64], &[SENTINEL; 12 * 64]).unwrap();
    let step = step_tensor(&gpu, 150, 0);
    let got = run(&gpu, &attention(&gpu, io(&q, &k, &v, &out, &step), shape).unwrap(), &out);
    assert!(got.iter().all(|&x| x == SENTINEL), "n_tokens = 0 wrote output");
}

/// The layers of a model run one after another, so their decode dispatches may share one scratch tensor.
#[test]
fn decode_layers_can_share_one_scratch_tensor() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(0x5EED_0A08);
    let shape = AttentionShape { n_head: 12, n_head_kv: 2, head_dim: 128, ctx: 700, batch: 1 };
    let partials = attention_decode_partials(&gpu, shape).unwrap();
    let step = step_tensor(&gpu, 650, 1);
    let mut list = Vec::new();
    let mut layers = Vec::new();
    for _ in 0..3 {
        let [(k, k_seen), (v, v_seen)] = caches(&gpu, shape, DType::F32, &mut rng);
        let q_data = rng.vec(12 * 128, -4.0, 4.0);
        let q = Tensor::from_f32(&gpu, "q", &[1, 12, 128], &q_data).unwrap();
        let out = Tensor::new(&gpu, "out", &[1, 12 * 128], DType::F32).unwrap();
        list.extend(attention_decode_with(&gpu, io(&q, &k, &v, &out, &step), shape, &partials).unwrap());
        layers.push((out, cpu_attention(&q_data, &k_seen, &v_seen, shape, 650, 1)));
    }
    gpu.submit(&list);
    for (i, (out, want)) in layers.iter().enumerate() {
        let (atol, rtol) = ATTENTION_TOL;
        assert_close(
            &format!("layer {i} of 3 sharing partials"),
            &block_on(out.read_f32(&gpu)).unwrap(),
            want,
            atol,
            rtol,
        );
    }
    let (q, out) = (&layers[0].0, &layers[1].0);
    let small = attention_decode_partials(&gpu, AttentionShape { ctx: 100, ..shape }).unwrap();
    let e = attention_decode_with(&gpu, io(q, q, q, out, &step), shape, &small).unwrap_err();
    assert_eq!(e.code, ErrorCode::Usage, "partials for another context: {e}");
}

/// Times decode attention at contexts of 1, 300 and 2000 for R1-Distill-Qwen-7B's heads (28/4, head_dim 128).
#[test]
fn attention_decode_time_at_context_2000() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(0x5EED_0A06);
    for dtype in dtypes(&gpu) {
        let shape = AttentionShape { n_head: 28, n_head_kv: 4, head_dim: 128, ctx: 2048, batch: 1 };
        let [(k, _), (v, _)] = caches(&gpu, shape, dtype, &mut rng);
        let q = Tensor::from_f32(&gpu, "q", &[1, 28, 128], &rng.vec(28 * 128, -1.0, 1.0)).unwrap();
        let out = Tensor::new(&gpu, "out", &[1, 28 * 128], DType::F32).unwrap();
        let step = step_tensor(&gpu, 0, 1);
        let dispatches = attention(&gpu, io(&q, &k, &v, &out, &step), shape).unwrap();
        let _ = run(&gpu, &dispatches, &out); // compile and warm up
        for len in [1, 300, 2000] {
            set_step(&gpu, &step, len - 1, 1);
            let steps = 10;
            let started = Instant::now();
            for _ in 0..steps {
                gpu.submit(&dispatches);
            }
            gpu.wait_idle().unwrap();
            println!(
                "attention decode, 28/4 heads of 128, context {len}, {} cache: {:.2?} per step ({})",
                dtype.name(),
                started.elapsed() / steps,
                gpu.adapter().name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The engine's flow: RoPE, append, attend; a prompt in two chunks, then decode steps

/// A qwen2-like layer's attention on the GPU through RoPE → kv_store → attention with `step` and `pos` rewritten
/// before each submit, against the CPU doing the same in f64.
#[test]
fn prompt_in_two_chunks_then_decode_steps_match_the_cpu() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0A07);
    let (n_head, n_head_kv, head_dim, ctx, batch) = (12u32, 2u32, 64u32, 40u32, 8u32);
    let (hd, q_dim, kv_dim) = (head_dim as usize, (n_head * head_dim) as usize, (n_head_kv * head_dim) as usize);
    let rope_case = RopeCase { style: RopeStyle::Neox, scaling: RopeScaling::None, head_dim: hd, rope_dim: hd };
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            // The engine's per-shape buffers and dispatch lists: a prefill list (batch 8) and a decode list (batch 1).
            let step = step_tensor(&gpu, 0, 0);
            let cache = |label| Tensor::new(&gpu, label, &[ctx as usize, n_head_kv as usize, hd], dtype).unwrap();
            let (k_cache, v_cache) = (cache("k_cache"), cache("v_cache"));
            let build = |b: u32| {
                let t = |label, width| Tensor::new(&gpu, label, &[b as usize, width], DType::F32).unwrap();
                let (q, k, v, out) = (t("q", q_dim), t("k", kv_dim), t("v", kv_dim), t("out", q_dim));
                let pos = Tensor::new(&gpu, "pos", &[b as usize], DType::U32).unwrap();
                let params = RopeParams {
                    style: RopeStyle::Neox,
                    rope_dim: head_dim,
                    theta: 10000.0,
                    scaling: RopeScaling::None,
                    freq_factors: None,
                };
                let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx, batch: b };
                let mut list = vec![
                    rope(&gpu, &q, &pos, n_head, head_dim, &params).unwrap(),
                    rope(&gpu, &k, &pos, n_head_kv, head_dim, &params).unwrap(),
                    kv_store(&gpu, &k, &k_cache, &step).unwrap(),
                    kv_store(&gpu, &v, &v_cache, &step).unwrap(),
                ];
                list.extend(attention(&gpu, io(&q, &k_cache, &v_cache, &out, &step), shape).unwrap());
                (list, [q, k, v, out], pos)
            };
            let prefill = build(batch);
            let decode = build(1);
            let mut readback = Readback::new(&gpu, prefill.1[3].byte_size()).unwrap();
            let buffers = gpu.buffers_created();

            let (mut all_k, mut all_v) = (Vec::new(), Vec::new()); // the CPU's cache: rotated keys, values
            let mut n_past = 0;
            // A prompt of 13 tokens as chunks of 8 and 5, then 4 decode steps.
            for (n_tokens, (list, [q, k, v, out], pos)) in
                [(8, &prefill), (5, &prefill), (1, &decode), (1, &decode), (1, &decode), (1, &decode)]
            {
                let cap = pos.len();
                let positions: Vec<u32> = (0..cap as u32).map(|t| n_past + t).collect();
                let (q_data, k_data, v_data) = (
                    rng.vec(cap * q_dim, -3.0, 3.0),
                    rng.vec(cap * kv_dim, -1.0, 1.0),
                    rng.vec(cap * kv_dim, -1.0, 1.0),
                );
                for (t, data) in [(q, &q_data), (k, &k_data), (v, &v_data)] {
                    t.upload(&gpu, bytemuck::cast_slice(data)).unwrap();
                }
                pos.upload(&gpu, bytemuck::cast_slice(&positions)).unwrap();
                set_step(&gpu, &step, n_past, n_tokens);
                let got = run_into(&gpu, list, out, &mut readback);

                let (q_rot, _) = cpu_rope(&q_data, &positions, n_head as usize, &rope_case, 10000.0, &[]);
                let (k_rot, _) = cpu_rope(&k_data, &positions, n_head_kv as usize, &rope_case, 10000.0, &[]);
                let rows = n_tokens as usize * kv_dim;
                let seen = |x: &[f32]| if dtype == DType::F16 { round_f16(x) } else { x.to_vec() };
                all_k.extend(seen(&k_rot[..rows]));
                all_v.extend(seen(&v_data[..rows]));
                let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx: n_past + n_tokens, batch: cap as u32 };
                let want = cpu_attention(&q_rot, &all_k, &all_v, shape, n_past as usize, n_tokens as usize);
                let what = format!("layer attention at n_past {n_past}, {n_tokens} tokens {}", device(&gpu, dtype));
                // RoPE's f32 angles at positions < 20 add ~1e-6 to attention's own error.
                assert_close(&what, &got[..n_tokens as usize * q_dim], &want, 1e-4, 1e-4);
                n_past += n_tokens;
            }
            assert_eq!(gpu.buffers_created(), buffers, "replaying the dispatch lists created buffers");
        }
    }
    println!("prompt in two chunks, then decode: {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// Bad arguments

#[test]
fn rope_kv_store_and_attention_reject_bad_arguments() {
    let Some(gpu) = gpu() else { return };
    let t = |shape: &[usize], dtype| Tensor::new(&gpu, "t", shape, dtype).unwrap();
    let usage = |r: Result<Vec<Dispatch>, webr1::Error>, why: &str| {
        let e = r.err().unwrap_or_else(|| panic!("accepted: {why}"));
        assert_eq!(e.code, ErrorCode::Usage, "{why}: {e}");
    };
    let one = |r: webr1::Result<Dispatch>| r.map(|d| vec![d]);

    let (x, pos) = (t(&[3, 4, 64], DType::F32), t(&[3], DType::U32));
    let ff = t(&[32], DType::F32);
    let p = |style, rope_dim, scaling, freq_factors| RopeParams { style, rope_dim, theta: 1e4, scaling, freq_factors };
    let normal = p(RopeStyle::Normal, 64, RopeScaling::None, None);
    assert!(rope(&gpu, &x, &pos, 4, 64, &normal).is_ok());
    usage(one(rope(&gpu, &x, &pos, 4, 32, &normal)), "x of another shape than [batch, n_heads, head_dim]");
    usage(one(rope(&gpu, &x, &t(&[3], DType::F32), 4, 64, &normal)), "f32 positions");
    usage(one(rope(&gpu, &x, &pos, 4, 64, &p(RopeStyle::Neox, 63, RopeScaling::None, None))), "an odd rope_dim");
    usage(one(rope(&gpu, &x, &pos, 4, 64, &p(RopeStyle::Neox, 66, RopeScaling::None, None))), "rope_dim > head_dim");
    usage(one(rope(&gpu, &x, &pos, 4, 64, &p(RopeStyle::Normal, 64, RopeScaling::FreqFactors, None))), "no factors");
    usage(one(rope(&gpu, &x, &pos, 4, 64, &p(RopeStyle::Normal, 64, RopeScaling::None, Some(&ff)))), "stray factors");
    usage(
        one(rope(&gpu, &x, &pos, 4, 64, &p(RopeStyle::Normal, 32, RopeScaling::FreqFactors, Some(&ff)))),
        "factors of the wrong length",
    );
    usage(
        one(rope(&gpu, &x, &pos, 4, 64, &p(RopeStyle::Normal, 64, RopeScaling::Linear { factor: 0.0 }, None))),
        "a zero linear factor",
    );

    let (src, cache, step) = (t(&[4, 128], DType::F32), t(&[50, 2, 64], DType::F32), t(&[4], DType::U32));
    assert!(kv_store(&gpu, &src, &cache, &step).is_ok());
    usage(one(kv_store(&gpu, &t(&[4, 64], DType::F32), &cache, &step)), "rows of another length");
    usage(one(kv_store(&gpu, &src, &cache, &t(&[4], DType::F32))), "an f32 step");
    usage(one(kv_store(&gpu, &src, &src, &step)), "the cache aliasing src");
    usage(one(kv_store(&gpu, &t(&[4, 128], DType::U32), &cache, &step)), "u32 src");

    let shape = AttentionShape { n_head: 12, n_head_kv: 2, head_dim: 64, ctx: 50, batch: 4 };
    let (q, out) = (t(&[4, 12, 64], DType::F32), t(&[4, 768], DType::F32));
    let kc = t(&[50, 2, 64], DType::F32);
    assert!(attention(&gpu, io(&q, &kc, &cache, &out, &step), shape).is_ok());
    usage(
        attention(&gpu, io(&q, &kc, &cache, &out, &step), AttentionShape { n_head_kv: 5, ..shape }),
        "12 heads over 5",
    );
    usage(attention(&gpu, io(&q, &kc, &cache, &out, &step), AttentionShape { head_dim: 56, ..shape }), "head_dim 56");
    usage(attention(&gpu, io(&q, &kc, &cache, &out, &step), AttentionShape { ctx: 49, ..shape }), "a cache of 50 rows");
    usage(attention(&gpu, io(&q, &kc, &cache, &q, &step), shape), "out aliasing q");
    let short_step = t(&[1], DType::U32);
    usage(attention(&gpu, io(&q, &kc, &cache, &out, &short_step), shape), "a step of one word");
    usage(attention_decode(&gpu, io(&q, &kc, &cache, &out, &step), shape), "decode of a batch of 4");
    if gpu.features().shader_f16 {
        let vh = t(&[50, 2, 64], DType::F16);
        usage(attention(&gpu, io(&q, &kc, &vh, &out, &step), shape), "k f32 and v f16");
    }
    assert!(attention_prefill(&gpu, io(&q, &kc, &cache, &out, &step), shape).is_ok(), "prefill of a batch of 4");

    // An f16 cache on a device without shader-f16.
    let Some(f32_only) = gpu_common::gpu_f32() else { return };
    let t32 = |shape: &[usize], dtype| Tensor::new(&f32_only, "t", shape, dtype).unwrap();
    let e = kv_store(&f32_only, &t32(&[4, 128], DType::F32), &t32(&[50, 128], DType::F16), &t32(&[4], DType::U32))
        .unwrap_err();
    assert!(e.code == ErrorCode::Usage && e.message.contains("shader-f16"), "{e}");
}
