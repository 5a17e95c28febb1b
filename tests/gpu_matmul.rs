//! The quantised kernels on a real device (Mesa lavapipe in CI): `matmul_vec` (decode), `matmul_tiled` (prefill) and
//! `get_rows` (embedding lookup), for every GGML type webr1 supports, against the CPU reference dequantiser
//! `webr1::quant::dequantize` (bit-exact with ggml) and a product computed in f64.
//!
//! Weights are seeded random blocks: random quant bytes with finite f16 scales (±[1e-3, 0.1]) and mins (±[1e-3, 1]),
//! as `scripts/gen-quant-golden.py` makes them. A product's error is measured relative to `Σ_k |W[r, k]| · |x[t, k]|`,
//! the scale its rounding errors grow with; the largest relative error per type is printed. Shapes are awkward on
//! purpose: rows ∈ {1, 3, 17, 65}, K = 512 (two k-quant super-blocks) and, for the 32-element and float types, also
//! 64 and 96; 1 and 3 tokens for the vector kernel, 1, 9 and 40 for the tiled one. Every kernel runs on the device
//! forced onto the f32 path and on the default one (subgroups and f16 activations when the adapter has them).

#[path = "common/gpu.rs"]
mod gpu_common;

use std::collections::BTreeMap;
use std::time::Instant;

use gpu_common::{gpu, gpu_with, gpus, round_f16, to_f16, Rng};
use pollster::block_on;
use webr1::gpu::ops::matmul_tiled::{CPU_TILE, GPU_TILES, TARGET_WORKGROUPS, TILE_SHAPES};
use webr1::gpu::ops::{
    get_rows, matmul, matmul_into, matmul_tiled, matmul_tiled_into, matmul_tiled_with, matmul_vec, matmul_vec_into,
    matmul_vec_with, silu_mul_vec_with, tiled_kernel, Epilogue, TileShape, TiledKernel, VecShape, MAX_VEC_TOKENS,
};
use webr1::gpu::{DType, Dispatch, Gpu, GpuOptions, SplitWeight, Tensor};
use webr1::quant::{dequantize, GgmlType};
use webr1::ErrorCode;

const ROWS: [usize; 4] = [1, 3, 17, 65];

// ---------------------------------------------------------------------------------------------------------------
// Data

/// Row lengths to test `ty` with: two super-blocks, and for types of small blocks also 2 and 3 blocks of 32.
fn cols_for(ty: GgmlType) -> &'static [usize] {
    match ty.block_size() {
        256 => &[512],
        _ => &[512, 64, 96],
    }
}

/// The row lengths (k) of the test models' and R1-Distill-Qwen-1.5B's projections that a type's blocks divide:
/// n_embd 576 (smol135), 896 (qwen05), 1536 (qwen15, R1-1.5B) and n_ff 1536, 4864, 8960.
fn model_cols_for(ty: GgmlType) -> &'static [usize] {
    match ty.block_size() {
        256 => &[1536, 4864, 8960],
        _ => &[576, 896, 1536, 4864],
    }
}

/// Byte offsets in a block of the f16 scales and of the f16 mins (ggml-common.h).
fn half_fields(ty: GgmlType) -> (&'static [usize], &'static [usize]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => (&[0], &[]),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (&[0], &[2]),
        GgmlType::Q2_K => (&[80, 82], &[]),
        GgmlType::Q3_K => (&[108], &[]),
        GgmlType::Q4_K | GgmlType::Q5_K => (&[0, 2], &[]),
        GgmlType::Q6_K => (&[208], &[]),
        _ => (&[], &[]),
    }
}

fn signed_uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    let v = rng.uniform(lo, hi);
    if rng.next_u64() & 1 == 0 {
        v
    } else {
        -v
    }
}

/// `rows × cols` seeded random weights of `ty`, as the raw bytes of a GGUF tensor.
fn random_weight(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => rng.vec(n, -1.0, 1.0).iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => to_f16(&rng.vec(n, -1.0, 1.0)).iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::BF16 => {
            rng.vec(n, -1.0, 1.0).iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect()
        }
        _ => {
            let block_bytes = ty.type_size() as usize;
            let mut bytes = rng.bytes(ty.row_bytes(cols as u64).expect("whole blocks") as usize * rows);
            let (scales, mins) = half_fields(ty);
            for block in bytes.chunks_exact_mut(block_bytes) {
                for &at in scales {
                    let d = half::f16::from_f32(signed_uniform(rng, 1e-3, 0.1));
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
                for &at in mins {
                    let m = half::f16::from_f32(signed_uniform(rng, 1e-3, 1.0));
                    block[at..at + 2].copy_from_slice(&m.to_le_bytes());
                }
            }
            bytes
        }
    }
}

/// A random weight on the GPU and its CPU dequantisation (`rows × cols`, row-major).
struct Weight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
    values: Vec<f32>,
}

impl Weight {
    fn random(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Weight {
        let bytes = random_weight(rng, ty, rows, cols);
        let mut values = vec![0.0; rows * cols];
        dequantize(ty, &bytes, &mut values).unwrap_or_else(|e| panic!("{ty}: {e}"));
        Weight { ty, rows, cols, bytes, values }
    }

    fn upload(&self, gpu: &Gpu) -> SplitWeight {
        SplitWeight::from_bytes(gpu, "w", self.rows, self.cols, DType::Ggml(self.ty), &self.bytes).unwrap()
    }
}

/// The activation dtypes a device computes on: f32 always, f16 with shader-f16.
fn dtypes(gpu: &Gpu) -> Vec<DType> {
    match gpu.features().shader_f16 {
        true => vec![DType::F32, DType::F16],
        false => vec![DType::F32],
    }
}

/// An activation tensor holding `data` as `dtype`, and the values the GPU will see (rounded for f16).
fn activation(gpu: &Gpu, shape: &[usize], dtype: DType, data: &[f32]) -> (Tensor, Vec<f32>) {
    match dtype {
        DType::F32 => (Tensor::from_f32(gpu, "x", shape, data).unwrap(), data.to_vec()),
        DType::F16 => (Tensor::from_f16(gpu, "x", shape, &to_f16(data)).unwrap(), round_f16(data)),
        other => panic!("no activations of {other:?}"),
    }
}

fn variant(gpu: &Gpu, dtype: DType) -> String {
    let reduction = if gpu.features().subgroups { "subgroups" } else { "shared memory" };
    format!("{} activations, {reduction}", dtype.name())
}

// ---------------------------------------------------------------------------------------------------------------
// Reference and comparison

/// `y[t, r] = Σ_k W[r, k] · x[t, k]` in f64, and the error scale `Σ_k |W[r, k] · x[t, k]|` of each element.
fn reference(w: &Weight, x: &[f32], n_tokens: usize) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols) = (w.rows, w.cols);
    let mut y = vec![0.0; n_tokens * rows];
    let mut scale = vec![0.0; n_tokens * rows];
    for t in 0..n_tokens {
        let xt = &x[t * cols..][..cols];
        for r in 0..rows {
            let wr = &w.values[r * cols..][..cols];
            for (&a, &b) in wr.iter().zip(xt) {
                let p = f64::from(a) * f64::from(b);
                y[t * rows + r] += p;
                scale[t * rows + r] += p.abs();
            }
        }
    }
    (y, scale)
}

