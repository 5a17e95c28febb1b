//! The GPU foundation on a real device (Mesa lavapipe in CI): device creation, tensors and split weights, the pipeline
//! cache, device errors as values, and every kernel against its CPU reference on seeded random data.
//!
//! Kernels run on two devices: one forced onto the f32 path (shared-memory reductions, f32 only) and the default one
//! (subgroup reductions and f16 tensors when the adapter has them, which lavapipe does). Shapes are awkward on purpose:
//! rows ∈ {1, 3, 17, 65}, n ∈ {1, 7, 64, 1000, 4097}.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::time::Instant;

use gpu_common::{assert_close, gpu, gpu_with, gpus, round_f16, to_f16, Rng};
use pollster::block_on;
use webr1::gpu::ops::{add, mul, nll, rms_norm, scale, silu_mul};
use webr1::gpu::{split_rows, Bind, DType, Dispatch, Gpu, GpuOptions, Launch, Macros, Readback, SplitWeight, Tensor};
use webr1::quant::GgmlType;
use webr1::ErrorCode;

const ROWS: [usize; 4] = [1, 3, 17, 65];
/// Row lengths: small and odd ones, and the test models' widths (576 smol135, 896 qwen05, 1536 qwen15 and R1-1.5B).
const COLS: [usize; 8] = [1, 7, 64, 576, 896, 1000, 1536, 4097];

/// The activation dtypes this device computes on: f32 always, f16 with shader-f16.
fn dtypes(gpu: &Gpu) -> Vec<DType> {
    match gpu.features().shader_f16 {
        true => vec![DType::F32, DType::F16],
        false => vec![DType::F32],
    }
}

/// An activation tensor holding `data` as `dtype`, and the values the GPU will see (rounded for f16).
fn activation(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType, data: &[f32]) -> (Tensor, Vec<f32>) {
    match dtype {
        DType::F32 => (Tensor::from_f32(gpu, label, shape, data).unwrap(), data.to_vec()),
        DType::F16 => (Tensor::from_f16(gpu, label, shape, &to_f16(data)).unwrap(), round_f16(data)),
        other => panic!("no activations of {other:?}"),
    }
}

/// (atol, rtol) per activation dtype: f32 math throughout, plus the rounding of an f16 result (2^-11 relative).
fn tolerance(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F16 => (1e-3, 1e-3),
        _ => (1e-5, 2e-5),
    }
}

fn run(gpu: &Gpu, dispatch: &Dispatch, out: &Tensor) -> Vec<f32> {
    gpu.submit([dispatch]);
    block_on(out.read_f32(gpu)).unwrap_or_else(|e| panic!("{}: {e}", dispatch.label()))
}

fn variant(name: &str, gpu: &Gpu, dtype: DType) -> String {
    let reduction = if gpu.features().subgroups { "subgroups" } else { "shared memory" };
    format!(
        "{name} [{} {}, {reduction}]",
        dtype.name(),
        if gpu.features().shader_f16 { "f16-capable" } else { "f32-only" }
    )
}

// ---------------------------------------------------------------------------------------------------------------
// The device

#[test]
fn device_uses_the_adapters_limits_and_reports_its_features() {
    let Some(gpu) = gpu() else { return };
    println!("{}", gpu.summary());
    let limits = gpu.limits();
    assert!(limits.max_storage_buffer_binding_size >= 128 << 20, "{limits:?}");
    assert_eq!(gpu.max_binding_bytes(), limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) & !3);
    assert_eq!(gpu.features(), gpu.adapter_features(), "nothing forced off by default");

    let Some(f32_gpu) = gpu_with(GpuOptions { force_f32: true, max_binding_bytes: Some(1001), ..Default::default() })
    else {
        return;
    };
    let f = f32_gpu.features();
    assert!(!f.shader_f16 && !f.subgroups, "force_f32 leaves f16/subgroups off: {f}");
    assert_eq!(f.timestamp_query, f32_gpu.adapter_features().timestamp_query);
    assert_eq!(f32_gpu.max_binding_bytes(), 1000, "the cap, rounded down to a multiple of 4");
    assert_eq!(f32_gpu.limits(), limits, "the cap is webr1's own, not a lower device limit");
    let tiny = block_on(Gpu::new(GpuOptions { max_binding_bytes: Some(2), ..Default::default() }));
    assert_eq!(tiny.unwrap_err().code, ErrorCode::Usage, "a cap below one word");
}

