//! Token selection on the GPU against the CPU: argmax on full-size vocabularies with planted maxima, and sampling
//! checked three ways: greedy settings give the argmax, a seed reproduces its draws exactly (down to the documented
//! random number), and thousands of seeded draws fit the distribution of llama.cpp's sampler chain computed on the CPU
//! (a chi-square goodness-of-fit test), never leaving the set the filters keep.
//!
//! Every test runs on the forced-f32 device (shared-memory reductions) and the default one (subgroups where the
//! adapter has them, as lavapipe does).

mod common;
#[path = "common/gpu.rs"]
mod gpu_common;

use std::time::Instant;

use gpu_common::{gpu, gpus, Rng};
use pollster::block_on;
use webr1::gpu::ops::{argmax, argmax_next, draw_uniform, sample, sample_next, NextStep, SamplingParams};
use webr1::gpu::{DType, Dispatch, Gpu, Tensor};
use webr1::ErrorCode;

/// The vocabularies of the R1 distills (Qwen2: 151936) and of SmolLM2 (49152).
const QWEN_VOCAB: usize = 151_936;
const SMOL_VOCAB: usize = 49_152;

fn reduction(gpu: &Gpu) -> &'static str {
    if gpu.features().subgroups {
        "subgroups"
    } else {
        "shared memory"
    }
}

/// Submits `list` once and reads `out[index]`.
fn run_once(gpu: &Gpu, list: &[Dispatch], out: &Tensor, index: usize) -> u32 {
    gpu.submit(list);
    let ids = block_on(out.read_u32(gpu)).unwrap_or_else(|e| panic!("{}: {e}", list[0].label()));
    ids[index]
}

/// Replays `list` `count` times, collecting `out[index]` after each replay (copied on the GPU, read back at the end).
fn replay(gpu: &Gpu, list: &[Dispatch], out: &Tensor, index: usize, count: usize) -> Vec<u32> {
    let results = Tensor::new(gpu, "draws", &[count], DType::U32).unwrap();
    for batch in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut encoder = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for &i in batch {
            gpu.encode(&mut encoder, list);
            let source = out.offset() + 4 * index as u64;
            encoder.copy_buffer_to_buffer(out.buffer(), source, results.buffer(), 4 * i as u64, 4);
        }
        gpu.queue().submit([encoder.finish()]);
    }
    block_on(results.read_u32(gpu)).unwrap()
}

/// The first index of the largest value (NaN never wins), as llama.cpp's greedy sampler picks.
fn cpu_argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------------------------
// Argmax

/// Rows with planted maxima: (what, row).
fn planted_rows(rng: &mut Rng, n: usize) -> Vec<(String, Vec<f32>)> {
    let mut rows = Vec::new();
    let mut row = rng.vec(n, -10.0, 10.0);
    let at = rng.below(n);
    row[at] = 12.5;
    rows.push((format!("a max at {at}"), row));

    let mut row = rng.vec(n, -10.0, 10.0);
    row[0] = 10.5;
    rows.push(("a max at index 0".to_string(), row));

    let mut row = rng.vec(n, -10.0, 10.0);
    row[n - 1] = 10.5;
    rows.push(("a max at the last index".to_string(), row));

    // Ties: the lowest id wins, also across chunk (workgroup) boundaries and against the last index.
    let mut row = rng.vec(n, -10.0, 10.0);
    let mut at: Vec<usize> = [4095, 4096, n - 1, rng.below(n), rng.below(n)].into_iter().filter(|&i| i < n).collect();
    at.iter().for_each(|&i| row[i] = 11.0);
    at.sort();
    rows.push((format!("ties at {at:?}"), row));

    // All negative, the max far from zero; and a NaN that must not win.
    let mut row = rng.vec(n, -100.0, -50.0);
    let at = rng.below(n);
    row[at] = -49.0;
    row[rng.below(n)] = f32::NAN;
    rows.push((format!("all negative, max at {at}, with a NaN"), row));
    rows
}

