//! Loading a model from bytes as they arrive (ARCHITECTURE.md §4): a local file, a download, a browser `Blob`.
//!
//! A [`ModelSource`] opens each file of the model at a byte offset and hands out its bytes in chunks. The loader parses
//! the header incrementally from the first chunks, reads the headers of the other parts of a split model (named after
//! the first: `-00002-of-0000N.gguf`, ...), checks that the model and its KV cache fit the GPU before allocating
//! anything, and then routes every chunk straight to the tensor it belongs to. No more than one chunk of weights is
//! held in CPU memory at any time, so the wasm heap never holds the model.
//!
//! A stream that fails with `download.interrupted`, or ends before the length it announced, is opened again where it
//! stopped (an HTTP Range request on the web), a few times at most.

use super::{Engine, EngineOptions, LoadProgress};
use crate::gguf::split::{check_split_name, SplitGguf, SplitName};
use crate::gguf::{Gguf, GgufParser};
use crate::gpu::Gpu;
use crate::model::WeightLoader;
use crate::{err, ErrorCode, Result};

/// How often one file may be resumed after an interruption.
pub const MAX_RESUMES: u32 = 8;
/// Progress is reported at most once per this many bytes (and at the end).
const PROGRESS_STEP: u64 = 1 << 20;

/// One file's bytes from some offset on, chunk by chunk.
// The futures are not `Send`: on the web they hold JS values. Callers await them on one thread (pollster, the browser).
#[allow(async_fn_in_trait)]
pub trait ByteStream {
    /// The next bytes, or `None` at the end of the file. An interrupted transfer is a `download.interrupted` error.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>>;
}

/// A stream that was opened, with the whole file's length when the source knows it.
pub struct Opened<S> {
    pub stream: S,
    pub file_len: Option<u64>,
}

/// Where the files of a model come from.
#[allow(async_fn_in_trait)]
pub trait ModelSource {
    type Stream: ByteStream;

    /// The first file's name (a file name or URL): the other parts of a split model are named after it.
    fn name(&self) -> &str;

    /// Opens file `part` (0-based), whose name is `name`, at byte `offset`.
    async fn open(&mut self, part: usize, name: &str, offset: u64) -> Result<Opened<Self::Stream>>;
}

/// One file being read, resumed where it stopped when its stream breaks.
struct PartReader<S> {
    part: usize,
    name: String,
    stream: Option<S>,
    at: u64,
    file_len: Option<u64>,
    resumes: u32,
}

impl<S: ByteStream> PartReader<S> {
    async fn open<M: ModelSource<Stream = S>>(source: &mut M, part: usize, name: &str) -> Result<PartReader<S>> {
        let opened = source.open(part, name, 0).await?;
        Ok(PartReader {
            part,
            name: name.to_string(),
            stream: Some(opened.stream),
            at: 0,
            file_len: opened.file_len,
            resumes: 0,
        })
    }

