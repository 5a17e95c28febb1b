//! The GGUF reader (`webr1::gguf`) against real files, against a table of malformed headers, and against itself:
//!
//! - real headers (the R1-Distill-Qwen-7B header fixture and the test models) parse to what ggml's Python reader
//!   (gguf-py's `GGUFReader`, run once by hand on the same files) reads from them, whole and in chunks of any size;
//! - a table of malformed headers, each built here from a small valid one, with the exact error code each must give,
//!   read whole and chunked (with the file length known and unknown);
//! - `push` returns a header as soon as its last byte is in, and `from_bytes` on a whole model file costs about what
//!   its header costs;
//! - a mutation fuzzer: 100,000 corrupted copies of a small header made from the R1 header's keys, where the chunked
//!   parser must give what `Gguf::from_bytes` gives, and nothing may panic;
//! - the error codes are unique and each is documented in the table at the top of `src/error.rs`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use webr1::gguf::split::{check_split_name, SplitGguf};
use webr1::gguf::writer::{put_string, put_value, GgufWriter};
use webr1::gguf::{Array, Gguf, GgufParser, Value, MAX_HEADER_BYTES, MAX_STRING_BYTES};
use webr1::quant::GgmlType;
use webr1::{ErrorCode, Result};

// ---------------------------------------------------------------------------------------------------------------------
// Reading helpers

/// `"ok"`, or the error's stable code.
fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code().to_string(),
    }
}

/// Pushes `bytes` into `parser` in chunks of `next_len()` bytes. A header that `push` returns is then checked against
/// the whole length (a parser of unknown length cannot do that itself); when the bytes run out first, `finish()`.
fn push_chunks(mut parser: GgufParser, bytes: &[u8], mut next_len: impl FnMut() -> usize) -> Result<Gguf> {
    let mut at = 0;
    while at < bytes.len() {
        let end = bytes.len().min(at + next_len().max(1));
        if let Some(gguf) = parser.push(&bytes[at..end])? {
            gguf.check_file_len(bytes.len() as u64)?;
            return Ok(gguf);
        }
        at = end;
    }
    parser.finish()
}

/// `bytes` in chunks of `chunk` bytes, into a parser told the file's length (`known_len`) or not.
fn chunked(bytes: &[u8], chunk: usize, known_len: bool) -> Result<Gguf> {
    let parser = if known_len { GgufParser::with_file_len(bytes.len() as u64) } else { GgufParser::new() };
    push_chunks(parser, bytes, || chunk)
}

/// Equal headers. `Gguf`'s `==` says a NaN metadata value differs from itself, so a mismatch is looked at again in a
/// form that compares NaNs by their printed text (the map inside `Metadata` prints in random order, so not `{:?}`).
fn same_gguf(a: &Gguf, b: &Gguf) -> bool {
    let printed = |g: &Gguf| {
        let pairs: Vec<(&str, &Value)> = g.metadata.iter().collect();
        format!("{} {} {} {:?} {:?}", g.version, g.alignment, g.data_offset, g.tensors, pairs)
    };
    a == b || printed(a) == printed(b)
}

// ---------------------------------------------------------------------------------------------------------------------
// Real files

const R1_HEADER: &str = "r1-distill-qwen-7b.header.gguf";

fn r1_header() -> Vec<u8> {
    let path = common::fixture(R1_HEADER);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (copy it from ../shared/fixtures/)", path.display()))
}

/// The R1 header's metadata keys in file order, as gguf-py lists them.
const R1_KEYS: [&str; 27] = [
    "general.architecture",
    "general.type",
    "general.name",
    "general.organization",
    "general.basename",
    "general.size_label",
    "qwen2.block_count",
    "qwen2.context_length",
    "qwen2.embedding_length",
    "qwen2.feed_forward_length",
    "qwen2.attention.head_count",
    "qwen2.attention.head_count_kv",
    "qwen2.rope.freq_base",
    "qwen2.attention.layer_norm_rms_epsilon",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.chat_template",
    "general.quantization_version",
    "general.file_type",
];

#[test]
fn r1_header_parses() {
    let bytes = r1_header();
    assert_eq!(bytes.len(), 5_933_952, "{R1_HEADER} is not the expected file");
    let gguf = Gguf::from_bytes(&bytes).expect("the R1 header parses");
    assert_eq!((gguf.version, gguf.tensors.len(), gguf.alignment, gguf.data_offset), (3, 0, 32, 5_933_952));
    let keys: Vec<&str> = gguf.metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, R1_KEYS);

    let m = &gguf.metadata;
    assert_eq!(m.get_str("general.architecture").unwrap(), Some("qwen2"));
    assert_eq!(m.get_str("general.name").unwrap(), Some("DeepSeek R1 Distill Qwen 7B"));
    assert_eq!(m.get_str("tokenizer.ggml.model").unwrap(), Some("gpt2"));
    assert_eq!(m.get_str("tokenizer.ggml.pre").unwrap(), Some("deepseek-r1-qwen"));
    assert_eq!(m.get("qwen2.block_count"), Some(&Value::U32(28)));
    assert_eq!(m.get("qwen2.context_length"), Some(&Value::U32(131_072)));
    assert_eq!(m.get("qwen2.embedding_length"), Some(&Value::U32(3584)));
    assert_eq!(m.get("qwen2.attention.head_count_kv"), Some(&Value::U32(4)));
    assert_eq!(m.get("qwen2.rope.freq_base"), Some(&Value::F32(10_000.0)));
    assert_eq!(m.get("qwen2.attention.layer_norm_rms_epsilon"), Some(&Value::F32(1e-6)));
    assert_eq!(m.get("tokenizer.ggml.bos_token_id"), Some(&Value::U32(151_646)));
    assert_eq!(m.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(151_643)));
    assert_eq!(m.get("tokenizer.ggml.add_bos_token"), Some(&Value::Bool(true)));
    assert_eq!(m.get("tokenizer.ggml.add_eos_token"), Some(&Value::Bool(false)));
    assert_eq!(m.get("general.file_type"), Some(&Value::U32(15)));

    let tokens = m.get_str_array("tokenizer.ggml.tokens").unwrap().expect("tokens");
    assert_eq!((tokens.len(), tokens[0].as_str(), tokens[152_063].as_str()), (152_064, "!", "[PAD152063]"));
    let merges = m.get_str_array("tokenizer.ggml.merges").unwrap().expect("merges");
    assert_eq!((merges.len(), merges[0].as_str(), merges[151_386].as_str()), (151_387, "Ġ Ġ", "â½ Ĺ"));
    match m.get_array("tokenizer.ggml.token_type").unwrap() {
        Some(Array::I32(types)) => assert_eq!((types.len(), types[0], types[152_063]), (152_064, 1, 5)),
        other => panic!("tokenizer.ggml.token_type should be an i32 array, is {other:?}"),
    }
    let template = m.get_str("tokenizer.chat_template").unwrap().expect("chat template");
    assert_eq!(template.chars().count(), 2081);
    assert!(template.starts_with("{% if not add_generation_prompt is defined %}"), "{template}");

    assert_eq!(Gguf::read_file(common::fixture(R1_HEADER)).expect("read_file"), gguf);
}

/// The 6 MB header in chunks from 1 byte to 1 MiB gives the same header. One byte at a time is ~6 million pushes: a
/// parser that re-reads its buffer on every push (quadratic) would take hours, a linear one takes seconds.
#[test]
fn r1_header_parses_the_same_in_chunks() {
    let bytes = r1_header();
    let whole = Gguf::from_bytes(&bytes).expect("the R1 header parses");
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 180 } else { 30 });
    for chunk in [1, 7, 4096, 1 << 20] {
        for known_len in [false, true] {
            let how = format!("chunks of {chunk} (length known: {known_len})");
            let start = Instant::now();
            let gguf = chunked(&bytes, chunk, known_len).unwrap_or_else(|e| panic!("{how}: {e}"));
            let took = start.elapsed();
            eprintln!("R1 header in {how:<42} {took:>9.2?}");
            assert!(gguf == whole, "{how} give another header");
            assert!(took < limit, "{how} took {took:.1?} (over {limit:?}): is the parser linear?");
        }
    }
}

