//! The model's own vocabulary (`tokenizer.ggml.*` in the GGUF) as a tokenizer that gives llama.cpp's ids, byte for byte.
//!
//! The byte-level BPE itself is Hugging Face `tokenizers`, built from the GGUF's tokens and merges with the
//! pre-tokenizer that llama.cpp's `llama-vocab.cpp` uses for the file's `tokenizer.ggml.pre` (an unknown one is an
//! error, never a guess). Token types follow llama.cpp:
//!
//! - CONTROL tokens (type 3: turn markers such as `<｜User｜>`, `<|im_end|>`) are matched only in text the chat
//!   template wrote ([`Tokenizer::encode_segments`]) or in a raw prompt the caller marks as trusted
//!   ([`Tokenizer::encode_trusted`]); in any other text they are plain text, so a user cannot forge a turn.
//! - USER_DEFINED tokens (type 4, e.g. R1's `<think>`) match as whole tokens in any text, as in llama.cpp and HF.
//! - Tokens llama.cpp recognises by their text as end-of-generation or fill-in-the-middle markers are treated as
//!   CONTROL too, as llama.cpp does ("control-looking token ... its type will be overridden").
//!
//! Detokenising maps each id to its bytes ([`Tokenizer::piece`]) and [`Detokenizer`] turns a stream of ids into text
//! that never ends in half a UTF-8 character.

mod detok;
mod special;

pub use detok::Detokenizer;

use crate::chat::Segment;
use crate::gguf::Metadata;
use crate::{err, Result};
use special::SpecialTokens;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp's `llama_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_id(id: i64) -> Option<TokenType> {
        Some(match id {
            0 | 1 => TokenType::Normal, // 0 is "undefined" in old files; llama.cpp treats it as normal
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// The regular expressions of llama.cpp's `llm_tokenizer_bpe` for each supported `tokenizer.ggml.pre`.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How the text is cut into words before BPE, by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `qwen2`, `deepseek-r1-qwen`: digits one by one.
    Qwen2,
    /// `llama-bpe` (`llama3`, `llama-v3`): digits in groups of up to three; whole words that are tokens skip merges.
    Llama3,
    /// `smollm`: digits one by one, then GPT-2's pattern.
    SmolLm,
    /// `gpt-2`.
    Gpt2,
}

impl PreTokenizer {
    pub fn from_name(pre: &str) -> Result<PreTokenizer> {
        Ok(match pre {
            "qwen2" | "deepseek-r1-qwen" => PreTokenizer::Qwen2,
            "llama-bpe" | "llama3" | "llama-v3" => PreTokenizer::Llama3,
            "smollm" => PreTokenizer::SmolLm,
            "gpt-2" => PreTokenizer::Gpt2,
            other => {
                return Err(err!(
                    TokenizerUnsupportedPre,
                    "tokenizer.ggml.pre '{other}' is not supported (webr1 knows deepseek-r1-qwen, qwen2, llama-bpe, \
                     smollm and gpt-2); webr1 will not guess how to split text for an unknown tokenizer"
                ))
            }
        })
    }

    fn build(self) -> Result<PreTokenizerWrapper> {
        let split = |regex: &str| -> Result<PreTokenizerWrapper> {
            let split = Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| err!(TokenizerBadVocab, "pre-tokenizer regex: {e}"))?;
            Ok(split.into())
        };
        let byte_level = |use_regex| PreTokenizerWrapper::from(ByteLevel::new(false, false, use_regex));
        let steps = match self {
            PreTokenizer::Qwen2 => vec![split(QWEN2_REGEX)?, byte_level(false)],
            PreTokenizer::Llama3 => vec![split(LLAMA3_REGEX)?, byte_level(false)],
            PreTokenizer::SmolLm => vec![Digits::new(true).into(), byte_level(true)],
            PreTokenizer::Gpt2 => vec![byte_level(true)],
        };
        Ok(Sequence::new(steps).into())
    }
}

