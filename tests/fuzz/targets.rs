//! The fuzz targets, each with the check an input must pass, seeds from the repository's fixtures and a dictionary:
//!
//! | target | what runs | what must hold |
//! |---|---|---|
//! | `gguf` | `Gguf::from_bytes` on the whole input | no panic |
//! | `gguf_chunked` | the incremental parser fed in chunks (sizes drawn from the input), with and without the file length (then checked against it once the header is read) | the same outcome as the whole read (the same error code), except that a stream of unknown length may fail otherwise where the whole read is `gguf.truncated` |
//! | `tokenizer` | R1's vocabulary: encode (text as plain text, and with control tokens), then the streaming detokenizer over those ids and over arbitrary ids | plain text comes back byte for byte; the detokenizer never panics |
//! | `template` | a hostile chat template (the input's text up to a NUL) with messages (the rest), and R1's own template with hostile messages | no panic; rendering stays within its fuel |
//! | `openai` | the server's request parser (`src/cli/openai.rs`) on the input as a request body | no panic; every accepted request passes `Request::validate` |

use super::harness::Target;
use std::path::PathBuf;
use webr1::chat::{ChatTemplate, Message};
use webr1::gguf::{Gguf, GgufParser};
use webr1::tokenizer::{Detokenizer, Tokenizer};

/// The repository: the crate being built is webr1 itself (`cargo test`) or `fuzz/` inside it.
fn repo() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("tests/fixtures").exists() {
        manifest
    } else {
        manifest.parent().map(PathBuf::from).unwrap_or(manifest)
    }
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The directory of committed inputs that once failed a target: each is replayed first, every run.
pub fn regressions(target: &str) -> PathBuf {
    repo().join("tests/fuzz/regressions").join(target)
}

/// R1-Distill-Qwen-7B's real header (its vocabulary, chat template and hyper-parameters; no tensors).
fn r1_header() -> Gguf {
    Gguf::read_file(fixture("r1-distill-qwen-7b.header.gguf")).expect("the R1 header fixture parses")
}

fn words(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn lines(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture(name)).expect("a fixture");
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("JSON")).collect()
}

/// Every target by name.
pub fn all() -> Vec<&'static str> {
    vec!["gguf", "gguf_chunked", "tokenizer", "template", "openai"]
}

pub fn by_name(name: &str) -> Option<Target> {
    Some(match name {
        "gguf" => gguf(),
        "gguf_chunked" => gguf_chunked(),
        "tokenizer" => tokenizer(),
        "template" => template(),
        "openai" => openai(),
        _ => return None,
    })
}

/// Small GGUF files: the R1 header's metadata with arrays cut short, and a tensor table.
fn gguf_seeds() -> Vec<Vec<u8>> {
    use webr1::gguf::writer::GgufWriter;
    use webr1::gguf::Value;
    let r1 = r1_header();
    let mut small = GgufWriter::new();
    for (key, value) in r1.metadata.iter() {
        let value = match value {
            Value::Array(webr1::gguf::Array::String(v)) => {
                Value::Array(webr1::gguf::Array::String(v[..v.len().min(24)].to_vec()))
            }
            Value::Array(webr1::gguf::Array::I32(v)) => {
                Value::Array(webr1::gguf::Array::I32(v[..v.len().min(24)].to_vec()))
            }
            Value::Array(webr1::gguf::Array::F32(v)) => {
                Value::Array(webr1::gguf::Array::F32(v[..v.len().min(24)].to_vec()))
            }
            Value::String(s) if s.len() > 256 => Value::String(s.chars().take(200).collect()),
            other => other.clone(),
        };
        small.kv(key, value);
    }
    let q8 = webr1::quant::GgmlType::Q8_0;
    let f32 = webr1::quant::GgmlType::F32;
    small.tensor("token_embd.weight", &[64, 4], q8, Some(vec![1; 272])).expect("a tensor");
    small.tensor("blk.0.attn_norm.weight", &[64], f32, Some(vec![0; 256])).expect("a tensor");
    let mut tiny = GgufWriter::new();
    tiny.kv("general.architecture", Value::String("llama".into()));
    tiny.kv("general.alignment", Value::U32(64));
    tiny.tensor("t", &[32], f32, Some(vec![0; 128])).expect("a tensor");
    vec![small.to_bytes(), tiny.to_bytes(), b"GGUF\x03\x00\x00\x00".to_vec()]
}

const GGUF_WORDS: &[&str] =
    &["GGUF", "general.alignment", "general.architecture", "tokenizer.ggml.tokens", "split.count"];

fn gguf() -> Target {
    Target {
        name: "gguf",
        run: Box::new(|data| {
            let _ = Gguf::from_bytes(data);
        }),
        seeds: gguf_seeds(),
        dictionary: words(GGUF_WORDS),
        max_len: 256 << 10,
    }
}

