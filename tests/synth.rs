//! `webr1 synth`: the tensor table against the real R1-Distill-Qwen-7B table, the parameter counts and type mixes of
//! all six shapes, the errors for bad input, and the values of the random blocks as the CPU reference dequantiser
//! reads them. The forward pass over synthetic weights is in `synth_gpu.rs`.

mod common;

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use webr1::gguf::{Gguf, Value};
use webr1::quant::{dequantize, GgmlType};
use webr1::synth::table::tensor_table;
use webr1::synth::{Role, SynthModel, SynthQuant, SynthShape, Vocabulary};

fn webr1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webr1")).args(args).output().expect("webr1 runs")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webr1-synth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes `webr1 synth NAME --header-only` with `extra` arguments and reads the header back.
fn synth_header(name: &str, extra: &[&str]) -> Gguf {
    let path = temp(&format!("{name}.gguf"));
    let p = path.to_str().unwrap();
    let mut args = vec!["synth", name, "-o", p, "--header-only"];
    args.extend(extra);
    let out = webr1(&args);
    assert!(out.status.success(), "synth {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    let gguf = Gguf::read_file(&path).expect("the header parses");
    std::fs::remove_file(&path).unwrap();
    gguf
}

#[test]
fn r1_qwen_7b_has_the_real_tensor_table() {
    let real: Json =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("r1-distill-qwen-7b.tensors.json")).unwrap())
            .unwrap();
    let real = real["tensors"].as_array().unwrap();
    let synth = synth_header("r1-qwen-7b", &[]);
    assert_eq!(synth.tensors.len(), real.len(), "tensor count");
    for (i, (ours, theirs)) in synth.tensors.iter().zip(real).enumerate() {
        let dims: Vec<u64> = theirs["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let want =
            (theirs["name"].as_str().unwrap(), dims, theirs["type"].as_str().unwrap(), theirs["offset"].as_u64());
        assert_eq!((ours.name.as_str(), ours.dims.clone(), ours.ty.name(), Some(ours.offset)), want, "tensor {i}");
    }
}

#[test]
fn r1_qwen_7b_has_the_real_hyper_parameters_and_vocabulary() {
    let real = Gguf::read_file(common::fixture("r1-distill-qwen-7b.header.gguf")).unwrap();
    let synth = synth_header("r1-qwen-7b", &[]);
    for (key, value) in real.metadata.iter() {
        if key.starts_with("qwen2.") || key.starts_with("tokenizer.") || key == "general.file_type" {
            assert_eq!(synth.metadata.get(key), Some(value), "{key}");
        }
    }
    assert_eq!(synth.metadata.get_str("general.architecture").unwrap(), Some("qwen2"));
}

/// The parameter counts published for the models these shapes copy (untied output in every one).
#[test]
fn every_shape_has_its_models_parameter_count() {
    let published: &[(&str, u64)] = &[
        // Qwen2.5-Math-1.5B: 1,543,714,304 with a tied embedding, plus its own 151936 × 1536 output.
        ("r1-qwen-1.5b", 1_543_714_304 + 151_936 * 1536),
        ("r1-qwen-7b", 7_615_616_512),
        ("r1-qwen-14b", 14_770_033_664),
        ("r1-qwen-32b", 32_763_876_352),
        // Llama-3.1-8B and -70B, plus the 64 RoPE factors of rope_freqs.weight.
        ("r1-llama-8b", 8_030_261_248 + 64),
        ("r1-llama-70b", 70_553_706_496 + 64),
    ];
    assert_eq!(SynthShape::all().len(), published.len());
    for &(name, want) in published {
        let table = tensor_table(SynthShape::named(name).unwrap(), SynthQuant::Q4_K_M);
        let got: u64 = table.iter().map(|t| t.dims.iter().product::<u64>()).sum();
        assert_eq!(got, want, "{name}");
    }
}