/// One tensor as gguf-py reads it: name, dims (GGUF order), type, offset in the data section, bytes.
type TensorFacts = (&'static str, &'static [u64], GgmlType, u64, u64);

/// What gguf-py reads from a test model.
struct ModelFacts {
    name: &'static str,
    file_len: u64,
    arch: &'static str,
    pre: &'static str,
    n_kv: usize,
    n_tokens: usize,
    data_offset: u64,
    /// Tensors per type, and their total bytes.
    type_counts: &'static [(GgmlType, usize)],
    data_len: u64,
    first_last: (&'static str, &'static str),
    tensors: &'static [TensorFacts],
}

fn check_model(facts: &ModelFacts) {
    let Some(path) = common::model(facts.name) else { return };
    let name = facts.name;
    let file_len = std::fs::metadata(&path).expect("model file").len();
    assert_eq!(file_len, facts.file_len, "{name}: not the expected file (re-run fetch-test-models.sh)");
    let gguf = Gguf::read_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));

    let m = &gguf.metadata;
    assert_eq!((gguf.version, gguf.alignment, gguf.data_offset), (3, 32, facts.data_offset), "{name}");
    assert_eq!(m.len(), facts.n_kv, "{name}: metadata pairs");
    assert_eq!(m.get_str("general.architecture").unwrap(), Some(facts.arch), "{name}");
    assert_eq!(m.get_str("tokenizer.ggml.pre").unwrap(), Some(facts.pre), "{name}");
    assert_eq!(m.get_str_array("tokenizer.ggml.tokens").unwrap().map(<[String]>::len), Some(facts.n_tokens), "{name}");

    let mut counts = BTreeMap::new();
    for t in &gguf.tensors {
        *counts.entry(t.ty).or_insert(0) += 1;
    }
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), facts.type_counts, "{name}: tensors per type");
    assert_eq!(gguf.tensors.iter().map(|t| t.n_bytes).sum::<u64>(), facts.data_len, "{name}: tensor bytes");
    let ends = (gguf.tensors[0].name.as_str(), gguf.tensors.last().unwrap().name.as_str());
    assert_eq!(ends, facts.first_last, "{name}: first and last tensor");
    for &(tensor, dims, ty, offset, n_bytes) in facts.tensors {
        let t = gguf.tensor(tensor).unwrap_or_else(|| panic!("{name}: no tensor {tensor}"));
        assert_eq!((t.dims.as_slice(), t.ty, t.offset, t.n_bytes), (dims, ty, offset, n_bytes), "{name}: {tensor}");
    }

    // The last tensor ends at the last byte of the file.
    assert_eq!(gguf.data_offset + gguf.data_len(), file_len, "{name}");
    gguf.check_file_len(file_len).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(gguf.check_file_len(file_len - 1).map_err(|e| e.code()), Err("gguf.tensor_out_of_range"), "{name}");

    // Only the header's bytes, in 4 KiB chunks, into a parser told the file's length: the same header.
    let mut header = Vec::new();
    let file = std::fs::File::open(&path).expect("model file");
    file.take(facts.data_offset).read_to_end(&mut header).expect("read the header");
    let mut parser = GgufParser::with_file_len(file_len);
    let from_push = header.chunks(4096).find_map(|c| parser.push(c).unwrap_or_else(|e| panic!("{name}: {e}")));
    let streamed = from_push.map_or_else(|| parser.finish(), Ok).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(streamed == gguf, "{name}: the header in 4 KiB chunks differs from read_file's");
}

#[test]
fn smol135_header() {
    check_model(&ModelFacts {
        name: "smol135",
        file_len: 98_362_432,
        arch: "llama",
        pre: "smollm",
        n_kv: 33,
        n_tokens: 49_152,
        data_offset: 1_785_664,
        type_counts: &[(GgmlType::F32, 61), (GgmlType::Q4_1, 210), (GgmlType::Q8_0, 1)],
        data_len: 96_576_768,
        first_last: ("token_embd.weight", "output_norm.weight"),
        tensors: &[
            ("token_embd.weight", &[576, 49_152], GgmlType::Q8_0, 0, 30_081_024),
            ("blk.0.attn_q.weight", &[576, 576], GgmlType::Q4_1, 32_020_992, 207_360),
            ("blk.0.ffn_down.weight", &[1536, 576], GgmlType::Q4_1, 30_083_328, 552_960),
            ("output_norm.weight", &[576], GgmlType::F32, 96_574_464, 2304),
        ],
    });
}

#[test]
fn qwen05_header() {
    check_model(&ModelFacts {
        name: "qwen05",
        file_len: 491_400_064,
        arch: "qwen2",
        pre: "qwen2",
        n_kv: 26,
        n_tokens: 151_936,
        data_offset: 5_947_776,
        type_counts: &[
            (GgmlType::F32, 121),
            (GgmlType::Q5_0, 133),
            (GgmlType::Q8_0, 13),
            (GgmlType::Q4_K, 12),
            (GgmlType::Q6_K, 12),
        ],
        data_len: 485_452_288,
        first_last: ("output.weight", "output_norm.weight"),
        tensors: &[
            ("output.weight", &[896, 151_936], GgmlType::Q8_0, 0, 144_643_072),
            ("token_embd.weight", &[896, 151_936], GgmlType::Q5_0, 144_643_072, 93_592_576),
            ("blk.0.attn_q.weight", &[896, 896], GgmlType::Q5_0, 248_445_184, 551_936),
            ("blk.0.ffn_down.weight", &[4864, 896], GgmlType::Q6_K, 238_239_232, 3_575_040),
            ("output_norm.weight", &[896], GgmlType::F32, 485_448_704, 3584),
        ],
    });
}

#[test]
fn qwen15_header() {
    check_model(&ModelFacts {
        name: "qwen15",
        file_len: 1_117_320_768,
        arch: "qwen2",
        pre: "qwen2",
        n_kv: 26,
        n_tokens: 151_936,
        data_offset: 5_950_528,
        type_counts: &[(GgmlType::F32, 141), (GgmlType::Q4_K, 169), (GgmlType::Q6_K, 29)],
        data_len: 1_111_370_240,
        first_last: ("output.weight", "output_norm.weight"),
        tensors: &[
            ("output.weight", &[1536, 151_936], GgmlType::Q6_K, 0, 191_439_360),
            ("token_embd.weight", &[1536, 151_936], GgmlType::Q4_K, 191_439_360, 131_272_704),
            ("blk.0.attn_q.weight", &[1536, 1536], GgmlType::Q4_K, 351_052_288, 1_327_104),
            ("blk.0.ffn_down.weight", &[8960, 1536], GgmlType::Q6_K, 322_718_208, 11_289_600),
            ("output_norm.weight", &[1536], GgmlType::F32, 1_111_364_096, 6144),
        ],
    });
}