/// A GGUF model's tokenizer. See the module docs.
pub struct Tokenizer {
    hf: tokenizers::Tokenizer,
    /// Each id's bytes when detokenised.
    pieces: Vec<Vec<u8>>,
    types: Vec<TokenType>,
    special: SpecialTokens,
    pre: PreTokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// The vocabulary wants BOS in front of a prompt (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    pub add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("n_vocab", &self.n_vocab()).field("pre", &self.pre).finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(metadata: &Metadata) -> Result<Tokenizer> {
        let model = metadata.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err!(
                TokenizerUnsupportedModel,
                "tokenizer.ggml.model '{model}' is not supported; webr1 reads byte-level BPE ('gpt2') vocabularies, \
                 which every R1 distill uses"
            ));
        }
        let pre = PreTokenizer::from_name(metadata.require_str("tokenizer.ggml.pre")?)?;
        let tokens = metadata
            .get_str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| crate::gguf::missing_key("tokenizer.ggml.tokens"))?;
        let types = token_types(metadata, tokens.len())?;
        let merges = metadata
            .get_str_array("tokenizer.ggml.merges")?
            .ok_or_else(|| crate::gguf::missing_key("tokenizer.ggml.merges"))?;
        let token_id = |key: &str| -> Result<Option<u32>> {
            match metadata.get_uint(key)? {
                Some(id) if id < tokens.len() as u64 => Ok(Some(id as u32)),
                Some(id) => Err(err!(TokenizerBadVocab, "{key} is {id}, outside the {} tokens", tokens.len())),
                None => Ok(None),
            }
        };
        let bos = token_id("tokenizer.ggml.bos_token_id")?;
        let eos = token_id("tokenizer.ggml.eos_token_id")?;
        let special = SpecialTokens::new(
            tokens,
            &types,
            eos,
            [token_id("tokenizer.ggml.eot_token_id")?, token_id("tokenizer.ggml.eom_token_id")?],
        );

        let mut hf = tokenizers::Tokenizer::new(bpe_model(tokens, merges, pre)?);
        hf.with_pre_tokenizer(Some(pre.build()?));
        let added = |keep: &dyn Fn(u32) -> bool, special: bool| -> Vec<AddedToken> {
            (0..tokens.len() as u32)
                .filter(|&id| keep(id))
                .map(|id| AddedToken::from(tokens[id as usize].clone(), special).normalized(false))
                .collect()
        };
        hf.add_special_tokens(&added(&|id| special.is_control(id), true));
        hf.add_tokens(&added(&|id| types[id as usize] == TokenType::UserDefined && !special.is_control(id), false));
        hf.set_encode_special_tokens(true);

        let pieces = tokens.iter().zip(&types).map(|(t, ty)| token_bytes(t, *ty)).collect();
        Ok(Tokenizer {
            hf,
            pieces,
            types,
            special,
            pre,
            bos,
            eos,
            add_bos: metadata.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: metadata.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Tokenises text from anyone: no BOS, control-token texts stay plain text, user-defined tokens match (llama.cpp's
    /// `llama_tokenize(text, add_special=false, parse_special=false)`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self.hf.encode_fast(text, false).map_err(|e| err!(TokenizerEncode, "tokenising failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenises text the caller trusts, matching control tokens in it (llama.cpp's `parse_special=true`); with
    /// `add_bos`, prepends BOS when the vocabulary asks for it. Only for prompts the user wrote as raw model input.
    pub fn encode_trusted(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = self.bos_prefix(add_bos);
        for (piece, control) in self.special.split(text) {
            match control {
                Some(id) => ids.push(id),
                None => ids.extend(self.encode(piece)?),
            }
        }
        Ok(ids)
    }

    /// Tokenises a rendered chat prompt: control tokens only where the template wrote them (`Segment::Control`),
    /// plain text everywhere else. With `add_bos`, prepends BOS when the vocabulary asks for it and the template did
    /// not already write it (never two).
    pub fn encode_segments(&self, segments: &[Segment], add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for segment in segments {
            match segment {
                Segment::Text(text) => ids.extend(self.encode(text)?),
                Segment::Control(text) => match self.special.control_id(text) {
                    Some(id) => ids.push(id),
                    None => ids.extend(self.encode(text)?),
                },
            }
        }
        if ids.first() != self.bos.as_ref() {
            let mut with_bos = self.bos_prefix(add_bos);
            with_bos.extend(ids);
            ids = with_bos;
        }
        Ok(ids)
    }

    fn bos_prefix(&self, add_bos: bool) -> Vec<u32> {
        match self.bos {
            Some(bos) if add_bos && self.add_bos => vec![bos],
            _ => Vec::new(),
        }
    }

    /// The texts of the control tokens, for cutting a rendered template ([`crate::chat`]).
    pub fn control_texts(&self) -> Vec<&str> {
        self.special.control_texts()
    }

    /// The id of a control token's text.
    pub fn control_id(&self, text: &str) -> Option<u32> {
        self.special.control_id(text)
    }

    /// The id of a token's exact text (e.g. `</think>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.hf.token_to_id(text)
    }

    /// The token's bytes as text generation shows them; empty for control tokens.
    pub fn piece(&self, id: u32) -> &[u8] {
        match self.pieces.get(id as usize) {
            Some(piece) if !self.special.is_control(id) => piece,
            _ => &[],
        }
    }

    /// The token's bytes, control tokens included (llama.cpp's `token_to_piece(special=true)`).
    pub fn piece_with_special(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The text of a whole sequence (invalid UTF-8 becomes U+FFFD); control tokens are left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.piece(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether generation ends at this token (llama.cpp's `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.special.is_eog(id)
    }

    /// The end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        self.special.eog_ids()
    }
}

fn token_types(metadata: &Metadata, n_tokens: usize) -> Result<Vec<TokenType>> {
    let Some(array) = metadata.get_array("tokenizer.ggml.token_type")? else {
        return Ok(vec![TokenType::Normal; n_tokens]);
    };
    let ids = array
        .to_i64s()
        .ok_or_else(|| err!(TokenizerBadVocab, "tokenizer.ggml.token_type is not an array of integers"))?;
    if ids.len() != n_tokens {
        return Err(err!(TokenizerBadVocab, "{} token types for {n_tokens} tokens", ids.len()));
    }
    ids.iter()
        .map(|&t| TokenType::from_id(t).ok_or_else(|| err!(TokenizerBadVocab, "unknown token type {t}")))
        .collect()
}

fn bpe_model(tokens: &[String], merges: &[String], pre: PreTokenizer) -> Result<BPE> {
    let mut vocab = tokenizers::models::bpe::Vocab::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(id as u32);
    }
    let merges = merges
        .iter()
        .map(|m| {
            // As llama.cpp: the separator is the first space after the first byte.
            let at = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
            at.map(|i| (m[..i].to_string(), m[i + 1..].to_string()))
                .ok_or_else(|| err!(TokenizerBadVocab, "merge '{m}' has no space"))
        })
        .collect::<Result<Vec<_>>>()?;
    BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre == PreTokenizer::Llama3)
        .build()
        .map_err(|e| err!(TokenizerBadVocab, "the BPE vocabulary is inconsistent: {e}"))
}