/// Panics unless `|got - want| <= tol · scale` everywhere, naming the first failing index (token, row), both values and
/// how many failed; returns the largest `|got - want| / scale`.
fn check_product(what: &str, rows: usize, got: &[f32], want: &[f64], scale: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let rel: Vec<f64> = got
        .iter()
        .zip(want)
        .zip(scale)
        .map(|((&g, &w), &s)| {
            let diff = (f64::from(g) - w).abs();
            if diff.is_nan() {
                f64::INFINITY
            } else {
                diff / s.max(f64::MIN_POSITIVE)
            }
        })
        .collect();
    let failures = rel.iter().filter(|&&e| e > tol).count();
    if let Some(i) = rel.iter().position(|&e| e > tol) {
        panic!(
            "{what}: first failing index {i} (token {}, row {}): got {}, want {} (|diff| / Σ|w·x| = {:e}, tolerance \
             {tol:e}); {failures} of {} elements fail",
            i / rows,
            i % rows,
            got[i],
            want[i],
            rel[i],
            got.len()
        );
    }
    rel.into_iter().fold(0.0, f64::max)
}

/// The tolerance relative to `Σ|w·x|`: f32 accumulation of ≤ 512 products (and ggml's f32 dequantisation, whose last
/// bit may differ where a GPU fuses `d * q + m`), plus the rounding of an f16 result.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-3,
        _ => 1e-5,
    }
}

fn run(gpu: &Gpu, dispatches: &[Dispatch], out: &Tensor) -> Vec<f32> {
    gpu.submit(dispatches);
    let label = dispatches.first().map_or("nothing", Dispatch::label);
    block_on(out.read_f32(gpu)).unwrap_or_else(|e| panic!("{label}: {e}"))
}

type Kernel = fn(&Gpu, &SplitWeight, &Tensor, &Tensor) -> webr1::Result<Vec<Dispatch>>;

/// The cases of one kernel test: rows of W, lengths of its rows for each type, tokens, and whether to run every
/// device variant or only the forced-f32 device with f32 activations.
struct Shapes<'a> {
    rows: &'a [usize],
    cols: fn(GgmlType) -> &'static [usize],
    tokens: &'a [usize],
    all_variants: bool,
}

