//! The profile's measurements (`webr1::gpu::profile`, `Session::profile_decode`): waits, dispatches and submissions are
//! counted where they happen, the bytes bound to a dispatch follow the WGSL declarations and the op's own declarations,
//! timestamps measure something no longer than the wall time, and a decode profile of smol135 reads the bytes the GGUF
//! tensor table says a token needs.

mod common;
#[path = "common/gpu.rs"]
mod gpu_common;

use webr1::engine::{EngineOptions, Profile};
use webr1::gpu::ops;
use webr1::gpu::profile::{Access, Extent, StepShape};
use webr1::gpu::{DType, DispatchTimer, GpuOptions, SplitWeight, Tensor};
use webr1::quant::GgmlType;

#[test]
fn a_readback_is_one_wait_and_an_overlapped_wait_is_not_idle() {
    let Some(gpu) = gpu_common::gpu() else { return };
    let x = Tensor::from_f32(&gpu, "x", &[4, 64], &vec![1.0; 256]).unwrap();
    let w = Tensor::from_f32(&gpu, "w", &[64], &vec![1.0; 64]).unwrap();
    let y = Tensor::new(&gpu, "y", &[4, 64], DType::F32).unwrap();
    let norm = ops::rms_norm(&gpu, &x, &w, &y, 1e-6).unwrap();

    let (waits, idle, submits, dispatches) = (gpu.waits(), gpu.idle_waits(), gpu.submits(), gpu.dispatches_encoded());
    gpu.submit([&norm, &norm, &norm]);
    assert_eq!(gpu.dispatches_encoded() - dispatches, 3, "dispatches are counted where they are encoded");
    assert_eq!(gpu.submits() - submits, 1);
    assert_eq!((gpu.waits(), gpu.idle_waits()), (waits, idle), "submitting does not wait");

    let _ = pollster::block_on(y.read_f32(&gpu)).unwrap();
    assert_eq!(gpu.waits() - waits, 1, "one readback is one wait");
    assert_eq!(gpu.idle_waits() - idle, 1, "nothing was queued after the readback: the GPU is left idle");
    assert_eq!(gpu.submits() - submits, 2, "the readback's copy is a submission");

    // Waiting for a submission with another queued behind it leaves the GPU busy.
    let first = gpu.submit([&norm]);
    let _second = gpu.submit([&norm]);
    gpu.wait_for(&first).unwrap();
    assert_eq!(gpu.waits() - waits, 2);
    assert_eq!(gpu.idle_waits() - idle, 1, "an overlapped wait is not an idle one");
    gpu.wait_idle().unwrap();
    assert_eq!((gpu.waits() - waits, gpu.idle_waits() - idle), (3, 2));
}

#[test]
fn bound_bytes_follow_the_declarations() {
    let Some(gpu) = gpu_common::gpu_f32() else { return };
    let step = StepShape { n_past: 5, n_tokens: 2 };
    let x = Tensor::new(&gpu, "x", &[2, 64], DType::F32).unwrap(); // 512 bytes
    let w = Tensor::new(&gpu, "w", &[64], DType::F32).unwrap(); // 256 bytes
    let y = Tensor::new(&gpu, "y", &[2, 64], DType::F32).unwrap();
    // rms_norm: a uniform, x and w read (declared `read`), y written (declared `read_write`).
    let norm = ops::rms_norm(&gpu, &x, &w, &y, 1e-6).unwrap();
    let reads: Vec<u64> = norm.bound().iter().map(|b| b.bytes_read(step)).collect();
    let writes: Vec<u64> = norm.bound().iter().map(|b| b.bytes_written(step)).collect();
    assert_eq!(norm.bound().len(), 4);
    assert_eq!(&reads[1..], [512, 256, 0]);
    assert_eq!(&writes[1..], [0, 0, 512]);
    assert!(reads[0] >= 16 && writes[0] == 0, "the uniform is read: {reads:?}");
    assert_eq!(norm.op(), "rms_norm");

    // An in-place add reads and writes x.
    let add = ops::add(&gpu, &x, &y, &x).unwrap();
    let on_x = add.bound().iter().find(|b| b.buffer == *x.buffer()).unwrap();
    assert_eq!((on_x.bytes_read(step), on_x.bytes_written(step)), (512, 512));
    assert_eq!(add.op(), "elementwise::add");

    // The embedding lookup reads the step's rows of a Q8_0 table (34 bytes per 32 weights), not the table.
    let table = SplitWeight::new(&gpu, "embd", 100, 64, DType::Ggml(GgmlType::Q8_0)).unwrap();
    let ids = Tensor::new(&gpu, "ids", &[2], DType::U32).unwrap();
    let rows = ops::get_rows(&gpu, &table, &ids, &y).unwrap();
    let on_table = rows[0].bound().iter().find(|b| b.buffer == *table.parts()[0].tensor.buffer()).unwrap();
    assert_eq!(on_table.size, 100 * 68, "the whole table is bound");
    assert_eq!(on_table.bytes_read(step), 2 * 68, "two tokens, two rows read");
    assert_eq!(rows[0].op(), "get_rows Q8_0");

    // The KV store writes the step's rows of the cache and reads none of it.
    let cache = Tensor::new(&gpu, "cache", &[16, 64], DType::F32).unwrap();
    let step_t = Tensor::new(&gpu, "step", &[4], DType::U32).unwrap();
    let store = ops::kv_store(&gpu, &x, &cache, &step_t).unwrap();
    let on_cache = store.bound().iter().find(|b| b.buffer == *cache.buffer()).unwrap();
    assert_eq!((on_cache.bytes_read(step), on_cache.bytes_written(step)), (0, 2 * 256));
    assert_eq!(Extent::PerCachedRows { bytes: 256, rows: 1 }.bytes(step, 16 * 256), 7 * 256);
    assert_eq!(Access::READ.read, Extent::Whole);
}

