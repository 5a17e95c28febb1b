//! Constrained decoding (README.md, "Structured output"): JSON schemas, Lark grammars, regular expressions and tool-call
//! arguments compiled by llguidance (the grammar engine llama.cpp and Guidance use) over a token trie of the model's
//! own vocabulary, and the per-step allowed-token mask the GPU applies before sampling.
//!
//! - [`Compiler`] holds llguidance's `ParserFactory` for one tokenizer (built once per engine: the trie of every
//!   token's bytes, control tokens marked as special so that no grammar admits them unless it names them) and turns
//!   an [`OutputFormat`] or a Lark grammar into a matcher. Compilation is bounded before llguidance sees a schema:
//!   [`MAX_SCHEMA_DEPTH`] levels of nesting, [`MAX_SCHEMA_BYTES`], [`MAX_ENUM`] values per `enum`; llguidance's own
//!   limits (grammar size, lexer fuel) bound the rest, so a hostile schema is a quick `structured.schema` error.
//! - [`ConstraintRun`] drives one generation's matcher: [`ConstraintRun::mask`] computes the allowed tokens of the
//!   next step (the engine uploads the bits: [`crate::engine::Session::set_mask`]) and
//!   [`ConstraintRun::advance`] moves the grammar on with the sampled token. A grammar that admits no token is a
//!   `structured.dead_end` error, never a hang or an invalid answer.

use crate::tokenizer::Tokenizer;
use crate::{err, Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
use serde_json::Value;
use std::sync::Arc;
use web_time::Instant;

/// Deepest nesting of objects and arrays a schema may have.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Largest schema, as compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Most values one `enum` may list.
pub const MAX_ENUM: usize = 1024;
/// Largest Lark grammar or regular expression, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 256 * 1024;

/// What the answer must match.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object (OpenAI's `response_format: {type: "json_object"}`).
    JsonObject,
    /// A JSON value valid for this schema (`{type: "json_schema", json_schema: {schema}}`).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
    /// A regular expression the whole answer matches.
    Regex(String),
}

impl OutputFormat {
    /// OpenAI's `response_format` (`{type: "text" | "json_object" | "json_schema", json_schema: {name, schema,
    /// strict}}`) or webr1's `grammar` (Lark) or `regex`, at most one of them; `None` for plain text. Errors are
    /// `structured.schema` (with the schema checked against webr1's bounds) or `usage`.
    pub fn from_openai(
        response_format: Option<&Value>,
        grammar: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Option<OutputFormat>> {
        let from_response_format = match response_format {
            None | Some(Value::Null) => None,
            Some(v) => match v.get("type").and_then(Value::as_str) {
                Some("text") => None,
                Some("json_object") => Some(OutputFormat::JsonObject),
                Some("json_schema") => {
                    let spec = v.get("json_schema").filter(|s| s.is_object()).ok_or_else(|| {
                        err!(StructuredSchema, "response_format.json_schema must be an object {{name, schema, strict}}")
                    })?;
                    let schema = spec.get("schema").cloned().unwrap_or(serde_json::json!({}));
                    check_schema_bounds(&schema)?;
                    Some(OutputFormat::JsonSchema(schema))
                }
                _ => return Err(err!(Usage, "response_format.type must be text, json_object or json_schema")),
            },
        };
        let text = |v: Option<&str>, name: &str| -> Result<Option<String>> {
            match v {
                None => Ok(None),
                Some("") => Err(err!(Usage, "{name} must not be empty")),
                Some(s) => Ok(Some(s.to_string())),
            }
        };
        let grammar = text(grammar, "grammar")?.map(OutputFormat::Lark);
        let regex = text(regex, "regex")?.map(OutputFormat::Regex);
        let given: Vec<OutputFormat> = [from_response_format, grammar, regex].into_iter().flatten().collect();
        if given.len() > 1 {
            return Err(err!(Usage, "pass at most one of response_format, grammar and regex"));
        }
        Ok(given.into_iter().next())
    }
}

/// Checks a schema against webr1's bounds before llguidance compiles it: depth, size and `enum` lengths, without
/// recursion (a 10,000-deep schema is refused, not walked).
pub fn check_schema_bounds(schema: &Value) -> Result<()> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(err!(StructuredSchema, "a JSON schema must be an object (or true / false), not {}", kind(schema)));
    }
    let mut stack: Vec<(&Value, usize)> = vec![(schema, 1)];
    let mut bytes = 0usize;
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(err!(StructuredSchema, "the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"));
        }
        bytes += match value {
            Value::String(s) => s.len() + 2,
            Value::Array(a) => a.len() + 2,
            Value::Object(o) => o.keys().map(|k| k.len() + 4).sum::<usize>() + 2,
            _ => 8,
        };
        if bytes > MAX_SCHEMA_BYTES {
            return Err(err!(StructuredSchema, "the schema is larger than {} KiB", MAX_SCHEMA_BYTES / 1024));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => {
                if let Some(Value::Array(values)) = map.get("enum") {
                    if values.len() > MAX_ENUM {
                        return Err(err!(
                            StructuredSchema,
                            "an enum of {} values is more than the {MAX_ENUM} webr1 accepts",
                            values.len()
                        ));
                    }
                }
                stack.extend(map.values().map(|v| (v, depth + 1)));
            }
            _ => {}
        }
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How webr1 writes JSON under a schema: no free whitespace (small models otherwise fill answers with blank lines),
/// Python's `json.dumps` separators `", "` and `": "`.
fn json_options() -> JsonCompileOptions {
    JsonCompileOptions {
        item_separator: ", ".into(),
        key_separator: ": ".into(),
        whitespace_flexible: false,
        ..JsonCompileOptions::default()
    }
}

