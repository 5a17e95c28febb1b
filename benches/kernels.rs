//! Throughput of the quantised matrix kernels on the adapter wgpu picks (`WGPU_BACKEND` honoured): the tiled GEMM
//! (prefill) and the matrix × vector kernel (decode), at the shapes of Qwen2.5-0.5B's and R1-Distill-Qwen-1.5B's
//! projections, for the weight types their GGUFs use. Prints GFLOP/s (2 · rows · k · tokens per second) and the weight
//! bytes read per second. Then attention at R1-Distill-Qwen-1.5B's and -7B's heads with the KV cache in f16 (f32 with
//! `--f32`): decode (`dec`) and a prefill of 256 tokens (`pre`), `n` being the context the last token sees; GFLOP/s
//! and the cache bytes read per second.
//!
//! `cargo bench --bench kernels [-- FILTER...] [--f32] [--tokens N] [--tiled] [--tile RxN/TMxTN/S] [--f16-tiles B]
//! [--single]`: `--f32` forces the f32 path, `--tokens N` sets the tiled kernel's token count (64 by default: 512 is a
//! prefill chunk on a GPU), `--tiled` skips the vector kernel; `--tile 128x64/8x4/1` forces the tiled kernel's shape
//! (tile rows × tokens / rows × tokens per invocation / k slices), `--f16-tiles true|false` its f16 tiles, `--single`
//! a single-buffered k loop (otherwise the kernel's choice for the device). A FILTER keeps the rows whose label
//! (shape and type, e.g. `1.5B` or `Q4_K`) contains it.
//! The weights are one small f16 repeated (speed does not depend on the values): every row of W is the same, so every
//! output of a product is known; each is checked after timing, and a kernel that stopped early (llvmpipe ends an
//! invocation's loops after 65535 iterations, silently) panics instead of printing a speed.

use std::time::{Duration, Instant};

use pollster::block_on;
use webr1::gpu::ops::{
    attention, matmul_tiled_with, matmul_vec, tiled_kernel, AttentionIo, AttentionShape, Epilogue, TileShape,
    TiledKernel,
};
use webr1::gpu::{DType, Dispatch, Gpu, GpuOptions, SplitWeight, Tensor};
use webr1::quant::GgmlType;

/// (label, rows, k): the projections of the two models (q and o are square; k and v alike; gate and up alike).
const SHAPES: [(&str, usize, usize); 8] = [
    ("0.5B q/o 896x896", 896, 896),
    ("0.5B k/v 128x896", 128, 896),
    ("0.5B up 4864x896", 4864, 896),
    ("0.5B down 896x4864", 896, 4864),
    ("1.5B q/o 1536x1536", 1536, 1536),
    ("1.5B k/v 256x1536", 256, 1536),
    ("1.5B up 8960x1536", 8960, 1536),
    ("1.5B down 1536x8960", 1536, 8960),
];
/// The types of the Q4_K_M files (Q4_K, Q6_K) and of qwen05's mixed file (Q8_0, Q5_0), and F16.
const TYPES: [GgmlType; 5] = [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::F16];

/// Weight bytes that dequantise to finite values, every row the same: every 16-bit word a small positive f16 (0x2000 ≈
/// 0.0078), or for F32 a pattern that repeats in every row.
fn weight_bytes(ty: GgmlType, rows: usize, k: usize) -> Vec<u8> {
    let len = ty.row_bytes(k as u64).expect("whole blocks") as usize * rows;
    match ty {
        GgmlType::F32 => (0..len / 4).flat_map(|i| (((i % k % 13) as f32 - 6.0) * 0.01).to_le_bytes()).collect(),
        _ => (0..len / 2).flat_map(|_| 0x2000u16.to_le_bytes()).collect(),
    }
}

/// Every element of x. With every row of W alike, every output is `X_VALUE · Σ_k W[0, k]`.
const X_VALUE: f32 = 0.01;

/// `Σ_k W[0, k]`, dequantised on the CPU (`webr1::quant`).
fn row_sum(ty: GgmlType, bytes: &[u8], rows: usize, k: usize) -> f32 {
    let row = &bytes[..bytes.len() / rows];
    webr1::quant::dequantize_to_vec(ty, row, k).expect("dequantise a row").iter().sum()
}

/// Whether the kernel computed what it was timed for: every output equal to `want` (a kernel that stops its loops
/// early, as llvmpipe does after 65535 iterations, looks fast and is wrong). Panics with the first wrong output.
fn check_outputs(name: &str, kernel: &str, y: &Tensor, want: f32, gpu: &Gpu) {
    let got = block_on(y.read_f32(gpu)).expect("read y");
    let bound = 1e-3 * want.abs().max(1e-3);
    if let Some((i, v)) = got.iter().enumerate().find(|(_, v)| (**v - want).abs() > bound) {
        panic!(
            "{name} {kernel}: output {i} of {} is {v}, not {want}: the kernel did not compute the product",
            got.len()
        );
    }
}

