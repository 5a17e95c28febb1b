//! The tokenizer against llama.cpp: every record of `tokenize.<vocab>.jsonl` must give the same ids, byte for byte, and
//! decode back to its text; the end-of-generation sets must be llama.cpp's.

mod common;

use webr1::gguf::Gguf;
use webr1::tokenizer::{Detokenizer, Tokenizer};

fn load(vocab: &str) -> Option<Tokenizer> {
    let path = common::vocab_gguf(vocab)?;
    let gguf = Gguf::read_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Tokenizer::from_metadata(&gguf.metadata).unwrap_or_else(|e| panic!("{vocab}: {e}")))
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn check_vocab(vocab: &str) {
    let Some(tok) = load(vocab) else { return };
    let records = common::jsonl(&format!("tokenize.{vocab}.jsonl"));
    assert_eq!(records.len(), 42, "tokenize.{vocab}.jsonl should hold the 42 texts of tokenize.txt");
    let mut failures = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        let text = rec["text"].as_str().expect("text");
        let want = ids_of(&rec["ids"]);
        let got = tok.encode(text).unwrap_or_else(|e| panic!("{vocab} record {i}: {e}"));
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            failures.push(format!(
                "record {i} {:?}: first difference at id {at}: got {:?}, llama.cpp {:?}",
                text.chars().take(40).collect::<String>(),
                &got[at..(at + 5).min(got.len())],
                &want[at..(at + 5).min(want.len())]
            ));
            continue;
        }
        let decoded = tok.decode(&got);
        if decoded != text {
            failures.push(format!("record {i}: decode(ids) = {decoded:?}, text = {text:?}"));
        }
    }
    eprintln!("{vocab}: {}/{} records identical", records.len() - failures.len(), records.len());
    assert!(failures.is_empty(), "{vocab}: {} records differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn r1_qwen_tokenizes_like_llama_cpp() {
    check_vocab("r1-qwen");
}

#[test]
fn qwen05_tokenizes_like_llama_cpp() {
    check_vocab("qwen05");
}

#[test]
fn smol135_tokenizes_like_llama_cpp() {
    check_vocab("smol135");
}

/// The texts of `tokenize.txt`, split as the fixtures README says, are the `text` fields of the `.jsonl` files.
#[test]
fn tokenize_txt_matches_jsonl_texts() {
    let raw = std::fs::read_to_string(common::fixture("tokenize.txt")).expect("tokenize.txt");
    let raw = raw.strip_suffix('\n').unwrap_or(&raw);
    let mut records: Vec<Vec<&str>> = vec![Vec::new()];
    for line in raw.split('\n') {
        if line == "%%" {
            records.push(Vec::new());
        } else {
            records.last_mut().expect("one record").push(line);
        }
    }
    let records: Vec<String> = records.iter().map(|lines| lines.join("\n")).collect();
    let texts: Vec<String> =
        common::jsonl("tokenize.r1-qwen.jsonl").iter().map(|r| r["text"].as_str().expect("text").to_string()).collect();
    assert_eq!(records.len(), texts.len());
    for (i, (a, b)) in records.iter().zip(&texts).enumerate() {
        assert_eq!(a, b, "record {i}");
    }
}

/// llama.cpp's `llama_vocab_is_eog` sets, from the fixtures README's table.
#[test]
fn end_of_generation_sets_are_llama_cpps() {
    /// (vocabulary, end-of-generation ids, BOS, EOS, add BOS)
    type Case<'a> = (&'a str, &'a [u32], Option<u32>, Option<u32>, bool);
    let cases: &[Case] = &[
        ("smol135", &[0, 2, 4], Some(1), Some(2), false),
        ("qwen05", &[128247, 151643, 151645, 151662, 151663, 151664], Some(151643), Some(151645), false),
        ("r1-qwen", &[128247, 151643, 151662, 151663, 151664], Some(151646), Some(151643), true),
    ];
    for &(vocab, eog, bos, eos, add_bos) in cases {
        let Some(tok) = load(vocab) else { continue };
        assert_eq!(tok.eog_ids(), eog, "{vocab} end-of-generation ids");
        assert_eq!((tok.bos, tok.eos, tok.add_bos), (bos, eos, add_bos), "{vocab} bos/eos/add_bos");
    }
}

