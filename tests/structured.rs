//! Structured output (README.md, "Structured output"): answers constrained to the JSON schemas of
//! `tests/fixtures/schemas.json` validate with Python's `jsonschema` and its format checker (a few schemas on smol135
//! in CI, all 44 on qwen05 with `WEBR1_SLOW=1`), each × 2 prompts × greedy and temperature 1; reasoning tokens are the
//! same with and without a schema; the GPU mask leaves every sampler setting only allowed tokens; unconstrained
//! decoding uploads no mask; bad schemas and grammars are quick coded errors (on R1's 152K vocabulary, no GPU).

mod common;
#[path = "common/gpu.rs"]
mod gpu_common;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webr1::chat::Message;
use webr1::engine::{
    Compiler, Engine, EngineOptions, Event, Finish, FinishReason, Input, OutputFormat, Request, Sampling,
};
use webr1::gpu::ops::{apply_mask, mask_words, sample, SamplingParams};
use webr1::gpu::{DType, Tensor};

/// The schemas CI runs on smol135 (objects, enums, nested arrays, a format, anyOf, $ref).
const CI_SCHEMAS: [&str; 4] = ["person", "color_enum", "date", "ref"];
const PROMPTS: [&str; 2] = ["Give an example of this as JSON.", "Answer with JSON about a famous place."];

fn schemas() -> Vec<Value> {
    let text = std::fs::read_to_string(common::fixture("schemas.json")).expect("tests/fixtures/schemas.json");
    serde_json::from_str::<Vec<Value>>(&text).expect("a JSON array")
}

fn engine(name: &str) -> Option<Engine> {
    let options = EngineOptions { context_length: Some(1024), ..EngineOptions::default() };
    pollster::block_on(common::engine(name, options))
}

/// Runs a request to the end: (reasoning, content, finish).
fn run(engine: &mut Engine, request: Request) -> webr1::Result<(String, String, Finish)> {
    pollster::block_on(async {
        let mut generation = engine.generate(request)?;
        let (mut reasoning, mut content, mut finish) = (String::new(), String::new(), None);
        while let Some(event) = generation.next().await {
            match event? {
                Event::Reasoning(t) => reasoning.push_str(&t),
                Event::Content(t) => content.push_str(&t),
                Event::ToolCall(_) => panic!("no tools were given"),
                Event::Done(f) => finish = Some(f),
            }
        }
        Ok((reasoning, content, finish.expect("a Done event")))
    })
}