/// Runs `kernel` for every type, shape, token count and device variant; returns the largest relative error per
/// (type, activation dtype) and the number of cases.
fn check_kernel(name: &str, kernel: Kernel, shapes: &Shapes, seed: u64) -> (BTreeMap<String, f64>, usize) {
    let mut rng = Rng::new(seed);
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut cases = 0;
    let devices = gpus().into_iter().take(if shapes.all_variants { 2 } else { 1 });
    for (device, gpu) in devices {
        let dtypes = if shapes.all_variants { dtypes(&gpu) } else { vec![DType::F32] };
        for ty in GgmlType::SUPPORTED {
            for &cols in (shapes.cols)(ty) {
                for &rows in shapes.rows {
                    let w = Weight::random(&mut rng, ty, rows, cols);
                    let wt = w.upload(&gpu);
                    for &dtype in &dtypes {
                        for &n_tokens in shapes.tokens {
                            let (x, x_seen) =
                                activation(&gpu, &[n_tokens, cols], dtype, &rng.vec(n_tokens * cols, -1.0, 1.0));
                            let y = Tensor::new(&gpu, "y", &[n_tokens, rows], dtype).unwrap();
                            let what = format!(
                                "{name} {ty} [{rows}, {cols}] × {n_tokens} tokens ({device}: {})",
                                variant(&gpu, dtype)
                            );
                            let dispatches = kernel(&gpu, &wt, &x, &y).unwrap_or_else(|e| panic!("{what}: {e}"));
                            let got = run(&gpu, &dispatches, &y);
                            let (want, scale) = reference(&w, &x_seen, n_tokens);
                            let err = check_product(&what, rows, &got, &want, &scale, tolerance(dtype));
                            let key = format!("{ty:>5} {}", dtype.name());
                            let entry = worst.entry(key).or_insert(0.0);
                            *entry = entry.max(err);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    (worst, cases)
}

fn print_errors(name: &str, worst: &BTreeMap<String, f64>) {
    println!("{name}: largest |error| / Σ|w·x| per type and activation dtype:");
    for (key, err) in worst {
        println!("  {key}: {err:.2e}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Products

#[test]
fn matmul_vec_matches_the_cpu_reference() {
    let started = Instant::now();
    let shapes = Shapes { rows: &ROWS, cols: cols_for, tokens: &[1, 3], all_variants: true };
    let (worst, cases) = check_kernel("matmul_vec", matmul_vec, &shapes, 0x5EED_0101);
    print_errors("matmul_vec", &worst);
    println!("matmul_vec: {cases} cases in {:.2?}", started.elapsed());
}

/// The decode kernel in the shape real GPUs get (2 rows per workgroup for one token, 1 for more), forced here on
/// whatever adapter runs the tests, for every type and device variant.
#[test]
fn matmul_vec_in_the_gpu_shape_matches_the_cpu_reference() {
    let started = Instant::now();
    let shapes = Shapes { rows: &[3, 17], cols: cols_for, tokens: &[1, 3], all_variants: true };
    let gpu_shape: Kernel = |gpu, w, x, y| matmul_vec_with(gpu, w, x, y, Epilogue::default(), VecShape::Gpu);
    let (worst, cases) = check_kernel("matmul_vec (GPU shape)", gpu_shape, &shapes, 0x5EED_0110);
    print_errors("matmul_vec (GPU shape)", &worst);
    println!("matmul_vec in the GPU shape: {cases} cases in {:.2?}", started.elapsed());
}

/// Each shape compiles what it says: the pipeline's macros name its rows per workgroup, and Q4_K reads whole 16-byte
/// words (W4); lavapipe is a software adapter and gets the software shape by default.
#[test]
fn matmul_vec_compiles_the_shape_asked_for() {
    let Some(gpu) = gpu() else { return };
    assert!(gpu.adapter().is_software(), "{} should count as a software adapter", gpu.adapter());
    assert_eq!(VecShape::for_gpu(&gpu), VecShape::Software);
    let mut rng = Rng::new(0x5EED_0111);
    for (ty, w4) in [(GgmlType::Q4_K, true), (GgmlType::Q5_K, true), (GgmlType::Q6_K, false), (GgmlType::Q8_0, false)] {
        let w = Weight::random(&mut rng, ty, 8, 256).upload(&gpu);
        for (shape, tokens, rows) in
            [(VecShape::Gpu, 1, 2), (VecShape::Gpu, 3, 1), (VecShape::Software, 1, 32), (VecShape::Software, 8, 4)]
        {
            let x = Tensor::new(&gpu, "x", &[tokens, 256], DType::F32).unwrap();
            let y = Tensor::new(&gpu, "y", &[tokens, 8], DType::F32).unwrap();
            let d = matmul_vec_with(&gpu, &w, &x, &y, Epilogue::default(), shape).unwrap();
            let line = d[0].describe();
            assert!(line.contains(&format!(" ROWS_PER_WG={rows}u ")), "{ty} {shape:?} × {tokens}: {line}");
            assert_eq!(line.contains("W4=true"), w4, "{ty}: {line}");
            assert_eq!(d[0].workgroups()[0], 8u32.div_ceil(rows), "{ty} {shape:?} × {tokens}: {line}");
        }
    }
}

/// Long rows in the software shape: R1-Distill-Qwen-7B's `down` projection (k = 18944, Q4_K) and, F16, rows of
/// 131072 values (32768 parts of 4), longer than any model's, where 8 invocations of 32 rows would each loop over
/// 4096 parts × 32 rows: llvmpipe ends an invocation's loops after 65535 iterations in all, silently, so the shape
/// must take more invocations or fewer rows there. Every output must be the whole sum, for 1 and 3 tokens, on every
/// device variant.
#[test]
fn matmul_vec_in_the_software_shape_handles_the_longest_rows() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0113);
    let rows = 40;
    let mut cases = 0;
    for (device, gpu) in gpus() {
        for (ty, cols) in [(GgmlType::Q4_K, 18944), (GgmlType::F16, 131072)] {
            let w = Weight::random(&mut rng, ty, rows, cols);
            let wt = w.upload(&gpu);
            for n_tokens in [1, 3] {
                let (x, x_seen) = activation(&gpu, &[n_tokens, cols], DType::F32, &rng.vec(n_tokens * cols, -1.0, 1.0));
                let y = Tensor::new(&gpu, "y", &[n_tokens, rows], DType::F32).unwrap();
                let what = format!("matmul_vec {ty} [{rows}, {cols}] × {n_tokens}, software shape ({device})");
                let d = matmul_vec_with(&gpu, &wt, &x, &y, Epilogue::default(), VecShape::Software).unwrap();
                let got = run(&gpu, &d, &y);
                let (want, scale) = reference(&w, &x_seen, n_tokens);
                // f32 sums of up to 131072 products: a looser bound than the 512 of the other cases.
                check_product(&what, rows, &got, &want, &scale, 1e-4);
                cases += 1;
            }
        }
    }
    println!("matmul_vec over the longest rows: {cases} cases in {:.2?}", started.elapsed());
}

/// The fused SwiGLU: `silu(gate · x) ⊙ (up · x)` from gate and up stacked in one weight, in both shapes, for the
/// types the models' feed-forward blocks use, on every device variant.
#[test]
fn silu_mul_vec_matches_the_cpu_reference() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0112);
    let mut cases = 0;
    let silu = |g: f64| g / (1.0 + (-g).exp());
    for (device, gpu) in gpus() {
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::F16] {
            let (n_ff, cols) = (19, 512);
            let w = Weight::random(&mut rng, ty, 2 * n_ff, cols);
            let wt = w.upload(&gpu);
            for dtype in dtypes(&gpu) {
                for shape in [VecShape::Gpu, VecShape::Software] {
                    for n_tokens in [1, 3] {
                        // Small inputs: silu(gate) · up of the random weights' sums must stay within f16's range.
                        let (x, x_seen) =
                            activation(&gpu, &[n_tokens, cols], dtype, &rng.vec(n_tokens * cols, -0.1, 0.1));
                        let y = Tensor::new(&gpu, "y", &[n_tokens, n_ff], dtype).unwrap();
                        let what = format!(
                            "silu_mul_vec {ty} [2 × {n_ff}, {cols}] × {n_tokens} tokens, {shape:?} ({device}: {})",
                            variant(&gpu, dtype)
                        );
                        let d = silu_mul_vec_with(&gpu, &wt, &x, &y, shape).unwrap_or_else(|e| panic!("{what}: {e}"));
                        let got = run(&gpu, &d, &y);
                        let (sums, scale) = reference(&w, &x_seen, n_tokens);
                        let (mut want, mut scales) = (Vec::new(), Vec::new());
                        for t in 0..n_tokens {
                            for r in 0..n_ff {
                                let (g, u) = (sums[t * 2 * n_ff + r], sums[t * 2 * n_ff + n_ff + r]);
                                let (sg, su) = (scale[t * 2 * n_ff + r], scale[t * 2 * n_ff + n_ff + r]);
                                want.push(silu(g) * u);
                                // silu' is at most 1.1 in magnitude: the error of g moves silu(g) by at most 1.1 times.
                                scales.push(1.1 * sg * u.abs() + silu(g).abs() * su);
                            }
                        }
                        check_product(&what, n_ff, &got, &want, &scales, tolerance(dtype));
                        cases += 1;
                    }
                }
            }
        }
    }
    println!("silu_mul_vec: {cases} cases in {:.2?}", started.elapsed());
}

#[test]
fn matmul_tiled_matches_the_cpu_reference() {
    let started = Instant::now();
    let shapes = Shapes { rows: &ROWS, cols: cols_for, tokens: &[1, 9, 40], all_variants: true };
    let (worst, cases) = check_kernel("matmul_tiled", matmul_tiled, &shapes, 0x5EED_0102);
    print_errors("matmul_tiled", &worst);
    println!("matmul_tiled: {cases} cases in {:.2?}", started.elapsed());
}

/// Both kernels, on every device variant (the forced-f32 path included), at the row lengths the models use: blocks per
/// row that are not a multiple of the invocations striding over them, and the partial last chunk of a prompt
/// (63 tokens) as well as a full one (64).
#[test]
fn matmul_kernels_match_the_cpu_reference_at_the_models_row_lengths() {
    let started = Instant::now();
    let mut cases = 0;
    let kernels: [(&str, Kernel, &[usize], u64); 2] =
        [("matmul_vec", matmul_vec, &[1, 8], 0x5EED_010B), ("matmul_tiled", matmul_tiled, &[63, 64], 0x5EED_010C)];
    for (name, kernel, tokens, seed) in kernels {
        let shapes = Shapes { rows: &[17], cols: model_cols_for, tokens, all_variants: true };
        let (worst, n) = check_kernel(name, kernel, &shapes, seed);
        print_errors(&format!("{name} at the models' row lengths"), &worst);
        cases += n;
    }
    println!("matmul kernels at the models' row lengths: {cases} cases in {:.2?}", started.elapsed());
}

/// The variants of the tiled kernel a device runs in the shape tests, as (f16 tiles, single-buffered, activations):
/// f32 tiles on the forced-f32 device; on the default one f16 tiles with f16 activations, f16 tiles single-buffered
/// with f32 activations, and f32 tiles (with subgroups where the device has them). Double-buffered unless single or
/// the device's workgroup memory only holds one set of tiles.
fn tiled_variants(gpu: &Gpu) -> Vec<(bool, bool, DType)> {
    match gpu.features().shader_f16 {
        true => vec![(true, false, DType::F16), (true, true, DType::F32), (false, false, DType::F32)],
        false => vec![(false, false, DType::F32)],
    }
}

/// The tolerance of the tiled kernel: f16 tiles round W and x to f16 and sum 4 products in f16 (a few units of
/// 2⁻¹¹ relative to Σ|w·x| at worst, much less on random data), f32 tiles are exact up to f32 sums.
fn tiled_tolerance(f16_tiles: bool, dtype: DType) -> f64 {
    match f16_tiles {
        true => 2e-3,
        false => tolerance(dtype),
    }
}

/// Panics unless the dispatches were compiled for `kernel`: its tile macros, f16 tiles, and the way the k slices are
/// added up (subgroup shuffles where the device has subgroups of at least `k_slices` invocations).
fn assert_compiled_for(what: &str, gpu: &Gpu, dispatches: &[Dispatch], kernel: TiledKernel, step: bool) {
    let s = kernel.shape;
    let features = gpu.features();
    let subgroups = s.k_slices > 1 && features.subgroups && features.subgroup_min_size >= s.k_slices;
    for d in dispatches {
        let described = d.describe();
        let macros = [
            format!("TILE_M={}u", s.rows),
            format!("TILE_N={}u", s.tokens),
            format!("THREAD_M={}u", s.thread_rows),
            format!("THREAD_N={}u", s.thread_tokens),
            format!("K_SLICES={}u", s.k_slices),
        ];
        for m in &macros {
            assert!(
                described.contains(&format!(" {m} ")) || described.contains(&format!("[{m} ")),
                "{what}: {described}"
            );
        }
        for (flag, on) in [
            ("F16_TILES", kernel.f16_tiles),
            ("SUBGROUPS", subgroups),
            ("SHARED_REDUCE", s.k_slices > 1 && !subgroups),
            ("STEP", step),
            ("DOUBLE_BUFFER", kernel.double_buffer),
        ] {
            assert_eq!(described.contains(&format!("{flag}=true")), on, "{what}: {flag} in {described}");
        }
        assert!(described.starts_with("matmul_tiled::matmul_tiled "), "{what}: {described}");
    }
}

/// Every tile shape of the tiled kernel, the GPU shapes included, in every variant the device has, over two tiles of
/// rows and two of tokens (the second ones partial): Q4_K (a row of 8 k steps) and, shape by shape, one of an
/// odd-sized block, a legacy type and the float types (3 steps; F16 and F32 with a partial fourth). The loading of
/// each type does not depend on the shape: every type runs in every variant of the CPU shape in the tests above.
#[test]
fn matmul_tiled_runs_every_tile_shape() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0109);
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut cases = 0;
    let others = [(GgmlType::Q6_K, 256), (GgmlType::Q5_0, 96), (GgmlType::F16, 100), (GgmlType::Q8_0, 96)];
    let others = others.into_iter().chain([(GgmlType::Q3_K, 256), (GgmlType::F32, 36)]).cycle();
    for (device, gpu) in gpus() {
        for (shape, other) in TILE_SHAPES.into_iter().zip(others.clone()) {
            let (rows, n_tokens) = (shape.rows as usize + 3, shape.tokens as usize + 5);
            for (ty, cols) in [(GgmlType::Q4_K, 256), other] {
                let w = Weight::random(&mut rng, ty, rows, cols);
                let wt = w.upload(&gpu);
                for (f16_tiles, single, dtype) in tiled_variants(&gpu) {
                    let mut kernel = TiledKernel::new(&gpu, shape, f16_tiles);
                    kernel.double_buffer &= !single;
                    let (x, x_seen) = activation(&gpu, &[n_tokens, cols], dtype, &rng.vec(n_tokens * cols, -1.0, 1.0));
                    let y = Tensor::new(&gpu, "y", &[n_tokens, rows], dtype).unwrap();
                    let what = format!(
                        "matmul_tiled {kernel:?} {ty} [{rows}, {cols}] × {n_tokens} tokens \
                         ({device}: {})",
                        variant(&gpu, dtype)
                    );
                    let dispatches = matmul_tiled_with(&gpu, &wt, &x, &y, Epilogue::default(), kernel, None)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_compiled_for(&what, &gpu, &dispatches, kernel, false);
                    let got = run(&gpu, &dispatches, &y);
                    let (want, scale) = reference(&w, &x_seen, n_tokens);
                    let err = check_product(&what, rows, &got, &want, &scale, tiled_tolerance(f16_tiles, dtype));
                    let key = format!(
                        "{}x{}/{} f16 tiles {f16_tiles:<5} double {:<5} {}",
                        shape.rows,
                        shape.tokens,
                        shape.k_slices,
                        kernel.double_buffer,
                        dtype.name()
                    );
                    let entry = worst.entry(key).or_insert(0.0);
                    *entry = entry.max(err);
                    cases += 1;
                }
            }
        }
    }
    print_errors("matmul_tiled, every tile shape", &worst);
    println!("matmul_tiled, every tile shape: {cases} cases in {:.2?}", started.elapsed());
}

/// f16 tiles, as GPUs with shader-f16 run them, for every type at the row lengths of the CPU-reference test, with f16
/// and f32 activations, in the 128 × 64 GPU shape (the tiled kernels above run every type with f32 tiles, as a CPU
/// adapter chooses them). Needs shader-f16: a loud skip without it.
#[test]
fn matmul_tiled_with_f16_tiles_matches_the_cpu_reference_for_every_type() {
    let Some(gpu) = gpu() else { return };
    if !gpu.features().shader_f16 {
        eprintln!("SKIP: this device has no shader-f16, so no f16 tiles");
        return;
    }
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_010F);
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut cases = 0;
    let kernel = TiledKernel::new(&gpu, GPU_TILES[1], true);
    let (rows, n_tokens) = (65, 40);
    for ty in GgmlType::SUPPORTED {
        for &cols in cols_for(ty) {
            let w = Weight::random(&mut rng, ty, rows, cols);
            let wt = w.upload(&gpu);
            for dtype in dtypes(&gpu) {
                let (x, x_seen) = activation(&gpu, &[n_tokens, cols], dtype, &rng.vec(n_tokens * cols, -1.0, 1.0));
                let y = Tensor::new(&gpu, "y", &[n_tokens, rows], dtype).unwrap();
                let what =
                    format!("matmul_tiled {kernel:?} {ty} [{rows}, {cols}] × {n_tokens} ({})", variant(&gpu, dtype));
                let dispatches = matmul_tiled_with(&gpu, &wt, &x, &y, Epilogue::default(), kernel, None)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_compiled_for(&what, &gpu, &dispatches, kernel, false);
                let got = run(&gpu, &dispatches, &y);
                let (want, scale) = reference(&w, &x_seen, n_tokens);
                let err = check_product(&what, rows, &got, &want, &scale, tiled_tolerance(true, dtype));
                let entry = worst.entry(format!("{ty:>5} {}", dtype.name())).or_insert(0.0);
                *entry = entry.max(err);
                cases += 1;
            }
        }
    }
    print_errors("matmul_tiled with f16 tiles", &worst);
    println!("matmul_tiled with f16 tiles: {cases} cases in {:.2?}", started.elapsed());
}

/// One dispatch built for 70 tokens, run with the token counts of several steps written into `step` (a full batch,
/// a partial one, one token, none, and more than the capacity): the rows of the step's tokens get the product (with a
/// bias and a residual add), the rows past them keep what they held.
#[test]
fn matmul_tiled_reads_the_token_count_when_it_runs() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_010E);
    let (rows, cols, capacity) = (67, 256, 70);
    let mut cases = 0;
    for (device, gpu) in gpus() {
        let w = Weight::random(&mut rng, GgmlType::Q4_K, rows, cols);
        let wt = w.upload(&gpu);
        let bias_values = rng.vec(rows, -2.0, 2.0);
        let bias = Tensor::from_f32(&gpu, "bias", &[rows], &bias_values).unwrap();
        let epilogue = Epilogue { bias: Some(&bias), accumulate: true, column: 0 };
        let chosen = tiled_kernel(&gpu, rows, capacity);
        let kernels = [
            chosen,
            TiledKernel::new(&gpu, GPU_TILES[3], chosen.f16_tiles),
            TiledKernel::new(&gpu, GPU_TILES[0], chosen.f16_tiles),
        ];
        for kernel in kernels {
            let x_data = rng.vec(capacity * cols, -1.0, 1.0);
            let x = Tensor::from_f32(&gpu, "x", &[capacity, cols], &x_data).unwrap();
            let y_before = rng.vec(capacity * rows, -3.0, 3.0);
            let y = Tensor::from_f32(&gpu, "y", &[capacity, rows], &y_before).unwrap();
            let step = Tensor::from_u32(&gpu, "step", &[4], &[0, 0, 0, 0]).unwrap();
            let what = format!("matmul_tiled {kernel:?} with a step ({device})");
            let dispatches = matmul_tiled_with(&gpu, &wt, &x, &y, epilogue, kernel, Some(&step))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_compiled_for(&what, &gpu, &dispatches, kernel, true);
            let (product, scale) = reference(&w, &x_data, capacity);
            for n in [capacity as u32, 33, 1, 0, 1000] {
                gpu.write_buffer(step.buffer(), 0, bytemuck::cast_slice(&[5u32, n, 0, 0])).unwrap();
                gpu.write_buffer(y.buffer(), 0, bytemuck::cast_slice(&y_before)).unwrap();
                let got = run(&gpu, &dispatches, &y);
                let done = (n as usize).min(capacity) * rows;
                let want: Vec<f64> =
                    (0..done).map(|i| product[i] + f64::from(bias_values[i % rows]) + f64::from(y_before[i])).collect();
                let scales: Vec<f64> = (0..done)
                    .map(|i| scale[i] + f64::from(bias_values[i % rows].abs()) + f64::from(y_before[i].abs()))
                    .collect();
                let what = format!("{what}, {n} tokens");
                check_product(&what, rows, &got[..done], &want, &scales, tiled_tolerance(kernel.f16_tiles, DType::F32));
                if let Some(i) = (done..got.len()).find(|&i| got[i].to_bits() != y_before[i].to_bits()) {
                    panic!("{what}: token {} row {} past the step's tokens changed", i / rows, i % rows);
                }
                cases += 1;
            }
        }
    }
    println!("matmul_tiled with a step: {cases} cases in {:.2?}", started.elapsed());
}

