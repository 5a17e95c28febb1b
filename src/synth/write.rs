//! Writing a synthetic model to a file: the header, then every chunk of data written in place by several threads
//! (each fills its chunk from the chunk's own seeded generator, so the file does not depend on the thread count).

use super::SynthModel;
use crate::{err, Result};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Writes `model` to `path`. With `header_only`, only the header and tensor table are written and the file is given
/// its full length as a hole (zeros that take no disk space where the file system has sparse files), so readers that
/// check tensor offsets against the length accept it. `progress(done, total)` sees the data bytes written so far.
pub fn write_file(
    model: &SynthModel,
    path: &Path,
    header_only: bool,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let file = File::create(path).map_err(|e| write_error(path, e))?;
    file.set_len(model.file_len()).map_err(|e| write_error(path, e))?;
    write_at(&file, model.header(), 0).map_err(|e| write_error(path, e))?;
    if header_only {
        return Ok(());
    }
    let chunks: Vec<_> = model.chunks().collect();
    let total: u64 = chunks.iter().map(|c| c.len).sum();
    let (next, done, failed) = (AtomicUsize::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                    buf.resize(chunk.len as usize, 0);
                    model.fill(chunk, &mut buf);
                    if let Err(e) = write_at(&file, &buf, chunk.offset) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        break;
                    }
                    progress(done.fetch_add(chunk.len, Ordering::Relaxed) + chunk.len, total);
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(write_error(path, e)),
        None => Ok(()),
    }
}

fn write_error(path: &Path, e: std::io::Error) -> crate::Error {
    err!(IoWrite, "cannot write {}: {e}", path.display())
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn write_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}