#[test]
fn dispatch_timestamps_are_positive_and_within_the_wall_time() {
    let Some(gpu) = gpu_common::gpu() else { return };
    let x = Tensor::from_f32(&gpu, "x", &[64, 1024], &vec![0.5; 65536]).unwrap();
    let w = Tensor::from_f32(&gpu, "w", &[1024], &vec![1.0; 1024]).unwrap();
    let y = Tensor::new(&gpu, "y", &[64, 1024], DType::F32).unwrap();
    let norm = ops::rms_norm(&gpu, &x, &w, &y, 1e-6).unwrap();
    let list = vec![norm.clone(), norm.clone(), norm];
    let Some(mut timer) = DispatchTimer::new(&gpu, list.len()).unwrap() else {
        eprintln!("SKIP: this adapter has no timestamp-query ({})", gpu.adapter());
        return;
    };
    gpu.wait_idle().unwrap();
    let dispatches = gpu.dispatches_encoded();
    let start = std::time::Instant::now();
    timer.submit(&gpu, &list).unwrap();
    let ns = pollster::block_on(timer.read(&gpu)).unwrap();
    let wall = start.elapsed().as_secs_f64() * 1e9;
    assert_eq!(gpu.dispatches_encoded() - dispatches, 3, "timed dispatches are counted too");
    assert_eq!(ns.len(), 3);
    assert!(ns.iter().all(|&t| t > 0.0), "every dispatch took some time: {ns:?}");
    let sum: f64 = ns.iter().sum();
    assert!(sum <= wall, "GPU time {sum} ns within the wall time {wall} ns");
}

/// The bytes a decode token at each of `positions` needs, from the GGUF tensor table alone: every tensor, less the
/// embedding rows not looked up when the LM head is separate, plus the cache rows attended.
struct Needed {
    weights: u64,
    kv_per_token: f64,
    n_layer: usize,
}

fn needed(path: &std::path::Path, kv_elt: u64, steps: usize) -> Needed {
    let (gguf, _) = webr1::gguf::split::open_files(path).unwrap();
    let tensors: Vec<_> = gguf.tensors().map(|(_, t)| t.clone()).collect();
    let total: u64 = tensors.iter().map(|t| t.n_bytes).sum();
    let embd = tensors.iter().find(|t| t.name == "token_embd.weight").unwrap();
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let weights = if tied { total } else { total - embd.n_bytes + embd.n_bytes / embd.dims[1] };
    let n_layer = tensors.iter().filter(|t| t.name.ends_with(".attn_k.weight")).count();
    let kv_dim = tensors.iter().find(|t| t.name == "blk.0.attn_k.weight").unwrap().dims[1];
    let rows: u64 = (1..=steps as u64).sum(); // step p attends rows 0 ..= p
    let kv = 2 * n_layer as u64 * kv_dim * kv_elt * rows;
    Needed { weights, kv_per_token: kv as f64 / steps as f64, n_layer }
}