    /// The next chunk and its offset in the file; `None` at the end.
    async fn next<M: ModelSource<Stream = S>>(&mut self, source: &mut M) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            let result = match self.stream.as_mut() {
                Some(stream) => stream.next_chunk().await,
                None => Err(err!(DownloadInterrupted, "the stream of {} is closed", self.name)),
            };
            let cut_short = match result {
                Ok(Some(bytes)) if bytes.is_empty() => continue,
                Ok(Some(bytes)) => {
                    let offset = self.at;
                    self.at += bytes.len() as u64;
                    if self.file_len.is_some_and(|len| self.at > len) {
                        return Err(err!(
                            DownloadFailed,
                            "{} sent more than the {} bytes it announced",
                            self.name,
                            self.file_len.unwrap_or(0)
                        ));
                    }
                    return Ok(Some((offset, bytes)));
                }
                Ok(None) => match self.file_len {
                    Some(len) if self.at < len => {
                        err!(DownloadInterrupted, "{} ended at byte {} of {len}", self.name, self.at)
                    }
                    _ => return Ok(None),
                },
                Err(e) if e.code == ErrorCode::DownloadInterrupted => e,
                Err(e) => return Err(e),
            };
            self.resume(source, cut_short).await?;
        }
    }

    /// Opens the file again at the first byte not yet received.
    async fn resume<M: ModelSource<Stream = S>>(&mut self, source: &mut M, why: crate::Error) -> Result<()> {
        self.stream = None;
        if self.resumes >= MAX_RESUMES {
            return Err(err!(
                DownloadInterrupted,
                "{} was interrupted {} times; the last time: {}",
                self.name,
                self.resumes + 1,
                why.message
            ));
        }
        self.resumes += 1;
        let opened = source.open(self.part, &self.name, self.at).await?;
        if let (Some(before), Some(now)) = (self.file_len, opened.file_len) {
            if before != now {
                return Err(err!(
                    DownloadFailed,
                    "{} changed size from {before} to {now} bytes while loading",
                    self.name
                ));
            }
        }
        self.stream = Some(opened.stream);
        Ok(())
    }

    /// Reads until the header is complete: the header, and the chunk it ended in (with its offset), whose remaining
    /// bytes are tensor data.
    async fn header<M: ModelSource<Stream = S>>(
        &mut self,
        source: &mut M,
        progress: &mut impl FnMut(LoadProgress),
    ) -> Result<(Gguf, Option<(u64, Vec<u8>)>)> {
        let mut parser = match self.file_len {
            Some(len) => GgufParser::with_file_len(len),
            None => GgufParser::new(),
        };
        while let Some((offset, bytes)) = self.next(source).await? {
            progress(LoadProgress { phase: "header", done: self.at, total: self.file_len.unwrap_or(0) });
            if let Some(gguf) = parser.push(&bytes)? {
                return Ok((gguf, Some((offset, bytes))));
            }
        }
        Ok((parser.finish()?, None))
    }
}

/// The names of every file of the model, from the first file's name and header.
fn part_names(first_name: &str, first: &Gguf) -> Result<Vec<String>> {
    match first.split()? {
        None | Some((_, 1)) => Ok(vec![first_name.to_string()]),
        Some((no, count)) => {
            if no != 0 {
                return Err(err!(GgufBadSplit, "{first_name} is part {} of {count}; load part 1", no + 1));
            }
            let named = SplitName::parse(first_name).ok_or_else(|| {
                err!(
                    GgufBadSplit,
                    "{first_name} is part 1 of a model split in {count} files, but its name does not end in \
                     -00001-of-{count:05}.gguf, so the other parts cannot be found"
                )
            })?;
            Ok(named.all_names())
        }
    }
}

impl Engine {
    /// Loads a model from `source`: headers first, then the GPU device, a check that the model fits it, and the
    /// weights streamed to the GPU chunk by chunk. `progress` sees the phases `header` and `upload`.
    pub async fn load<M: ModelSource>(
        source: &mut M,
        options: EngineOptions,
        mut progress: impl FnMut(LoadProgress),
    ) -> Result<Engine> {
        let first_name = source.name().to_string();
        let mut first = PartReader::open(source, 0, &first_name).await?;
        let (head, pending) = first.header(source, &mut progress).await?;
        check_split_name(&first_name, &head)?;
        let names = part_names(&first_name, &head)?;
        let mut parts = vec![head];
        for (i, name) in names.iter().enumerate().skip(1) {
            // Only the header is read now; the data comes in the second pass, from the file's first byte, so that
            // each file is streamed whole once (a cache sees it complete).
            let mut reader = PartReader::open(source, i, name).await?;
            let (gguf, _) = reader.header(source, &mut progress).await?;
            check_split_name(name, &gguf)?;
            parts.push(gguf);
        }
        let model = SplitGguf::new(parts)?;

        let gpu = Gpu::new(options.gpu.clone()).await?;
        // A load that fails frees the half-loaded model at once (in a browser, dropped buffers wait for the garbage
        // collector), so that a smaller model can be loaded next.
        let device = gpu.device().clone();
        let loaded = Self::upload(gpu, source, model, &names, first, pending, options, &mut progress).await;
        if loaded.is_err() {
            device.destroy();
        }
        loaded
    }

