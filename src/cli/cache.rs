//! What the download cache knows about each file it holds: a record beside `NAME` (`NAME.webr1.json`) written once the
//! download was complete and checked, with the URL, the size, the sha256 (the digest checked after the download, or
//! computed then) and the file's modification time. A cached file is used only while it matches its record: its size
//! always (a file cut short is found at once), and when its modification time moved, its sha256, hashed once again
//! (so that a file that was written to, a bit flipped in place, is found without hashing gigabytes on every load). A
//! file that does not match is downloaded again. A file without a record (put there by hand) is taken as it is.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use webr1::{err, Result};

/// `NAME` → `NAME.webr1.json`.
fn record_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".webr1.json");
    file.with_file_name(name)
}

fn modified_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

/// Records the complete, checked file `file` downloaded from `url`, with its sha256 in hex.
pub fn record(file: &Path, url: &str, sha256: &str) -> Result<()> {
    let meta = std::fs::metadata(file).map_err(|e| err!(IoRead, "cannot read {}: {e}", file.display()))?;
    let record = json!({"url": url, "size": meta.len(), "sha256": sha256, "modified_ns": modified_ns(&meta)});
    let path = record_path(file);
    std::fs::write(&path, record.to_string()).map_err(|e| err!(IoWrite, "cannot write {}: {e}", path.display()))
}

/// Whether the cached `file` can be used: it exists and matches its record. A file that does not match is removed
/// (with its record), so that the caller downloads it again.
pub fn usable(file: &Path) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(file) else { return Ok(false) };
    let Some(record) = std::fs::read(record_path(file)).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return Ok(true);
    };
    let size = record["size"].as_u64().unwrap_or(u64::MAX);
    let why = if meta.len() != size {
        Some(format!("is {} bytes, not the {size} bytes downloaded", meta.len()))
    } else if record["modified_ns"].as_u64() != Some(modified_ns(&meta)) {
        let want = record["sha256"].as_str().unwrap_or_default();
        let got = super::download::sha256_file(file)?;
        if got == want {
            record_again(file, &record, &meta)?;
            None
        } else {
            Some(format!("changed since it was downloaded (its sha256 is {got}, not {want})"))
        }
    } else {
        None
    };
    let Some(why) = why else { return Ok(true) };
    eprintln!("webr1: the cached {} {why}: downloading it again", file.display());
    std::fs::remove_file(file).map_err(|e| err!(IoWrite, "cannot remove {}: {e}", file.display()))?;
    std::fs::remove_file(record_path(file)).ok();
    Ok(false)
}

/// The same record with the file's new modification time, once its sha256 was found unchanged.
fn record_again(file: &Path, record: &Value, meta: &std::fs::Metadata) -> Result<()> {
    let mut record = record.clone();
    record["modified_ns"] = json!(modified_ns(meta));
    let path = record_path(file);
    std::fs::write(&path, record.to_string()).map_err(|e| err!(IoWrite, "cannot write {}: {e}", path.display()))
}