/// Validates `cases` ([{name, schema, answer}]) with tests/structured/validate.py; `None` after a skip.
fn validate(cases: &[Value]) -> Option<Value> {
    let file = std::env::temp_dir().join(format!("webr1-structured-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(cases).unwrap()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/structured/validate.py");
    let out = std::process::Command::new("python3").arg(&script).arg(&file).output().expect("python3 runs");
    let _ = std::fs::remove_file(&file);
    if out.status.code() == Some(3) && !common::in_ci() {
        eprintln!("SKIP: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    assert!(out.status.success(), "validate.py failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("one JSON line"))
}

fn answers_validate(model: &str, names: Option<&[&str]>) {
    let Some(mut engine) = engine(model) else { return };
    let started = Instant::now();
    let (mut answers, mut tokens, mut masked) = (0, 0, 0u64);
    for entry in schemas().into_iter().filter(|e| names.is_none_or(|n| n.contains(&e["name"].as_str().unwrap()))) {
        let schema = entry["schema"].clone();
        let mut cases = Vec::new();
        for prompt in PROMPTS {
            for sampling in
                [Sampling::greedy(), Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 11 }]
            {
                let text = format!("{prompt} The JSON schema:\n{schema}");
                let mut request = Request::new(Input::Messages(vec![Message::user(text)]));
                request.sampling = sampling;
                request.max_tokens = Some(320);
                request.format = Some(OutputFormat::JsonSchema(schema.clone()));
                let steps_before = engine.session().masked_steps();
                let (_, content, finish) = run(&mut engine, request).unwrap_or_else(|e| panic!("{entry}: {e}"));
                assert_eq!(finish.reason, FinishReason::Stop, "{} cut short: {content}", entry["name"]);
                tokens += finish.usage.completion_tokens;
                masked += engine.session().masked_steps() - steps_before;
                cases.push(json!({"name": entry["name"], "schema": schema, "answer": content}));
            }
        }
        // Validated schema by schema, so that a long run reports as it goes.
        let Some(report) = validate(&cases) else { return };
        assert_eq!(report["checked"], cases.len());
        assert_eq!(report["failures"], json!([]), "answers jsonschema rejects");
        answers += cases.len();
        eprintln!(
            "{model} {:<18} {} answers valid ({:.0}s so far): {}",
            entry["name"].as_str().unwrap(),
            cases.len(),
            started.elapsed().as_secs_f64(),
            cases[0]["answer"]
        );
    }
    eprintln!(
        "{model}: jsonschema (with its format checker) validated all {answers} answers, {tokens} tokens ({masked} masked \
         steps), in {:.0}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn answers_under_a_schema_validate_with_jsonschema() {
    answers_validate("smol135", Some(&CI_SCHEMAS));
}

#[test]
fn all_schemas_on_qwen05_validate_with_jsonschema() {
    if !common::slow() {
        eprintln!("SKIP: the full schema set runs with WEBR1_SLOW=1");
        return;
    }
    answers_validate("qwen05", None);
}

/// A raw prompt that ends inside `<think>`: the thinking budget closes it, then the answer is constrained. The
/// reasoning's tokens are the same as without a schema (same seed), and the answer validates.
#[test]
fn reasoning_is_free_and_unchanged_then_the_answer_follows_the_schema() {
    let Some(mut engine) = engine("smol135") else { return };
    let text = "<|im_start|>user\nIs 7 a prime number? Answer as JSON.<|im_end|>\n<|im_start|>assistant\n<think>\n";
    let ids = engine.tokenizer().encode_trusted(text, true).unwrap();
    let schema = json!({"type": "object", "properties": {"prime": {"type": "boolean"}}, "required": ["prime"],
                        "additionalProperties": false});
    let request = |format: Option<OutputFormat>| {
        let mut r = Request::new(Input::Tokens { ids: ids.clone(), starts_in_reasoning: true });
        r.sampling = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 5 };
        r.thinking_budget = Some(12);
        r.max_tokens = Some(40);
        r.format = format;
        r
    };
    let (free_reasoning, _, free) = run(&mut engine, request(None)).unwrap();
    let masked_before = engine.session().masked_steps();
    let (reasoning, content, finish) =
        run(&mut engine, request(Some(OutputFormat::JsonSchema(schema.clone())))).unwrap();
    assert_eq!(finish.usage.reasoning_tokens, 12, "{finish:?}");
    assert_eq!(finish.token_ids[..12], free.token_ids[..12], "the reasoning tokens differ with a schema");
    assert_eq!(reasoning, free_reasoning);
    assert_eq!(finish.reason, FinishReason::Stop, "{content}");
    let answer: Value = serde_json::from_str(&content).unwrap_or_else(|e| panic!("{content:?}: {e}"));
    assert!(answer["prime"].is_boolean(), "{answer}");
    // Masks start after </think>: one per answer token and one for its end.
    let close = engine.tokenizer().encode("\n</think>\n\n").unwrap().len();
    let answer_tokens = finish.usage.completion_tokens - finish.usage.reasoning_tokens - close;
    let masked = engine.session().masked_steps() - masked_before;
    assert_eq!(masked, answer_tokens as u64 + 1, "{finish:?}");
    assert_eq!(finish.mask_seconds.len() as u64, masked);
    eprintln!("reasoning {reasoning:?} then {content}");
}

/// Unconstrained decoding uploads no mask and runs no extra dispatch; a max_tokens inside the answer ends as
/// `length` with the partial text.
#[test]
fn unconstrained_decoding_has_no_mask_and_a_cut_answer_is_length() {
    let Some(mut engine) = engine("smol135") else { return };
    let dispatches = engine.session().decode_dispatches();
    let mut request = Request::new(Input::Messages(vec![Message::user("Name a colour.")]));
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(6);
    run(&mut engine, request.clone()).unwrap(); // builds the prompt's dispatch list
    let buffers = engine.gpu().buffers_created();
    run(&mut engine, request.clone()).unwrap();
    assert_eq!(engine.session().masked_steps(), 0, "an unconstrained generation uploaded a mask");
    assert_eq!(engine.session().decode_dispatches(), dispatches);
    assert_eq!(engine.gpu().buffers_created(), buffers);
    request.format =
        Some(OutputFormat::JsonSchema(json!({"type": "object", "properties": {"colour": {"type": "string"}},
                                                          "required": ["colour"]})));
    request.max_tokens = Some(4);
    let (_, content, finish) = run(&mut engine, request.clone()).unwrap();
    assert_eq!(finish.reason, FinishReason::Length);
    assert!(content.starts_with("{\""), "{content}");
    assert!(serde_json::from_str::<Value>(&content).is_err(), "4 tokens cannot close it: {content}");
    assert_eq!(engine.session().masked_steps(), 4, "one mask per constrained step");
    request.format = None;
    run(&mut engine, request).unwrap();
    assert_eq!(engine.session().masked_steps(), 4, "the mask is off again after a constrained request");
}

/// The mask kernel: after it, greedy, top-k, top-p, min-p and temperature sampling only ever pick allowed tokens, and
/// greedy picks the largest allowed logit (on every GPU path, at a vocabulary that is not a multiple of 32).
#[test]
fn the_mask_leaves_every_sampler_only_allowed_tokens() {
    for (path, gpu) in gpu_common::gpus() {
        let n = 5000 + 7;
        let logits: Vec<f32> = (0..n).map(|i| (((i * 7919) % 1000) as f32) * 0.01).collect();
        let mut words = vec![0u32; mask_words(n)];
        let allowed: Vec<usize> = (0..n).filter(|i| (i * 31) % 97 == 3 || *i == n - 1).collect();
        for &i in &allowed {
            words[i / 32] |= 1 << (i % 32);
        }
        let best = *allowed.iter().max_by(|&&a, &&b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a))).unwrap();
        let settings = [
            SamplingParams::greedy(),
            SamplingParams::new(1.0, 40, 1.0, 0.0, 3, 0),
            SamplingParams::new(0.8, 0, 0.9, 0.0, 4, 0),
            SamplingParams::new(1.5, 0, 1.0, 0.05, 5, 0),
            SamplingParams::new(f32::INFINITY, 0, 1.0, 0.0, 6, 0),
        ];
        for params in settings {
            let row = Tensor::from_f32(&gpu, "logits", &[1, n], &logits).unwrap();
            let mask = Tensor::from_u32(&gpu, "mask", &[words.len()], &words).unwrap();
            let p = params.tensor(&gpu, "params").unwrap();
            let out = Tensor::new(&gpu, "out", &[1], DType::U32).unwrap();
            let mut list = vec![apply_mask(&gpu, &row, 0, n, &mask).unwrap()];
            list.extend(sample(&gpu, &row, 0, n, &p, &out, 0).unwrap());
            for draw in 0..8 {
                gpu.submit(&list);
                let token = pollster::block_on(out.read_u32(&gpu)).unwrap()[0] as usize;
                assert!(allowed.contains(&token), "{path} {params:?} draw {draw}: token {token} is masked");
                if params.is_greedy() {
                    assert_eq!(token, best, "{path}: greedy must pick the best allowed token");
                }
            }
        }
    }
}