/// Rows as long as R1-Distill-Qwen-7B's `down` projection (k = 18944, 592 k steps), in the shape the device chooses
/// and the largest GPU shape. A CPU adapter (lavapipe) ends an invocation's loops after 65535 iterations in all, so
/// there the product is split along k into several dispatches that add up their sums: asserted, and checked against
/// the reference with a bias and a residual add, whose bias must be added once.
#[test]
fn matmul_tiled_handles_the_longest_rows() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0110);
    let (rows, cols, n_tokens) = (17, 18944, 9);
    let mut cases = 0;
    for (device, gpu) in gpus() {
        let w = Weight::random(&mut rng, GgmlType::Q4_K, rows, cols);
        let wt = w.upload(&gpu);
        let bias_values = rng.vec(rows, -2.0, 2.0);
        let bias = Tensor::from_f32(&gpu, "bias", &[rows], &bias_values).unwrap();
        let epilogue = Epilogue { bias: Some(&bias), accumulate: true, column: 0 };
        let chosen = tiled_kernel(&gpu, rows, n_tokens);
        for kernel in [chosen, TiledKernel::new(&gpu, GPU_TILES[0], chosen.f16_tiles)] {
            let x_data = rng.vec(n_tokens * cols, -1.0, 1.0);
            let x = Tensor::from_f32(&gpu, "x", &[n_tokens, cols], &x_data).unwrap();
            let y_before = rng.vec(n_tokens * rows, -3.0, 3.0);
            let y = Tensor::from_f32(&gpu, "y", &[n_tokens, rows], &y_before).unwrap();
            let what = format!("matmul_tiled {kernel:?} Q4_K [{rows}, {cols}] × {n_tokens} ({device})");
            let dispatches = matmul_tiled_with(&gpu, &wt, &x, &y, epilogue, kernel, None).unwrap();
            let cpu_adapter = gpu.adapter().device_type == wgpu::DeviceType::Cpu;
            assert_eq!(dispatches.len() > 1, cpu_adapter, "{what}: {} dispatches", dispatches.len());
            let described: Vec<String> = dispatches.iter().map(Dispatch::describe).collect();
            assert!(described[0].contains("BIAS=true"), "{what}: {}", described[0]);
            assert!(
                described.iter().skip(1).all(|d| !d.contains("BIAS=true") && d.contains("ACCUMULATE=true")),
                "{what}"
            );
            let got = run(&gpu, &dispatches, &y);
            let (product, scale) = reference(&w, &x_data, n_tokens);
            let want: Vec<f64> = (0..product.len())
                .map(|i| product[i] + f64::from(bias_values[i % rows]) + f64::from(y_before[i]))
                .collect();
            let scales: Vec<f64> = (0..product.len())
                .map(|i| scale[i] + f64::from(bias_values[i % rows].abs()) + f64::from(y_before[i].abs()))
                .collect();
            check_product(&what, rows, &got, &want, &scales, tiled_tolerance(kernel.f16_tiles, DType::F32));
            cases += 1;
        }
    }
    println!("matmul_tiled over the longest rows: {cases} cases in {:.2?}", started.elapsed());
}

