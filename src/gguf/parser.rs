//! The incremental GGUF header parser: bytes go in as they arrive, the header comes out once it is complete.
//!
//! The parser keeps only the bytes of the item it is reading (one metadata value, one string of a string array, or one
//! tensor info), so the header of a model streamed from the network never sits whole in memory twice. String arrays (the
//! vocabulary and merges, most of a header) are read string by string and resume where they stopped. An item that is
//! not complete yet is parsed again once the bytes it announced have arrived; only inside arrays of arrays, whose end is
//! not announced, does it wait until the buffered bytes have doubled. Feeding a header in tiny chunks costs linear time,
//! and `push` returns the header with the push that brings its last byte (except after an array of arrays, where the
//! next bytes or `finish` do).
//!
//! Every count and length read from the file is untrusted: it is checked against webr1's caps and, when the file length
//! is known, against the bytes that exist, before anything is allocated for it.

use super::value::{Array, Value, ValueType};
use super::{Gguf, Metadata, TensorInfo};
use crate::error::Error;
use crate::quant::GgmlType;
use crate::{err, Result};

/// The header (metadata and tensor table) may not exceed this many bytes. The largest real vocabularies take ~10 MB.
pub const MAX_HEADER_BYTES: u64 = 256 << 20;
/// A single string may not exceed this many bytes.
pub const MAX_STRING_BYTES: u64 = 64 << 20;
/// Arrays may nest this deep and no deeper.
pub const MAX_ARRAY_DEPTH: u32 = 8;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;

const MAGIC: &[u8; 4] = b"GGUF";
/// Fewest bytes of one key/value pair: empty key (8), type (4), one-byte value (1).
const MIN_KV_BYTES: u64 = 13;
/// Fewest bytes of one tensor info: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
const MIN_TENSOR_BYTES: u64 = 32;

/// Why an item could not be read.
enum Fail {
    /// The bytes end inside the item; `Some(n)` when the item is known to end at absolute offset `n`.
    Short(Option<u64>),
    Bad(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Bad(e)
    }
}

type Step<T> = std::result::Result<T, Fail>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preamble,
    Metadata { left: u64 },
    Tensors { left: u64 },
    Finished,
}

/// Parses a GGUF header from byte chunks. See the module docs.
#[derive(Debug)]
pub struct GgufParser {
    /// Bytes received; those before `start` are consumed and dropped at the end of each `push`.
    buf: Vec<u8>,
    start: usize,
    /// Absolute file offset of `buf[start]`.
    base: u64,
    /// Total bytes pushed so far.
    pushed: u64,
    /// Known length of the whole file, if any.
    file_len: Option<u64>,
    /// Do not retry the current item before `buf` holds this many bytes.
    retry_at: usize,
    stage: Stage,
    /// A string array being read string by string.
    strings: Option<PartialStrings>,
    version: u32,
    n_tensors: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
}