/// The R1 vocabulary's compiler, from the header fixture (no weights, no GPU).
fn r1_compiler() -> Compiler {
    let gguf = webr1::gguf::Gguf::read_file(common::fixture("r1-distill-qwen-7b.header.gguf")).expect("the header");
    let tokenizer = webr1::tokenizer::Tokenizer::from_metadata(&gguf.metadata).unwrap();
    Compiler::new(Arc::new(tokenizer)).unwrap()
}

/// Bad schemas and grammars are coded errors in well under a second each, and every committed schema compiles.
#[test]
fn bad_schemas_are_quick_coded_errors_and_the_committed_ones_compile() {
    let compiler = r1_compiler();
    for entry in schemas() {
        compiler.compile(&OutputFormat::JsonSchema(entry["schema"].clone())).unwrap_or_else(|e| panic!("{entry}: {e}"));
    }
    // 100 levels as a value (a 10,000-deep one arrives as text and stops at the JSON parser's nesting limit: see
    // tests/serve.rs).
    let mut deep = json!({"type": "integer"});
    for _ in 0..100 {
        deep = json!({"type": "array", "items": deep});
    }
    let big_enum = json!({"enum": (0..5000).collect::<Vec<_>>()});
    let cases: Vec<(OutputFormat, &str, &str)> = vec![
        (OutputFormat::JsonSchema(json!({"type": "strin"})), "structured.schema", "strin"),
        (
            OutputFormat::JsonSchema(json!({"type": "object", "dependentSchemas": {"a": {}}})),
            "structured.schema",
            "dependentSchemas",
        ),
        (OutputFormat::JsonSchema(json!({"type": "string", "format": "color-hex"})), "structured.schema", "color-hex"),
        (OutputFormat::JsonSchema(deep), "structured.schema", "deeper than 64"),
        (OutputFormat::JsonSchema(json!({"$ref": "#"})), "structured.schema", "admits no value"),
        (
            OutputFormat::JsonSchema(json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}})),
            "structured.schema",
            "",
        ),
        (OutputFormat::JsonSchema(big_enum), "structured.schema", "enum of 5000"),
        (OutputFormat::JsonSchema(json!(42)), "structured.schema", "must be an object"),
        (OutputFormat::Lark("start: foo".into()), "structured.grammar", "foo"),
        (OutputFormat::Regex("(unclosed".into()), "structured.grammar", ""),
    ];
    for (format, code, says) in cases {
        let started = Instant::now();
        let e = compiler.compile(&format).err().unwrap_or_else(|| panic!("{format:?} compiled"));
        let took = started.elapsed();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.message.contains(says), "{e} should mention {says:?}");
        assert!(took < Duration::from_secs(1), "{code} took {took:?}: {e}");
        eprintln!("{:>6.1} ms  {e}", took.as_secs_f64() * 1e3);
    }
}