/// `Gguf::from_bytes` on a whole model file in memory ("a whole GGUF file held in memory", its doc says) costs about
/// what reading its header costs: the tensors' bytes after the header are not parsed, so they must not be copied or
/// moved once per header item either. Timed in release builds only; debug builds print the times.
#[test]
fn from_bytes_on_a_whole_model_file_takes_about_as_long_as_its_header() {
    let Some(path) = common::model("smol135") else { return };
    let bytes = std::fs::read(&path).expect("model file");
    let start = Instant::now();
    let whole = Gguf::from_bytes(&bytes).expect("smol135 parses");
    let whole_took = start.elapsed();

    let start = Instant::now();
    let mut parser = GgufParser::with_file_len(bytes.len() as u64);
    let header = parser.push(&bytes[..whole.data_offset as usize]).expect("header").map_or_else(|| parser.finish(), Ok);
    let header_took = start.elapsed();
    assert!(header.expect("header") == whole, "the header alone parses to another header");

    let limit = header_took * 20 + Duration::from_millis(300);
    eprintln!("smol135: from_bytes on all {} bytes {whole_took:.2?}, on the header {header_took:.2?}", bytes.len());
    if !cfg!(debug_assertions) {
        assert!(whole_took < limit, "from_bytes on the whole file took {whole_took:.2?} (limit {limit:.2?})");
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Hand-assembled headers

/// A tensor-table entry as it is written: any type id and offset, sound or not.
#[derive(Debug, Clone)]
struct TensorEntry {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn entry(name: &str, dims: &[u64], type_id: u32, offset: u64) -> TensorEntry {
    TensorEntry { name: name.into(), dims: dims.to_vec(), type_id, offset }
}

/// A GGUF file to assemble by hand, with every field open to a test.
#[derive(Debug, Clone)]
struct Spec {
    version: u32,
    kvs: Vec<(String, Value)>,
    tensors: Vec<TensorEntry>,
    /// The header is padded with zeros to a multiple of this.
    pad_to: u64,
    /// Zero bytes after the header.
    data_len: u64,
}

/// Assembled bytes, with where each field starts (`"key:general.name"`, `"value:general.name"`, `"dims:NAME"`, ...)
/// and where every count, length and type id lies (start, width), for the fuzzer to overwrite.
struct Assembled {
    bytes: Vec<u8>,
    marks: HashMap<String, usize>,
    fields: Vec<(usize, usize)>,
}

impl Assembled {
    fn at(&self, mark: &str) -> usize {
        *self.marks.get(mark).unwrap_or_else(|| panic!("no mark {mark}"))
    }

    fn mark(&mut self, mark: String) {
        self.marks.insert(mark, self.bytes.len());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.fields.push((self.bytes.len(), bytes.len()));
        self.bytes.extend_from_slice(bytes);
    }

    fn string(&mut self, s: &str) {
        self.fields.push((self.bytes.len(), 8));
        put_string(&mut self.bytes, s);
    }

    /// A value without its type id. Strings and arrays record their length fields; fixed-size values (and arrays of
    /// them) are written by the crate's `put_value`.
    fn value(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.string(s),
            Value::Array(a) => self.array(a),
            fixed => put_value(&mut self.bytes, fixed),
        }
    }

    fn array(&mut self, array: &Array) {
        match array {
            Array::String(v) => {
                self.array_head(array);
                v.iter().for_each(|s| self.string(s));
            }
            Array::Array(v) => {
                self.array_head(array);
                v.iter().for_each(|a| self.array(a));
            }
            fixed => {
                self.fields.push((self.bytes.len(), 4));
                self.fields.push((self.bytes.len() + 4, 8));
                put_value(&mut self.bytes, &Value::Array(fixed.clone()));
            }
        }
    }

    fn array_head(&mut self, array: &Array) {
        self.field(&(array.element_type() as u32).to_le_bytes());
        self.field(&(array.len() as u64).to_le_bytes());
    }
}

impl Spec {
    fn assemble(&self) -> Assembled {
        let mut a = Assembled { bytes: b"GGUF".to_vec(), marks: HashMap::new(), fields: Vec::new() };
        a.mark("version".into());
        a.bytes.extend_from_slice(&self.version.to_le_bytes());
        a.mark("n_tensors".into());
        a.field(&(self.tensors.len() as u64).to_le_bytes());
        a.mark("n_kv".into());
        a.field(&(self.kvs.len() as u64).to_le_bytes());
        for (key, value) in &self.kvs {
            a.mark(format!("key:{key}"));
            a.string(key);
            a.mark(format!("type:{key}"));
            a.field(&(value.value_type() as u32).to_le_bytes());
            a.mark(format!("value:{key}"));
            a.value(value);
        }
        for t in &self.tensors {
            a.mark(format!("tensor:{}", t.name));
            a.string(&t.name);
            a.mark(format!("n_dims:{}", t.name));
            a.field(&(t.dims.len() as u32).to_le_bytes());
            a.mark(format!("dims:{}", t.name));
            t.dims.iter().for_each(|d| a.field(&d.to_le_bytes()));
            a.mark(format!("type_id:{}", t.name));
            a.field(&t.type_id.to_le_bytes());
            a.mark(format!("offset:{}", t.name));
            a.field(&t.offset.to_le_bytes());
        }
        a.mark("header_end".into());
        let padded = (a.bytes.len() as u64).div_ceil(self.pad_to) * self.pad_to;
        a.bytes.resize(padded as usize + self.data_len as usize, 0);
        a
    }

    fn bytes(&self) -> Vec<u8> {
        self.assemble().bytes
    }

    fn kv(mut self, key: &str, value: Value) -> Spec {
        self.kvs.push((key.into(), value));
        self
    }
}

/// Arrays nested `levels` deep: `[[...[1u8]...]]`.
fn nested(levels: u32) -> Array {
    match levels {
        1 => Array::U8(vec![1]),
        n => Array::Array(vec![nested(n - 1)]),
    }
}

/// The valid header the table corrupts: metadata of several types (a string array and a nested array among them) and
/// three small tensors. GGML type ids: F32 0, F16 1, Q4_0 2 (32 elements in 18 bytes).
fn base() -> Spec {
    let kvs = [
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("tiny".into())),
        ("test.u8", Value::U8(7)),
        ("test.i16", Value::I16(-2)),
        ("test.u32", Value::U32(42)),
        ("test.f32", Value::F32(0.5)),
        ("test.bool", Value::Bool(true)),
        ("test.u64", Value::U64(1 << 40)),
        ("test.f64", Value::F64(-1.25)),
        ("test.flags", Value::Array(Array::Bool(vec![true, false]))),
        ("test.u8s", Value::Array(Array::U8(vec![1, 2, 3]))),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(vec!["a".into(), "bc".into(), "déf".into()]))),
        ("test.nested", Value::Array(Array::Array(vec![Array::I32(vec![1, -2]), Array::String(vec!["x".into()])]))),
    ];
    Spec {
        version: 3,
        kvs: kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        tensors: vec![
            entry("token_embd.weight", &[4, 2], 0, 0),       // 32 bytes at 0
            entry("blk.0.ffn_down.weight", &[32, 2], 2, 32), // 36 bytes at 32
            entry("output_norm.weight", &[8], 1, 96),        // 16 bytes at 96 (68 rounded up to 32)
        ],
        pad_to: 32,
        data_len: 112,
    }
}

/// The base with its bytes changed by `f`, which gets the field marks.
fn patched(f: impl FnOnce(&mut Vec<u8>, &Assembled)) -> Vec<u8> {
    let a = base().assemble();
    let mut bytes = a.bytes.clone();
    f(&mut bytes, &a);
    bytes
}

/// The base spec changed by `f`, then assembled.
fn changed(f: impl FnOnce(&mut Spec)) -> Vec<u8> {
    let mut spec = base();
    f(&mut spec);
    spec.bytes()
}

fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The base, cut `delta` bytes after `mark`.
fn cut(mark: &str, delta: usize) -> Vec<u8> {
    patched(|b, a| b.truncate(a.at(mark) + delta))
}