#[test]
fn f16_tensors_on_a_device_without_shader_f16_are_a_usage_error() {
    let Some(gpu) = gpu_common::gpu_f32() else { return };
    let x = Tensor::from_f16(&gpu, "x", &[2, 4], &to_f16(&[1.0; 8])).unwrap();
    let w = Tensor::from_f32(&gpu, "w", &[4], &[1.0; 4]).unwrap();
    let y = Tensor::new(&gpu, "y", &[2, 4], DType::F16).unwrap();
    let e = rms_norm(&gpu, &x, &w, &y, 1e-6).unwrap_err();
    assert_eq!(e.code, ErrorCode::Usage, "{e}");
    assert!(e.message.contains("shader-f16"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels against the CPU

fn cpu_rms_norm(x: &[f32], w: &[f32], n: usize, eps: f32) -> Vec<f32> {
    x.chunks(n)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
            let scale = 1.0 / (mean + f64::from(eps)).sqrt();
            row.iter().zip(w).map(move |(&v, &w)| (f64::from(v) * scale * f64::from(w)) as f32)
        })
        .collect()
}

#[test]
fn rms_norm_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0001);
    let mut cases = 0;
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            let (atol, rtol) = tolerance(dtype);
            for rows in ROWS {
                for n in COLS {
                    // Rows of very different magnitudes: the norm must not care.
                    let mut x = rng.vec(rows * n, -4.0, 4.0);
                    for (r, row) in x.chunks_mut(n).enumerate() {
                        row.iter_mut().for_each(|v| *v *= [1.0, 30.0, 0.01][r % 3]);
                    }
                    let w = rng.vec(n, -2.0, 2.0);
                    let (xt, x_seen) = activation(&gpu, "x", &[rows, n], dtype, &x);
                    let wt = Tensor::from_f32(&gpu, "w", &[n], &w).unwrap();
                    let yt = Tensor::new(&gpu, "y", &[rows, n], dtype).unwrap();
                    let got = run(&gpu, &rms_norm(&gpu, &xt, &wt, &yt, 1e-6).unwrap(), &yt);
                    let what = format!("{} rows {rows} n {n}", variant("rms_norm", &gpu, dtype));
                    assert_close(&what, &got, &cpu_rms_norm(&x_seen, &w, n, 1e-6), atol, rtol);
                    cases += 1;
                }
            }
        }
    }
    println!("rms_norm: {cases} cases in {:.2?}", started.elapsed());
}

/// One element-wise case: the op, how `b` relates to `a`, and whether the result overwrites `a`.
#[derive(Clone, Copy, Debug)]
enum Op {
    Add,
    AddBias,
    Mul,
    MulBias,
    SiluMul,
    Scale,
}

fn cpu_elementwise(op: Op, a: &[f32], b: &[f32], s: f32) -> Vec<f32> {
    let b_at = |i: usize| f64::from(b[i % b.len()]);
    a.iter()
        .enumerate()
        .map(|(i, &a)| {
            let a = f64::from(a);
            let v = match op {
                Op::Add | Op::AddBias => a + b_at(i),
                Op::Mul | Op::MulBias => a * b_at(i),
                Op::SiluMul => a / (1.0 + (-a).exp()) * b_at(i),
                Op::Scale => a * f64::from(s),
            };
            v as f32
        })
        .collect()
}