#[test]
fn argmax_finds_planted_maxima() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5A3B_0001);
    let mut cases = 0;
    for (_, gpu) in gpus() {
        for n in [QWEN_VOCAB, SMOL_VOCAB, 1, 7, 4097] {
            // The row sits at row 2 of a [3, n] tensor (an LM head output for three tokens) and the id goes to out[2].
            let logits = Tensor::new(&gpu, "logits", &[3, n], DType::F32).unwrap();
            let out = Tensor::new(&gpu, "out", &[4], DType::U32).unwrap();
            let list = argmax(&gpu, &logits, 2 * n, n, &out, 2).unwrap();
            let mut data = rng.vec(3 * n, 20.0, 30.0); // the other rows are larger: reading them would show
            for (what, row) in planted_rows(&mut rng, n) {
                data[2 * n..].copy_from_slice(&row);
                logits.upload(&gpu, bytemuck::cast_slice(&data)).unwrap();
                let got = run_once(&gpu, &list, &out, 2);
                let want = cpu_argmax(&row);
                assert_eq!(got as usize, want, "argmax [{}] n {n}, {what}: got {got}, want {want}", reduction(&gpu));
                cases += 1;
            }
        }
    }
    println!("argmax: {cases} cases in {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// The sampler chain on the CPU, in f64: llama.cpp's top-k -> top-p -> min-p -> temperature -> dist, equal logits
// ranked by id.

#[derive(Debug, Clone, Copy)]
struct Chain {
    temperature: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
}

impl Chain {
    fn params(self, seed: u64) -> SamplingParams {
        SamplingParams::new(self.temperature, self.top_k, self.top_p, self.min_p, seed, 0)
    }
}

/// The probability of each id after the chain. Panics when a top-p or min-p boundary is within 1e-5 of the cut, where
/// the GPU's f32 and fixed-point rounding could legitimately decide the other way (choose other test data then).
fn chain_probabilities(logits: &[f32], chain: Chain) -> Vec<f64> {
    let n = logits.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let max = f64::from(logits[order[0]]);
    let greedy = chain.temperature <= 0.0 || chain.top_k == 1;
    let mut keep = if greedy { 1 } else { n };
    if !greedy && chain.top_k > 0 {
        keep = keep.min(chain.top_k as usize);
    }
    if !greedy && chain.top_p < 1.0 {
        let w: Vec<f64> = order[..keep].iter().map(|&i| (f64::from(logits[i]) - max).exp()).collect();
        let z: f64 = w.iter().sum();
        let mut cum = 0.0;
        for (j, wj) in w.iter().enumerate() {
            cum += wj / z;
            if cum >= f64::from(chain.top_p) {
                assert!(cum - f64::from(chain.top_p) > 1e-5, "top-p boundary too close: {cum}");
                keep = j + 1;
                break;
            }
            assert!(f64::from(chain.top_p) - cum > 1e-5, "top-p boundary too close: {cum}");
        }
    }
    if !greedy && chain.min_p > 0.0 {
        let threshold = logits[order[0]] + chain.min_p.ln();
        keep = order[..keep].iter().take_while(|&&i| logits[i] >= threshold).count().max(1);
        let near = order.iter().any(|&i| (logits[i] - threshold).abs() < 1e-5);
        assert!(!near, "a logit within 1e-5 of the min-p threshold {threshold}");
    }
    let temperature = if greedy { 1.0 } else { f64::from(chain.temperature) };
    let mut p = vec![0.0; n];
    for &i in &order[..keep] {
        p[i] = ((f64::from(logits[i]) - max) / temperature).exp();
    }
    let z: f64 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= z);
    p
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = C[0] + C[1..].iter().enumerate().map(|(i, c)| c / (x + i as f64 + 1.0)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The upper regularised incomplete gamma function Q(a, x) (series below a + 1, continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut k) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-15 {
            k += 1.0;
            term *= x / k;
            sum += term;
        }
        return 1.0 - sum * front;
    }
    // Lentz's method for the continued fraction.
    let tiny = 1e-300;
    let mut b = x + 1.0 - a;
    let (mut c, mut d) = (1.0 / tiny, 1.0 / b);
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        d = if d.abs() < tiny { tiny } else { d };
        c = b + an / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * h
}