#[test]
fn base_header_is_what_the_writer_writes_and_parses_back() {
    let spec = base();
    let mut writer = GgufWriter::new();
    for (k, v) in &spec.kvs {
        writer.kv(k, v.clone());
    }
    writer.tensor("token_embd.weight", &[4, 2], GgmlType::F32, None).unwrap();
    writer.tensor("blk.0.ffn_down.weight", &[32, 2], GgmlType::Q4_0, None).unwrap();
    writer.tensor("output_norm.weight", &[8], GgmlType::F16, None).unwrap();
    let a = spec.assemble();
    assert_eq!(writer.to_bytes(), a.bytes, "the hand-assembled base differs from GgufWriter's");
    // Both write the crate's value type ids: check them against the spec's `gguf_metadata_value_type`.
    let u32_at = |at: usize| u32::from_le_bytes(a.bytes[at..at + 4].try_into().unwrap());
    let type_ids = [("general.name", 8), ("test.u8", 0), ("test.i16", 3), ("test.u32", 4), ("test.f32", 6)];
    let more_ids = [("test.bool", 7), ("test.u64", 10), ("test.f64", 12), ("tokenizer.ggml.tokens", 9)];
    for (key, id) in type_ids.into_iter().chain(more_ids) {
        assert_eq!(u32_at(a.at(&format!("type:{key}"))), id, "the type id of {key}");
    }
    assert_eq!(u32_at(a.at("value:tokenizer.ggml.tokens")), 8, "string array element type");
    assert_eq!(u32_at(a.at("value:test.nested")), 9, "nested array element type");

    let gguf = Gguf::from_bytes(&a.bytes).expect("the base parses");
    let header_end = a.at("header_end") as u64;
    assert_eq!((gguf.version, gguf.alignment, gguf.data_offset), (3, 32, header_end.div_ceil(32) * 32));
    let pairs: Vec<(String, Value)> = gguf.metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    assert_eq!(pairs, spec.kvs);
    let tensors: Vec<_> =
        gguf.tensors.iter().map(|t| (t.name.as_str(), t.dims.clone(), t.ty, t.offset, t.n_bytes)).collect();
    assert_eq!(
        tensors,
        [
            ("token_embd.weight", vec![4, 2], GgmlType::F32, 0, 32),
            ("blk.0.ffn_down.weight", vec![32, 2], GgmlType::Q4_0, 32, 36),
            ("output_norm.weight", vec![8], GgmlType::F16, 96, 16),
        ]
    );
    assert_eq!(a.bytes.len() as u64, gguf.data_offset + 112);
}

// ---------------------------------------------------------------------------------------------------------------------
// The table of malformed inputs

/// One row: an input, and the code it must give (`"ok"` for the few valid boundary cases kept for contrast).
struct Case {
    name: String,
    expect: &'static str,
    input: Input,
}

enum Input {
    /// GGUF bytes, read whole and in chunks.
    Bytes(Vec<u8>),
    /// GGUF bytes with a count or length (of metadata pairs, tensors, array elements) that the bytes cannot hold.
    /// Read whole, or told the file's length, that is `gguf.truncated` at once; a parser of unknown length cannot know
    /// it yet and reads on, into bytes that are not what the count says, where another error may come first. So
    /// unknown-length reads of these must only fail.
    BytesLengthDependent(Vec<u8>),
    /// A call that is not a header read (split checks, parser misuse).
    Call(Box<dyn Fn() -> Result<()>>),
}

fn case(name: &str, expect: &'static str, input: Vec<u8>) -> Case {
    Case { name: name.into(), expect, input: Input::Bytes(input) }
}

/// A count or length past the end of the bytes: `gguf.truncated` (see `Input::BytesLengthDependent`).
fn count_past_the_end(name: &str, input: Vec<u8>) -> Case {
    Case { name: name.into(), expect: "gguf.truncated", input: Input::BytesLengthDependent(input) }
}

fn truncation_cases() -> Vec<Case> {
    let t = "gguf.truncated";
    vec![
        case("empty input", t, Vec::new()),
        case("cut inside the magic", t, patched(|b, _| b.truncate(2))),
        case("cut inside the version", t, cut("version", 2)),
        case("cut inside the tensor count", t, cut("n_tensors", 3)),
        case("cut inside the metadata count", t, cut("n_kv", 7)),
        case("cut inside a key's length", t, cut("key:general.architecture", 3)),
        case("cut inside a key", t, cut("key:general.architecture", 8 + 4)),
        case("cut inside a value type", t, cut("type:test.u32", 2)),
        case("cut inside a u64 value", t, cut("value:test.u64", 5)),
        case("cut inside an f64 value", t, cut("value:test.f64", 7)),
        case("cut inside a string value's length", t, cut("value:general.name", 4)),
        case("cut inside a string value", t, cut("value:general.name", 8 + 2)),
        case("cut inside an array's element type", t, cut("value:tokenizer.ggml.tokens", 1)),
        case("cut inside an array's length", t, cut("value:tokenizer.ggml.tokens", 4 + 3)),
        case("cut inside a string array's elements", t, cut("value:tokenizer.ggml.tokens", 12 + 9 + 8 + 1)),
        case("cut inside a u8 array's elements", t, cut("value:test.u8s", 12 + 1)),
        case("cut inside a nested array", t, cut("value:test.nested", 12 + 12 + 5)),
        case("cut inside a tensor name's length", t, cut("tensor:blk.0.ffn_down.weight", 6)),
        case("cut inside a tensor name", t, cut("tensor:blk.0.ffn_down.weight", 8 + 5)),
        case("cut inside n_dims", t, cut("n_dims:blk.0.ffn_down.weight", 2)),
        case("cut inside the dims", t, cut("dims:blk.0.ffn_down.weight", 8 + 3)),
        case("cut inside a tensor type", t, cut("type_id:blk.0.ffn_down.weight", 1)),
        case("cut inside the last tensor offset", t, cut("offset:output_norm.weight", 7)),
        case("cut at the end of the header, before the padding", "gguf.tensor_out_of_range", cut("header_end", 0)),
        case(
            "cut one byte into the data section",
            "gguf.tensor_out_of_range",
            patched(|b, _| b.truncate(b.len() - 112 + 1)),
        ),
        case("cut one byte before the end", "gguf.tensor_out_of_range", patched(|b, _| b.truncate(b.len() - 1))),
    ]
}

fn preamble_cases() -> Vec<Case> {
    let version = |v: u32| patched(|b, a| set_u32(b, a.at("version"), v));
    vec![
        case("magic GGML", "gguf.bad_magic", patched(|b, _| b[..4].copy_from_slice(b"GGML"))),
        case("magic in lower case", "gguf.bad_magic", patched(|b, _| b[..4].copy_from_slice(b"gguf"))),
        case("magic only, nothing after", "gguf.truncated", b"GGUF".to_vec()),
        case("not GGUF, shorter than a magic", "gguf.bad_magic", b"GGU\0".to_vec()),
        case("version 1", "gguf.unsupported_version", version(1)),
        case("version 99", "gguf.unsupported_version", version(99)),
        case("version 3, big-endian", "gguf.unsupported_version", version(3u32.swap_bytes())),
        case("version 2 (same layout as 3)", "ok", version(2)),
        case("tensor count u64::MAX", "gguf.too_large", patched(|b, a| set_u64(b, a.at("n_tensors"), u64::MAX))),
        case("tensor count 2^40", "gguf.too_large", patched(|b, a| set_u64(b, a.at("n_tensors"), 1 << 40))),
        case("metadata count u64::MAX", "gguf.too_large", patched(|b, a| set_u64(b, a.at("n_kv"), u64::MAX))),
        case("metadata count 2^40", "gguf.too_large", patched(|b, a| set_u64(b, a.at("n_kv"), 1 << 40))),
        count_past_the_end("metadata count 1000", patched(|b, a| set_u64(b, a.at("n_kv"), 1000))),
        count_past_the_end("tensor count 100", patched(|b, a| set_u64(b, a.at("n_tensors"), 100))),
        case("no metadata and no tensors", "ok", {
            Spec { kvs: Vec::new(), tensors: Vec::new(), data_len: 0, ..base() }.bytes()
        }),
    ]
}