fn check_decode_profile(p: &Profile, want: &Needed, graph_dispatches: usize) {
    assert_eq!((p.phase, p.tokens, p.steps), ("decode", 3, 3), "{p:?}");
    assert_eq!(p.n_layer, want.n_layer);
    assert_eq!(p.dispatches_per_token, graph_dispatches as f64, "every dispatch of the decode list, once a token");
    let in_layers = p.dispatches_per_layer * p.n_layer as f64;
    assert!((in_layers + p.dispatches_outside_layers_per_token - p.dispatches_per_token).abs() < 1e-9);
    assert_eq!(p.dispatches_per_layer.fract(), 0.0, "every layer runs the same dispatches: {p:?}");
    assert!(p.dispatches_outside_layers_per_token >= 2.0, "embedding, LM head, sampling: {p:?}");
    // One read a token; each is waited for while the next step runs, except the last step's (nothing follows it).
    assert_eq!(p.waits_per_token, 1.0, "one readback a token");
    assert_eq!(p.idle_waits_per_token, 1.0 / p.tokens as f64, "only the last read leaves the GPU idle: {p:?}");
    assert_eq!(p.submits_per_token, 1.0, "one command buffer a step, the token's copy in it");
    assert_eq!(p.weight_bytes, want.weights, "the weights a token needs, against the GGUF tensor table");
    let w = p.weight_bytes_read_per_token / want.weights as f64;
    assert!((0.999..1.001).contains(&w), "weights read {} of {} needed", p.weight_bytes_read_per_token, want.weights);
    assert_eq!(p.kv_bytes_read_per_token, want.kv_per_token, "the cache rows attended");
    assert_eq!(p.kv_bytes_needed_per_token, want.kv_per_token);
    let all = p.bytes_read_per_token / (want.weights as f64 + want.kv_per_token);
    assert!((1.0..1.05).contains(&all), "bytes read per token within 5 % of what a token needs: {all}");
    let ops_read: f64 = p.ops.iter().map(|o| o.bytes_read_per_token).sum();
    assert!((ops_read - p.bytes_read_per_token).abs() < 1.0, "the op rows add up: {ops_read}");
    let calls: f64 = p.ops.iter().map(|o| o.calls_per_token).sum();
    assert_eq!(calls, p.dispatches_per_token);
    assert!(p.ops.iter().any(|o| o.op.starts_with("matmul_vec ") && o.class == "gemm"), "{:?}", p.ops);
    match p.timing {
        "timestamp-query" => {
            let gpu = p.gpu_ms_per_token.unwrap();
            let wall = p.timed_wall_ms_per_token.unwrap();
            assert!(gpu > 0.0 && gpu <= wall, "GPU time {gpu} ms within the wall time {wall} ms of the timed run");
            let ops_gpu: f64 = p.ops.iter().map(|o| o.gpu_ms_per_token.unwrap()).sum();
            assert!((ops_gpu - gpu).abs() < 1e-6 * gpu, "{ops_gpu} {gpu}");
            let share: f64 = p.ops.iter().map(|o| o.share.unwrap()).sum();
            assert!((share - 1.0).abs() < 1e-9);
        }
        other => {
            assert_eq!(other, "none");
            assert!(p.gpu_ms_per_token.is_none() && p.ops.iter().all(|o| o.gpu_ms_per_token.is_none()));
        }
    }
    assert!(p.wall_ms_per_token > 0.0 && p.tokens_per_second > 0.0);
}

#[test]
fn smol135_decode_profile_reads_what_the_gguf_says_a_token_needs() {
    for force_f32 in [true, false] {
        let options = EngineOptions {
            gpu: GpuOptions { force_f32, ..GpuOptions::default() },
            context_length: Some(64),
            ..EngineOptions::default()
        };
        let Some(mut engine) = pollster::block_on(common::engine("smol135", options)) else { return };
        let path = common::model("smol135").unwrap();
        let kv_elt = if engine.gpu().features().shader_f16 { 2 } else { 4 };
        let want = needed(&path, kv_elt, 3);
        let session = engine.session();
        let graph_dispatches = session.decode_dispatches();
        let p = pollster::block_on(session.profile_decode(1, 3, true)).unwrap();
        eprintln!(
            "smol135 (f32 forced: {force_f32}): {} dispatches, {:.1} per layer, {:.2} MB read per token, timing {}, \
             GPU {:?} ms, wall {:.1} ms per token",
            p.dispatches_per_token,
            p.dispatches_per_layer,
            p.bytes_read_per_token / 1e6,
            p.timing,
            p.gpu_ms_per_token,
            p.wall_ms_per_token
        );
        check_decode_profile(&p, &want, graph_dispatches);
        assert_eq!(session.cache.len(), 3, "the profiled steps' tokens are in the cache");
    }
}