/// Pearson's chi-square of `counts` against `probs` (ids with expected counts below 5 pooled into one bin):
/// (statistic, degrees of freedom, p-value).
fn chi_square(counts: &[u32], probs: &[f64]) -> (f64, usize, f64) {
    let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    let (mut stat, mut bins) = (0.0, 0);
    let (mut pooled_seen, mut pooled_expected) = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let expected = p * total;
        if p == 0.0 {
            continue;
        }
        if expected < 5.0 {
            pooled_seen += f64::from(c);
            pooled_expected += expected;
            continue;
        }
        stat += (f64::from(c) - expected).powi(2) / expected;
        bins += 1;
    }
    if pooled_expected > 0.0 {
        stat += (pooled_seen - pooled_expected).powi(2) / pooled_expected;
        bins += 1;
    }
    let dof = bins.max(2) - 1;
    (stat, dof, gamma_q(dof as f64 / 2.0, stat / 2.0))
}

#[test]
fn the_chi_square_helper_matches_tables() {
    // Critical values at p = 0.05 and 0.001 from standard tables.
    for (stat, dof, p) in [(3.841, 1, 0.05), (18.307, 10, 0.05), (29.588, 10, 0.001), (124.342, 100, 0.05)] {
        let got = gamma_q(dof as f64 / 2.0, stat / 2.0);
        assert!((got - p).abs() < p * 0.01, "Q({dof}, {stat}) = {got}, want {p}");
    }
    let (_, _, p) = chi_square(&[500, 500], &[0.5, 0.5]);
    assert!((p - 1.0).abs() < 1e-9);
    let (_, _, p) = chi_square(&[600, 400], &[0.5, 0.5]);
    assert!(p < 1e-9, "a 60/40 split of 1000 fair draws: p = {p}");
}

// ---------------------------------------------------------------------------------------------------------------
// Sampling

/// A sampling list over `logits` (one row), its settings tensor and its output.
struct Sampler {
    list: Vec<Dispatch>,
    params: Tensor,
    out: Tensor,
}

impl Sampler {
    fn new(gpu: &Gpu, logits: &Tensor, settings: SamplingParams) -> Sampler {
        let params = settings.tensor(gpu, "sampling").unwrap();
        let out = Tensor::new(gpu, "token", &[2], DType::U32).unwrap();
        let list = sample(gpu, logits, 0, logits.len(), &params, &out, 1).unwrap();
        Sampler { list, params, out }
    }

    fn draws(&self, gpu: &Gpu, count: usize) -> Vec<u32> {
        replay(gpu, &self.list, &self.out, 1, count)
    }
}