/// CPU time this process has used so far (user + system), natively on Linux: on a software GPU (lavapipe) the work a
/// kernel costs, whatever else the machine is doing. `None` elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// Median seconds of one submission of `dispatches` (after a warm-up), over at least 3 runs and about a second, and
/// the CPU seconds per run where the platform tells them.
fn time(gpu: &Gpu, dispatches: &[Dispatch], out: &Tensor) -> (f64, Option<f64>) {
    let once = || {
        let started = Instant::now();
        gpu.submit(dispatches);
        block_on(out.read_bytes(gpu)).expect("read back");
        started.elapsed().as_secs_f64()
    };
    once();
    let mut runs = Vec::new();
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    while runs.len() < 3 || (started.elapsed() < Duration::from_secs(1) && runs.len() < 20) {
        runs.push(once());
    }
    let cpu = cpu_before.zip(process_cpu_seconds()).map(|(a, b)| (b - a) / runs.len() as f64);
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], cpu)
}

struct Args {
    force_f32: bool,
    tiled_only: bool,
    tokens: usize,
    tile: Option<TileShape>,
    f16_tiles: Option<bool>,
    single: bool,
    filter: Vec<String>,
}

/// `128x64/8x4/1` as a tile shape.
fn parse_tile(text: &str) -> Option<TileShape> {
    let n: Vec<u32> = text.split(['x', '/']).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    match n[..] {
        [rows, tokens, thread_rows, thread_tokens, k_slices] => {
            Some(TileShape { rows, tokens, thread_rows, thread_tokens, k_slices })
        }
        _ => None,
    }
}

/// The tiled kernel for `rows × tokens`: the device's choice, with what the arguments force.
fn kernel_for(gpu: &Gpu, args: &Args, rows: usize, tokens: usize) -> TiledKernel {
    let chosen = tiled_kernel(gpu, rows, tokens);
    let mut kernel =
        TiledKernel::new(gpu, args.tile.unwrap_or(chosen.shape), args.f16_tiles.unwrap_or(chosen.f16_tiles));
    kernel.double_buffer &= !args.single;
    kernel
}

fn parse_args() -> Args {
    let mut args = Args {
        force_f32: false,
        tiled_only: false,
        tokens: 64,
        tile: None,
        f16_tiles: None,
        single: false,
        filter: Vec::new(),
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--f32" => args.force_f32 = true,
            "--tiled" => args.tiled_only = true,
            "--tokens" => args.tokens = it.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0).unwrap_or(64),
            "--tile" => args.tile = it.next().as_deref().and_then(parse_tile),
            "--f16-tiles" => args.f16_tiles = it.next().and_then(|b| b.parse().ok()),
            "--single" => args.single = true,
            _ if a.starts_with("--") => {}
            _ => args.filter.push(a),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let gpu = match block_on(Gpu::new(GpuOptions { force_f32: args.force_f32, ..GpuOptions::default() })) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no GPU adapter, nothing to measure: {e}");
            return;
        }
    };
    println!("{} ({})", gpu.adapter().name, gpu.features());
    println!(
        "{:<26} {:>5} {:>5} {:>4} {:>9} {:>9} {:>9} {:>9}",
        "shape", "type", "kernel", "n", "ms", "GFLOP/s", "GB/s (W)", "CPU ms"
    );
    let mut kernels = vec![("tiled", args.tokens)];
    if !args.tiled_only {
        kernels.splice(0..0, [("vec", 1), ("vec", 8)]);
    }
    for (label, rows, k) in SHAPES {
        for ty in TYPES {
            let name = format!("{label} {ty}");
            if !args.filter.is_empty() && !args.filter.iter().any(|f| name.contains(f.as_str())) {
                continue;
            }
            if k % ty.block_size() as usize != 0 {
                continue;
            }
            let bytes = weight_bytes(ty, rows, k);
            let want = row_sum(ty, &bytes, rows, k) * X_VALUE;
            let w = SplitWeight::from_bytes(&gpu, "w", rows, k, DType::Ggml(ty), &bytes).expect("upload");
            for &(kernel, tokens) in &kernels {
                let x = Tensor::from_f32(&gpu, "x", &[tokens, k], &vec![X_VALUE; tokens * k]).expect("x");
                let y = Tensor::new(&gpu, "y", &[tokens, rows], DType::F32).expect("y");
                let dispatches = match kernel {
                    "vec" => matmul_vec(&gpu, &w, &x, &y),
                    _ => {
                        let tiled = kernel_for(&gpu, &args, rows, tokens);
                        let s = tiled.shape;
                        println!(
                            "  tiles {}x{}/{}x{}/{}, f16 tiles {}, double-buffered {}",
                            s.rows,
                            s.tokens,
                            s.thread_rows,
                            s.thread_tokens,
                            s.k_slices,
                            tiled.f16_tiles,
                            tiled.double_buffer
                        );
                        matmul_tiled_with(&gpu, &w, &x, &y, Epilogue::default(), tiled, None)
                    }
                }
                .expect("dispatches");
                let (seconds, cpu) = time(&gpu, &dispatches, &y);
                check_outputs(&name, kernel, &y, want, &gpu);
                let flops = 2.0 * (rows * k * tokens) as f64;
                println!(
                    "{label:<26} {:>5} {kernel:>5} {tokens:>4} {:>9.2} {:>9.2} {:>9.2} {:>9}",
                    ty.to_string(),
                    seconds * 1e3,
                    flops / seconds / 1e9,
                    bytes.len() as f64 / seconds / 1e9,
                    cpu.map_or("-".to_string(), |c| format!("{:.0}", c * 1e3))
                );
            }
        }
    }
    attention_benches(&gpu, &args.filter);
}