/// The GPU shape [`tiled_kernel`]'s rule picks for the projections of R1-Distill-Qwen-1.5B and -7B in 512-token
/// chunks, when every shape fits: at least [`TARGET_WORKGROUPS`] workgroups where a shape makes them, and otherwise
/// the shape that makes the most (the products of few rows).
#[test]
fn gpu_tile_shapes_fill_a_large_gpu_at_r1_shapes() {
    let n_tokens = 512;
    // (model, projection, rows): n_embd, kv, n_ff of 1.5B (1536, 256, 8960) and 7B (3584, 512, 18944).
    let projections = [
        ("1.5B", "q/o/down", 1536),
        ("1.5B", "k/v", 256),
        ("1.5B", "gate/up", 8960),
        ("1.5B", "lm_head", 151936),
        ("7B", "q/o/down", 3584),
        ("7B", "k/v", 512),
        ("7B", "gate/up", 18944),
    ];
    for (model, name, rows) in projections {
        let shape = webr1::gpu::ops::matmul_tiled::gpu_tile(rows, n_tokens, |_| true);
        let made = shape.workgroups(rows, n_tokens);
        let most = GPU_TILES.iter().map(|s| s.workgroups(rows, n_tokens)).max().unwrap();
        println!("R1-{model} {name} [{rows}] × {n_tokens} tokens: {shape:?}, {made} workgroups");
        assert!(made >= TARGET_WORKGROUPS || made == most, "{model} {name}: {made} workgroups of {shape:?}");
        // No shape with more reuse (a larger tile) would have made the target.
        let larger = GPU_TILES.iter().take_while(|s| **s != shape);
        assert!(larger.clone().all(|s| s.workgroups(rows, n_tokens) < TARGET_WORKGROUPS), "{model} {name}");
    }
    assert_ne!(CPU_TILE.invocations(), 0);
}