#[test]
fn greedy_settings_give_the_argmax() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5A3B_0002);
    let greedy = [
        ("temperature 0", Chain { temperature: 0.0, top_k: 40, top_p: 0.9, min_p: 0.1 }),
        ("negative temperature", Chain { temperature: -1.0, top_k: 0, top_p: 1.0, min_p: 0.0 }),
        ("top-k 1", Chain { temperature: 1.0, top_k: 1, top_p: 1.0, min_p: 0.0 }),
        ("tiny top-p", Chain { temperature: 1.0, top_k: 0, top_p: 1e-6, min_p: 0.0 }),
        ("top-p 0", Chain { temperature: 2.0, top_k: 0, top_p: 0.0, min_p: 0.0 }),
    ];
    let mut cases = 0;
    for (_, gpu) in gpus() {
        for n in [QWEN_VOCAB, SMOL_VOCAB, 64, 1] {
            let logits = Tensor::new(&gpu, "logits", &[n], DType::F32).unwrap();
            let sampler = Sampler::new(&gpu, &logits, SamplingParams::greedy());
            for (what, row) in planted_rows(&mut rng, n) {
                if n == 1 && what.contains("NaN") {
                    continue; // a one-token row that is NaN has nothing to compare
                }
                logits.upload(&gpu, bytemuck::cast_slice(&row)).unwrap();
                let want = cpu_argmax(&row) as u32;
                for (name, chain) in greedy {
                    chain.params(7).write(&gpu, &sampler.params).unwrap();
                    let got = sampler.draws(&gpu, 2);
                    assert_eq!(got, [want; 2], "{name} [{}], n {n}, {what}", reduction(&gpu));
                    cases += 1;
                }
            }
        }
    }
    println!("greedy sampling: {cases} cases in {:.2?}", started.elapsed());
}

#[test]
fn a_seed_reproduces_its_draws() {
    let mut rng = Rng::new(0x5A3B_0003);
    let row = rng.vec(1000, -2.0, 2.0);
    let chain = Chain { temperature: 1.0, top_k: 0, top_p: 0.95, min_p: 0.0 };
    for (_, gpu) in gpus() {
        let logits = Tensor::from_f32(&gpu, "logits", &[1000], &row).unwrap();
        let first = Sampler::new(&gpu, &logits, chain.params(1234));
        let a = first.draws(&gpu, 64);
        let step = block_on(SamplingParams::read(&gpu, &first.params)).unwrap().step;
        assert_eq!(step, 64, "each draw advances the step");

        // The same seed in a list built afresh, and the first list with its step written back: the same draws.
        let again = Sampler::new(&gpu, &logits, chain.params(1234));
        assert_eq!(again.draws(&gpu, 64), a, "[{}] the same seed, a new list", reduction(&gpu));
        chain.params(1234).write(&gpu, &first.params).unwrap();
        assert_eq!(first.draws(&gpu, 64), a, "[{}] the step written back", reduction(&gpu));
        chain.params(1234).at_step(10).write(&gpu, &first.params).unwrap();
        assert_eq!(first.draws(&gpu, 54), a[10..], "[{}] starting at step 10", reduction(&gpu));

        // Other seeds, including one that differs only in its high word, give other sequences.
        for seed in [1235, 1234 | 1 << 32] {
            chain.params(seed).write(&gpu, &first.params).unwrap();
            let b = first.draws(&gpu, 64);
            let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
            assert!(same < 32, "[{}] seed {seed:#x} repeats {same} of 64 draws of seed 1234", reduction(&gpu));
        }
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 20, "64 draws over ~1000 tokens gave only {} ids", distinct.len());
    }
}

#[test]
fn the_draw_uses_the_documented_random_number() {
    // Two equal logits: the first is drawn exactly when u < 1/2, with u = draw_uniform(seed, step).
    for (_, gpu) in gpus() {
        let logits = Tensor::from_f32(&gpu, "logits", &[2], &[0.25, 0.25]).unwrap();
        let seed = 0xDEAD_BEEF_0042;
        let chain = Chain { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 };
        let sampler = Sampler::new(&gpu, &logits, chain.params(seed).at_step(1000));
        let got = sampler.draws(&gpu, 256);
        let want: Vec<u32> = (1000..1256).map(|step| u32::from(draw_uniform(seed, step) >= 0.5)).collect();
        assert_eq!(got, want, "[{}]", reduction(&gpu));
    }
}

/// The 64 logits of the goodness-of-fit tests: uniform in [-2.5, 2.5] and a few exact ties.
fn fit_logits() -> Vec<f32> {
    let mut row = Rng::new(0x5A3B_0004).vec(64, -2.5, 2.5);
    row[40] = row[3];
    row[63] = row[3];
    row
}

const DRAWS: usize = 4000;

