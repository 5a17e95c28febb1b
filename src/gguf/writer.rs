//! Writes GGUF files: used by tests to build headers (valid and broken) and by benchmarks to build synthetic models at
//! real shapes.

use super::value::{Array, Value};
use super::DEFAULT_ALIGNMENT;
use crate::quant::GgmlType;
use crate::{err, Result};

/// Builds a GGUF v3 file in memory.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    pub version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PlannedTensor>,
}

#[derive(Debug, Clone)]
struct PlannedTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    n_bytes: u64,
    data: Option<Vec<u8>>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self { version: 3, alignment: DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Adds a metadata pair (`general.alignment` as a `u32` also sets the alignment used for tensor offsets).
    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        if let (Value::U32(a), "general.alignment") = (&value, key) {
            if a.is_power_of_two() {
                self.alignment = u64::from(*a);
            }
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Declares a tensor; its bytes are `data`, or zeros when `data` is `None`.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Option<Vec<u8>>) -> Result<&mut Self> {
        let rows: u64 = dims.iter().skip(1).product();
        let n_bytes = dims
            .first()
            .and_then(|&n| ty.row_bytes(n))
            .and_then(|b| b.checked_mul(rows))
            .ok_or_else(|| err!(Usage, "tensor '{name}': shape {dims:?} does not fit type {ty}"))?;
        if let Some(d) = &data {
            if d.len() as u64 != n_bytes {
                return Err(err!(Usage, "tensor '{name}': {} bytes given, {n_bytes} needed", d.len()));
            }
        }
        self.tensors.push(PlannedTensor { name: name.into(), dims: dims.to_vec(), ty, n_bytes, data });
        Ok(self)
    }

    /// Offsets of the tensors in the data section, each aligned.
    pub fn offsets(&self) -> Vec<u64> {
        let mut next = 0;
        self.tensors
            .iter()
            .map(|t| {
                let at = next;
                next = (at + t.n_bytes).div_ceil(self.alignment) * self.alignment;
                at
            })
            .collect()
    }

    /// The header, padded up to the start of the data section.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut out, value);
        }
        for (t, offset) in self.tensors.iter().zip(self.offsets()) {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let padded = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(padded as usize, 0);
        out
    }

    /// The whole file: header, then each tensor's bytes at its aligned offset.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        let data_start = out.len();
        for (t, offset) in self.tensors.iter().zip(self.offsets()) {
            out.resize(data_start + offset as usize, 0);
            match &t.data {
                Some(d) => out.extend_from_slice(d),
                None => out.resize(out.len() + t.n_bytes as usize, 0),
            }
        }
        out
    }
}

/// Appends a GGUF string (u64 length, then the bytes).
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a value's bytes (without its type id).
pub fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&(array.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $wrap:expr) => {
            for x in $v {
                put_value(out, &$wrap(x.clone()));
            }
        };
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v, Value::I8),
        Array::U16(v) => each!(v, Value::U16),
        Array::I16(v) => each!(v, Value::I16),
        Array::U32(v) => each!(v, Value::U32),
        Array::I32(v) => each!(v, Value::I32),
        Array::F32(v) => each!(v, Value::F32),
        Array::Bool(v) => each!(v, Value::Bool),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        Array::U64(v) => each!(v, Value::U64),
        Array::I64(v) => each!(v, Value::I64),
        Array::F64(v) => each!(v, Value::F64),
    }
}