fn dispatch_elementwise(gpu: &Gpu, op: Op, a: &Tensor, b: &Tensor, s: f32, out: &Tensor) -> Dispatch {
    let result = match op {
        Op::Add | Op::AddBias => add(gpu, a, b, out),
        Op::Mul | Op::MulBias => mul(gpu, a, b, out),
        Op::SiluMul => silu_mul(gpu, a, b, out),
        Op::Scale => scale(gpu, a, s, out),
    };
    result.unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

#[test]
fn elementwise_ops_match_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0002);
    let mut cases = 0;
    let ops = [Op::Add, Op::AddBias, Op::Mul, Op::MulBias, Op::SiluMul, Op::Scale];
    for (_, gpu) in gpus() {
        for dtype in dtypes(&gpu) {
            let (atol, rtol) = tolerance(dtype);
            for rows in ROWS {
                for n in COLS {
                    for (k, op) in ops.into_iter().enumerate() {
                        let in_place = (rows + n + k) % 2 == 0;
                        let b_len = if matches!(op, Op::AddBias | Op::MulBias) { n } else { rows * n };
                        // Gates reach far enough to saturate silu on both sides.
                        let (a, a_seen) = activation(&gpu, "a", &[rows, n], dtype, &rng.vec(rows * n, -12.0, 12.0));
                        let (b, b_seen) = activation(&gpu, "b", &[b_len], dtype, &rng.vec(b_len, -3.0, 3.0));
                        let out = match in_place {
                            true => a.clone(),
                            false => Tensor::new(&gpu, "out", &[rows, n], dtype).unwrap(),
                        };
                        let s = -0.37;
                        let got = run(&gpu, &dispatch_elementwise(&gpu, op, &a, &b, s, &out), &out);
                        let what = format!(
                            "{} rows {rows} n {n}{}",
                            variant(&format!("{op:?}"), &gpu, dtype),
                            if in_place { " in place" } else { "" }
                        );
                        assert_close(&what, &got, &cpu_elementwise(op, &a_seen, &b_seen, s), atol, rtol);
                        cases += 1;
                    }
                }
            }
        }
    }
    println!("elementwise: {cases} cases in {:.2?}", started.elapsed());
}

/// `log(Σ exp(row)) − row[target]` in f64, or −1 for a target outside the row.
fn cpu_nll(logits: &[f32], n_vocab: usize, targets: &[u32]) -> Vec<f32> {
    logits
        .chunks(n_vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let lse = max + row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
            row.get(t as usize).map_or(-1.0, |&v| (lse - f64::from(v)) as f32)
        })
        .collect()
}

#[test]
fn nll_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0003);
    let mut cases = 0;
    for (_, gpu) in gpus() {
        for rows in ROWS {
            for n_vocab in [1, 7, 1000, 4097, 49_152, 151_936] {
                // Logits as large as a real LM head's (exp would overflow without the max), one row nearly certain.
                let mut logits = rng.vec(rows * n_vocab, -30.0, 30.0);
                let mut targets: Vec<u32> = (0..rows).map(|_| rng.below(n_vocab) as u32).collect();
                if rows > 1 {
                    logits[n_vocab + targets[1] as usize] = 200.0;
                    targets[rows - 1] = n_vocab as u32; // outside the vocabulary: -1
                }
                let lt = Tensor::from_f32(&gpu, "logits", &[rows, n_vocab], &logits).unwrap();
                let tt = Tensor::from_u32(&gpu, "targets", &[rows], &targets).unwrap();
                let out = Tensor::new(&gpu, "nll", &[rows], DType::F32).unwrap();
                let got = run(&gpu, &nll(&gpu, &lt, &tt, &out).unwrap(), &out);
                let what = format!("nll rows {rows} n_vocab {n_vocab}");
                assert_close(&what, &got, &cpu_nll(&logits, n_vocab, &targets), 1e-4, 1e-5);
                cases += 1;
            }
        }
    }
    println!("nll: {cases} cases in {:.2?}", started.elapsed());
}

#[test]
fn grids_beyond_the_per_dimension_limit_are_folded() {
    let Some(gpu) = gpu() else { return };
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if max > 1 << 20 {
        eprintln!("SKIP: this device launches {max} workgroups per dimension; nothing to fold at a testable size");
        return;
    }
    let started = Instant::now();
    // Elementwise: (max + 2) workgroups of 256 elements and a ragged end.
    let len = (max + 2) * 256 - 100;
    let a: Vec<f32> = (0..len).map(|i| (i % 1000) as f32).collect();
    let at = Tensor::from_f32(&gpu, "a", &[len], &a).unwrap();
    let out = Tensor::new(&gpu, "out", &[len], DType::F32).unwrap();
    let d = scale(&gpu, &at, 0.5, &out).unwrap();
    assert!(d.workgroups()[1] > 1, "{:?}", d.workgroups());
    let want: Vec<f32> = a.iter().map(|v| v * 0.5).collect();
    assert_close("scale over a folded grid", &run(&gpu, &d, &out), &want, 0.0, 0.0);

    // RMSNorm: one workgroup per row, max + 2 rows of 2.
    let rows = max + 2;
    let x: Vec<f32> = (0..rows * 2).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let xt = Tensor::from_f32(&gpu, "x", &[rows, 2], &x).unwrap();
    let w = Tensor::from_f32(&gpu, "w", &[2], &[1.0, -1.0]).unwrap();
    let y = Tensor::new(&gpu, "y", &[rows, 2], DType::F32).unwrap();
    let d = rms_norm(&gpu, &xt, &w, &y, 1e-6).unwrap();
    assert!(d.workgroups()[1] > 1, "{:?}", d.workgroups());
    assert_close(
        "rms_norm over a folded grid",
        &run(&gpu, &d, &y),
        &cpu_rms_norm(&x, &[1.0, -1.0], 2, 1e-6),
        1e-5,
        2e-5,
    );
    println!("folded grids: {:.2?}", started.elapsed());
}