/// Length fields past the file are `gguf.truncated` (the file may simply be cut short, and a stream of unknown length
/// cannot tell the two apart), past webr1's caps `gguf.too_large`.
fn metadata_cases() -> Vec<Case> {
    let at_value = |key: &str, delta: usize, f: fn(&mut [u8], usize)| {
        let mark = format!("value:{key}");
        patched(move |b, a| f(b, a.at(&mark) + delta))
    };
    vec![
        case("key length past the end of the file", "gguf.truncated", {
            patched(|b, a| set_u64(b, a.at("key:general.name"), 100_000))
        }),
        case("key length u64::MAX", "gguf.too_large", patched(|b, a| set_u64(b, a.at("key:general.name"), u64::MAX))),
        case("string length past the end of the file", "gguf.truncated", {
            patched(|b, a| set_u64(b, a.at("value:general.name"), 100_000))
        }),
        case("string length exactly the cap (past the file)", "gguf.truncated", {
            patched(|b, a| set_u64(b, a.at("value:general.name"), MAX_STRING_BYTES))
        }),
        case("string length one over the cap", "gguf.too_large", {
            patched(|b, a| set_u64(b, a.at("value:general.name"), MAX_STRING_BYTES + 1))
        }),
        case("u8 array length past the end of the file", "gguf.truncated", {
            patched(|b, a| set_u64(b, a.at("value:test.u8s") + 4, 100_000))
        }),
        case("u8 array length over the header cap", "gguf.too_large", {
            patched(|b, a| set_u64(b, a.at("value:test.u8s") + 4, MAX_HEADER_BYTES))
        }),
        case("array length u64::MAX", "gguf.too_large", {
            patched(|b, a| set_u64(b, a.at("value:tokenizer.ggml.tokens") + 4, u64::MAX))
        }),
        case("array length 2^61 (overflows 8 bytes each)", "gguf.too_large", {
            patched(|b, a| set_u64(b, a.at("value:tokenizer.ggml.tokens") + 4, 1 << 61))
        }),
        count_past_the_end("string array length past the end of the file", {
            patched(|b, a| set_u64(b, a.at("value:tokenizer.ggml.tokens") + 4, 100_000))
        }),
        case("arrays nested 8 deep (the cap)", "ok", base().kv("test.deep", Value::Array(nested(8))).bytes()),
        case("arrays nested 9 deep", "gguf.too_large", base().kv("test.deep", Value::Array(nested(9))).bytes()),
        case("arrays nested 1000 deep", "gguf.too_large", base().kv("test.deep", Value::Array(nested(1000))).bytes()),
        case("value type 13", "gguf.bad_value_type", patched(|b, a| set_u32(b, a.at("type:test.u32"), 13))),
        case("value type u32::MAX", "gguf.bad_value_type", {
            patched(|b, a| set_u32(b, a.at("type:test.u32"), u32::MAX))
        }),
        case("array element type 13", "gguf.bad_value_type", at_value("test.u8s", 0, |b, at| set_u32(b, at, 13))),
        case(
            "nested array element type 13",
            "gguf.bad_value_type",
            at_value("test.nested", 12, |b, at| set_u32(b, at, 13)),
        ),
        case("bool byte 2", "gguf.bad_value_type", at_value("test.bool", 0, |b, at| b[at] = 2)),
        case("bool array byte 0xFF", "gguf.bad_value_type", at_value("test.flags", 12 + 1, |b, at| b[at] = 0xFF)),
        case("key not UTF-8", "gguf.bad_utf8", patched(|b, a| b[a.at("key:general.name") + 8] = 0xFF)),
        case("key with an overlong NUL (C0 80)", "gguf.bad_utf8", {
            patched(|b, a| b[a.at("key:general.name") + 8..][..2].copy_from_slice(&[0xC0, 0x80]))
        }),
        case("string value not UTF-8", "gguf.bad_utf8", at_value("general.name", 8 + 1, |b, at| b[at] = 0x80)),
        case("string array element not UTF-8", "gguf.bad_utf8", {
            // "déf": 'é' is C3 A9; a lone continuation byte in its place.
            at_value("tokenizer.ggml.tokens", 12 + 9 + 10 + 8 + 1, |b, at| b[at] = 0xA9)
        }),
        case("duplicate key", "gguf.duplicate_key", base().kv("test.u8", Value::U8(8)).bytes()),
        case("general.alignment 0", "gguf.bad_alignment", base().kv("general.alignment", Value::U32(0)).bytes()),
        case("general.alignment 3", "gguf.bad_alignment", base().kv("general.alignment", Value::U32(3)).bytes()),
        case("general.alignment as u64", "gguf.bad_alignment", base().kv("general.alignment", Value::U64(32)).bytes()),
        case("general.alignment as a string", "gguf.bad_alignment", {
            base().kv("general.alignment", Value::String("32".into())).bytes()
        }),
        case("general.alignment 16 (offsets are multiples)", "ok", {
            Spec { pad_to: 16, ..base().kv("general.alignment", Value::U32(16)) }.bytes()
        }),
        case("general.alignment 64, offset 32", "gguf.tensor_misaligned", {
            Spec { pad_to: 64, ..base().kv("general.alignment", Value::U32(64)) }.bytes()
        }),
    ]
}

fn tensor_cases() -> Vec<Case> {
    let t = |f: fn(&mut TensorEntry)| changed(move |s| f(&mut s.tensors[1]));
    let at_tensor = |mark: &str, f: fn(&mut [u8], usize)| {
        let mark = mark.to_string();
        patched(move |b, a| f(b, a.at(&mark)))
    };
    vec![
        case("tensor type id 4 (removed Q4_2)", "gguf.bad_tensor_type", t(|e| e.type_id = 4)),
        case("tensor type id 99", "gguf.bad_tensor_type", t(|e| e.type_id = 99)),
        case("tensor type id u32::MAX", "gguf.bad_tensor_type", t(|e| e.type_id = u32::MAX)),
        case("tensor n_dims 0", "gguf.bad_shape", t(|e| e.dims.clear())),
        case("tensor n_dims 5", "gguf.bad_shape", t(|e| e.dims = vec![32, 1, 1, 1, 2])),
        case("tensor n_dims u32::MAX", "gguf.bad_shape", {
            at_tensor("n_dims:token_embd.weight", |b, at| set_u32(b, at, u32::MAX))
        }),
        case("tensor dimension 0", "gguf.bad_shape", t(|e| e.dims = vec![32, 0])),
        case("Q4_0 rows of 33 elements", "gguf.bad_shape", t(|e| e.dims = vec![33, 2])),
        case("element count overflows u64", "gguf.bad_shape", t(|e| e.dims = vec![32, 1 << 32, 1 << 32])),
        case("F32 bytes over i64::MAX", "gguf.bad_shape", t(|e| (e.type_id, e.dims) = (0, vec![1 << 40, 1 << 21]))),
        case("F32 bytes overflow u64", "gguf.bad_shape", t(|e| (e.type_id, e.dims) = (0, vec![1 << 40, 1 << 22]))),
        case("tensor offset not aligned", "gguf.tensor_misaligned", t(|e| e.offset = 33)),
        case("tensors overlap", "gguf.tensor_overlap", changed(|s| s.tensors[2].offset = 64)),
        case("two tensors at the same offset", "gguf.tensor_overlap", changed(|s| s.tensors[2].offset = 0)),
        case("tensor past the end of the file", "gguf.tensor_out_of_range", changed(|s| s.tensors[2].offset = 1 << 20)),
        case("tensor offset + size overflows", "gguf.tensor_out_of_range", {
            changed(|s| s.tensors[2].offset = u64::MAX / 32 * 32)
        }),
        case(
            "duplicate tensor name",
            "gguf.duplicate_tensor",
            changed(|s| s.tensors[2].name = "token_embd.weight".into()),
        ),
        case(
            "tensor name not UTF-8",
            "gguf.bad_utf8",
            at_tensor("tensor:output_norm.weight", |b, at| b[at + 8] = 0xFE),
        ),
        case("tensors listed out of offset order", "ok", changed(|s| s.tensors.swap(1, 2))),
        case("an IQ2_XXS tensor (known to GGUF, not computed)", "ok", {
            changed(|s| (s.tensors[2], s.data_len) = (entry("output_norm.weight", &[256], 16, 96), 96 + 66))
        }),
    ]
}