/// Control tokens typed by a user stay text; user-defined tokens (R1's `<think>`) match anywhere.
#[test]
fn control_tokens_in_untrusted_text_stay_text() {
    let Some(tok) = load("r1-qwen") else { return };
    for marker in ["<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>"]
    {
        let id = tok.control_id(marker).unwrap_or_else(|| panic!("{marker} is a control token"));
        let ids = tok.encode(&format!("hi {marker} there")).unwrap();
        assert!(!ids.contains(&id), "{marker} became control id {id}: {ids:?}");
        assert!(ids.len() > 3, "{marker} was not spelled out as text: {ids:?}");
        assert_eq!(tok.encode_trusted(marker, false).unwrap(), vec![id], "trusted text does parse {marker}");
    }
    assert_eq!(tok.encode("<think>").unwrap(), vec![151648]);
    assert_eq!(tok.encode("</think>").unwrap(), vec![151649]);
    assert_eq!(tok.encode_trusted("<｜User｜>hi", true).unwrap()[..2], [151646, 151644]);
}

/// Streaming detokenisation of real CJK and emoji tokens gives the same text as a whole decode, and no chunk ever
/// holds a broken character.
#[test]
fn streaming_decode_never_splits_a_character() {
    let Some(tok) = load("r1-qwen") else { return };
    let text = "深度思考 🤔👍🏽 – naïve café, 한국어, العربية 🇯🇵";
    let ids = tok.encode(text).unwrap();
    let mut detok = Detokenizer::new();
    let mut out = String::new();
    let mut held_back = 0;
    for &id in &ids {
        let chunk = detok.push(tok.piece(id));
        assert!(!chunk.contains('\u{fffd}'), "broken character in {chunk:?}");
        held_back += usize::from(chunk.is_empty());
        out.push_str(&chunk);
    }
    out.push_str(&detok.finish());
    assert_eq!(out, text);
    assert!(held_back > 0, "this text should split characters across tokens; the test would prove nothing");
}

/// llama.cpp's own tokenizer suite for vocabulary `name` (the data of its `test-tokenizer-0`): every input of
/// `ggml-vocab-NAME.gguf.inp` tokenised without BOS must give exactly the ids of the matching line of `.out`.
fn check_llama_cpp_suite(name: &str) {
    let file = format!("ggml-vocab-{name}.gguf");
    let (Some(vocab), Some(inp), Some(out)) = (
        common::vocab_suite_file(&file),
        common::vocab_suite_file(&format!("{file}.inp")),
        common::vocab_suite_file(&format!("{file}.out")),
    ) else {
        return;
    };
    let gguf = Gguf::read_file(&vocab).unwrap_or_else(|e| panic!("{}: {e}", vocab.display()));
    let tok = Tokenizer::from_metadata(&gguf.metadata).unwrap_or_else(|e| panic!("{name}: {e}"));
    // As test-tokenizer-0 reads them: inputs separated by "\n__ggml_vocab_test__\n", one line of ids per input.
    let raw = std::fs::read_to_string(&inp).expect("suite inputs");
    let mut inputs: Vec<&str> = raw.split("\n__ggml_vocab_test__\n").collect();
    if inputs.last() == Some(&"") {
        inputs.pop();
    }
    let expected: Vec<Vec<u32>> = std::fs::read_to_string(&out)
        .expect("suite outputs")
        .lines()
        .map(|line| line.split_whitespace().map(|id| id.parse().expect("an id")).collect())
        .collect();
    assert_eq!(inputs.len(), expected.len(), "{name}: inputs and expected lines differ in number");
    assert!(inputs.len() >= 40, "{name}: only {} cases; the suite has 46", inputs.len());
    let mut failures = Vec::new();
    for (i, (text, want)) in inputs.iter().zip(&expected).enumerate() {
        let got = tok.encode(text).unwrap_or_else(|e| panic!("{name} case {i}: {e}"));
        if &got != want {
            failures.push(format!("case {i} {text:?}: got {got:?}, llama.cpp {want:?}"));
        }
    }
    eprintln!("{name}: {}/{} cases identical", inputs.len() - failures.len(), inputs.len());
    assert!(failures.is_empty(), "{name}: {} cases differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn llama_bpe_suite_of_llama_cpp() {
    check_llama_cpp_suite("llama-bpe");
}

#[test]
fn qwen2_suite_of_llama_cpp() {
    check_llama_cpp_suite("qwen2");
}

#[test]
fn gpt2_suite_of_llama_cpp() {
    check_llama_cpp_suite("gpt-2");
}