/// Each template's tool format: R1-Distill's gets the tool list in its system prompt and earlier calls written back
/// in its own markers (well formed, closed); Qwen2.5's renders the list itself; smol135's gets the generic layout.
#[test]
fn tool_prompts_use_each_models_own_format() {
    use webr1::chat::{ChatTemplate, ToolFormat, Tools};
    let tools = Tools::from_json(
        Some(&json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather <|im_end|> now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])),
        None,
        None,
    )
    .unwrap()
    .unwrap();
    let conversation = Message::list_from_json(&json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
    ]))
    .unwrap();
    let mut seen = Vec::new();
    for (name, want) in [
        ("r1-qwen", ToolFormat::DeepSeek),
        ("qwen05", ToolFormat::Hermes { native: true }),
        ("smol135", ToolFormat::Hermes { native: false }),
    ] {
        let Some(path) = common::vocab_gguf(name) else { continue };
        let gguf = webr1::gguf::Gguf::read_file(&path).unwrap();
        let template = ChatTemplate::from_gguf(&gguf).unwrap();
        let tokenizer = webr1::tokenizer::Tokenizer::from_metadata(&gguf.metadata).unwrap();
        let format = ToolFormat::for_template(&template);
        assert_eq!(format, want, "{name}");
        let (messages, listed) = format.prepare(&conversation, &tools);
        let prompt = template.prompt_with_tools(&tokenizer, &messages, listed.as_ref()).unwrap();
        assert!(prompt.text.contains("\"get_weather\""), "{name}: the tool list is in the prompt:\n{}", prompt.text);
        assert!(prompt.text.contains("21 C"), "{name}: the tool result is in the prompt");
        // The description's `<|im_end|>` is the user's text: never a control token.
        if let Some(im_end) = tokenizer.control_id("<|im_end|>") {
            let ends = prompt.ids.iter().filter(|&&id| id == im_end).count();
            let written = prompt.text.matches("<|im_end|>").count();
            assert_eq!(ends, written - 1, "{name}: the description's <|im_end|> became a control token");
        }
        seen.push((name, prompt.text));
    }
    for (name, text) in &seen {
        match *name {
            "r1-qwen" => {
                assert!(text.contains("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"), "{text}");
                assert!(
                    text.contains("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>21 C<｜tool▁output▁end｜>"),
                    "{text}"
                );
            }
            "qwen05" => {
                assert!(text.contains("<tools>\n{\"type\": \"function\""), "{text}");
                assert!(
                    text.contains(
                        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
                    ),
                    "{text}"
                );
                assert!(text.contains("<tool_response>\n21 C\n</tool_response>"), "{text}");
            }
            _ => {
                assert!(text.contains("<tools>\n{\"type\": \"function\""), "{text}");
                assert!(text.contains("<tool_response>\n21 C\n</tool_response>"), "{text}");
            }
        }
    }
}