#[test]
fn matmul_picks_the_kernel_by_token_count() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(0x5EED_0103);
    let w = Weight::random(&mut rng, GgmlType::Q4_K, 5, 256);
    let wt = w.upload(&gpu);
    for (n_tokens, shader) in [(1, "matmul_vec"), (MAX_VEC_TOKENS, "matmul_vec"), (MAX_VEC_TOKENS + 1, "matmul_tiled")]
    {
        let x_data = rng.vec(n_tokens * 256, -1.0, 1.0);
        let x = Tensor::from_f32(&gpu, "x", &[n_tokens, 256], &x_data).unwrap();
        let y = Tensor::new(&gpu, "y", &[n_tokens, 5], DType::F32).unwrap();
        let dispatches = matmul(&gpu, &wt, &x, &y).unwrap();
        assert_eq!(dispatches.len(), 1);
        assert_eq!(dispatches[0].label(), format!("{shader}::{shader}"), "{n_tokens} tokens");
        let (want, scale) = reference(&w, &x_data, n_tokens);
        let what = format!("matmul of {n_tokens} tokens");
        check_product(&what, 5, &run(&gpu, &dispatches, &y), &want, &scale, tolerance(DType::F32));
    }
}

/// A weight split by rows under a tiny binding cap gives exactly the result of the unsplit weight.
#[test]
fn split_weights_give_the_same_products_as_whole_ones() {
    let Some(whole_gpu) = gpu() else { return };
    let Some(split_gpu) = gpu_with(GpuOptions { max_binding_bytes: Some(16 << 10), ..Default::default() }) else {
        return;
    };
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0104);
    let (rows, cols) = (300, 256);
    let mut cases = 0;
    for ty in GgmlType::SUPPORTED {
        let w = Weight::random(&mut rng, ty, rows, cols);
        let whole = w.upload(&whole_gpu);
        let split = w.upload(&split_gpu);
        assert_eq!(whole.parts().len(), 1);
        assert!(split.parts().len() >= 2, "{ty}: {} part(s)", split.parts().len());
        for (n_tokens, kernel) in [(1, matmul_vec as Kernel), (3, matmul_vec), (9, matmul_tiled)] {
            let x = rng.vec(n_tokens * cols, -1.0, 1.0);
            let mut results = Vec::new();
            for (gpu, wt) in [(&whole_gpu, &whole), (&split_gpu, &split)] {
                let xt = Tensor::from_f32(gpu, "x", &[n_tokens, cols], &x).unwrap();
                let y = Tensor::new(gpu, "y", &[n_tokens, rows], DType::F32).unwrap();
                let dispatches = kernel(gpu, wt, &xt, &y).unwrap();
                assert_eq!(dispatches.len(), wt.parts().len());
                results.push(run(gpu, &dispatches, &y));
            }
            let what = format!("{ty} [{rows}, {cols}] in {} parts × {n_tokens} tokens", split.parts().len());
            if let Some(i) = results[0].iter().zip(&results[1]).position(|(a, b)| a.to_bits() != b.to_bits()) {
                panic!("{what}: split differs from whole first at index {i}: {} vs {}", results[1][i], results[0][i]);
            }
            let (want, scale) = reference(&w, &x, n_tokens);
            check_product(&what, rows, &results[1], &want, &scale, tolerance(DType::F32));
            cases += 1;
        }
    }
    println!("split weights: {cases} cases in {:.2?}", started.elapsed());
}