/// A schema with webr1's JSON layout (see [`json_options`]) in its `x-guidance` key, as llguidance reads it; the
/// caller's own `x-guidance` is replaced.
pub fn with_layout(schema: &Value) -> Value {
    let mut schema = match schema {
        Value::Bool(true) => serde_json::json!({}),
        Value::Bool(false) => serde_json::json!({"not": {}}),
        other => other.clone(),
    };
    if schema.is_object() {
        json_options().apply_to(&mut schema);
    }
    schema
}

/// The model's vocabulary as llguidance sees it: each token's bytes, with control tokens (empty when detokenised)
/// marked special by a leading 0xFF byte, as llama.cpp builds its llguidance trie.
struct VocabEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s).ok().and_then(|text| self.tokenizer.encode(text).ok()) {
            Some(ids) => ids,
            None => self.trie.greedy_tokenize(s),
        }
    }
}

/// Compiles constraints for one tokenizer (see the module docs). Cheap to share: the server compiles each request's
/// constraint on its HTTP thread, so that a bad schema is a 400 before the request is queued.
pub struct Compiler {
    factory: ParserFactory,
    eog: Vec<u32>,
    n_vocab: usize,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler").field("n_vocab", &self.n_vocab).finish_non_exhaustive()
    }
}

impl Compiler {
    /// Builds the token trie and llguidance's factory for `tokenizer` (about a second at a 152K vocabulary on a slow
    /// CPU; the engine builds it on the first constrained request).
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Compiler> {
        let n_vocab = tokenizer.n_vocab();
        let words: Vec<Vec<u8>> = (0..n_vocab as u32)
            .map(|id| match (tokenizer.piece(id), tokenizer.piece_with_special(id)) {
                ([], []) => Vec::new(),
                ([], special) => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], special].concat(),
                (piece, _) => piece.to_vec(),
            })
            .collect();
        let eog = tokenizer.eog_ids().to_vec();
        let eos = tokenizer.eos.or_else(|| eog.first().copied()).unwrap_or(0);
        let mut info = TokRxInfo::new(n_vocab as u32, eos);
        info.tok_bos = tokenizer.bos;
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(VocabEnv { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| err!(StructuredGrammar, "cannot prepare the grammar engine for this vocabulary: {e}"))?;
        factory.quiet();
        factory.limits_mut().verbose_errors = false;
        Ok(Compiler { factory, eog, n_vocab })
    }

    /// A matcher for `format`; a schema, grammar or regex that does not compile is a coded error naming why.
    pub fn compile(&self, format: &OutputFormat) -> Result<Matcher> {
        let grammar = match format {
            OutputFormat::JsonObject => TopLevelGrammar::from_json_schema(with_layout(&serde_json::json!({
                "type": "object"
            }))),
            OutputFormat::JsonSchema(schema) => {
                check_schema_bounds(schema)?;
                TopLevelGrammar::from_json_schema(with_layout(schema))
            }
            OutputFormat::Lark(text) => {
                check_grammar_size("grammar", text)?;
                TopLevelGrammar::from_lark(text.clone())
            }
            OutputFormat::Regex(rx) => {
                check_grammar_size("regex", rx)?;
                TopLevelGrammar::from_regex(rx)
            }
        };
        let code = match format {
            OutputFormat::JsonObject | OutputFormat::JsonSchema(_) => CompileKind::Schema,
            _ => CompileKind::Grammar,
        };
        self.matcher(grammar, code)
    }

    /// A matcher for a Lark grammar webr1 wrote (tool calls, whose `%json` arguments carry the callers' schemas: a
    /// failure is a `structured.schema` error).
    pub fn compile_tool_grammar(&self, lark: &str) -> Result<Matcher> {
        self.matcher(TopLevelGrammar::from_lark(lark.to_string()), CompileKind::Schema)
    }

    fn matcher(&self, grammar: TopLevelGrammar, kind: CompileKind) -> Result<Matcher> {
        let parser = self.factory.create_parser(grammar).map_err(|e| kind.error(&e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(kind.error(&e));
        }
        // A grammar that admits no first token (a `$ref` that only refers to itself, an unsatisfiable schema) is
        // refused now rather than at the first step of a generation.
        let mut probe = matcher.clone();
        let admits_nothing = match probe.compute_mask() {
            Ok(mask) => mask.is_zero() && !probe.is_accepting().unwrap_or(false),
            Err(_) => true,
        };
        if admits_nothing {
            return Err(kind.error("it admits no value (a $ref that only refers to itself, or contradictory rules)"));
        }
        Ok(matcher)
    }

    /// The end-of-generation ids: all of them are allowed where the grammar allows its end.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
}