/// A split part: `split.no` / `split.count` as `llama-gguf-split` writes them (u16), optionally
/// `split.tensors.count` (i32), and one small tensor per name.
fn split_part(no: Option<u16>, count: Option<u16>, total: Option<i32>, tensors: &[&str]) -> Gguf {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()));
    if let Some(no) = no {
        w.kv("split.no", Value::U16(no));
    }
    if let Some(count) = count {
        w.kv("split.count", Value::U16(count));
    }
    if let Some(total) = total {
        w.kv("split.tensors.count", Value::I32(total));
    }
    for name in tensors {
        w.tensor(name, &[8], GgmlType::F32, None).expect("tensor");
    }
    Gguf::from_bytes(&w.to_bytes()).expect("split part parses")
}

fn call(name: &str, expect: &'static str, f: impl Fn() -> Result<()> + 'static) -> Case {
    Case { name: name.into(), expect, input: Input::Call(Box::new(f)) }
}

fn split_cases() -> Vec<Case> {
    fn new(parts: impl Fn() -> Vec<Gguf> + 'static) -> impl Fn() -> Result<()> {
        move || SplitGguf::new(parts()).map(|_| ())
    }
    fn name(file: &'static str, part: impl Fn() -> Gguf + 'static) -> impl Fn() -> Result<()> {
        move || check_split_name(file, &part())
    }
    // Part `no` (0-based) of `count`, holding tensor `t`; the first part says there are 3 tensors in all.
    let p =
        |no: u16, count: u16, t: &'static str| move || split_part(Some(no), Some(count), (no == 0).then_some(3), &[t]);
    let part = |no, count, t| split_part(no, count, None, &[t]);
    let (a, b, c) = (p(0, 3, "a"), p(1, 3, "b"), p(2, 3, "c"));
    let bad = "gguf.bad_split";
    vec![
        call("split: three parts in order", "ok", new(move || vec![a(), b(), c()])),
        call("split: parts out of order", bad, new(move || vec![a(), c(), b()])),
        call("split: a part missing", bad, new(move || vec![a(), b()])),
        call("split: a part given twice", bad, new(move || vec![a(), a(), b()])),
        call(
            "split: parts disagree on the count",
            bad,
            new(move || vec![part(Some(0), Some(2), "a"), part(Some(1), Some(3), "b")]),
        ),
        call("split: split.no = split.count", bad, new(move || vec![part(Some(1), Some(1), "a")])),
        call("split: split.no without split.count", bad, new(move || vec![part(Some(0), None, "a")])),
        call(
            "split: split.tensors.count wrong",
            bad,
            new(move || vec![split_part(Some(0), Some(2), Some(3), &["a"]), part(Some(1), Some(2), "b")]),
        ),
        call(
            "split: a tensor in two parts",
            "gguf.duplicate_tensor",
            new(move || vec![part(Some(0), Some(2), "a"), part(Some(1), Some(2), "a")]),
        ),
        call(
            "split: a plain file, then a part",
            bad,
            new(move || vec![part(None, None, "a"), part(Some(1), Some(2), "b")]),
        ),
        call(
            "split: split.count is a string",
            "gguf.wrong_type",
            new(|| {
                let mut w = GgufWriter::new();
                w.kv("split.no", Value::U16(0)).kv("split.count", Value::String("1".into()));
                vec![Gguf::from_bytes(&w.to_bytes()).expect("parses")]
            }),
        ),
        call("split: no parts at all", "usage", new(Vec::new)),
        call("split: one plain file", "ok", new(move || vec![part(None, None, "a")])),
        call("split name: part 2 of 3 holds part 1", bad, name("m-00002-of-00003.gguf", p(0, 3, "a"))),
        call("split name: 1 of 2 holds part 1 of 3", bad, name("m-00001-of-00002.gguf", p(0, 3, "a"))),
        call("split name: split name, plain file", bad, name("m-00001-of-00001.gguf", move || part(None, None, "a"))),
        call("split name: agrees", "ok", name("https://h/m-Q4_K_M-00003-of-00003.gguf", p(2, 3, "c"))),
        call("split name: a plain name is not checked", "ok", name("m.gguf", p(1, 3, "b"))),
    ]
}

/// Using the parser out of turn is `usage`.
fn parser_use_cases() -> Vec<Case> {
    let header = |p: &mut GgufParser| p.push(&base().bytes()).map(|g| assert!(g.is_some(), "push returned no header"));
    vec![
        call("parser: push after it returned the header", "usage", move || {
            let mut p = GgufParser::new();
            header(&mut p)?;
            p.push(&[0]).map(|_| ())
        }),
        call("parser: finish after push returned the header", "usage", move || {
            let mut p = GgufParser::new();
            header(&mut p)?;
            p.finish().map(|_| ())
        }),
        call("parser: more bytes than the file length given", "usage", || {
            GgufParser::with_file_len(100).push(&base().bytes()).map(|_| ())
        }),
    ]
}

/// How each way of reading a case came out: (`"whole"` / `"sized/N"` / `"stream/N"`, `"ok"` or the code).
fn run_case(input: &Input) -> Vec<(String, String)> {
    match input {
        Input::Call(f) => vec![("call".into(), outcome(&f()))],
        Input::Bytes(bytes) | Input::BytesLengthDependent(bytes) => {
            let mut got = vec![("whole".to_string(), outcome(&Gguf::from_bytes(bytes)))];
            for chunk in [1, 7, 4096] {
                got.push((format!("sized/{chunk}"), outcome(&chunked(bytes, chunk, true))));
                got.push((format!("stream/{chunk}"), outcome(&chunked(bytes, chunk, false))));
            }
            got
        }
    }
}

/// Whether one way of reading gave what the case expects.
fn as_expected(case: &Case, how: &str, got: &str) -> bool {
    match case.input {
        Input::BytesLengthDependent(_) if how.starts_with("stream") => got != "ok",
        _ => got == case.expect,
    }
}