impl Default for GgufParser {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufParser {
    /// A parser for a stream of unknown length.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            base: 0,
            pushed: 0,
            file_len: None,
            retry_at: 0,
            stage: Stage::Preamble,
            strings: None,
            version: 0,
            n_tensors: 0,
            metadata: Metadata::default(),
            tensors: Vec::new(),
        }
    }

    /// A parser for a file of `file_len` bytes: lengths are checked against it early, and the finished header is
    /// checked to have every tensor inside the file.
    pub fn with_file_len(file_len: u64) -> Self {
        Self { file_len: Some(file_len), ..Self::new() }
    }

    /// Feeds the next bytes of the file. Returns the header as soon as it is complete (exactly once); bytes past the
    /// header are not needed for that and are dropped. After the header was returned, further calls are an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Gguf>> {
        if self.stage == Stage::Finished {
            return Err(err!(Usage, "the GGUF header was already complete; push no more bytes"));
        }
        self.pushed += chunk.len() as u64;
        if let Some(len) = self.file_len {
            if self.pushed > len {
                return Err(err!(Usage, "pushed {} bytes into a parser told the file has {len}", self.pushed));
            }
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() - self.start < self.retry_at {
            return Ok(None);
        }
        let result = self.advance();
        self.buf.drain(..self.start);
        self.start = 0;
        result
    }

    /// The stream has ended: returns the header, or `gguf.truncated` when the bytes ended inside it. Every tensor must
    /// lie inside the bytes pushed (or the file length given up front).
    pub fn finish(mut self) -> Result<Gguf> {
        if self.stage == Stage::Finished {
            return Err(err!(Usage, "the GGUF header was already returned by push"));
        }
        let file_len = *self.file_len.get_or_insert(self.pushed);
        match self.advance()? {
            Some(gguf) => Ok(gguf),
            None => Err(err!(
                GgufTruncated,
                "the file ends at byte {file_len}, inside the GGUF header ({}); the download may be incomplete",
                self.stage_name()
            )),
        }
    }

    fn stage_name(&self) -> String {
        match self.stage {
            Stage::Preamble => "magic, version and counts".into(),
            Stage::Metadata { left } => {
                let pair =
                    format!("metadata pair {} of {}", self.metadata.len() + 1, self.metadata.len() as u64 + left);
                match &self.strings {
                    Some(p) => format!("{pair}, string {} of the array '{}'", p.items.len() + 1, p.key),
                    None => pair,
                }
            }
            Stage::Tensors { left } => {
                format!("tensor info {} of {}", self.tensors.len() as u64 + 1, self.tensors.len() as u64 + left)
            }
            Stage::Finished => "done".into(),
        }
    }

    /// Parses as many whole items as the buffer holds.
    fn advance(&mut self) -> Result<Option<Gguf>> {
        loop {
            let mut reader = Reader { buf: &self.buf[self.start..], pos: 0, base: self.base, file_len: self.file_len };
            let step = match self.stage {
                Stage::Preamble => self.read_preamble(&mut reader),
                Stage::Metadata { .. } if self.strings.is_some() => reader.string().map(Item::String),
                Stage::Metadata { left } => Self::read_kv(&mut reader).map(|kv| Item::Kv(kv, left)),
                Stage::Tensors { left } => Self::read_tensor_info(&mut reader).map(|t| Item::Tensor(Box::new(t), left)),
                Stage::Finished => return Ok(None),
            };
            let consumed = reader.pos;
            match step {
                Ok(item) => {
                    self.consume(consumed);
                    self.apply(item)?;
                    if let Stage::Tensors { left: 0 } = self.stage {
                        return self.complete().map(Some);
                    }
                }
                Err(Fail::Bad(e)) => return Err(e),
                Err(Fail::Short(end)) => {
                    self.wait_for(end);
                    return Ok(None);
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.base += n as u64;
        self.retry_at = 0;
    }

    /// Sets when to retry the current item: at its known end, else once the buffered bytes have doubled.
    fn wait_for(&mut self, end: Option<u64>) {
        let held = self.buf.len() - self.start;
        self.retry_at = match end {
            Some(end) => usize::try_from(end.saturating_sub(self.base)).unwrap_or(usize::MAX),
            None => held.saturating_mul(2).max(held + 256),
        };
    }

    fn apply(&mut self, item: Item) -> Result<()> {
        match item {
            Item::Preamble { version, n_tensors, n_kv } => {
                self.version = version;
                self.n_tensors = n_tensors;
                self.stage = Stage::Metadata { left: n_kv };
                if n_kv == 0 {
                    self.stage = Stage::Tensors { left: n_tensors };
                }
            }
            Item::Kv(Kv::Whole(key, value), left) => self.insert_kv(key, value, left)?,
            Item::Kv(Kv::Strings { key, len }, left) => {
                let strings = PartialStrings { key, len, items: Vec::new() };
                self.strings = Some(strings);
                self.finish_strings(left)?;
            }
            Item::String(s) => {
                if let Some(strings) = &mut self.strings {
                    strings.items.push(s);
                }
                if let Stage::Metadata { left } = self.stage {
                    self.finish_strings(left)?;
                }
            }
            Item::Tensor(info, left) => {
                self.tensors.push(*info);
                self.stage = Stage::Tensors { left: left - 1 };
            }
        }
        Ok(())
    }

    fn insert_kv(&mut self, key: String, value: Value, left: u64) -> Result<()> {
        self.metadata.insert(key, value)?;
        self.stage =
            if left > 1 { Stage::Metadata { left: left - 1 } } else { Stage::Tensors { left: self.n_tensors } };
        Ok(())
    }

    /// Completes the string array being read once it holds all its strings.
    fn finish_strings(&mut self, left: u64) -> Result<()> {
        if self.strings.as_ref().is_some_and(|p| p.items.len() as u64 == p.len) {
            if let Some(p) = self.strings.take() {
                self.insert_kv(p.key, Value::Array(Array::String(p.items)), left)?;
            }
        }
        Ok(())
    }

    fn read_preamble(&self, r: &mut Reader) -> Step<Item> {
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(err!(GgufBadMagic, "not a GGUF file: it starts with {magic:02x?}, not \"GGUF\"").into());
        }
        let version = r.u32()?;
        if version != 2 && version != 3 {
            let hint =
                if version.swap_bytes() <= 3 { " (a big-endian file; webr1 reads little-endian GGUF)" } else { "" };
            return Err(
                err!(GgufUnsupportedVersion, "GGUF version {version} is not supported (2 or 3 are){hint}").into()
            );
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        let min_bytes = n_tensors
            .checked_mul(MIN_TENSOR_BYTES)
            .and_then(|t| n_kv.checked_mul(MIN_KV_BYTES).and_then(|k| k.checked_add(t)))
            .unwrap_or(u64::MAX);
        r.claim(min_bytes, || format!("{n_tensors} tensors and {n_kv} metadata pairs"))?;
        Ok(Item::Preamble { version, n_tensors, n_kv })
    }

    /// One metadata pair, or the start of a string array (whose strings are then read one by one).
    fn read_kv(r: &mut Reader) -> Step<Kv> {
        let key = r.string()?;
        let ty = r.value_type()?;
        if ty == ValueType::Array {
            let (elements, len) = r.array_header(1)?;
            if elements == ValueType::String {
                return Ok(Kv::Strings { key, len });
            }
            return Ok(Kv::Whole(key, Value::Array(r.array_elements(elements, len, 1)?)));
        }
        Ok(Kv::Whole(key, r.value(ty, 0)?))
    }

    fn read_tensor_info(r: &mut Reader) -> Step<TensorInfo> {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(err!(GgufBadShape, "tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)").into());
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let type_id = r.u32()?;
        let offset = r.u64()?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(err!(GgufBadTensorType, "tensor '{name}' has unknown GGML type id {type_id}").into());
        };
        let n_bytes = tensor_bytes(&name, &dims, ty)?;
        Ok(TensorInfo { name, dims, ty, offset, n_bytes })
    }

    /// All tensor infos are read: compute the data offset and check the tensor table.
    fn complete(&mut self) -> Result<Gguf> {
        self.stage = Stage::Finished;
        let alignment = alignment_of(&self.metadata)?;
        let data_offset = self.base.div_ceil(alignment).saturating_mul(alignment);
        if data_offset > MAX_HEADER_BYTES {
            return Err(err!(
                GgufTooLarge,
                "the GGUF header takes {data_offset} bytes (webr1 allows {MAX_HEADER_BYTES})"
            ));
        }
        let gguf = Gguf {
            version: self.version,
            metadata: std::mem::take(&mut self.metadata),
            tensors: std::mem::take(&mut self.tensors),
            alignment,
            data_offset,
        };
        gguf.check_tensor_table()?;
        if let Some(len) = self.file_len {
            gguf.check_file_len(len)?;
        }
        self.buf = Vec::new();
        self.start = 0;
        Ok(gguf)
    }
}

/// A metadata pair as read: whole, or the start of a string array.
enum Kv {
    Whole(String, Value),
    Strings { key: String, len: u64 },
}

/// A string array read so far.
#[derive(Debug)]
struct PartialStrings {
    key: String,
    len: u64,
    items: Vec<String>,
}

enum Item {
    Preamble { version: u32, n_tensors: u64, n_kv: u64 },
    Kv(Kv, u64),
    String(String),
    Tensor(Box<TensorInfo>, u64),
}

/// Bytes of a tensor of type `ty` and shape `dims`, checking that the shape is sound.
fn tensor_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64> {
    let bad = |why: &str| err!(GgufBadShape, "tensor '{name}' of type {ty} and shape {dims:?}: {why}");
    if dims.contains(&0) {
        return Err(bad("a dimension is zero"));
    }
    let n_elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).ok_or_else(|| bad("too many elements"))?;
    let rows = n_elements / dims[0];
    if dims[0] % ty.block_size() != 0 {
        return Err(bad(&format!("rows are not whole blocks of {}", ty.block_size())));
    }
    let row_bytes = ty.row_bytes(dims[0]).ok_or_else(|| bad("too many bytes"))?;
    row_bytes.checked_mul(rows).filter(|&b| b <= i64::MAX as u64).ok_or_else(|| bad("too many bytes"))
}