/// A token's bytes: byte-level BPE tokens spell bytes with printable characters (GPT-2's `bytes_to_unicode`); added
/// tokens (control, user-defined) are their text as is.
fn token_bytes(token: &str, ty: TokenType) -> Vec<u8> {
    match ty {
        TokenType::Control | TokenType::UserDefined | TokenType::Unknown => token.as_bytes().to_vec(),
        _ => {
            let mut out = Vec::with_capacity(token.len());
            for c in token.chars() {
                match unicode_to_byte(c) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            out
        }
    }
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes were
/// moved to U+0100..U+0143 in order.
fn unicode_to_byte(c: char) -> Option<u8> {
    const fn printable(b: u32) -> bool {
        (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)
    }
    /// `MOVED[k]` is the byte that GPT-2 wrote as U+0100 + k.
    const MOVED: [u8; 68] = {
        let mut table = [0u8; 68];
        let (mut b, mut k) = (0u32, 0usize);
        while b < 256 {
            if !printable(b) {
                table[k] = b as u8;
                k += 1;
            }
            b += 1;
        }
        table
    };
    let c = c as u32;
    if c < 0x100 {
        return printable(c).then_some(c as u8);
    }
    MOVED.get((c - 0x100) as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_round_trips() {
        // GPT-2 writes a space as 'Ġ' (U+0120), a newline as 'Ċ' (U+010A), and 'a' as itself.
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(unicode_to_byte('a'), Some(b'a'));
        assert_eq!(unicode_to_byte('\u{ad}'), None);
        assert_eq!(unicode_to_byte('Ń'), Some(0xad));
        assert_eq!(token_bytes("ĠhelloĊ", TokenType::Normal), b" hello\n");
    }

    /// The words each pre-tokenizer cuts a text into, spaces shown as GPT-2's 'Ġ' and newlines as 'Ċ'.
    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _};
        let mut s = PreTokenizedString::from(text);
        pre.build().unwrap().pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(w, _, _)| w.to_string()).collect()
    }

    /// The digit rules tell the four pre-tokenizers apart: one digit at a time (qwen2, smollm), up to three (llama-bpe),
    /// a whole run with its leading space (gpt-2); llama-bpe and qwen2 keep a letter run's leading punctuation and a
    /// run of newlines together, gpt-2's `\s+(?!\S)` leaves the last newline before a non-space on its own.
    #[test]
    fn pre_tokenizers_cut_words_like_llama_cpp() {
        let text = "x 1234567 don't\n\n(ok";
        assert_eq!(
            words(PreTokenizer::Qwen2, text),
            ["x", "Ġ", "1", "2", "3", "4", "5", "6", "7", "Ġdon", "'t", "ĊĊ", "(ok"]
        );
        assert_eq!(words(PreTokenizer::Llama3, text), ["x", "Ġ", "123", "456", "7", "Ġdon", "'t", "ĊĊ", "(ok"]);
        assert_eq!(words(PreTokenizer::Gpt2, text), ["x", "Ġ1234567", "Ġdon", "'t", "Ċ", "Ċ", "(", "ok"]);
        assert_eq!(
            words(PreTokenizer::SmolLm, text),
            ["x", "Ġ", "1", "2", "3", "4", "5", "6", "7", "Ġdon", "'t", "Ċ", "Ċ", "(", "ok"]
        );
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        let e = PreTokenizer::from_name("tekken").unwrap_err();
        assert_eq!(e.code(), "tokenizer.unsupported_pre");
    }
}