#[test]
fn malformed_inputs_give_their_error_codes() {
    let cases: Vec<Case> =
        [truncation_cases(), preamble_cases(), metadata_cases(), tensor_cases(), split_cases(), parser_use_cases()]
            .into_iter()
            .flatten()
            .collect();
    let codes: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut names = HashSet::new();
    let mut inputs = HashSet::new();
    let mut failures = Vec::new();
    eprintln!("{:<58} {:<26} got", "input", "expected");
    for case in &cases {
        assert!(names.insert(case.name.as_str()), "two cases named '{}'", case.name);
        assert!(case.expect == "ok" || codes.contains(case.expect), "'{}' expects an unknown code", case.name);
        if let Input::Bytes(b) | Input::BytesLengthDependent(b) = &case.input {
            inputs.insert(b.clone());
        }
        let got = match catch_unwind(AssertUnwindSafe(|| run_case(&case.input))) {
            Ok(got) => got,
            Err(_) => vec![("panic".to_string(), "PANIC".to_string())],
        };
        let wrong: Vec<String> =
            got.iter().filter(|(how, g)| !as_expected(case, how, g)).map(|(how, g)| format!("{how}: {g}")).collect();
        let shown = match got.iter().all(|(_, g)| *g == got[0].1) {
            true => got[0].1.clone(),
            false => got.iter().map(|(how, g)| format!("{how}={g}")).collect::<Vec<_>>().join(" "),
        };
        let mark = if wrong.is_empty() { "" } else { "   <-- WRONG" };
        eprintln!("{:<58} {:<26} {shown}{mark}", case.name, case.expect);
        if !wrong.is_empty() {
            failures.push(format!("{}: expected {}, got {}", case.name, case.expect, wrong.join(", ")));
        }
    }
    let malformed = cases.iter().filter(|c| c.expect != "ok").count();
    eprintln!("{} rows ({malformed} malformed), {} distinct byte inputs", cases.len(), inputs.len());
    assert!(malformed >= 30 && inputs.len() >= 25, "the table is too small");
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Every prefix of the base file is an error, never a panic: `gguf.truncated` inside the header, and
/// `gguf.tensor_out_of_range` once the header is whole but the tensors' bytes are not.
#[test]
fn every_prefix_of_a_file_is_an_error() {
    let a = base().assemble();
    let header_end = a.at("header_end");
    for len in 0..a.bytes.len() {
        let expect = if len < header_end { "gguf.truncated" } else { "gguf.tensor_out_of_range" };
        let prefix = &a.bytes[..len];
        for (how, got) in [
            ("whole", outcome(&Gguf::from_bytes(prefix))),
            ("stream/1", outcome(&chunked(prefix, 1, false))),
            ("stream/5", outcome(&chunked(prefix, 5, false))),
        ] {
            assert_eq!(got, expect, "the first {len} bytes, read {how}");
        }
    }
    assert_eq!(outcome(&Gguf::from_bytes(&a.bytes)), "ok");
}

/// Pushes `bytes[..end]` in chunks of `chunk`; how many bytes were in when `push` returned the header, if it did.
fn pushed_when_returned(bytes: &[u8], end: usize, chunk: usize, known_len: bool) -> Option<usize> {
    let mut parser = if known_len { GgufParser::with_file_len(bytes.len() as u64) } else { GgufParser::new() };
    bytes[..end].chunks(chunk).enumerate().find_map(|(i, c)| {
        let header = parser.push(c).unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
        header.map(|_| i * chunk + c.len())
    })
}

/// `push` returns the header as soon as the last byte of its last item is in ("Returns the header as soon as it is
/// complete", says its doc), whatever the chunk size: a reader that stops at the header, or fetches a byte range that
/// ends there, must not have to call `finish` or fetch more. A small header (one string array of 1,400 bytes, then a
/// short tail) and the R1 header (which ends in padding) are pushed up to their last byte.
#[test]
fn push_returns_the_header_once_its_last_byte_is_in() {
    let tokens: Vec<String> = (0..100).map(|i| format!("tok{i:03}")).collect();
    let spec = Spec {
        version: 3,
        kvs: vec![
            ("tokenizer.ggml.tokens".into(), Value::Array(Array::String(tokens))),
            ("general.name".into(), Value::String("x".into())),
        ],
        tensors: vec![entry("output_norm.weight", &[8], 0, 0)],
        pad_to: 32,
        data_len: 32,
    };
    let small = spec.assemble();
    let r1 = r1_header();
    let r1_end = Gguf::from_bytes(&r1).expect("the R1 header parses").data_offset as usize;
    let inputs = [("small header", &small.bytes, small.at("header_end")), ("R1 header", &r1, r1_end)];
    let mut late = Vec::new();
    for (name, bytes, end) in inputs {
        for chunk in [1, 7, 64, 4096, 1 << 20] {
            for known_len in [false, true] {
                let at = pushed_when_returned(bytes, end, chunk, known_len);
                assert!(at.is_none_or(|at| at <= end), "{name}: the header came {at:?} bytes in, past {end}");
                if at.is_none() {
                    late.push(format!("{name} in chunks of {chunk} (length known: {known_len})"));
                }
            }
        }
    }
    assert!(late.is_empty(), "push did not return the header when all its bytes were in, for {}:\n{}", late.len(), {
        late.join("\n")
    });
}

// ---------------------------------------------------------------------------------------------------------------------
// The mutation fuzzer

/// xorshift64*: a small seeded generator, so that any case can be replayed from its number.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One random change to a header. `Field` overwrites a count, length or type id where the unmutated layout has one.
#[derive(Debug)]
enum Mutation {
    FlipBit { at: usize, bit: u32 },
    Fill { at: usize, len: usize, byte: u8 },
    Truncate { len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Field { at: usize, width: usize, value: u64 },
}

impl Mutation {
    fn random(rng: &mut Rng, bytes: &[u8], fields: &[(usize, usize)]) -> Mutation {
        let len = bytes.len().max(1);
        match rng.below(10) {
            0 | 1 => Mutation::FlipBit { at: rng.below(len), bit: rng.below(8) as u32 },
            2 => Mutation::Fill { at: rng.below(len), len: 1 + rng.below(16), byte: [0x00, 0xFF][rng.below(2)] },
            3 => Mutation::Truncate { len: rng.below(len) },
            4 => Mutation::Insert {
                at: rng.below(len),
                bytes: (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect(),
            },
            5 => Mutation::Delete { at: rng.below(len), len: 1 + rng.below(8) },
            _ => {
                let (at, width) = fields[rng.below(fields.len())];
                let current =
                    bytes.get(at..at + width).map_or(0, |b| b.iter().rev().fold(0, |n, &x| n << 8 | x as u64));
                let value = match rng.below(11) {
                    0 => 0,
                    1 => 1,
                    2 => current.wrapping_add(1 + rng.below(4) as u64),
                    3 => current.wrapping_sub(1 + rng.below(4) as u64),
                    4 => rng.below(64) as u64,
                    5 => u64::MAX,
                    6 => u32::MAX as u64 + rng.below(2) as u64,
                    7 => MAX_STRING_BYTES - 1 + rng.below(3) as u64,
                    8 => MAX_HEADER_BYTES - 1 + rng.below(3) as u64,
                    9 => 1 << rng.below(64),
                    _ => rng.next(),
                };
                Mutation::Field { at, width, value }
            }
        }
    }

    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match *self {
            Mutation::FlipBit { at, bit } if at < len => bytes[at] ^= 1 << bit,
            Mutation::Fill { at, len: n, byte } if at < len => bytes[at..len.min(at + n)].fill(byte),
            Mutation::Truncate { len } => bytes.truncate(len),
            Mutation::Insert { at, bytes: ref new } if at <= len => drop(bytes.splice(at..at, new.iter().copied())),
            Mutation::Delete { at, len: n } if at < len => drop(bytes.drain(at..len.min(at + n))),
            Mutation::Field { at, width, value } if at + width <= len => {
                bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width])
            }
            _ => {}
        }
    }
}

/// A small header made from the R1 header's metadata (arrays cut to 200 entries; the rest, chat template included,
/// whole), `general.alignment`, a nested array, and three tensors with their bytes.
fn fuzz_base() -> Assembled {
    let r1 = Gguf::from_bytes(&r1_header()).expect("the R1 header parses");
    let shorten = |value: &Value| match value {
        Value::Array(Array::String(v)) => Value::Array(Array::String(v[..200].to_vec())),
        Value::Array(Array::I32(v)) => Value::Array(Array::I32(v[..200].to_vec())),
        other => other.clone(),
    };
    let mut kvs: Vec<(String, Value)> = r1.metadata.iter().map(|(k, v)| (k.to_string(), shorten(v))).collect();
    kvs.push(("general.alignment".into(), Value::U32(32)));
    let nested = Array::Array(vec![Array::I32(vec![1, 2]), Array::String(vec!["x".into(), "yz".into()]), nested(2)]);
    kvs.push(("test.nested".into(), Value::Array(nested)));
    let tensors = vec![
        entry("token_embd.weight", &[64, 4], 8, 0), // Q8_0: 4 rows of 2 blocks of 34 bytes = 272
        entry("blk.0.attn_norm.weight", &[64], 0, 288), // F32: 256 bytes
        entry("output.weight", &[256, 2], 12, 544), // Q4_K: 2 rows of 1 block of 144 bytes = 288
    ];
    Spec { version: 3, kvs, tensors, pad_to: 32, data_len: 544 + 288 }.assemble()
}