#[test]
fn kernels_reject_bad_arguments() {
    let Some(gpu) = gpu() else { return };
    let t = |shape: &[usize]| Tensor::new(&gpu, "t", shape, DType::F32).unwrap();
    let (x, w, y) = (t(&[3, 8]), t(&[8]), t(&[3, 8]));
    let usage = |r: webr1::Result<Dispatch>, why: &str| {
        let e = r.err().unwrap_or_else(|| panic!("accepted: {why}"));
        assert_eq!(e.code, ErrorCode::Usage, "{why}: {e}");
    };
    usage(rms_norm(&gpu, &x, &w, &x, 1e-6), "rms_norm in place");
    usage(rms_norm(&gpu, &x, &t(&[7]), &y, 1e-6), "a weight of the wrong length");
    usage(rms_norm(&gpu, &x, &w, &t(&[8, 3]), 1e-6), "y of another shape");
    usage(rms_norm(&gpu, &x, &w, &y, f32::NAN), "a NaN eps");
    usage(
        rms_norm(&gpu, &Tensor::new(&gpu, "q", &[3, 32], DType::Ggml(GgmlType::Q8_0)).unwrap(), &w, &y, 1e-6),
        "a Q8_0 x",
    );
    usage(add(&gpu, &x, &y, &y), "out aliasing the second operand");
    usage(add(&gpu, &x, &x, &x), "b aliasing a written in place");
    usage(add(&gpu, &x, &t(&[5]), &y), "a bias whose length does not divide");
    usage(silu_mul(&gpu, &x, &w, &y), "silu_mul with a broadcast up");
    usage(mul(&gpu, &x, &w, &t(&[4])), "out of another length");
    usage(scale(&gpu, &x, f32::INFINITY, &y), "an infinite factor");
    assert!(add(&gpu, &x, &x, &y).is_ok(), "the same tensor may be read twice");
}

// ---------------------------------------------------------------------------------------------------------------
// Dispatch replay, the pipeline cache, device errors

#[test]
fn dispatches_replay_without_allocating_and_pipelines_compile_once() {
    let Some(gpu) = gpu() else { return };
    let n = 1000;
    let x0: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
    let h: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.01).collect();
    let x = Tensor::from_f32(&gpu, "x", &[n], &x0).unwrap();
    let ht = Tensor::from_f32(&gpu, "h", &[n], &h).unwrap();
    let residual = add(&gpu, &x, &ht, &x).unwrap();
    let pipelines = gpu.pipelines().len();
    let again = add(&gpu, &ht, &x, &Tensor::new(&gpu, "o", &[n], DType::F32).unwrap()).unwrap();
    assert_eq!(gpu.pipelines().len(), pipelines + 1, "in-place and out-of-place add are two variants");
    let _ = add(&gpu, &ht, &ht, &Tensor::new(&gpu, "o2", &[n], DType::F32).unwrap()).unwrap();
    assert_eq!(gpu.pipelines().len(), pipelines + 1, "the same variant is not compiled again");
    drop(again);

    let mut readback = Readback::new(&gpu, (n * 4) as u64).unwrap();
    let buffers = gpu.buffers_created();
    for _ in 0..3 {
        gpu.submit([&residual]);
    }
    let got: Vec<f32> =
        bytemuck::pod_collect_to_vec(&block_on(readback.read(&gpu, x.buffer(), 0, (n * 4) as u64)).unwrap());
    assert_eq!(gpu.buffers_created(), buffers, "replaying a dispatch created buffers");
    let want: Vec<f32> = x0.iter().zip(&h).map(|(x, h)| x + 3.0 * h).collect();
    assert_close("x += h, three times", &got, &want, 1e-4, 1e-6);
    // The same readback again, through a partial range.
    let first: Vec<f32> = bytemuck::pod_collect_to_vec(&block_on(readback.read(&gpu, x.buffer(), 8, 8)).unwrap());
    assert_eq!(first, want[2..4]);
}