fn type_counts(name: &str, quant: SynthQuant) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for t in tensor_table(SynthShape::named(name).unwrap(), quant) {
        *counts.entry(t.ty.name()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn llama_shapes_have_llama_tables() {
    // 8B, 32 layers: Q6_K for output and for attn_v / ffn_down in layers 0-3, 6, 9, ..., 27, 28-31 (16 layers).
    // Q4_K: the embedding, q/k/output/gate/up everywhere, attn_v and ffn_down in the other 16 layers.
    let want8 = BTreeMap::from([("F32", 2 + 64), ("Q4_K", 1 + 32 * 5 + 16 * 2), ("Q6_K", 1 + 16 * 2)]);
    assert_eq!(type_counts("r1-llama-8b", SynthQuant::Q4_K_M), want8);
    // 70B, 80 layers: 40 layers get more bits; the other 40 attn_v are Q5_K.
    let want70 = BTreeMap::from([("F32", 2 + 160), ("Q4_K", 1 + 80 * 5 + 40), ("Q5_K", 40), ("Q6_K", 1 + 40 * 2)]);
    assert_eq!(type_counts("r1-llama-70b", SynthQuant::Q4_K_M), want70);

    let table = tensor_table(SynthShape::named("r1-llama-8b").unwrap(), SynthQuant::Q4_K_M);
    assert!(!table.iter().any(|t| t.name.ends_with(".bias")), "llama has no QKV bias");
    let Some(Role::RopeFactors(f)) = table.iter().find(|t| t.name == "rope_freqs.weight").map(|t| t.role.clone())
    else {
        panic!("no rope_freqs.weight")
    };
    // Llama 3.1: wavelengths under 8192/4 keep their frequency, those over 8192 are divided by 8, a blend between.
    assert_eq!(f.len(), 64);
    assert_eq!((f[0], f[63]), (1.0, 8.0));
    assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
    assert!(f.iter().any(|&x| x > 1.0 && x < 8.0), "a blended band: {f:?}");
}

#[test]
fn other_quantisations_follow_llama_cpp() {
    let q8 = type_counts("r1-qwen-1.5b", SynthQuant::Q8_0);
    assert_eq!(q8, BTreeMap::from([("F32", 141), ("Q8_0", 198)]));
    let q4 = type_counts("r1-qwen-1.5b", SynthQuant::Q4_0);
    assert_eq!(q4, BTreeMap::from([("F32", 141), ("Q4_0", 197), ("Q6_K", 1)]));
    let f16 = type_counts("r1-qwen-1.5b", SynthQuant::F16);
    assert_eq!(f16, BTreeMap::from([("F16", 198), ("F32", 141)]));
}

#[test]
fn llama_shape_with_the_llama_vocabulary() {
    let Some(vocab) = common::vocab_suite_file("ggml-vocab-llama-bpe.gguf") else { return };
    let synth = synth_header("r1-llama-8b", &["--vocab", vocab.to_str().unwrap()]);
    let config = webr1::config::ModelConfig::new(&synth.metadata, &synth.tensors).unwrap();
    assert_eq!((config.n_vocab, config.n_layer, config.n_head_kv, config.n_ff), (128256, 32, 8, 14336));
    assert_eq!(config.rope_scaling, webr1::config::RopeScaling::FreqFactors);
    assert!(!config.tied_embeddings && !config.qkv_bias);
    let tokenizer = webr1::tokenizer::Tokenizer::from_metadata(&synth.metadata).unwrap();
    assert_eq!((tokenizer.n_vocab(), tokenizer.bos), (128256, Some(128000)));
    assert_eq!(synth.metadata.get_str("tokenizer.ggml.pre").unwrap(), Some("llama-bpe"));
    assert!(synth.metadata.get_str("tokenizer.chat_template").unwrap().is_some_and(|t| t.contains("<｜Assistant｜>")));
}

/// Runs `webr1 synth ARGS`, which must fail with exit code 1 and the error code `code`.
fn fails_with(args: &[&str], code: &str) {
    let out = webr1(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.trim_end().ends_with(&format!("[{code}]")), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
}

#[test]
fn bad_input_is_a_coded_error() {
    let path = temp("bad.gguf");
    let p = path.to_str().unwrap();
    fails_with(&["synth", "r1-qwen-3b", "-o", p], "usage");
    fails_with(&["synth", "r1-qwen-7b", "-o", p, "--quant", "Q3_K_S"], "usage");
    assert!(!path.exists(), "nothing is written for bad input");
    fails_with(&["synth", "r1-qwen-1.5b", "-o", "/nonexistent-dir/x.gguf", "--header-only"], "io.write");
    fails_with(&["synth", "r1-llama-8b", "-o", p, "--header-only"], "synth.vocab");
    // The Qwen vocabulary has 152064 tokens, and llama's 128256 rows would cut real ones.
    let qwen = common::fixture("r1-distill-qwen-7b.header.gguf");
    fails_with(&["synth", "r1-llama-8b", "-o", p, "--vocab", qwen.to_str().unwrap()], "synth.vocab");
    fails_with(&["synth", "r1-qwen-7b", "-o", p, "--vocab", "/nonexistent.gguf"], "io.not_found");
    fails_with(&["bench", "--shape", "r1-qwen-3b"], "usage");
    fails_with(&["bench", "--shape", "r1-llama-8b"], "synth.vocab");
    fails_with(&["bench", "--shape", "r1-qwen-7b", "--quant", "IQ2_XS"], "usage");
    let help = webr1(&["synth", "--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--header-only"));
}

#[test]
fn the_quantisation_name_is_case_blind() {
    let synth = synth_header("r1-qwen-1.5b", &["--quant", "q8_0"]);
    assert_eq!(synth.metadata.get_uint("general.file_type").unwrap(), Some(7));
    assert!(synth.tensors.iter().filter(|t| t.dims.len() == 2).all(|t| t.ty == GgmlType::Q8_0));
}

/// A small shape with every kind of tensor: QKV bias (qwen2), Q4_K_M's Q4_K and Q6_K, 8 layers.
fn small_shape() -> SynthShape {
    SynthShape {
        name: "small",
        n_embd: 512,
        n_layer: 8,
        n_head: 8,
        n_head_kv: 2,
        n_ff: 1536,
        n_vocab: 4096,
        ..SynthShape::named("r1-qwen-1.5b").unwrap().clone()
    }
}

/// A vocabulary of `n` padding tokens (enough for the header; the CPU tests need no tokenizer).
fn pad_vocab() -> Vocabulary {
    let tokens = webr1::gguf::Array::String(vec![]);
    Vocabulary { pairs: vec![("tokenizer.ggml.tokens".into(), Value::Array(tokens))], source: "test".into() }
}

/// The dequantised values of tensor `i` of `model`, chunk by chunk.
fn values(model: &SynthModel, i: usize) -> Vec<f32> {
    let t = &model.tensors[i];
    let mut out = Vec::new();
    for chunk in model.chunks().filter(|c| c.tensor == i) {
        let mut bytes = vec![0u8; chunk.len as usize];
        model.fill(&chunk, &mut bytes);
        let n = (chunk.len / t.ty.type_size() * t.ty.block_size()) as usize;
        let mut v = vec![0f32; n];
        dequantize(t.ty, &bytes, &mut v).unwrap();
        out.extend(v);
    }
    out
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn random_blocks_have_the_deviation_asked_for() {
    for quant in SynthQuant::ALL {
        let model = SynthModel::new(&small_shape(), quant, 7, pad_vocab()).unwrap();
        let mut types = std::collections::BTreeSet::new();
        for (i, t) in model.tensors.iter().enumerate() {
            let v = values(&model, i);
            assert_eq!(v.len() as u64, t.dims.iter().product::<u64>(), "{}", t.name);
            assert!(v.iter().all(|x| x.is_finite()), "{} {}", quant.name(), t.name);
            let want = match &t.role {
                Role::Norm => {
                    assert!(v.iter().all(|&x| x == 1.0), "{}", t.name);
                    continue;
                }
                Role::RopeFactors(_) => continue,
                Role::LmHead { std } => {
                    lm_head_rows(&v, t.dims[0] as usize, *std as f64, quant);
                    continue;
                }
                Role::Bias { std } | Role::Matrix { std } => *std as f64,
            };
            let (mean, std) = mean_std(&v);
            types.insert(t.ty);
            let what = format!("{} {} ({}): mean {mean:e}, std {std:e}, want {want:e}", quant.name(), t.name, t.ty);
            // A few percent, more for the short bias vectors (the spread of a sample's deviation).
            assert!((std / want - 1.0).abs() < 0.03 + 2.0 / (v.len() as f64).sqrt(), "{what}");
            assert!(mean.abs() < 0.02 * want + 4.0 * want / (v.len() as f64).sqrt(), "{what}");
        }
        eprintln!("{}: {types:?}", quant.name());
    }
}

/// The LM head: about one row in 256 has three times the deviation of the others.
fn lm_head_rows(v: &[f32], cols: usize, want: f64, quant: SynthQuant) {
    let (mut loud, mut quiet) = (Vec::new(), Vec::new());
    for row in v.chunks(cols) {
        let (_, std) = mean_std(row);
        if std > 2.0 * want {
            loud.extend_from_slice(row);
        } else {
            quiet.extend_from_slice(row);
        }
    }
    let rows = v.len() / cols;
    let n_loud = loud.len() / cols;
    let what = format!("{}: {n_loud} loud rows of {rows}", quant.name());
    assert!(n_loud >= rows / 256 / 3 && n_loud <= rows / 256 * 3, "{what}");
    let (quiet_std, loud_std) = (mean_std(&quiet).1 / want, mean_std(&loud).1 / want);
    assert!((quiet_std - 1.0).abs() < 0.03 && (loud_std / 3.0 - 1.0).abs() < 0.05, "{what}: {quiet_std}, {loud_std}");
}

#[test]
fn the_bytes_depend_on_the_seed_alone() {
    let a = SynthModel::new(&small_shape(), SynthQuant::Q4_K_M, 1, pad_vocab()).unwrap();
    let b = SynthModel::new(&small_shape(), SynthQuant::Q4_K_M, 1, pad_vocab()).unwrap();
    let c = SynthModel::new(&small_shape(), SynthQuant::Q4_K_M, 2, pad_vocab()).unwrap();
    let bytes = |m: &SynthModel| {
        let mut all = Vec::new();
        for chunk in m.chunks() {
            let mut v = vec![0u8; chunk.len as usize];
            m.fill(&chunk, &mut v);
            all.push(v);
        }
        all
    };
    let (ba, bc) = (bytes(&a), bytes(&c));
    assert_eq!(ba, bytes(&b));
    let matrices = a.tensors.iter().filter(|t| matches!(t.role, Role::Matrix { .. })).count();
    let differ = ba.iter().zip(&bc).filter(|(x, y)| x != y).count();
    assert!(differ >= matrices, "another seed changes every matrix: {differ} chunks differ");
}

#[test]
fn the_file_holds_the_header_then_every_chunk_whatever_the_threads() {
    let model = SynthModel::new(&small_shape(), SynthQuant::Q4_K_M, 3, pad_vocab()).unwrap();
    let read = |threads: usize| {
        let path = temp(&format!("threads-{threads}.gguf"));
        webr1::synth::write_file(&model, &path, false, threads, &|_, _| {}).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    };
    let one = read(1);
    assert_eq!(one.len() as u64, model.file_len());
    assert_eq!(&one[..model.header().len()], model.header());
    for chunk in model.chunks() {
        let mut want = vec![0u8; chunk.len as usize];
        model.fill(&chunk, &mut want);
        assert!(one[chunk.offset as usize..][..want.len()] == want[..], "chunk {chunk:?}");
    }
    assert!(one == read(4), "four threads write the same file as one");
    let gguf = Gguf::from_bytes(&one).unwrap();
    assert_eq!(gguf.tensors.len(), model.tensors.len());
}

#[test]
fn header_only_files_parse_and_take_no_data() {
    let path = temp("header-only.gguf");
    let model = SynthModel::new(&small_shape(), SynthQuant::Q4_K_M, 0, pad_vocab()).unwrap();
    webr1::synth::write_file(&model, Path::new(&path), true, 2, &|_, _| {}).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), model.file_len());
    let gguf = Gguf::read_file(&path).unwrap();
    assert_eq!(gguf.data_offset, model.header().len() as u64);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn q5_k_blocks_have_the_deviation_asked_for() {
    // Q5_K appears only in the 70B table (attn_v), too big to dequantise here: one 4 MiB chunk of such a tensor.
    let t = webr1::synth::SynthTensor {
        name: "blk.1.attn_v.weight".into(),
        dims: vec![8192, 1024],
        ty: GgmlType::Q5_K,
        role: Role::Matrix { std: 0.011 },
    };
    let len = webr1::synth::fill::chunk_bytes(t.ty) as usize;
    let mut bytes = vec![0u8; len];
    webr1::synth::fill::fill_chunk(&t, 5, 9, 0, &mut bytes);
    let mut v = vec![0f32; len / 176 * 256];
    dequantize(t.ty, &bytes, &mut v).unwrap();
    let (mean, std) = mean_std(&v);
    assert!((std / 0.011 - 1.0).abs() < 0.03 && mean.abs() < 0.0005, "mean {mean:e}, std {std:e}");
}
