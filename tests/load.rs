//! `Engine::load` from a byte stream, as the browser feeds it: odd chunk sizes, a download that breaks off twice and
//! is resumed where it stopped, a model split in two files, and the errors for bytes that are not a model and for a
//! stream that cannot be resumed. The loaded model must give llama.cpp's greedy tokens (the f32 reference).

mod common;

use std::collections::HashMap;
use webr1::engine::{ByteStream, Engine, EngineOptions, Event, Input, ModelSource, Opened, Request, Sampling};
use webr1::gguf::writer::GgufWriter;
use webr1::gguf::{Gguf, Value};
use webr1::gpu::GpuOptions;
use webr1::{err, ErrorCode, Result};

/// Files in memory, streamed in `chunk`-byte pieces; each `(file, offset)` in `breaks` cuts the first stream that
/// reaches it (with an error, or by ending early when `quietly`).
struct MemorySource {
    files: HashMap<String, Vec<u8>>,
    first: String,
    chunk: usize,
    breaks: Vec<(String, u64, bool)>,
    opens: Vec<(String, u64)>,
}

struct MemoryStream {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    cut: Option<(usize, bool)>,
}

impl ByteStream for MemoryStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let mut end = (self.at + self.chunk).min(self.data.len());
        if let Some((cut, quietly)) = self.cut {
            if self.at >= cut {
                return if quietly { Ok(None) } else { Err(err!(DownloadInterrupted, "connection reset")) };
            }
            end = end.min(cut);
        }
        let bytes = self.data[self.at..end].to_vec();
        self.at = end;
        Ok((!bytes.is_empty()).then_some(bytes))
    }
}

impl ModelSource for MemorySource {
    type Stream = MemoryStream;

    fn name(&self) -> &str {
        &self.first
    }

    async fn open(&mut self, _part: usize, name: &str, offset: u64) -> Result<Opened<MemoryStream>> {
        self.opens.push((name.to_string(), offset));
        let data = self.files.get(name).ok_or_else(|| err!(DownloadFailed, "404 for {name}"))?.clone();
        let next_break = self.breaks.iter().position(|(file, at, _)| file == name && *at > offset);
        let cut = next_break.map(|i| {
            let (_, at, quietly) = self.breaks.remove(i);
            (at as usize, quietly)
        });
        let file_len = Some(data.len() as u64);
        Ok(Opened { stream: MemoryStream { data, at: offset as usize, chunk: self.chunk, cut }, file_len })
    }
}

impl MemorySource {
    fn new(files: Vec<(&str, Vec<u8>)>, chunk: usize) -> MemorySource {
        let first = files[0].0.to_string();
        let files = files.into_iter().map(|(n, d)| (n.to_string(), d)).collect();
        MemorySource { files, first, chunk, breaks: Vec::new(), opens: Vec::new() }
    }
}

fn options() -> EngineOptions {
    EngineOptions {
        gpu: GpuOptions { force_f32: true, ..GpuOptions::default() },
        context_length: Some(256),
        ..EngineOptions::default()
    }
}

/// Loads, or `None` (after a SKIP) without a GPU outside CI.
fn load(source: &mut MemorySource) -> Option<Engine> {
    match pollster::block_on(Engine::load(source, options(), |_| {})) {
        Ok(engine) => Some(engine),
        Err(e) if e.code == ErrorCode::WebgpuUnavailable && !common::in_ci() => {
            eprintln!("SKIP: no GPU adapter ({e})");
            None
        }
        Err(e) => panic!("the model does not load: {e}"),
    }
}

/// Checks the first greedy tokens of the first f32 reference prompt; a divergence is allowed only at a near-tie.
fn assert_reference_tokens(engine: &mut Engine) {
    let case = &common::jsonl("greedy-f32.smol135.jsonl")[0];
    let ids: Vec<u32> = case["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let mut request = Request::new(Input::Tokens { ids, starts_in_reasoning: false });
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(8);
    let got = pollster::block_on(async {
        let mut generation = engine.generate(request).unwrap();
        let mut ids = Vec::new();
        while let Some(event) = generation.next().await {
            if let Event::Done(finish) = event.unwrap() {
                ids = finish.token_ids;
            }
        }
        ids
    });
    let want: Vec<u32> = case["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            let top = &case["steps"][i]["top"];
            let margin = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            assert!(margin < 0.05, "token {i}: got {g}, llama.cpp {w} with a margin of {margin}; got {got:?}");
            return;
        }
    }
    assert!(got.len() >= 4, "too few tokens to compare: {got:?}");
}