/// Draws `draws` tokens with `chain` and checks them against the CPU: never outside the kept set, and a chi-square
/// p-value above 0.001. The row is row 1 of a `[2, n]` tensor whose row 0 holds larger logits (which must not be read)
/// and the id goes to `out[1]`. Returns (statistic, dof, p).
fn check_fit(gpu: &Gpu, row: &[f32], chain: Chain, seed: u64, draws: usize) -> (f64, usize, f64) {
    let n = row.len();
    let mut data = vec![50.0; n];
    data.extend_from_slice(row);
    let logits = Tensor::from_f32(gpu, "logits", &[2, n], &data).unwrap();
    let params = chain.params(seed).tensor(gpu, "sampling").unwrap();
    let out = Tensor::new(gpu, "token", &[2], DType::U32).unwrap();
    let list = sample(gpu, &logits, n, n, &params, &out, 1).unwrap();
    let ids = replay(gpu, &list, &out, 1, draws);
    let probs = chain_probabilities(row, chain);
    let mut counts = vec![0u32; n];
    for &id in &ids {
        assert!((id as usize) < n, "{chain:?}: id {id} out of range");
        counts[id as usize] += 1;
    }
    for (id, (&c, &p)) in counts.iter().zip(&probs).enumerate() {
        assert!(
            p > 0.0 || c == 0,
            "{chain:?} [{}]: id {id} was drawn {c} times but the chain drops it",
            reduction(gpu)
        );
    }
    let (stat, dof, p) = chi_square(&counts, &probs);
    let kept = probs.iter().filter(|&&p| p > 0.0).count();
    println!("n {n} {chain:?} [{}]: {kept} kept, chi2 {stat:.2} on {dof} dof, p {p:.4}", reduction(gpu));
    assert!(p > 0.001, "{chain:?} [{}]: chi2 {stat:.2} on {dof} dof, p {p:e}", reduction(gpu));
    (stat, dof, p)
}

#[test]
fn draws_fit_the_cpu_distribution() {
    let started = Instant::now();
    let row = fit_logits();
    let chains = [
        Chain { temperature: 1.0, top_k: 10, top_p: 1.0, min_p: 0.0 },
        Chain { temperature: 1.0, top_k: 0, top_p: 0.7, min_p: 0.0 },
        Chain { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 },
        Chain { temperature: 0.7, top_k: 20, top_p: 0.9, min_p: 0.05 },
        Chain { temperature: 1.5, top_k: 0, top_p: 1.0, min_p: 0.2 },
    ];
    for (_, gpu) in gpus() {
        for (k, chain) in chains.into_iter().enumerate() {
            check_fit(&gpu, &row, chain, 0xC0FFEE + k as u64, DRAWS);
        }
    }
    println!("goodness of fit: {} chains x {DRAWS} draws in {:.2?}", chains.len(), started.elapsed());
}

/// The same goodness-of-fit on a real model's next-token distribution (smol135 after a chat prompt, 49152 logits):
/// temperature 1 with top-k and with top-p.
#[test]
fn draws_fit_a_real_models_distribution() {
    let options = webr1::engine::EngineOptions { context_length: Some(128), ..Default::default() };
    let Some(mut engine) = block_on(common::engine("smol135", options)) else { return };
    let prompt = engine.prompt(&[webr1::chat::Message::user("Name a colour.")]).unwrap();
    let session = engine.session();
    session.feed(&prompt.ids).unwrap();
    let row = block_on(session.logits()).unwrap();
    assert_eq!(row.len(), SMOL_VOCAB);
    let gpu = engine.gpu();
    for (k, chain) in [
        Chain { temperature: 1.0, top_k: 40, top_p: 1.0, min_p: 0.0 },
        Chain { temperature: 1.0, top_k: 0, top_p: 0.9, min_p: 0.0 },
    ]
    .into_iter()
    .enumerate()
    {
        check_fit(gpu, &row, chain, 0xBEEF + k as u64, DRAWS);
    }
}