/// How the whole-buffer and chunked reads of one input came out.
struct Reads {
    whole: Result<Gguf>,
    sized: Result<Gguf>,
    stream: Result<Gguf>,
}

/// Why the reads disagree, if they do. With the file length known, chunking must change nothing. With it unknown,
/// the results must agree too, except where the whole read is `gguf.truncated`: a count or length that the bytes
/// cannot hold is found at once when the length is known, while a stream reads on into bytes that are not what the
/// count says and may meet another error first (see `Input::BytesLengthDependent`). It must still fail.
fn disagreement(r: &Reads) -> Option<String> {
    let same = |a: &Result<Gguf>, b: &Result<Gguf>| match (a, b) {
        (Ok(a), Ok(b)) => same_gguf(a, b),
        (Err(a), Err(b)) => a.code == b.code,
        _ => false,
    };
    let stream_ok = match &r.whole {
        Err(e) if e.code == ErrorCode::GgufTruncated => r.stream.is_err(),
        _ => same(&r.whole, &r.stream),
    };
    let show = |x: &Result<Gguf>| x.as_ref().map(|_| "ok").map_err(|e| e.to_string());
    (!same(&r.whole, &r.sized) || !stream_ok)
        .then(|| format!("whole: {:?}\nsized: {:?}\nstream: {:?}", show(&r.whole), show(&r.sized), show(&r.stream)))
}

/// Runs case `number`: 1 to 3 mutations of the base, then the three reads with random chunk sizes.
fn fuzz_case(seed: u64, number: u64, base: &Assembled) -> (Vec<Mutation>, std::thread::Result<Reads>) {
    let mut rng = Rng::new(seed ^ number.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut bytes = base.bytes.clone();
    let mutations: Vec<Mutation> = (0..1 + rng.below(3))
        .map(|_| {
            let m = Mutation::random(&mut rng, &bytes, &base.fields);
            m.apply(&mut bytes);
            m
        })
        .collect();
    let max_chunk = [1, 16, 256, 4096, bytes.len().max(1)][rng.below(5)];
    let (mut sized_rng, mut stream_rng) = (Rng::new(rng.next()), Rng::new(rng.next()));
    let reads = catch_unwind(AssertUnwindSafe(|| Reads {
        whole: Gguf::from_bytes(&bytes),
        sized: push_chunks(GgufParser::with_file_len(bytes.len() as u64), &bytes, || 1 + sized_rng.below(max_chunk)),
        stream: push_chunks(GgufParser::new(), &bytes, || 1 + stream_rng.below(max_chunk)),
    }));
    (mutations, reads)
}

/// What a run of cases found: whole-read outcomes by code, how often a stream failed with another code than a whole
/// read's `gguf.truncated`, and the failures.
#[derive(Default)]
struct FuzzReport {
    outcomes: BTreeMap<String, u64>,
    stream_differs: u64,
    failures: Vec<String>,
}

fn fuzz_cases(seed: u64, numbers: impl Iterator<Item = u64>, base: &Assembled) -> FuzzReport {
    let mut report = FuzzReport::default();
    for number in numbers {
        let (mutations, reads) = fuzz_case(seed, number, base);
        let failure = match reads {
            Err(_) => Some("a read panicked".to_string()),
            Ok(reads) => {
                *report.outcomes.entry(outcome(&reads.whole)).or_default() += 1;
                report.stream_differs += u64::from(outcome(&reads.whole) != outcome(&reads.stream));
                disagreement(&reads)
            }
        };
        if let Some(why) = failure {
            let replay = format!("WEBR1_FUZZ_SEED={seed} WEBR1_FUZZ_CASE={number}");
            report.failures.push(format!("case {number} ({replay}): {mutations:?}\n{why}"));
        }
    }
    report
}

/// `WEBR1_FUZZ_CASES` (default 100,000) mutated headers from `WEBR1_FUZZ_SEED` (default fixed), spread over the
/// cores; `WEBR1_FUZZ_CASE=N` replays case N alone.
#[test]
fn chunked_parser_agrees_with_whole_parser_on_mutated_headers() {
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}={v}")));
    let seed = env("WEBR1_FUZZ_SEED").unwrap_or(0x4747_5546); // "GGUF"
    let (first, n_cases) = match env("WEBR1_FUZZ_CASE") {
        Some(n) => (n, 1),
        None => (0, env("WEBR1_FUZZ_CASES").unwrap_or(100_000)),
    };
    let base = fuzz_base();
    assert!(base.bytes.len() <= 64 << 10, "the fuzz base is {} bytes", base.bytes.len());
    assert!(Gguf::from_bytes(&base.bytes).is_ok(), "the fuzz base parses");

    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let reports: Vec<FuzzReport> = std::thread::scope(|scope| {
        let base = &base;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || fuzz_cases(seed, (first + t..first + n_cases).step_by(threads as usize), base))
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("fuzz worker")).collect()
    });
    let took = start.elapsed();

    let mut total = FuzzReport::default();
    for r in reports {
        r.outcomes.into_iter().for_each(|(k, n)| *total.outcomes.entry(k).or_default() += n);
        total.stream_differs += r.stream_differs;
        total.failures.extend(r.failures);
    }
    eprintln!("{n_cases} mutated headers of ~{} bytes on {threads} threads in {took:.2?}", base.bytes.len());
    eprintln!("whole reads gave (streams of unknown length gave another error in {}):", total.stream_differs);
    for (what, n) in &total.outcomes {
        eprintln!("  {what:<28} {n}");
    }
    let first_failures = total.failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n\n");
    assert!(
        total.failures.is_empty(),
        "{} of {n_cases} cases failed; the first:\n{first_failures}",
        total.failures.len()
    );
    if n_cases >= 10_000 {
        // A fuzzer whose mutations all die at the magic would test nothing.
        assert!(total.outcomes.len() >= 10, "the mutations reach too few checks: {:?}", total.outcomes);
        assert!(total.outcomes.get("ok").copied().unwrap_or(0) * 100 >= n_cases, "under 1% of the cases are valid");
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Error codes

#[test]
fn error_codes_are_unique_and_documented() {
    let source = include_str!("../src/error.rs");
    let table: Vec<&str> =
        source.lines().filter_map(|l| l.strip_prefix("//! | `")).map(|rest| rest.split('`').next().unwrap()).collect();
    let mut seen = HashSet::new();
    for code in ErrorCode::ALL {
        let text = code.as_str();
        assert!(seen.insert(text), "{code:?} and another code are both '{text}'");
        assert!(table.contains(&text), "'{text}' is not in the table at the top of src/error.rs");
        assert_eq!(code.to_string(), text);
        let well_formed = text
            .split('.')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        assert!(well_formed, "'{text}' is not lower_case words (digits allowed) joined by dots");
    }
    assert_eq!(table.len(), seen.len(), "the table lists a code twice or one that ErrorCode::ALL lacks: {table:?}");

    // ALL lists every variant of the enum.
    let body = source.split("pub enum ErrorCode {").nth(1).and_then(|s| s.split('}').next()).expect("enum ErrorCode");
    let variants: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| l.trim_end_matches(','))
        .collect();
    let all: Vec<String> = ErrorCode::ALL.iter().map(|c| format!("{c:?}")).collect();
    assert_eq!(variants, all, "ErrorCode::ALL and the enum differ");
}