fn alignment_of(metadata: &Metadata) -> Result<u64> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(other) => Err(err!(
            GgufBadAlignment,
            "general.alignment must be a power of two stored as u32, found {other} ({})",
            other.value_type().name()
        )),
    }
}

/// A cursor over the buffered bytes that knows their absolute position and the file's length.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
    file_len: Option<u64>,
}

impl<'a> Reader<'a> {
    fn abs(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Checks that `n` more bytes (announced by a count or length) can exist: under the header cap, and inside the
    /// file when its length is known.
    fn claim(&self, n: u64, what: impl Fn() -> String) -> Step<()> {
        let end = self.abs().saturating_add(n);
        if end > MAX_HEADER_BYTES {
            return Err(err!(
                GgufTooLarge,
                "{} at byte {} would need at least {n} bytes; webr1 reads GGUF headers up to {MAX_HEADER_BYTES} bytes",
                what(),
                self.abs()
            )
            .into());
        }
        if let Some(len) = self.file_len {
            if end > len {
                return Err(err!(
                    GgufTruncated,
                    "{} at byte {} needs at least {n} bytes, past the end of the file ({len} bytes)",
                    what(),
                    self.abs()
                )
                .into());
            }
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let bytes = &self.buf[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => Err(Fail::Short(Some(self.abs() + n as u64))),
        }
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self) -> Step<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Step<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Step<String> {
        let at = self.abs();
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(
                err!(GgufTooLarge, "a string of {len} bytes at byte {at} (webr1 allows {MAX_STRING_BYTES})").into()
            );
        }
        self.claim(len, || format!("a string of {len} bytes"))?;
        let bytes = self.take(len as usize).map_err(|_| Fail::Short(Some(self.abs() + len)))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| err!(GgufBadUtf8, "the string at byte {at} is not UTF-8").into())
    }

