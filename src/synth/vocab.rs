//! The tokenizer and chat template a synthetic model carries: the `tokenizer.*` keys of a real GGUF, fitted to the
//! shape's vocabulary size.
//!
//! R1-Distill-Qwen's come built in: the real header of DeepSeek-R1-Distill-Qwen-7B (`tests/fixtures/README.md` of the
//! shared fixtures describes it), whose 152,064 tokens end in `[PAD…]` entries; the 1.5B model's 151,936 rows drop
//! the last 128 of those, as its own file does. Llama shapes take a Llama-3 vocabulary from a file (llama.cpp's
//! `ggml-vocab-llama-bpe.gguf`); when that file has no chat template, R1's is used (the R1-Distill-Llama models use
//! the same template as the Qwen ones).

use crate::gguf::{Array, Gguf, Value};
use crate::{err, Result};

/// The real R1-Distill-Qwen-7B header (metadata only), built into the binary.
#[cfg(not(target_arch = "wasm32"))]
pub const R1_QWEN_HEADER: &[u8] = include_bytes!("../../tests/fixtures/r1-distill-qwen-7b.header.gguf");

/// llama.cpp's token type of padding entries (`LLAMA_TOKEN_TYPE_UNUSED`).
const TOKEN_TYPE_UNUSED: i32 = 5;

/// `tokenizer.*` metadata pairs, in the order of the file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub pairs: Vec<(String, Value)>,
    /// Where it came from, for messages.
    pub source: String,
}

impl Vocabulary {
    /// The `tokenizer.*` keys of `gguf`, with R1's chat template when it has none.
    pub fn from_gguf(gguf: &Gguf, source: &str) -> Result<Vocabulary> {
        let mut pairs: Vec<(String, Value)> = gguf
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if !pairs.iter().any(|(k, _)| k == "tokenizer.ggml.tokens") {
            return Err(err!(SynthVocab, "{source} has no vocabulary (no tokenizer.ggml.tokens)"));
        }
        if !pairs.iter().any(|(k, _)| k == "tokenizer.chat_template") {
            pairs.push(("tokenizer.chat_template".into(), Value::String(r1_template()?)));
        }
        Ok(Vocabulary { pairs, source: source.to_string() })
    }

    /// R1-Distill-Qwen's vocabulary and template.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn r1_qwen() -> Result<Vocabulary> {
        Vocabulary::from_gguf(&Gguf::from_bytes(R1_QWEN_HEADER)?, "the built-in R1-Distill-Qwen header")
    }

    /// A vocabulary of exactly `n_vocab` tokens: padding entries (`[PADn]`, unused) are dropped from the end or
    /// added, as converters pad a vocabulary to the embedding's rows. Dropping a token that is not padding, or a
    /// special token id outside the vocabulary, is a `synth.vocab` error.
    pub fn fitted(mut self, n_vocab: u32) -> Result<Vocabulary> {
        let n = n_vocab as usize;
        let have = self.tokens()?.len();
        let types = self.array("tokenizer.ggml.token_type");
        if have > n {
            let unused = |i: usize| match types {
                Some(Array::I32(t)) => t.get(i) == Some(&TOKEN_TYPE_UNUSED),
                _ => false,
            };
            if let Some(i) = (n..have).find(|&i| !unused(i)) {
                return Err(err!(
                    SynthVocab,
                    "{} has {have} tokens, more than the model's {n_vocab}, and token {i} is not padding",
                    self.source
                ));
            }
        }
        for (key, value) in &mut self.pairs {
            match (key.as_str(), value) {
                ("tokenizer.ggml.tokens", Value::Array(Array::String(v))) => {
                    let len = v.len();
                    v.truncate(n);
                    v.extend((len..n).map(|i| format!("[PAD{i}]")));
                }
                ("tokenizer.ggml.token_type", Value::Array(Array::I32(v))) => v.resize(n, TOKEN_TYPE_UNUSED),
                ("tokenizer.ggml.scores", Value::Array(Array::F32(v))) => v.resize(n, 0.0),
                (k, v) if k.ends_with("_token_id") && v.as_u64().is_some_and(|id| id >= u64::from(n_vocab)) => {
                    return Err(err!(SynthVocab, "{} has {k} {v:?}, outside {n_vocab} tokens", self.source));
                }
                _ => {}
            }
        }
        Ok(self)
    }

    fn array(&self, key: &str) -> Option<&Array> {
        self.pairs.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
            Value::Array(a) => Some(a),
            _ => None,
        })
    }

    fn tokens(&self) -> Result<&[String]> {
        match self.array("tokenizer.ggml.tokens") {
            Some(Array::String(t)) => Ok(t),
            _ => Err(err!(SynthVocab, "{}: tokenizer.ggml.tokens is not an array of strings", self.source)),
        }
    }
}

/// R1's chat template, from the built-in header.
#[cfg(not(target_arch = "wasm32"))]
fn r1_template() -> Result<String> {
    let header = Gguf::from_bytes(R1_QWEN_HEADER)?;
    let template = header.metadata.get_str("tokenizer.chat_template")?;
    template.map(str::to_string).ok_or_else(|| err!(SynthVocab, "the built-in header has no chat template"))
}

/// The browser build carries no built-in header.
#[cfg(target_arch = "wasm32")]
fn r1_template() -> Result<String> {
    Err(err!(SynthVocab, "the vocabulary has no chat template"))
}
