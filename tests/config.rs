//! `ModelConfig` from real headers (the test models, the R1-Distill-Qwen-7B header) and from a Llama-3.1-8B-shaped
//! header built here; bad metadata gives errors that name the key.

mod common;

use webr1::config::{ModelConfig, RopeScaling, RopeStyle};
use webr1::gguf::writer::GgufWriter;
use webr1::gguf::{Array, Gguf, GgufParser, TensorInfo, Value};
use webr1::quant::GgmlType;

/// The hyper-parameters as one line, so a test states them all at once.
fn shape(c: &ModelConfig) -> String {
    format!(
        "{:?} vocab {} embd {} layers {} heads {}/{} head_dim {} ff {} ctx {} eps {:e} theta {} bias {} tied {}",
        c.arch,
        c.n_vocab,
        c.n_embd,
        c.n_layer,
        c.n_head,
        c.n_head_kv,
        c.head_dim,
        c.n_ff,
        c.context_length,
        c.rms_norm_eps,
        c.rope_theta,
        c.qkv_bias,
        c.tied_embeddings
    )
}

fn model_config(name: &str) -> Option<ModelConfig> {
    let path = common::model(name)?;
    let gguf = Gguf::read_file(path).expect("test model parses");
    Some(ModelConfig::try_from(&gguf).expect("config"))
}

#[test]
fn smol135_config() {
    let Some(c) = model_config("smol135") else { return };
    assert_eq!(shape(&c), "Llama vocab 49152 embd 576 layers 30 heads 9/3 head_dim 64 ff 1536 ctx 8192 eps 1e-5 theta 100000 bias false tied true");
    assert_eq!((c.rope_style, c.rope_scaling.clone(), c.gqa_group()), (RopeStyle::Normal, RopeScaling::None, 3));
    assert_eq!(c.tensor_types["blk.0.attn_q.weight"], GgmlType::Q4_1);
    assert_eq!(c.tensor_types["token_embd.weight"], GgmlType::Q8_0);
}

#[test]
fn qwen05_config() {
    let Some(c) = model_config("qwen05") else { return };
    assert_eq!(shape(&c), "Qwen2 vocab 151936 embd 896 layers 24 heads 14/2 head_dim 64 ff 4864 ctx 32768 eps 1e-6 theta 1000000 bias true tied false");
    assert_eq!(c.rope_style, RopeStyle::Neox);
}

#[test]
fn qwen15_config() {
    let Some(c) = model_config("qwen15") else { return };
    assert_eq!(shape(&c), "Qwen2 vocab 151936 embd 1536 layers 28 heads 12/2 head_dim 128 ff 8960 ctx 32768 eps 1e-6 theta 1000000 bias true tied false");
}

/// The real R1-Distill-Qwen-7B header with its tensor table from `r1-distill-qwen-7b.tensors.json`.
#[test]
fn r1_distill_qwen_7b_config() {
    let gguf = Gguf::read_file(common::fixture("r1-distill-qwen-7b.header.gguf")).expect("R1 header parses");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("r1-distill-qwen-7b.tensors.json")).unwrap())
            .unwrap();
    let tensors: Vec<TensorInfo> = table["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let dims: Vec<u64> = t["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
            let ty = ggml_type(t["type"].as_str().unwrap());
            let n_bytes = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
            TensorInfo {
                name: t["name"].as_str().unwrap().into(),
                dims,
                ty,
                offset: t["offset"].as_u64().unwrap(),
                n_bytes,
            }
        })
        .collect();
    assert_eq!(tensors.len(), 339);
    let c = ModelConfig::new(&gguf.metadata, &tensors).expect("R1 7B config");
    assert_eq!(shape(&c), "Qwen2 vocab 152064 embd 3584 layers 28 heads 28/4 head_dim 128 ff 18944 ctx 131072 eps 1e-6 theta 10000 bias true tied false");
    assert_eq!((c.q_dim(), c.kv_dim(), c.gqa_group()), (3584, 512, 7));
    assert_eq!(c.tensor_types["token_embd.weight"], GgmlType::Q4_K);
    assert_eq!(c.tensor_types["output.weight"], GgmlType::Q6_K);
    let params = c.n_params(&tensors);
    assert!((7_600_000_000..7_700_000_000).contains(&params), "R1-Distill-Qwen-7B has ~7.62B weights, got {params}");
}

fn ggml_type(name: &str) -> GgmlType {
    (0..40).filter_map(GgmlType::from_id).find(|t| t.name() == name).unwrap_or_else(|| panic!("type {name}"))
}

