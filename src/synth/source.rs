//! A synthetic model as a [`ModelSource`]: the bytes `webr1 synth` would write, made as the loader asks for them, so
//! that `webr1 bench --shape` uploads exactly the weights of the file without the file.

use super::{ChunkAt, SynthModel};
use crate::engine::{ByteStream, ModelSource, Opened};
use crate::{err, Result};
use std::sync::Arc;

/// The bytes of one synthetic model file.
#[derive(Debug, Clone)]
pub struct SynthSource {
    model: Arc<SynthModel>,
    name: String,
    /// Every chunk of data, in file order.
    chunks: Arc<Vec<ChunkAt>>,
}

impl SynthSource {
    pub fn new(model: SynthModel) -> SynthSource {
        let name = format!("{}-{}.gguf", model.shape.name, model.quant.name());
        let chunks = Arc::new(model.chunks().collect());
        SynthSource { model: Arc::new(model), name, chunks }
    }

    pub fn model(&self) -> &SynthModel {
        &self.model
    }
}

/// The file's bytes from some offset on: the header, then each chunk of data (with the zero padding between tensors).
pub struct SynthStream {
    model: Arc<SynthModel>,
    chunks: Arc<Vec<ChunkAt>>,
    /// The next byte to send, and the first chunk that ends after it.
    at: u64,
    next: usize,
}

impl ByteStream for SynthStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let header = self.model.header();
        if self.at < header.len() as u64 {
            let bytes = header[self.at as usize..].to_vec();
            self.at = header.len() as u64;
            return Ok(Some(bytes));
        }
        let Some(chunk) = self.chunks.get(self.next).copied() else { return Ok(None) };
        if self.at < chunk.offset {
            // Alignment padding before the chunk's tensor.
            let gap = vec![0u8; (chunk.offset - self.at) as usize];
            self.at = chunk.offset;
            return Ok(Some(gap));
        }
        let mut bytes = vec![0u8; chunk.len as usize];
        self.model.fill(&chunk, &mut bytes);
        let skip = (self.at - chunk.offset) as usize;
        self.at = chunk.offset + chunk.len;
        self.next += 1;
        Ok(Some(bytes.split_off(skip)))
    }
}

impl ModelSource for SynthSource {
    type Stream = SynthStream;

    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&mut self, part: usize, _name: &str, offset: u64) -> Result<Opened<SynthStream>> {
        if part != 0 {
            return Err(err!(Usage, "a synthetic model is one file, not part {}", part + 1));
        }
        let next = self.chunks.partition_point(|c| c.offset + c.len <= offset);
        let stream = SynthStream { model: self.model.clone(), chunks: self.chunks.clone(), at: offset, next };
        Ok(Opened { stream, file_len: Some(self.model.file_len()) })
    }
}