/// Chunk sizes drawn from the input's last bytes (1 to 4096 bytes each, cycling).
fn chunks(data: &[u8]) -> Vec<usize> {
    let tail = &data[data.len().saturating_sub(4)..];
    let mut sizes: Vec<usize> = tail.iter().map(|&b| 1 + (b as usize * 97) % 4096).collect();
    if sizes.is_empty() {
        sizes.push(1);
    }
    sizes
}

fn feed(data: &[u8], mut parser: GgufParser) -> webr1::Result<Gguf> {
    let sizes = chunks(data);
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let end = (at + sizes[i % sizes.len()]).min(data.len());
        if let Some(gguf) = parser.push(&data[at..end])? {
            return Ok(gguf);
        }
        at = end;
        i += 1;
    }
    parser.finish()
}

fn gguf_chunked() -> Target {
    Target {
        name: "gguf_chunked",
        run: Box::new(|data| {
            let whole = Gguf::from_bytes(data);
            let sized = feed(data, GgufParser::with_file_len(data.len() as u64));
            // A stream of unknown length ends at the header; the file's length is checked afterwards, as the loader
            // does once it knows it.
            let stream = feed(data, GgufParser::new()).and_then(|g| g.check_file_len(data.len() as u64).map(|()| g));
            let code = |r: &webr1::Result<Gguf>| r.as_ref().err().map(|e| e.code);
            // Printed equality (metadata in file order), so that a NaN value, a bit pattern the fuzzer found, equals
            // itself.
            let printed = |g: &Gguf| {
                let pairs: Vec<_> = g.metadata.iter().collect();
                format!("{} {} {} {:?} {:?}", g.version, g.alignment, g.data_offset, g.tensors, pairs)
            };
            let same = |a: &Gguf, b: &Gguf| a == b || printed(a) == printed(b);
            match (&whole, &sized) {
                (Ok(a), Ok(b)) => assert!(same(a, b), "the chunked read with the length differs from the whole read"),
                _ => assert_eq!(code(&whole), code(&sized), "whole and chunked reads (length known) disagree"),
            }
            match (&whole, &stream) {
                (Err(e), _) if e.code == webr1::ErrorCode::GgufTruncated => {
                    assert!(stream.is_err(), "a truncated file read as a stream must fail too")
                }
                (Ok(a), Ok(b)) => assert!(same(a, b), "the stream read differs from the whole read"),
                _ => assert_eq!(code(&whole), code(&stream), "whole and stream reads disagree"),
            }
        }),
        seeds: gguf_seeds(),
        dictionary: words(GGUF_WORDS),
        max_len: 256 << 10,
    }
}

fn text_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = lines("tokenize.r1-qwen.jsonl")
        .iter()
        .filter_map(|r| r["text"].as_str().map(|t| t.as_bytes().to_vec()))
        .collect();
    let text = std::fs::read_to_string(fixture("tokenize.txt")).expect("tokenize.txt");
    seeds.extend(text.split("\n\n").map(|p| p.as_bytes().to_vec()));
    seeds
}

const TEXT_WORDS: &[&str] = &[
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<think>",
    "</think>",
    "\u{fffd}",
    "\r\n",
    "  ",
    "'s",
    "123456",
    "🙂",
    "\u{200d}",
    "ﬁ",
];

fn tokenizer() -> Target {
    let tok = Tokenizer::from_metadata(&r1_header().metadata).expect("R1's tokenizer");
    let n_vocab = tok.n_vocab() as u32;
    Target {
        name: "tokenizer",
        run: Box::new(move |data| {
            let text = String::from_utf8_lossy(data);
            let ids = tok.encode(&text).expect("plain text always encodes");
            let mut detok = Detokenizer::new();
            let mut back: String = ids.iter().map(|&id| detok.push(tok.piece(id))).collect();
            back.push_str(&detok.finish());
            assert!(back == text, "plain text does not come back: {text:?} → {ids:?} → {back:?}");
            let _ = tok.encode_trusted(&text, true);
            // Arbitrary ids, two bytes each, through the detokenizer: never a panic, never invalid UTF-8.
            let mut detok = Detokenizer::new();
            for pair in data.chunks(2) {
                let id = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
                let _ = detok.push(tok.piece(id.wrapping_mul(37) % n_vocab));
            }
            let _ = detok.finish();
        }),
        seeds: text_seeds(),
        dictionary: words(TEXT_WORDS),
        max_len: 16 << 10,
    }
}