/// With a next step, the pass that picks the token also writes it as the next decode step's token and moves the
/// step on: `[n_past, n_tokens]` becomes `[n_past + n_tokens, 1]`, for argmax and for the sampler chain (greedy and
/// drawn), step after step when the list is replayed.
#[test]
fn the_chosen_token_becomes_the_next_steps_input() {
    let mut rng = Rng::new(0x5A3B_0010);
    for (device, gpu) in gpus() {
        let n = 3000;
        let mut row = rng.vec(n, -2.0, 2.0);
        row[1234] = 9.0;
        let logits = Tensor::from_f32(&gpu, "logits", &[n], &row).unwrap();
        let out = Tensor::new(&gpu, "out", &[2], DType::U32).unwrap();
        let ids = Tensor::from_u32(&gpu, "ids", &[4, 1], &[7, 7, 7, 7]).unwrap();
        let step = Tensor::from_u32(&gpu, "step", &[4], &[10, 3, 0, 0]).unwrap();
        let next = Some(NextStep { ids: &ids, step: &step });
        let greedy = SamplingParams::greedy().tensor(&gpu, "greedy").unwrap();
        let drawn = SamplingParams::new(1.0, 5, 1.0, 0.0, 42, 0).tensor(&gpu, "drawn").unwrap();
        let lists = [
            ("argmax", argmax_next(&gpu, &logits, 0, n, &out, 1, next).unwrap()),
            ("greedy sample", sample_next(&gpu, &logits, 0, n, &greedy, &out, 1, next).unwrap()),
            ("drawn sample", sample_next(&gpu, &logits, 0, n, &drawn, &out, 1, next).unwrap()),
        ];
        let mut n_past = 10;
        let mut n_tokens = 3;
        for (what, list) in &lists {
            for _ in 0..2 {
                let token = run_once(&gpu, list, &out, 1);
                if *what != "drawn sample" {
                    assert_eq!(token, 1234, "{what} ({device})");
                }
                let ids_now = block_on(ids.read_u32(&gpu)).unwrap();
                let step_now = block_on(step.read_u32(&gpu)).unwrap();
                n_past += n_tokens;
                n_tokens = 1;
                assert_eq!(ids_now, [token, 7, 7, 7], "{what} ({device}): the token is the next step's first");
                assert_eq!(step_now, [n_past, 1, 0, 0], "{what} ({device}): the step moves past the tokens");
            }
        }
        let plain = argmax(&gpu, &logits, 0, n, &out, 0).unwrap();
        run_once(&gpu, &plain, &out, 0);
        assert_eq!(block_on(step.read_u32(&gpu)).unwrap()[0], n_past, "without a next step nothing moves ({device})");
        let bad = Some(NextStep { ids: &logits, step: &step });
        assert_eq!(argmax_next(&gpu, &logits, 0, n, &out, 0, bad).unwrap_err().code, ErrorCode::Usage);
    }
}

/// Draws per case of the tie tests: 2 to 4 tokens survive, so expected counts stay above 100.
const DRAWS_TIES: usize = 1000;