/// The fused epilogue of both kernels: a bias, a residual add and a column offset into a wider y, on every device
/// variant; the columns outside `column .. column + rows` keep what they held.
#[test]
fn matmul_epilogues_add_bias_accumulate_and_offset_columns() {
    type IntoKernel = fn(&Gpu, &SplitWeight, &Tensor, &Tensor, Epilogue) -> webr1::Result<Vec<Dispatch>>;
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_010D);
    let mut cases = 0;
    let kernels: [(&str, IntoKernel, &[usize]); 2] =
        [("matmul_vec", matmul_vec_into, &[1, 3]), ("matmul_tiled", matmul_tiled_into, &[9])];
    for (device, gpu) in gpus() {
        for ty in [GgmlType::Q4_K, GgmlType::Q8_0] {
            let (rows, cols, column, extra) = (37, 256, 5, 3);
            let width = column + rows + extra;
            let w = Weight::random(&mut rng, ty, rows, cols);
            let wt = w.upload(&gpu);
            let bias_values = rng.vec(rows, -2.0, 2.0);
            let bias = Tensor::from_f32(&gpu, "bias", &[rows], &bias_values).unwrap();
            for dtype in dtypes(&gpu) {
                for (name, kernel, tokens) in kernels {
                    for &n_tokens in tokens {
                        for (with_bias, accumulate) in [(true, false), (false, true), (true, true)] {
                            let (x, x_seen) =
                                activation(&gpu, &[n_tokens, cols], dtype, &rng.vec(n_tokens * cols, -1.0, 1.0));
                            let (y, y_before) =
                                activation(&gpu, &[n_tokens, width], dtype, &rng.vec(n_tokens * width, -3.0, 3.0));
                            let epilogue = Epilogue { bias: with_bias.then_some(&bias), accumulate, column };
                            let what = format!(
                                "{name} {ty} [{rows}, {cols}] × {n_tokens} tokens, bias {with_bias}, accumulate \
                                 {accumulate}, column {column} of {width} ({device}: {})",
                                variant(&gpu, dtype)
                            );
                            let dispatches =
                                kernel(&gpu, &wt, &x, &y, epilogue).unwrap_or_else(|e| panic!("{what}: {e}"));
                            let got = run(&gpu, &dispatches, &y);
                            let (product, scale) = reference(&w, &x_seen, n_tokens);
                            let mut want = Vec::new();
                            let mut scales = Vec::new();
                            let mut inside = Vec::new();
                            for t in 0..n_tokens {
                                for c in 0..width {
                                    let before = f64::from(y_before[t * width + c]);
                                    if (column..column + rows).contains(&c) {
                                        let r = c - column;
                                        let mut v = product[t * rows + r];
                                        let mut sc = scale[t * rows + r];
                                        if with_bias {
                                            v += f64::from(bias_values[r]);
                                            sc += f64::from(bias_values[r].abs());
                                        }
                                        if accumulate {
                                            v += before;
                                            sc += before.abs();
                                        }
                                        want.push(v);
                                        scales.push(sc);
                                        inside.push(got[t * width + c]);
                                    } else {
                                        let kept = got[t * width + c];
                                        assert_eq!(
                                            kept.to_bits(),
                                            y_before[t * width + c].to_bits(),
                                            "{what}: column {c} of token {t} outside the product changed"
                                        );
                                    }
                                }
                            }
                            check_product(&what, rows, &inside, &want, &scales, tolerance(dtype));
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    println!("matmul epilogues: {cases} cases in {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// The embedding lookup

/// The ids of the lookup tests: first, last, repeated, and out of range (`rows` and `u32::MAX`).
fn lookup_ids(rows: usize) -> Vec<u32> {
    let r = rows as u32;
    vec![0, r - 1, r / 2, r, r / 2, u32::MAX, 1.min(r - 1), r + 7]
}

/// The rows `ids` select from `w`, zeros for out-of-range ids.
fn lookup_reference(w: &Weight, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| match w.values.chunks(w.cols).nth(id as usize) {
            Some(row) => row.to_vec(),
            None => vec![0.0; w.cols],
        })
        .collect()
}

/// Panics unless `got` is `want` up to `rel · max|want|` (a last-bit difference where a GPU fuses `d * q + m`) for
/// f32, or an f16 rounding; returns the largest difference relative to the largest value.
fn check_lookup(what: &str, cols: usize, got: &[f32], want: &[f32], dtype: DType) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}");
    let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let (atol, rtol) = match dtype {
        DType::F16 => (1e-3 * peak, 1e-3),
        _ => (2e-7 * peak, 0.0),
    };
    // NaN fails too.
    let bad = |(g, w): (&f32, &f32)| {
        let diff = (g - w).abs();
        diff.is_nan() || diff > atol + rtol * w.abs()
    };
    if let Some(i) = got.iter().zip(want).position(bad) {
        panic!(
            "{what}: first failing index {i} (token {}, column {}): got {}, want {}; {} of {} elements fail",
            i / cols,
            i % cols,
            got[i],
            want[i],
            got.iter().zip(want).filter(|p| bad(*p)).count(),
            got.len()
        );
    }
    got.iter().zip(want).map(|(g, w)| f64::from((g - w).abs() / peak)).fold(0.0, f64::max)
}

/// An output tensor pre-filled with a value that is in no row, so a row the kernel did not write is noticed.
fn stale_output(gpu: &Gpu, n: usize, cols: usize, dtype: DType) -> Tensor {
    activation(gpu, &[n, cols], dtype, &vec![12345.0; n * cols]).0
}

#[test]
fn get_rows_matches_the_cpu_dequantiser() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0105);
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut cases = 0;
    for (device, gpu) in gpus() {
        for ty in GgmlType::SUPPORTED {
            for &cols in cols_for(ty) {
                let rows = [17, 65][cases % 2];
                let w = Weight::random(&mut rng, ty, rows, cols);
                let wt = w.upload(&gpu);
                let ids = lookup_ids(rows);
                let idt = Tensor::from_u32(&gpu, "ids", &[ids.len()], &ids).unwrap();
                let want = lookup_reference(&w, &ids);
                for dtype in dtypes(&gpu) {
                    let out = stale_output(&gpu, ids.len(), cols, dtype);
                    let got = run(&gpu, &get_rows(&gpu, &wt, &idt, &out).unwrap(), &out);
                    let what = format!("get_rows {ty} [{rows}, {cols}] ({device}: {})", variant(&gpu, dtype));
                    let err = check_lookup(&what, cols, &got, &want, dtype);
                    let entry = worst.entry(format!("{ty:>5} {}", dtype.name())).or_insert(0.0);
                    *entry = entry.max(err);
                    cases += 1;
                }
            }
        }
    }
    println!("get_rows: largest |error| / max|row| per type and output dtype:");
    for (key, err) in &worst {
        println!("  {key}: {err:.2e}");
    }
    println!("get_rows: {cases} cases in {:.2?}", started.elapsed());
}

#[test]
fn get_rows_reads_the_ids_when_it_runs_and_handles_split_weights() {
    let Some(gpu) = gpu_with(GpuOptions { max_binding_bytes: Some(8 << 10), ..Default::default() }) else { return };
    let mut rng = Rng::new(0x5EED_0106);
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::F16, GgmlType::Q5_0] {
        let (rows, cols) = (100, 256);
        let w = Weight::random(&mut rng, ty, rows, cols);
        let wt = w.upload(&gpu);
        assert!(wt.parts().len() >= 2, "{ty}: {} part(s)", wt.parts().len());
        let ids = lookup_ids(rows);
        let idt = Tensor::from_u32(&gpu, "ids", &[ids.len()], &ids).unwrap();
        let out = stale_output(&gpu, ids.len(), cols, DType::F32);
        let dispatches = get_rows(&gpu, &wt, &idt, &out).unwrap();
        assert_eq!(dispatches.len(), wt.parts().len());
        let what = format!("get_rows {ty} [{rows}, {cols}] in {} parts", wt.parts().len());
        check_lookup(&what, cols, &run(&gpu, &dispatches, &out), &lookup_reference(&w, &ids), DType::F32);

        // The same dispatches, new ids written into the same tensor: the kernel reads them when it runs.
        let next: Vec<u32> = (0..ids.len() as u32).map(|i| (i * 13 + 5) % (rows as u32 + 3)).collect();
        gpu.write_buffer(idt.buffer(), 0, bytemuck::cast_slice(&next)).unwrap();
        let what = format!("{what}, replayed with new ids");
        check_lookup(&what, cols, &run(&gpu, &dispatches, &out), &lookup_reference(&w, &next), DType::F32);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Grids, arguments, timing

#[test]
fn grids_beyond_the_per_dimension_limit_are_folded() {
    let Some(gpu) = gpu() else { return };
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if max > 1 << 17 {
        eprintln!("SKIP: this device launches {max} workgroups per dimension; nothing to fold at a testable size");
        return;
    }
    let started = Instant::now();
    let mut rng = Rng::new(0x5EED_0107);
    // matmul_vec: up to 32 rows per workgroup (the software shape), so 32 · (max + 1) rows of one Q8_0 block.
    let rows = 32 * (max + 1) + 3;
    let w = Weight::random(&mut rng, GgmlType::Q8_0, rows, 32);
    let wt = w.upload(&gpu);
    let x_data = rng.vec(32, -1.0, 1.0);
    let x = Tensor::from_f32(&gpu, "x", &[1, 32], &x_data).unwrap();
    let y = Tensor::new(&gpu, "y", &[1, rows], DType::F32).unwrap();
    let dispatches = matmul_vec(&gpu, &wt, &x, &y).unwrap();
    assert!(dispatches[0].workgroups()[1] > 1, "{:?}", dispatches[0].workgroups());
    let (want, scale) = reference(&w, &x_data, 1);
    check_product("matmul_vec over a folded grid", rows, &run(&gpu, &dispatches, &y), &want, &scale, 1e-5);

    // get_rows: one workgroup per token.
    let n = max + 5;
    let small = Weight::random(&mut rng, GgmlType::Q4_0, 7, 32);
    let st = small.upload(&gpu);
    let ids: Vec<u32> = (0..n as u32).map(|i| i % 9).collect();
    let idt = Tensor::from_u32(&gpu, "ids", &[n], &ids).unwrap();
    let out = Tensor::new(&gpu, "out", &[n, 32], DType::F32).unwrap();
    let dispatches = get_rows(&gpu, &st, &idt, &out).unwrap();
    assert!(dispatches[0].workgroups()[1] > 1, "{:?}", dispatches[0].workgroups());
    let got = run(&gpu, &dispatches, &out);
    check_lookup("get_rows over a folded grid", 32, &got, &lookup_reference(&small, &ids), DType::F32);
    println!("folded grids: {:.2?}", started.elapsed());
}

#[test]
fn kernels_reject_bad_arguments() {
    let Some(gpu) = gpu_common::gpu_f32() else { return };
    let q4k = SplitWeight::new(&gpu, "w", 6, 256, DType::Ggml(GgmlType::Q4_K)).unwrap();
    let f32_tensor = |shape: &[usize]| Tensor::new(&gpu, "t", shape, DType::F32).unwrap();
    let (x, y) = (f32_tensor(&[2, 256]), f32_tensor(&[2, 6]));
    let err = |r: webr1::Result<Vec<Dispatch>>, code: ErrorCode, why: &str| {
        let e = r.err().unwrap_or_else(|| panic!("accepted: {why}"));
        assert_eq!(e.code, code, "{why}: {e}");
    };
    let usage = ErrorCode::Usage;
    assert!(matmul(&gpu, &q4k, &x, &y).is_ok());
    err(matmul(&gpu, &q4k, &f32_tensor(&[2, 255]), &y), usage, "x rows of the wrong length");
    err(matmul(&gpu, &q4k, &x, &f32_tensor(&[2, 5])), usage, "y narrower than the weight's rows");
    assert!(matmul(&gpu, &q4k, &x, &f32_tensor(&[2, 7])).is_ok(), "a wider y takes the product in its first columns");
    let past_the_end = Epilogue { column: 1, ..Epilogue::default() };
    err(matmul_into(&gpu, &q4k, &x, &y, past_the_end), usage, "a column offset past y's width");
    let short_bias = f32_tensor(&[5]);
    let with_short_bias = Epilogue { bias: Some(&short_bias), ..Epilogue::default() };
    err(matmul_into(&gpu, &q4k, &x, &y, with_short_bias), usage, "a bias of 5 for 6 rows");
    let u32_bias = Tensor::new(&gpu, "b", &[6], DType::U32).unwrap();
    err(matmul_into(&gpu, &q4k, &x, &y, Epilogue { bias: Some(&u32_bias), ..Epilogue::default() }), usage, "u32 bias");
    err(matmul(&gpu, &q4k, &x, &f32_tensor(&[3, 6])), usage, "y with another token count");
    err(matmul(&gpu, &q4k, &x, &x), usage, "y aliasing x");
    err(matmul_vec(&gpu, &q4k, &f32_tensor(&[9, 256]), &f32_tensor(&[9, 6])), usage, "9 tokens for matmul_vec");
    let tiled = |shape: TileShape, f16_tiles: bool, step: Option<&Tensor>| {
        let kernel = TiledKernel { shape, f16_tiles, double_buffer: false };
        matmul_tiled_with(&gpu, &q4k, &x, &y, Epilogue::default(), kernel, step)
    };
    let bad_shape = TileShape { thread_tokens: 3, ..GPU_TILES[0] };
    err(tiled(bad_shape, false, None), usage, "3 tokens per invocation");
    err(tiled(TileShape { k_slices: 16, ..GPU_TILES[3] }, false, None), usage, "16 k slices");
    err(tiled(GPU_TILES[1], true, None), usage, "f16 tiles without shader-f16");
    err(tiled(GPU_TILES[1], false, Some(&f32_tensor(&[4]))), usage, "an f32 step");
    assert!(tiled(GPU_TILES[3], false, Some(&Tensor::new(&gpu, "s", &[4], DType::U32).unwrap())).is_ok());
    let x16 = Tensor::from_f16(&gpu, "x16", &[2, 256], &to_f16(&[0.5; 512])).unwrap();
    err(matmul(&gpu, &q4k, &x16, &y), usage, "f16 x without shader-f16");
    let u32_weight = SplitWeight::new(&gpu, "w", 6, 256, DType::U32).unwrap();
    err(matmul(&gpu, &u32_weight, &x, &y), usage, "a u32 weight");
    let iq2 = SplitWeight::new(&gpu, "w", 6, 256, DType::Ggml(GgmlType::IQ2_XXS)).unwrap();
    err(matmul(&gpu, &iq2, &x, &y), ErrorCode::QuantUnsupportedType, "an IQ2_XXS weight");
    let odd = SplitWeight::new(&gpu, "w", 6, 6, DType::Ggml(GgmlType::F16)).unwrap();
    err(matmul(&gpu, &odd, &f32_tensor(&[2, 6]), &y), usage, "F16 rows of 6 elements");

    let ids = Tensor::from_u32(&gpu, "ids", &[2], &[0, 1]).unwrap();
    let out = f32_tensor(&[2, 256]);
    assert!(get_rows(&gpu, &q4k, &ids, &out).is_ok());
    err(get_rows(&gpu, &q4k, &f32_tensor(&[2]), &out), usage, "f32 ids");
    err(get_rows(&gpu, &q4k, &ids, &f32_tensor(&[3, 256])), usage, "out with another token count");
    err(get_rows(&gpu, &q4k, &ids, &f32_tensor(&[2, 128])), usage, "out of the wrong width");
    err(get_rows(&gpu, &q4k, &ids, &ids), usage, "out aliasing ids");
}

/// CPU time this process has used so far (user + system), natively on Linux: on a software GPU that is the work a
/// kernel costs, whatever else the machine is doing. `None` elsewhere.
fn process_cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// Runs `dispatches` a few times: the best wall time, and on a software GPU the CPU time per run.
fn time_runs(gpu: &Gpu, dispatches: &[Dispatch]) -> (std::time::Duration, String) {
    let reps = 5;
    let cpu_before = process_cpu_time();
    let mut best = std::time::Duration::MAX;
    for _ in 0..reps {
        let started = Instant::now();
        gpu.submit(dispatches);
        gpu.wait_idle().unwrap();
        best = best.min(started.elapsed());
    }
    let cpu = match (cpu_before, process_cpu_time()) {
        (Some(a), Some(b)) => format!(", {:.1?} CPU time per run", (b - a) / reps),
        _ => String::new(),
    };
    (best, cpu)
}

/// Not an assertion: how fast the products of one 896 × 4864 weight (Qwen2.5-0.5B's ffn_down) run here, for one
/// token (decode), 8 (the vector kernel's most) and 64 (prefill), as the best wall time of a few runs and, on a software GPU, the CPU time per run.
#[test]
fn timing() {
    let Some(gpu) = gpu() else { return };
    println!("on {}:", gpu.adapter());
    let mut rng = Rng::new(0x5EED_0108);
    let (rows, cols) = (896, 4864);
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
        let bytes = random_weight(&mut rng, ty, rows, cols);
        let w = SplitWeight::from_bytes(&gpu, "w", rows, cols, DType::Ggml(ty), &bytes).unwrap();
        let kernels = [
            (1, matmul_vec as Kernel, "matmul_vec"),
            (8, matmul_vec, "matmul_vec"),
            (64, matmul_tiled, "matmul_tiled"),
        ];
        for (n_tokens, kernel, name) in kernels {
            let x = Tensor::from_f32(&gpu, "x", &[n_tokens, cols], &rng.vec(n_tokens * cols, -1.0, 1.0)).unwrap();
            let y = Tensor::new(&gpu, "y", &[n_tokens, rows], DType::F32).unwrap();
            let compile = Instant::now();
            let dispatches = kernel(&gpu, &w, &x, &y).unwrap();
            run(&gpu, &dispatches, &y);
            let compile = compile.elapsed();
            let (best, cpu) = time_runs(&gpu, &dispatches);
            let gbps = bytes.len() as f64 / best.as_secs_f64() / 1e9;
            let gflops = 2.0 * (rows * cols * n_tokens) as f64 / best.as_secs_f64() / 1e9;
            println!(
                "  {name} {ty} [{rows}, {cols}] × {n_tokens}: best {best:.2?} ({gbps:.2} GB/s of weights, {gflops:.1} \
                 GFLOP/s){cpu}; first run with compilation {compile:.2?}"
            );
        }
    }
}