#[test]
fn a_download_that_breaks_off_twice_resumes_and_the_model_answers_like_the_reference() {
    let Some(path) = common::model("smol135") else { return };
    let bytes = std::fs::read(&path).unwrap();
    let len = bytes.len() as u64;
    let mut source = MemorySource::new(vec![("smol135.gguf", bytes)], 1_000_003);
    source.breaks = vec![("smol135.gguf".into(), len * 2 / 5, false), ("smol135.gguf".into(), len * 3 / 4, true)];
    let Some(mut engine) = load(&mut source) else { return };
    let offsets: Vec<u64> = source.opens.iter().map(|(_, at)| *at).collect();
    assert_eq!(offsets, vec![0, len * 2 / 5, len * 3 / 4], "opened once, then resumed exactly where each cut fell");
    assert_reference_tokens(&mut engine);
}

/// Splits a GGUF in two as `llama-gguf-split` does: the metadata and the first tensors in part 1, the rest in part 2.
fn split_in_two(bytes: &[u8], prefix: &str) -> Vec<(String, Vec<u8>)> {
    let gguf = Gguf::from_bytes(bytes).unwrap();
    let half = gguf.tensors.len() / 2;
    let mut parts = Vec::new();
    for (no, tensors) in [&gguf.tensors[..half], &gguf.tensors[half..]].into_iter().enumerate() {
        let mut w = GgufWriter::new();
        if no == 0 {
            for (key, value) in gguf.metadata.iter() {
                w.kv(key, value.clone());
            }
            w.kv("split.tensors.count", Value::I32(gguf.tensors.len() as i32));
        }
        w.kv("split.no", Value::U16(no as u16)).kv("split.count", Value::U16(2));
        for t in tensors {
            let start = (gguf.data_offset + t.offset) as usize;
            let data = bytes[start..start + t.n_bytes as usize].to_vec();
            w.tensor(&t.name, &t.dims, t.ty, Some(data)).unwrap();
        }
        parts.push((format!("{prefix}-{:05}-of-00002.gguf", no + 1), w.to_bytes()));
    }
    parts
}

#[test]
fn a_split_model_loads_from_its_first_url() {
    let Some(path) = common::model("smol135") else { return };
    let parts = split_in_two(&std::fs::read(&path).unwrap(), "https://models.test/smol");
    let files = parts.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let mut source = MemorySource::new(files, 65_536);
    let Some(mut engine) = load(&mut source) else { return };
    let names: Vec<&str> = source.opens.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [&parts[0].0, &parts[1].0, &parts[1].0], "part 2: its header first, then the whole file");
    assert_reference_tokens(&mut engine);
}

#[test]
fn bytes_that_are_not_a_model_fail_before_any_gpu_work() {
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut source = MemorySource::new(vec![("x.gguf", garbage)], 4096);
    let e = pollster::block_on(Engine::load(&mut source, options(), |_| {})).err().expect("garbage is refused");
    assert_eq!(e.code, ErrorCode::GgufBadMagic, "{e}");
}

#[test]
fn a_download_that_keeps_breaking_gives_up_with_download_interrupted() {
    let mut header = GgufWriter::new();
    header.kv("general.architecture", Value::String("llama".into()));
    header.kv("general.description", Value::String("x".repeat(1000)));
    let bytes = header.to_bytes();
    let mut source = MemorySource::new(vec![("m.gguf", bytes)], 7);
    // Every stream breaks 8 bytes after it starts.
    source.breaks = (1..=40).map(|i| ("m.gguf".to_string(), 8 * i, false)).collect();
    let e = pollster::block_on(Engine::load(&mut source, options(), |_| {})).err().expect("no model");
    assert_eq!(e.code, ErrorCode::DownloadInterrupted, "{e}");
    assert_eq!(source.opens.len() as u32, 1 + webr1::engine::MAX_RESUMES, "{:?}", source.opens);
}

#[test]
fn a_missing_second_part_is_a_download_error() {
    let mut w = GgufWriter::new();
    w.kv("split.no", Value::U16(0)).kv("split.count", Value::U16(2));
    let mut source = MemorySource::new(vec![("m-00001-of-00002.gguf", w.to_bytes())], 64);
    let e = pollster::block_on(Engine::load(&mut source, options(), |_| {})).err().expect("no part 2");
    assert_eq!(e.code, ErrorCode::DownloadFailed, "{e}");
    assert_eq!(source.opens.last().unwrap().0, "m-00002-of-00002.gguf");
}