    fn value_type(&mut self) -> Step<ValueType> {
        let at = self.abs();
        let id = self.u32()?;
        ValueType::from_id(id)
            .ok_or_else(|| err!(GgufBadValueType, "unknown metadata value type {id} at byte {at}").into())
    }

    fn value(&mut self, ty: ValueType, depth: u32) -> Step<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
        })
    }

    fn bool(&mut self) -> Step<bool> {
        let at = self.abs();
        match self.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(err!(GgufBadValueType, "a bool at byte {at} holds {b}, not 0 or 1").into()),
        }
    }

    fn array_value(&mut self, depth: u32) -> Step<Array> {
        let (ty, len) = self.array_header(depth)?;
        self.array_elements(ty, len, depth)
    }

    /// An array's element type and length, checked against the caps and the bytes that can exist.
    fn array_header(&mut self, depth: u32) -> Step<(ValueType, u64)> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(err!(GgufTooLarge, "arrays nested deeper than {MAX_ARRAY_DEPTH} at byte {}", self.abs()).into());
        }
        let ty = self.value_type()?;
        let len = self.u64()?;
        let min_bytes = len.saturating_mul(ty.min_size());
        self.claim(min_bytes, || format!("an array of {len} {}", ty.name()))?;
        Ok((ty, len))
    }

    fn array_elements(&mut self, ty: ValueType, len: u64, depth: u32) -> Step<Array> {
        let min_bytes = len.saturating_mul(ty.min_size());
        if let Some(size) = ty.fixed_size() {
            // The array's end is known: wait for all of it before parsing any of it.
            let end = self.pos as u64 + min_bytes;
            if end > self.buf.len() as u64 {
                return Err(Fail::Short(Some(self.base + end)));
            }
            debug_assert_eq!(size * len, min_bytes);
        }
        // `claim` bounded `len` by the header cap, and fixed-size arrays are known to be buffered whole, so this
        // capacity is at most what the bytes can hold.
        let cap = (len as usize).min(self.buf.len().saturating_sub(self.pos) / ty.min_size() as usize);
        macro_rules! collect {
            ($variant:ident, $read:expr) => {{
                let mut v = Vec::with_capacity(cap);
                for _ in 0..len {
                    v.push($read);
                }
                Array::$variant(v)
            }};
        }
        Ok(match ty {
            ValueType::U8 => collect!(U8, self.array::<1>()?[0]),
            ValueType::I8 => collect!(I8, i8::from_le_bytes(self.array()?)),
            ValueType::U16 => collect!(U16, u16::from_le_bytes(self.array()?)),
            ValueType::I16 => collect!(I16, i16::from_le_bytes(self.array()?)),
            ValueType::U32 => collect!(U32, self.u32()?),
            ValueType::I32 => collect!(I32, i32::from_le_bytes(self.array()?)),
            ValueType::F32 => collect!(F32, f32::from_le_bytes(self.array()?)),
            ValueType::Bool => collect!(Bool, self.bool()?),
            ValueType::String => collect!(String, self.string_in_array()?),
            ValueType::Array => collect!(Array, unknown_end(self.array_value(depth + 1))?),
            ValueType::U64 => collect!(U64, self.u64()?),
            ValueType::I64 => collect!(I64, i64::from_le_bytes(self.array()?)),
            ValueType::F64 => collect!(F64, f64::from_le_bytes(self.array()?)),
        })
    }

    /// A string inside an array: where the array ends is unknown, so a short read says nothing of its end.
    fn string_in_array(&mut self) -> Step<String> {
        unknown_end(self.string())
    }
}

/// A short read inside an array element does not tell where the whole item ends.
fn unknown_end<T>(step: Step<T>) -> Step<T> {
    step.map_err(|f| match f {
        Fail::Short(_) => Fail::Short(None),
        bad => bad,
    })
}
