//! Streaming detokenisation: token bytes in, text out, never half a UTF-8 character.

/// Turns token pieces (see [`super::Tokenizer::piece`]) into text as they arrive. Bytes that may still become a
/// character are held back; bytes that can never be valid UTF-8 become U+FFFD.
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    pending: Vec<u8>,
}

impl Detokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token's bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, piece: &[u8]) -> String {
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // The bytes end inside a character that may still complete: keep them.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The stream ended: whatever is held back, as U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_characters() {
        let mut d = Detokenizer::new();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push(b"a"), "a");
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&[euro[2], b'b']), "€b");
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Detokenizer::new();
        assert_eq!(d.push(&[b'x', 0xff, b'y']), "x\u{fffd}y");
        assert_eq!(d.push(&[0xe2, 0x82]), "");
        assert_eq!(d.push(b"z"), "\u{fffd}z");
        assert_eq!(d.push(&[0xf0, 0x9f]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