/// (label, n_head, n_head_kv, head_dim): the attention of R1-Distill-Qwen-1.5B and -7B.
const ATTENTION_HEADS: [(&str, u32, u32, u32); 2] =
    [("1.5B attention 12/2x128", 12, 2, 128), ("7B attention 28/4x128", 28, 4, 128)];

/// Decode attention at contexts of 512 and 4096 keys, and prefill of 256 tokens after 0 and 1024, in the shapes the
/// device is given.
fn attention_benches(gpu: &Gpu, filter: &[String]) {
    let dtype = if gpu.features().shader_f16 { DType::F16 } else { DType::F32 };
    let ctx = 4096u32;
    for (label, n_head, n_head_kv, head_dim) in ATTENTION_HEADS {
        if !filter.is_empty() && !filter.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let row = (n_head_kv * head_dim) as usize;
        let cache = || {
            match dtype {
                DType::F16 => Tensor::from_f16(
                    gpu,
                    "cache",
                    &[ctx as usize, row],
                    &vec![half::f16::from_f32(0.01); ctx as usize * row],
                ),
                _ => Tensor::from_f32(gpu, "cache", &[ctx as usize, row], &vec![0.01; ctx as usize * row]),
            }
            .expect("cache")
        };
        let (k, v) = (cache(), cache());
        let cache_bytes_per_key = 2.0 * row as f64 * if dtype == DType::F16 { 2.0 } else { 4.0 };
        for (kernel, batch, runs) in [("dec", 1u32, [(511u32, 1u32), (4095, 1)]), ("pre", 256, [(0, 256), (1024, 256)])]
        {
            let shape = AttentionShape { n_head, n_head_kv, head_dim, ctx, batch };
            let width = (n_head * head_dim) as usize;
            let q =
                Tensor::from_f32(gpu, "q", &[batch as usize, width], &vec![0.01; batch as usize * width]).expect("q");
            let out = Tensor::new(gpu, "out", &[batch as usize, width], DType::F32).expect("out");
            let step = Tensor::from_u32(gpu, "step", &[4], &[0, 0, 0, 0]).expect("step");
            let io = AttentionIo { q: &q, k_cache: &k, v_cache: &v, out: &out, step: &step };
            let dispatches = attention(gpu, io, shape).expect("dispatches");
            for (n_past, n_tokens) in runs {
                step.upload(gpu, bytemuck::cast_slice(&[n_past, n_tokens, 0, 0])).expect("step");
                let (seconds, _) = time(gpu, &dispatches, &out);
                // Token t sees n_past + t + 1 keys: 4 flops per key and dimension of each head (q·k and p·v).
                let keys: f64 = (0..n_tokens).map(|t| f64::from(n_past + t + 1)).sum();
                let flops = 4.0 * f64::from(n_head * head_dim) * keys;
                let read = cache_bytes_per_key * f64::from(n_past + n_tokens);
                println!(
                    "{label:<26} {:>5} {kernel:>5} {:>4} {:>9.2} {:>9.2} {:>9.2}",
                    dtype.name(),
                    n_past + n_tokens,
                    seconds * 1e3,
                    flops / seconds / 1e9,
                    read / seconds / 1e9
                );
            }
        }
    }
}