    /// Plans the model on `gpu`, creates its buffers and streams the weights into them.
    #[allow(clippy::too_many_arguments)]
    async fn upload<M: ModelSource>(
        gpu: Gpu,
        source: &mut M,
        model: SplitGguf,
        names: &[String],
        mut first: PartReader<M::Stream>,
        pending: Option<(u64, Vec<u8>)>,
        options: EngineOptions,
        progress: &mut impl FnMut(LoadProgress),
    ) -> Result<Engine> {
        let prepared = Self::prepare(&gpu, &model, &options)?;
        let scope = gpu.alloc_scope();
        let loader = WeightLoader::new(&gpu, &prepared.config, &model);
        scope.finish("the model's weights").await?;
        let mut loader = loader?;
        drop(model);

        let mut reported = 0;
        let mut report = |loader: &WeightLoader, force: bool| {
            let (done, total) = loader.progress();
            if force || done >= reported + PROGRESS_STEP {
                reported = done;
                progress(LoadProgress { phase: "upload", done, total });
            }
        };
        if let Some((offset, bytes)) = pending {
            loader.push(&gpu, 0, offset, &bytes)?;
        }
        report(&loader, true);
        upload_rest(&gpu, &mut loader, source, &mut first, &mut report).await?;
        for (i, name) in names.iter().enumerate().skip(1) {
            let mut reader = PartReader::open(source, i, name).await?;
            upload_rest(&gpu, &mut loader, source, &mut reader, &mut report).await?;
        }
        gpu.flush_writes()?;
        report(&loader, true);
        let weights = loader.finish()?;
        gpu.check()?;
        Self::assemble(gpu, weights, prepared, options.prefill_batch).await
    }
}

/// Streams the rest of one file into the weights.
async fn upload_rest<M: ModelSource>(
    gpu: &Gpu,
    loader: &mut WeightLoader,
    source: &mut M,
    reader: &mut PartReader<M::Stream>,
    report: &mut impl FnMut(&WeightLoader, bool),
) -> Result<()> {
    while let Some((offset, bytes)) = reader.next(source).await? {
        loader.push(gpu, reader.part, offset, &bytes)?;
        report(loader, false);
    }
    Ok(())
}

/// A model file on disk, read in chunks; the other parts of a split model sit beside it.
#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    path: std::path::PathBuf,
    name: String,
    chunk: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    pub fn new(path: &std::path::Path) -> FileSource {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        FileSource { path: path.to_path_buf(), name, chunk: 8 << 20 }
    }
}

/// An open file read `chunk` bytes at a time.
#[cfg(not(target_arch = "wasm32"))]
pub struct FileStream {
    file: std::fs::File,
    path: std::path::PathBuf,
    chunk: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteStream for FileStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let mut buf = vec![0u8; self.chunk];
        let n = self.file.read(&mut buf).map_err(|e| crate::gguf::io_error(&self.path, e))?;
        buf.truncate(n);
        Ok((n > 0).then_some(buf))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelSource for FileSource {
    type Stream = FileStream;

    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&mut self, part: usize, name: &str, offset: u64) -> Result<Opened<FileStream>> {
        use std::io::{Seek, SeekFrom};
        let path = if part == 0 { self.path.clone() } else { self.path.with_file_name(name) };
        let (mut file, file_len) = crate::gguf::open_regular(&path)?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| crate::gguf::io_error(&path, e))?;
        Ok(Opened { stream: FileStream { file, path, chunk: self.chunk }, file_len: Some(file_len) })
    }
}
