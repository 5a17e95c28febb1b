//! Control tokens and end-of-generation tokens, found as llama.cpp's `llama_vocab::impl::load` finds them: by token type,
//! by metadata ids, and by well-known texts (llama.cpp's own workaround until converters record them all).

use super::TokenType;
use std::collections::HashMap;

/// Texts that end a turn (llama.cpp's end-of-turn and end-of-generation lists).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
];
/// Fill-in-the-middle markers that end generation: padding, repository name, file separator.
const FIM_EOG_TEXTS: &[&[&str]] = &[
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
    &["<|file_sep|>"],
];
/// Fill-in-the-middle markers that are control tokens but do not end generation.
const FIM_OTHER_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
];

pub(super) struct SpecialTokens {
    /// Ids treated as control tokens: never matched in untrusted text, matched where a template wrote them.
    control: Vec<bool>,
    /// Control token texts by their first byte, longest first, for cutting trusted text.
    by_first_byte: HashMap<u8, Vec<(String, u32)>>,
    by_text: HashMap<String, u32>,
    eog: Vec<u32>,
}

impl SpecialTokens {
    /// `extra_eog`: the end-of-turn and end-of-message ids the metadata names, if any.
    pub(super) fn new(tokens: &[String], types: &[TokenType], eos: Option<u32>, extra_eog: [Option<u32>; 2]) -> Self {
        let first_id = |text: &str| tokens.iter().position(|t| t == text).map(|i| i as u32);
        let mut eog: Vec<u32> = EOG_TEXTS.iter().filter_map(|t| first_id(t)).collect();
        eog.extend(FIM_EOG_TEXTS.iter().filter_map(|texts| texts.iter().find_map(|t| first_id(t))));
        eog.extend(eos.into_iter().chain(extra_eog.into_iter().flatten()));
        eog.sort_unstable();
        eog.dedup();

        let mut control: Vec<bool> =
            types.iter().map(|t| matches!(t, TokenType::Control | TokenType::Unknown)).collect();
        let overridden = eog.iter().copied().chain(FIM_OTHER_TEXTS.iter().filter_map(|t| first_id(t)));
        for id in overridden {
            control[id as usize] = true;
        }

        let mut by_first_byte: HashMap<u8, Vec<(String, u32)>> = HashMap::new();
        let mut by_text = HashMap::new();
        for (id, token) in tokens.iter().enumerate().filter(|&(id, t)| control[id] && !t.is_empty()) {
            by_text.entry(token.clone()).or_insert(id as u32);
            by_first_byte.entry(token.as_bytes()[0]).or_default().push((token.clone(), id as u32));
        }
        for candidates in by_first_byte.values_mut() {
            candidates.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        SpecialTokens { control, by_first_byte, by_text, eog }
    }

    pub(super) fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    pub(super) fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    pub(super) fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub(super) fn control_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    pub(super) fn control_texts(&self) -> Vec<&str> {
        self.by_text.keys().map(String::as_str).collect()
    }

    /// Cuts trusted text at control tokens (leftmost, then longest): `(piece, Some(id))` for a control token,
    /// `(piece, None)` for the text between them.
    pub(super) fn split<'a>(&self, text: &'a str) -> Vec<(&'a str, Option<u32>)> {
        let mut out = Vec::new();
        let (mut start, mut at) = (0, 0);
        let bytes = text.as_bytes();
        while at < bytes.len() {
            let found = self.by_first_byte.get(&bytes[at]).and_then(|candidates| {
                candidates.iter().find(|(t, _)| bytes[at..].starts_with(t.as_bytes())).map(|(t, id)| (t.len(), *id))
            });
            match found {
                Some((len, id)) => {
                    if start < at {
                        out.push((&text[start..at], None));
                    }
                    out.push((&text[at..at + len], Some(id)));
                    at += len;
                    start = at;
                }
                None => at += 1,
            }
        }
        if start < bytes.len() {
            out.push((&text[start..], None));
        }
        out
    }
}
