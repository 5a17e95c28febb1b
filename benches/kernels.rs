//! Throughput of the quantised matrix kernels on the adapter wgpu picks (`WGPU_BACKEND` honoured): the tiled GEMM
//! (prefill) and the matrix × vector kernel (decode), at the shapes of Qwen2.5-0.5B's and R1-Distill-Qwen-1.5B's
//! projections, for the weight types their GGUFs use. Prints GFLOP/s (2 · rows · k · tokens per second) and the weight
//! bytes read per second.
//!
//! `cargo bench --bench kernels [-- FILTER]`; `--f32` forces the f32 path. Random weights: speed does not depend on
//! the values.

use std::time::{Duration, Instant};

use pollster::block_on;
use webr1::gpu::ops::{matmul_tiled, matmul_vec};
use webr1::gpu::{DType, Dispatch, Gpu, GpuOptions, SplitWeight, Tensor};
use webr1::quant::GgmlType;

/// (label, rows, k): projections of the two models.
const SHAPES: [(&str, usize, usize); 3] =
    [("0.5B q/o 896x896", 896, 896), ("0.5B ffn_down 896x4864", 896, 4864), ("1.5B ffn_up 8960x1536", 8960, 1536)];
const TYPES: [GgmlType; 5] = [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F32];

/// Weight bytes that dequantise to finite values: every 16-bit word a small positive f16 (0x2000 ≈ 0.0078).
fn weight_bytes(ty: GgmlType, rows: usize, k: usize) -> Vec<u8> {
    let len = ty.row_bytes(k as u64).expect("whole blocks") as usize * rows;
    match ty {
        GgmlType::F32 => (0..len / 4).flat_map(|i| (((i % 13) as f32 - 6.0) * 0.01).to_le_bytes()).collect(),
        _ => (0..len / 2).flat_map(|_| 0x2000u16.to_le_bytes()).collect(),
    }
}

/// Median seconds of one submission of `dispatches` (after a warm-up), over at least 3 runs and about a second.
fn time(gpu: &Gpu, dispatches: &[Dispatch], out: &Tensor) -> f64 {
    let once = || {
        let started = Instant::now();
        gpu.submit(dispatches);
        block_on(out.read_bytes(gpu)).expect("read back");
        started.elapsed().as_secs_f64()
    };
    once();
    let mut runs = Vec::new();
    let started = Instant::now();
    while runs.len() < 3 || (started.elapsed() < Duration::from_secs(1) && runs.len() < 20) {
        runs.push(once());
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let force_f32 = args.iter().any(|a| a == "--f32");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let gpu = match block_on(Gpu::new(GpuOptions { force_f32, ..GpuOptions::default() })) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no GPU adapter, nothing to measure: {e}");
            return;
        }
    };
    println!("{} ({})", gpu.adapter().name, gpu.features());
    println!("{:<26} {:>5} {:>5} {:>4} {:>9} {:>9} {:>9}", "shape", "type", "kernel", "n", "ms", "GFLOP/s", "GB/s (W)");
    for (label, rows, k) in SHAPES {
        for ty in TYPES {
            let name = format!("{label} {ty}");
            if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
                continue;
            }
            if k % ty.block_size() as usize != 0 {
                continue;
            }
            let bytes = weight_bytes(ty, rows, k);
            let w = SplitWeight::from_bytes(&gpu, "w", rows, k, DType::Ggml(ty), &bytes).expect("upload");
            for (kernel, tokens) in [("vec", 1usize), ("vec", 8), ("tiled", 64)] {
                let x = Tensor::from_f32(&gpu, "x", &[tokens, k], &vec![0.01; tokens * k]).expect("x");
                let y = Tensor::new(&gpu, "y", &[tokens, rows], DType::F32).expect("y");
                let dispatches = match kernel {
                    "vec" => matmul_vec(&gpu, &w, &x, &y),
                    _ => matmul_tiled(&gpu, &w, &x, &y),
                }
                .expect("dispatches");
                let seconds = time(&gpu, &dispatches, &y);
                let flops = 2.0 * (rows * k * tokens) as f64;
                println!(
                    "{label:<26} {:>5} {kernel:>5} {tokens:>4} {:>9.2} {:>9.2} {:>9.2}",
                    ty.to_string(),
                    seconds * 1e3,
                    flops / seconds / 1e9,
                    bytes.len() as f64 / seconds / 1e9
                );
            }
        }
    }
}