#[test]
fn ties_at_a_cut_keep_the_lowest_ids() {
    let mut rng = Rng::new(0x5A3B_0005);
    // Top-k: one best logit, then five equal ones at 2.0: top-k 3 keeps the best and the two lowest-id ties.
    let mut row = rng.vec(64, -3.0, 1.5);
    row[30] = 3.0;
    for i in [7, 12, 33, 50, 63] {
        row[i] = 2.0;
    }
    // Top-p: four equal best logits (each ~0.23 of the mass): top-p 0.3 keeps the two lowest ids; within top-k 3
    // (a third each) top-p 0.7 keeps all three.
    let mut flat = rng.vec(64, -6.0, -2.0);
    for i in [9, 21, 22, 60] {
        flat[i] = 2.0;
    }
    // Ties spread over three 4096-logit chunks: the ranks of ties count across chunks.
    let mut wide = rng.vec(10_000, -8.0, -4.0);
    wide[2000] = 6.0;
    for i in [100, 4500, 8300, 9999] {
        wide[i] = 5.0;
    }
    let cases = [
        (row.clone(), Chain { temperature: 1.0, top_k: 3, top_p: 1.0, min_p: 0.0 }, vec![7, 12, 30]),
        (row, Chain { temperature: 1.0, top_k: 3, top_p: 0.99, min_p: 0.0 }, vec![7, 12, 30]),
        (flat.clone(), Chain { temperature: 1.0, top_k: 0, top_p: 0.3, min_p: 0.0 }, vec![9, 21]),
        (flat.clone(), Chain { temperature: 1.0, top_k: 3, top_p: 0.7, min_p: 0.0 }, vec![9, 21, 22]),
        (flat, Chain { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.5 }, vec![9, 21, 22, 60]),
        (wide.clone(), Chain { temperature: 1.0, top_k: 3, top_p: 1.0, min_p: 0.0 }, vec![100, 2000, 4500]),
        (wide.clone(), Chain { temperature: 0.8, top_k: 0, top_p: 0.6, min_p: 0.0 }, vec![100, 2000, 4500]),
        (wide, Chain { temperature: 1.0, top_k: 4, top_p: 1.0, min_p: 0.3 }, vec![100, 2000, 4500, 8300]),
    ];
    for (_, gpu) in gpus() {
        for (k, (logits, chain, kept)) in cases.iter().enumerate() {
            let probs = chain_probabilities(logits, *chain);
            let cpu_kept: Vec<usize> = (0..logits.len()).filter(|&i| probs[i] > 0.0).collect();
            assert_eq!(&cpu_kept, kept, "the CPU reference disagrees with the case");
            check_fit(&gpu, logits, *chain, 0xBEEF + k as u64, DRAWS_TIES);
        }
    }
}

/// Draws per setting on a full vocabulary (each is ~10 passes over 151936 logits: slow on a software GPU).
const DRAWS_LARGE: usize = 100;

#[test]
fn filters_hold_on_a_full_vocabulary() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5A3B_0006);
    // A long tail and a head of 60 logits in [4, 9] (one at the last index): the filters cut inside the head.
    let mut row = rng.vec(QWEN_VOCAB, -12.0, 0.0);
    for i in 0..60 {
        let at = if i == 0 { QWEN_VOCAB - 1 } else { rng.below(QWEN_VOCAB) };
        row[at] = 4.0 + rng.uniform(0.0, 5.0);
    }
    let chains = [
        Chain { temperature: 1.0, top_k: 40, top_p: 1.0, min_p: 0.0 },
        Chain { temperature: 0.6, top_k: 0, top_p: 0.9, min_p: 0.0 },
        Chain { temperature: 1.3, top_k: 30, top_p: 0.8, min_p: 0.0 },
        Chain { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.05 },
    ];
    for (_, gpu) in gpus() {
        let logits = Tensor::from_f32(&gpu, "logits", &[QWEN_VOCAB], &row).unwrap();
        let sampler = Sampler::new(&gpu, &logits, SamplingParams::greedy());
        for chain in chains {
            chain.params(99).write(&gpu, &sampler.params).unwrap();
            let probs = chain_probabilities(&row, chain);
            let kept = probs.iter().filter(|&&p| p > 0.0).count();
            let ids = sampler.draws(&gpu, DRAWS_LARGE);
            for &id in &ids {
                assert!(
                    probs[id as usize] > 0.0,
                    "{chain:?} [{}]: drew {id}, outside the {kept} kept",
                    reduction(&gpu)
                );
            }
            let distinct: std::collections::HashSet<_> = ids.iter().collect();
            println!("{chain:?} [{}]: {kept} kept, {DRAWS_LARGE} draws hit {} ids", reduction(&gpu), distinct.len());
            assert!(distinct.len() > 3, "{chain:?}: {DRAWS_LARGE} draws hit only {} ids", distinct.len());
        }
    }
    println!("full-vocabulary filters: {:.2?}", started.elapsed());
}