/// A header shaped like DeepSeek-R1-Distill-Llama-8B (Llama 3.1 8B): GQA 32/8, rope theta 500000 and the Llama-3.1
/// frequency factors as a `rope_freqs.weight` tensor, untied output.
fn llama8b_writer(skip_key: Option<&str>, arch: &str) -> GgufWriter {
    let mut w = GgufWriter::new();
    let keys: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String("DeepSeek R1 Distill Llama 8B".into())),
        (format!("{arch}.block_count"), Value::U32(32)),
        (format!("{arch}.context_length"), Value::U32(131072)),
        (format!("{arch}.embedding_length"), Value::U32(4096)),
        (format!("{arch}.feed_forward_length"), Value::U32(14336)),
        (format!("{arch}.attention.head_count"), Value::U32(32)),
        (format!("{arch}.attention.head_count_kv"), Value::U32(8)),
        (format!("{arch}.rope.freq_base"), Value::F32(500_000.0)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (format!("{arch}.rope.dimension_count"), Value::U32(128)),
        (format!("{arch}.vocab_size"), Value::U32(128256)),
        ("tokenizer.ggml.pre".into(), Value::String("llama-bpe".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(Array::String(vec!["a".into(), "b".into()]))),
    ];
    for (k, v) in keys {
        if Some(k.as_str()) != skip_key {
            w.kv(&k, v);
        }
    }
    let (e, ff, kv, v) = (4096, 14336, 1024, 128256);
    w.tensor("token_embd.weight", &[e, v], GgmlType::Q4_K, None).unwrap();
    w.tensor("output.weight", &[e, v], GgmlType::Q6_K, None).unwrap();
    w.tensor("output_norm.weight", &[e], GgmlType::F32, None).unwrap();
    w.tensor("rope_freqs.weight", &[64], GgmlType::F32, None).unwrap();
    for i in 0..32 {
        for (name, dims, ty) in [
            ("attn_norm.weight", vec![e], GgmlType::F32),
            ("attn_q.weight", vec![e, e], GgmlType::Q4_K),
            ("attn_k.weight", vec![e, kv], GgmlType::Q4_K),
            ("attn_v.weight", vec![e, kv], GgmlType::Q6_K),
            ("attn_output.weight", vec![e, e], GgmlType::Q4_K),
            ("ffn_norm.weight", vec![e], GgmlType::F32),
            ("ffn_gate.weight", vec![e, ff], GgmlType::Q4_K),
            ("ffn_up.weight", vec![e, ff], GgmlType::Q4_K),
            ("ffn_down.weight", vec![ff, e], GgmlType::Q6_K),
        ] {
            w.tensor(&format!("blk.{i}.{name}"), &dims, ty, None).unwrap();
        }
    }
    w
}

/// Parses a header-only byte stream (the data section is not there: the parser returns the header without it).
fn parse_header(w: &GgufWriter) -> Gguf {
    let mut parser = GgufParser::new();
    parser.push(&w.header_bytes()).expect("header parses").expect("header complete")
}

#[test]
fn llama_3_1_8b_shaped_config() {
    let gguf = parse_header(&llama8b_writer(None, "llama"));
    let c = ModelConfig::try_from(&gguf).expect("8B config");
    assert_eq!(shape(&c), "Llama vocab 128256 embd 4096 layers 32 heads 32/8 head_dim 128 ff 14336 ctx 131072 eps 1e-5 theta 500000 bias false tied false");
    assert_eq!((c.rope_style, c.rope_scaling.clone(), c.gqa_group()), (RopeStyle::Normal, RopeScaling::FreqFactors, 4));
    let params = c.n_params(&gguf.tensors);
    assert!((8_000_000_000..8_100_000_000).contains(&params), "Llama 3.1 8B has ~8.03B weights, got {params}");
    // Q4_K with Q6_K for output, attn_v and ffn_down: about 5.2 GB of tensor data (a real Q4_K_M, with Q6_K in only
    // half the ffn_down/attn_v tensors, is 4.9 GB).
    let bytes = gguf.data_len();
    assert!((5_100_000_000..5_250_000_000).contains(&bytes), "{bytes} bytes");
}

#[test]
fn config_errors_name_the_problem() {
    let e = ModelConfig::try_from(&parse_header(&llama8b_writer(None, "mamba"))).unwrap_err();
    assert_eq!(e.code(), "config.unsupported_architecture");
    assert!(e.message.contains("mamba"), "{e}");

    for key in ["llama.feed_forward_length", "llama.attention.layer_norm_rms_epsilon", "general.architecture"] {
        let e = ModelConfig::try_from(&parse_header(&llama8b_writer(Some(key), "llama"))).unwrap_err();
        assert_eq!(e.code(), "gguf.missing_key", "{key}: {e}");
        assert!(e.message.contains(key), "the error names {key}: {e}");
    }

    // The FFN tensors are 14336 wide but the metadata says 11008: a shape that disagrees names the tensor.
    let mut w = llama8b_writer(Some("llama.feed_forward_length"), "llama");
    w.kv("llama.feed_forward_length", Value::U32(11008));
    let e = ModelConfig::try_from(&parse_header(&w)).unwrap_err();
    assert_eq!(e.code(), "config.bad_value", "{e}");
    assert!(e.message.contains("blk.0.ffn_gate.weight"), "{e}");

    let mut w = llama8b_writer(Some("llama.attention.head_count_kv"), "llama");
    w.kv("llama.attention.head_count_kv", Value::U32(5));
    assert_eq!(ModelConfig::try_from(&parse_header(&w)).unwrap_err().code(), "config.bad_value");

    let mut w = llama8b_writer(Some("llama.block_count"), "llama");
    w.kv("llama.block_count", Value::String("32".into()));
    assert_eq!(ModelConfig::try_from(&parse_header(&w)).unwrap_err().code(), "gguf.wrong_type");
}