#[test]
fn device_errors_come_back_as_values() {
    let Some(gpu) = gpu() else { return };
    // A bind group that misses a binding the pipeline needs: the device rejects it, nothing panics.
    let x = Tensor::from_f32(&gpu, "x", &[4], &[1.0; 4]).unwrap();
    let broken = Dispatch::new(
        &gpu,
        Launch {
            shader: "elementwise",
            entry: "scale",
            macros: Macros::new().u32("WORKGROUP_SIZE", 64),
            params: &[0; 16],
            bindings: vec![Some(Bind::Tensor(&x))],
            workgroups: [1, 1, 1],
        },
    )
    .unwrap();
    gpu.submit([&broken]);
    let e = block_on(x.read_f32(&gpu)).unwrap_err();
    assert_eq!(e.code, ErrorCode::GpuValidation, "{e}");
    gpu.check().expect("reading an error clears it");

    // A shader that does not compile (its macros leave WORKGROUP_SIZE undefined).
    let _ = gpu.pipelines().get(gpu.device(), "rms_norm", "rms_norm", &Macros::new()).unwrap();
    let e = gpu.check().unwrap_err();
    assert_eq!(e.code, ErrorCode::GpuValidation, "{e}");
    println!("an uncompilable shader reports: {}", e.message);

    // A preprocessing mistake is caught before the device sees it.
    let e = gpu.pipelines().get(gpu.device(), "no_such_shader", "main", &Macros::new()).unwrap_err();
    assert_eq!(e.code, ErrorCode::GpuShader, "{e}");

    // Allocation scopes: a buffer over max_buffer_size is reported by the scope, an ordinary one is fine.
    let scope = gpu.alloc_scope();
    let _ = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("too big"),
        size: gpu.limits().max_buffer_size.saturating_add(4),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let e = block_on(scope.finish("a deliberately oversized buffer")).unwrap_err();
    assert!(matches!(e.code, ErrorCode::GpuValidation | ErrorCode::GpuOutOfMemory), "{e}");
    let scope = gpu.alloc_scope();
    let _ok = Tensor::new(&gpu, "fine", &[1024], DType::F32).unwrap();
    block_on(scope.finish("a small tensor")).unwrap();
    gpu.check().unwrap();

    // webr1's own limit checks name the numbers.
    let e = gpu.create_buffer("huge", gpu.limits().max_buffer_size + 1, wgpu::BufferUsages::STORAGE).unwrap_err();
    assert_eq!(e.code, ErrorCode::GpuLimits, "{e}");
}

// ---------------------------------------------------------------------------------------------------------------
// Tensors and split weights

#[test]
fn tensors_round_trip_through_uploads_in_pieces() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(0x5EED_0003);
    // Odd byte counts (an f16 tensor of 7 elements is 14 bytes) and pieces of every size.
    let h: Vec<f32> = rng.vec(7, -1.0, 1.0);
    let t = Tensor::from_f16(&gpu, "h", &[7], &to_f16(&h)).unwrap();
    assert_eq!(block_on(t.read_f32(&gpu)).unwrap(), round_f16(&h));

    let data = rng.bytes(3 * 18 * 5); // 3 rows of 5 Q4_0 blocks: 270 bytes
    let q = Tensor::new(&gpu, "q", &[3, 160], DType::Ggml(GgmlType::Q4_0)).unwrap();
    assert_eq!(q.byte_size(), 270);
    let mut writer = q.writer();
    let mut at = 0;
    while at < data.len() {
        let piece = (1 + rng.below(9)).min(data.len() - at);
        writer.write(&gpu, &data[at..at + piece]).unwrap();
        at += piece;
    }
    writer.finish(&gpu).unwrap();
    assert_eq!(block_on(q.read_bytes(&gpu)).unwrap(), data);

    // More than one write chunk (8 MiB) and more than one flush (64 MiB), written at once.
    let started = Instant::now();
    let words: Vec<u32> = (0..(66usize << 20) / 4).map(|i| (i as u32).wrapping_mul(2_654_435_761)).collect();
    let big = Tensor::from_u32(&gpu, "big", &[words.len()], &words).unwrap();
    let back = block_on(big.read_u32(&gpu)).unwrap();
    assert!(
        back == words,
        "66 MiB round trip differs first at {:?}",
        back.iter().zip(&words).position(|(a, b)| a != b)
    );
    println!("66 MiB upload + readback: {:.2?}", started.elapsed());

    // Too many or too few bytes are errors.
    let mut writer = q.writer();
    assert_eq!(writer.write(&gpu, &[0; 271]).unwrap_err().code, ErrorCode::Usage);
    let mut writer = q.writer();
    writer.write(&gpu, &[0; 100]).unwrap();
    assert_eq!(writer.finish(&gpu).unwrap_err().code, ErrorCode::Usage);
}