#[test]
fn bad_arguments_are_usage_errors() {
    let Some(gpu) = gpu() else { return };
    let logits = Tensor::new(&gpu, "logits", &[2, 100], DType::F32).unwrap();
    let out = Tensor::new(&gpu, "out", &[2], DType::U32).unwrap();
    let params = SamplingParams::greedy().tensor(&gpu, "p").unwrap();
    let usage = |r: webr1::Result<Vec<Dispatch>>, why: &str| {
        let e = r.err().unwrap_or_else(|| panic!("accepted: {why}"));
        assert_eq!(e.code, ErrorCode::Usage, "{why}: {e}");
    };
    usage(argmax(&gpu, &logits, 101, 100, &out, 0), "a row past the end");
    usage(argmax(&gpu, &logits, 0, 0, &out, 0), "an empty row");
    usage(argmax(&gpu, &logits, 0, 100, &out, 2), "out_index past out");
    usage(argmax(&gpu, &logits, 0, 100, &Tensor::new(&gpu, "f", &[2], DType::F32).unwrap(), 0), "an f32 out");
    usage(argmax(&gpu, &out, 0, 1, &logits, 0), "u32 logits");
    let u32s = Tensor::new(&gpu, "u", &[8], DType::U32).unwrap();
    usage(sample(&gpu, &logits, 0, 100, &Tensor::new(&gpu, "short", &[7], DType::U32).unwrap(), &out, 0), "7 words");
    usage(sample(&gpu, &logits, 0, 100, &out, &out, 0), "params sharing out's buffer");
    assert!(sample(&gpu, &logits, 100, 100, &u32s, &out, 1).is_ok(), "row 1 of 2");
    assert!(sample(&gpu, &logits, 0, 200, &params, &out, 0).is_ok(), "both rows as one");
    let e = SamplingParams::greedy().write(&gpu, &out).unwrap_err();
    assert_eq!(e.code, ErrorCode::Usage, "writing settings into a 2-word tensor");
}

#[test]
fn replays_allocate_nothing_and_how_long_a_full_vocabulary_takes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(0x5A3B_0007);
    let row = rng.vec(QWEN_VOCAB, -10.0, 10.0);
    let logits = Tensor::from_f32(&gpu, "logits", &[QWEN_VOCAB], &row).unwrap();
    let out = Tensor::new(&gpu, "out", &[1], DType::U32).unwrap();
    let greedy = argmax(&gpu, &logits, 0, QWEN_VOCAB, &out, 0).unwrap();
    let chain = Chain { temperature: 0.6, top_k: 40, top_p: 0.95, min_p: 0.05 };
    let sampler = Sampler::new(&gpu, &logits, chain.params(5));
    // Warm up (pipelines compile on first use), then time replays.
    replay(&gpu, &greedy, &out, 0, 2);
    sampler.draws(&gpu, 2);
    let buffers = gpu.buffers_created();
    let reps = 20;
    for (what, list) in [("argmax", &greedy), ("sample (top-k 40, top-p 0.95, min-p 0.05)", &sampler.list)] {
        let started = Instant::now();
        for _ in 0..reps {
            gpu.submit(list.iter());
        }
        gpu.wait_idle().unwrap();
        let per_call = started.elapsed() / reps;
        println!(
            "{what} over {QWEN_VOCAB} logits [{}]: {per_call:.2?} per call ({} dispatches)",
            reduction(&gpu),
            list.len()
        );
    }
    assert_eq!(gpu.buffers_created(), buffers, "replaying created buffers");
    assert_eq!(run_once(&gpu, &greedy, &out, 0) as usize, cpu_argmax(&row));
}
