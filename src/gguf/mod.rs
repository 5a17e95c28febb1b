//! GGUF, the file format of llama.cpp models: a header (metadata key/value pairs and a tensor table) followed by the
//! tensors' raw bytes. Spec: ggml's `docs/gguf.md`; versions 2 and 3 (little-endian) are read.
//!
//! [`GgufParser`] reads the header incrementally from byte chunks, as a browser download delivers them; [`Gguf::from_bytes`]
//! and [`Gguf::read_file`] are the whole-buffer and file conveniences over it. The result is checked before anything
//! uses it: tensors have known types and sound shapes, are aligned, do not overlap, and (once the file length is known)
//! lie inside the data section. Models split across files (`-00001-of-00003.gguf`) are handled by [`split`].

mod parser;
pub mod split;
mod value;
pub mod writer;

pub use parser::{GgufParser, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_HEADER_BYTES, MAX_STRING_BYTES};
pub use value::{Array, Value, ValueType};

use crate::quant::GgmlType;
use crate::{err, Result};
use std::collections::HashMap;

/// A parsed, checked GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Metadata,
    /// The tensor table in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment` (32 when absent).
    pub alignment: u64,
    /// Absolute file offset where the data section (the tensors' bytes) starts.
    pub data_offset: u64,
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order, fastest-varying first: a weight matrix of `rows` rows of `cols` is `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the tensor's bytes from the start of the data section.
    pub offset: u64,
    /// The tensor's size in bytes (type × shape).
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (the product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.n_bytes / self.n_rows()
    }
}

/// Metadata pairs in file order, with lookup by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pairs: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Adds a pair; a key that is already present is a `gguf.duplicate_key` error.
    pub fn insert(&mut self, key: String, value: Value) -> Result<()> {
        if self.index.contains_key(&key) {
            return Err(err!(GgufDuplicateKey, "metadata key '{key}' appears twice"));
        }
        self.index.insert(key.clone(), self.pairs.len());
        self.pairs.push((key, value));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.pairs[i].1)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn wrong_type(key: &str, want: &str, found: &Value) -> crate::Error {
        err!(GgufWrongType, "metadata key '{key}' should be {want}, but holds a {}", found.value_type().name())
    }

    /// A string value; `Ok(None)` when absent, `gguf.wrong_type` when not a string.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Self::wrong_type(key, "a string", other)),
        }
    }

    /// An integer value of any width that is not negative.
    pub fn get_uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| Self::wrong_type(key, "a non-negative integer", v)),
        }
    }

    /// A float value (integers are accepted too).
    pub fn get_float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| Self::wrong_type(key, "a number", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Self::wrong_type(key, "a bool", other)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&Array>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(Self::wrong_type(key, "an array", other)),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get_array(key)? {
            None => Ok(None),
            Some(Array::String(v)) => Ok(Some(v)),
            Some(other) => Err(err!(
                GgufWrongType,
                "metadata key '{key}' should be an array of strings, but holds an array of {}",
                other.element_type().name()
            )),
        }
    }

    /// A string that must be present: `gguf.missing_key` otherwise.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.get_str(key)?.ok_or_else(|| missing_key(key))
    }
}

/// The `gguf.missing_key` error for `key`.
pub fn missing_key(key: &str) -> crate::Error {
    err!(GgufMissingKey, "the model's metadata has no '{key}'")
}

impl Gguf {
    /// Parses a whole GGUF file held in memory (or just its first bytes, when `file_len` is the real length: use
    /// [`GgufParser`] for that).
    pub fn from_bytes(bytes: &[u8]) -> Result<Gguf> {
        let mut parser = GgufParser::with_file_len(bytes.len() as u64);
        // In pieces, so that a whole model in memory is not copied: parsing stops at the end of the header.
        for chunk in bytes.chunks(1 << 20) {
            if let Some(gguf) = parser.push(chunk)? {
                return Ok(gguf);
            }
        }
        parser.finish()
    }

    /// Reads and checks the header of a GGUF file, reading only as far as the header goes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_file(path: impl AsRef<std::path::Path>) -> Result<Gguf> {
        use std::io::Read;
        let path = path.as_ref();
        let (mut file, len) = open_regular(path)?;
        let mut parser = GgufParser::with_file_len(len);
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut chunk).map_err(|e| io_error(path, e))?;
            if n == 0 {
                return parser.finish();
            }
            if let Some(gguf) = parser.push(&chunk[..n])? {
                return Ok(gguf);
            }
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Absolute file offset of a tensor's first byte.
    pub fn tensor_file_offset(&self, tensor: &TensorInfo) -> u64 {
        self.data_offset + tensor.offset
    }

    /// Bytes of the data section the tensor table needs (the end of the last tensor).
    pub fn data_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.offset + t.n_bytes).max().unwrap_or(0)
    }

    /// Checks that every tensor lies inside a file of `file_len` bytes.
    pub fn check_file_len(&self, file_len: u64) -> Result<()> {
        let available = file_len.saturating_sub(self.data_offset);
        for t in &self.tensors {
            if t.offset.checked_add(t.n_bytes).is_none_or(|end| end > available) {
                return Err(err!(
                    GgufTensorOutOfRange,
                    "tensor '{}' ({} bytes at data offset {}) lies outside the data section ({available} bytes from \
                     byte {}); the file is cut short or corrupt",
                    t.name,
                    t.n_bytes,
                    t.offset,
                    self.data_offset
                ));
            }
        }
        Ok(())
    }

    /// Checks the tensor table: unique names, aligned offsets, no two tensors sharing bytes.
    fn check_tensor_table(&self) -> Result<()> {
        let mut names = HashMap::with_capacity(self.tensors.len());
        for (i, t) in self.tensors.iter().enumerate() {
            if names.insert(t.name.as_str(), i).is_some() {
                return Err(err!(GgufDuplicateTensor, "tensor '{}' appears twice in the tensor table", t.name));
            }
            if t.offset % self.alignment != 0 {
                return Err(err!(
                    GgufTensorMisaligned,
                    "tensor '{}' starts at data offset {}, not a multiple of the alignment {}",
                    t.name,
                    t.offset,
                    self.alignment
                ));
            }
        }
        let mut by_offset: Vec<&TensorInfo> = self.tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            let end = pair[0].offset.saturating_add(pair[0].n_bytes);
            if end > pair[1].offset {
                return Err(err!(
                    GgufTensorOverlap,
                    "tensors '{}' (bytes {}..{end}) and '{}' (from byte {}) overlap",
                    pair[0].name,
                    pair[0].offset,
                    pair[1].name,
                    pair[1].offset
                ));
            }
        }
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Opens a model file for reading, refusing what is not a regular file before opening it: a directory
/// (`io.is_directory`), a device, FIFO or socket (`io.not_a_file`; opening a FIFO would wait for a writer forever).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn open_regular(path: &std::path::Path) -> crate::Result<(std::fs::File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(err!(IoIsDirectory, "{} is a directory: give the path of a .gguf file", path.display()));
    }
    if !meta.is_file() {
        return Err(err!(
            IoNotAFile,
            "{} is not a regular file (a device, FIFO or socket): give the path of a .gguf file",
            path.display()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    Ok((file, meta.len()))
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn io_error(path: &std::path::Path, e: std::io::Error) -> crate::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        err!(IoNotFound, "no such file: {}", path.display())
    } else {
        err!(IoRead, "cannot read {}: {e}", path.display())
    }
}