/// A template input: the template's text, a NUL, then messages as `role\x01content\x02` records.
fn template_seeds() -> Vec<Vec<u8>> {
    let r1 = r1_header();
    let r1_source = r1.metadata.get_str("tokenizer.chat_template").ok().flatten().unwrap_or_default().to_string();
    let mut seeds = Vec::new();
    for rec in lines("chat.r1-qwen.jsonl") {
        let messages: Vec<Message> = serde_json::from_value(rec["messages"].clone()).unwrap_or_default();
        let mut record: Vec<u8> = Vec::new();
        for m in &messages {
            record.extend_from_slice(m.role.as_bytes());
            record.push(1);
            record.extend_from_slice(m.content.as_bytes());
            record.push(2);
        }
        let mut seed = r1_source.as_bytes().to_vec();
        seed.push(0);
        seed.extend_from_slice(&record);
        seeds.push(seed);
        seeds.push([b"\x00".as_slice(), &record].concat()); // R1's own template with these messages
    }
    seeds.push(b"{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\x00user\x01hi\x02".to_vec());
    seeds
}

fn parse_messages(bytes: &[u8]) -> Vec<Message> {
    bytes
        .split(|&b| b == 2)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut parts = r.splitn(2, |&b| b == 1);
            let role = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
            let content = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
            Message::new(role, content)
        })
        .collect()
}

const TEMPLATE_WORDS: &[&str] = &[
    "{%",
    "%}",
    "{{",
    "}}",
    "{#",
    "#}",
    " for ",
    " endfor ",
    " if ",
    " endif ",
    " set ",
    " macro ",
    " endmacro ",
    " call ",
    " recursion ",
    "loop.index",
    "messages",
    "message['content']",
    "| tojson",
    "| safe",
    "raise_exception(",
    "range(",
    "* 99999999",
    "~",
    "namespace(",
    ".split(",
    ".strip()",
    "add_generation_prompt",
    "bos_token",
    "strftime_now(",
    "\x00",
    "\x01",
    "\x02",
    "user",
    "assistant",
    "system",
    "<｜Assistant｜>",
];

fn template() -> Target {
    let r1 = r1_header();
    let own = ChatTemplate::from_metadata(&r1.metadata).expect("R1's template");
    let tok = Tokenizer::from_metadata(&r1.metadata).expect("R1's tokenizer");
    Target {
        name: "template",
        run: Box::new(move |data| {
            let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            let messages = parse_messages(data.get(cut + 1..).unwrap_or_default());
            if cut == 0 {
                // R1's own template with hostile messages, through the tokenizer as the engine does.
                let _ = own.prompt(&tok, &messages);
            } else if let Ok(template) = ChatTemplate::new(&String::from_utf8_lossy(&data[..cut]), "<s>", "</s>") {
                let _ = template.render(&messages, true);
            }
        }),
        seeds: template_seeds(),
        dictionary: words(TEMPLATE_WORDS),
        max_len: 16 << 10,
    }
}

fn openai_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = lines("chat.r1-qwen.jsonl")
        .iter()
        .map(|rec| {
            serde_json::json!({"model": "m", "messages": rec["messages"], "max_tokens": 8}).to_string().into_bytes()
        })
        .collect();
    seeds.push(
        br#"{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "temperature":0.3,"top_p":0.5,"top_k":7,"min_p":0.1,"max_completion_tokens":9,"seed":42,"stop":["x","y"],
            "stream":true,"stream_options":{"include_usage":true},"n":1,"presence_penalty":0,"logprobs":false}"#
            .to_vec(),
    );
    seeds
}

const OPENAI_WORDS: &[&str] = &[
    "\"messages\"",
    "\"role\"",
    "\"content\"",
    "\"user\"",
    "\"assistant\"",
    "\"system\"",
    "\"temperature\"",
    "\"top_p\"",
    "\"min_p\"",
    "\"top_k\"",
    "\"max_tokens\"",
    "\"stop\"",
    "\"stream\"",
    "\"stream_options\"",
    "\"include_usage\"",
    "\"seed\"",
    "\"n\"",
    "null",
    "true",
    "false",
    "1e308",
    "-0",
    "NaN",
    "[]",
    "{}",
    "\"\"",
    "9007199254740993",
    "\"tools\"",
    "\"response_format\"",
    "\"logprobs\"",
    "\\u0000",
    "\\ud800",
];

fn openai() -> Target {
    Target {
        name: "openai",
        run: Box::new(|data| {
            if let Ok(chat) = crate::openai::parse_chat_request(data) {
                if let Err(e) = chat.request.validate() {
                    panic!("the parser accepted a request the engine refuses: {e}");
                }
            }
        }),
        seeds: openai_seeds(),
        dictionary: words(OPENAI_WORDS),
        max_len: 64 << 10,
    }
}