fn check_grammar_size(what: &str, text: &str) -> Result<()> {
    if text.len() > MAX_GRAMMAR_BYTES {
        return Err(err!(StructuredGrammar, "the {what} is larger than {} KiB", MAX_GRAMMAR_BYTES / 1024));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum CompileKind {
    Schema,
    Grammar,
}

impl CompileKind {
    fn error(self, why: &str) -> Error {
        // llguidance's messages can be long (a grammar dump); the first lines say what is wrong.
        let why: String = why.lines().take(4).collect::<Vec<_>>().join(" ");
        let why = why.chars().take(600).collect::<String>();
        match self {
            CompileKind::Schema => err!(StructuredSchema, "the JSON schema cannot be used: {why}"),
            CompileKind::Grammar => err!(StructuredGrammar, "the grammar cannot be used: {why}"),
        }
    }
}

/// One generation's matcher and its mask buffer (see the module docs).
pub struct ConstraintRun {
    matcher: Matcher,
    /// Mask words over the model's logits row (which may be longer than the tokenizer's vocabulary).
    words: Vec<u32>,
    eog: Vec<u32>,
    /// Extra tokens allowed at the next step besides the grammar's (R1's `<think>` before its answer).
    extra: Option<u32>,
    /// Seconds spent computing masks, one entry per constrained step.
    pub mask_seconds: Vec<f64>,
}

impl ConstraintRun {
    /// A run of `matcher` over logits rows of `n_logits` entries.
    pub fn new(matcher: Matcher, compiler: &Compiler, n_logits: usize) -> ConstraintRun {
        ConstraintRun {
            matcher,
            words: vec![0; crate::gpu::ops::mask_words(n_logits.max(compiler.n_vocab))],
            eog: compiler.eog.clone(),
            extra: None,
            mask_seconds: Vec::new(),
        }
    }

    /// Allows `token` at the next step too (once), whatever the grammar says.
    pub fn allow_once(&mut self, token: u32) {
        self.extra = Some(token);
    }

    /// The allowed tokens of the next step as mask words (bit `i` of word `i / 32` for token `i`); every
    /// end-of-generation id is allowed where the grammar may end. No allowed token is a `structured.dead_end` error.
    pub fn mask(&mut self) -> Result<&[u32]> {
        let start = Instant::now();
        let vob = self.matcher.compute_mask_or_eos().map_err(|e| dead_end(&e.to_string()))?;
        let (src, eos) = (vob.as_slice(), self.matcher.tok_env().map(|env| env.tok_trie().eos_token()).ok());
        self.words.fill(0);
        let n = src.len().min(self.words.len());
        self.words[..n].copy_from_slice(&src[..n]);
        let set = |words: &mut [u32], id: u32| {
            if let Some(w) = words.get_mut(id as usize / 32) {
                *w |= 1 << (id % 32);
            }
        };
        if eos.is_some_and(|eos| vob.is_allowed(eos)) {
            for &id in &self.eog {
                set(&mut self.words, id);
            }
        }
        if let Some(id) = self.extra.take() {
            set(&mut self.words, id);
        }
        self.mask_seconds.push(start.elapsed().as_secs_f64());
        if self.words.iter().all(|&w| w == 0) {
            return Err(dead_end("the grammar admits no next token"));
        }
        Ok(&self.words)
    }

    /// Moves the grammar on by a sampled (or forced) token.
    pub fn advance(&mut self, token: u32) -> Result<()> {
        if self.eog.contains(&token) {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| dead_end(&e.to_string()))
    }

    /// Moves the grammar on by tokens that were generated before the constraint began (the text of a tool call's
    /// opening marker, re-tokenised).
    pub fn advance_all(&mut self, tokens: &[u32]) -> Result<()> {
        self.matcher.consume_tokens(tokens).map_err(|e| dead_end(&e.to_string()))
    }

    /// Whether the text so far is a complete match (the grammar may end here).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

fn dead_end(why: &str) -> Error {
    let why: String = why.lines().next().unwrap_or_default().chars().take(300).collect();
    err!(StructuredDeadEnd, "the output can no longer match its constraint ({why}); generation stopped")
}