#[test]
fn weights_larger_than_the_binding_cap_are_split_by_rows() {
    let Some(gpu) = gpu_with(GpuOptions { max_binding_bytes: Some(100), ..Default::default() }) else { return };
    let mut rng = Rng::new(0x5EED_0004);
    let q4_0 = DType::Ggml(GgmlType::Q4_0);

    // 13 rows of one Q4_0 block (18 bytes, not a whole number of 4-byte words): 5 rows per part at most.
    let data = rng.bytes(13 * 18);
    assert_eq!(split_rows("w", 13, 18, 100).unwrap(), [(0, 5), (5, 4), (9, 4)]);
    let w = SplitWeight::new(&gpu, "w", 13, 32, q4_0).unwrap();
    assert_eq!(w.parts().len(), 3);
    let mut writer = w.writer();
    for piece in data.chunks(7) {
        writer.write(&gpu, piece).unwrap();
    }
    writer.finish(&gpu).unwrap();
    for part in w.parts() {
        assert!(part.tensor.byte_size() <= gpu.max_binding_bytes());
        assert_eq!(part.tensor.shape(), [part.n_rows, 32]);
        let bytes = block_on(part.tensor.read_bytes(&gpu)).unwrap();
        assert_eq!(
            bytes,
            data[part.first_row * 18..(part.first_row + part.n_rows) * 18],
            "part at row {}",
            part.first_row
        );
    }
    assert_eq!(block_on(w.read_bytes(&gpu)).unwrap(), data);
    let (part, local) = w.part_of_row(9).unwrap();
    assert_eq!((part.first_row, local), (9, 0));
    assert!(w.part_of_row(13).is_none());

    // A kernel consumes the parts one at a time: RMSNorm of an f32 matrix of 11 rows of 7 (28 bytes: 3 rows a part).
    let x = rng.vec(11 * 7, -2.0, 2.0);
    let norm = SplitWeight::from_bytes(&gpu, "m", 11, 7, DType::F32, bytemuck::cast_slice(&x)).unwrap();
    assert_eq!(norm.parts().len(), 4);
    let g = rng.vec(7, 0.5, 1.5);
    let gt = Tensor::from_f32(&gpu, "g", &[7], &g).unwrap();
    let mut got = Vec::new();
    for part in norm.parts() {
        let y = Tensor::new(&gpu, "y", &[part.n_rows, 7], DType::F32).unwrap();
        got.extend(run(&gpu, &rms_norm(&gpu, &part.tensor, &gt, &y, 1e-5).unwrap(), &y));
    }
    assert_close("rms_norm over split parts", &got, &cpu_rms_norm(&x, &g, 7, 1e-5), 1e-5, 2e-5);

    // What cannot be split says so, with the numbers.
    let e = Tensor::new(&gpu, "too big", &[26], DType::F32).unwrap_err();
    assert_eq!(e.code, ErrorCode::GpuLimits, "{e}");
    let e = SplitWeight::new(&gpu, "wide", 2, 32 * 6, q4_0).unwrap_err();
    assert_eq!(e.code, ErrorCode::GpuLimits);
    assert!(e.message.contains("108") && e.message.contains("100"), "{e}");
}
