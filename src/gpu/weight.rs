//! Weights larger than one GPU binding, split by rows across buffers (ARCHITECTURE.md §3).
//!
//! Many devices cap a storage binding at 128 MiB, and webr1 may cap it lower ([`crate::gpu::GpuOptions`]); the Q6_K
//! `output.weight` of a 1.5B model is 191 MB and the Q4_K embedding of a 7B model 307 MB. A [`SplitWeight`] holds such
//! a matrix as consecutive row ranges, each a whole number of rows in its own buffer. A weight that fits is a split
//! weight of one part, so model code has one path.
//!
//! Kernels see one part at a time: a matrix-vector product dispatches once per part, with the part's `first_row` in
//! its parameters, writing `y[first_row .. first_row + n_rows]`; an embedding lookup picks the part that holds the row.

use super::context::Gpu;
use super::tensor::{tensor_bytes, ByteWriter, DType, Tensor};
use crate::{err, Result};

/// One part of a split weight: rows `first_row .. first_row + n_rows` of the whole matrix, as a tensor of shape
/// `[n_rows, cols]`.
#[derive(Debug, Clone)]
pub struct WeightPart {
    pub tensor: Tensor,
    pub first_row: usize,
    pub n_rows: usize,
}

/// A `[rows, cols]` weight stored as row ranges in one or more buffers of at most [`Gpu::max_binding_bytes`] each.
#[derive(Debug, Clone)]
pub struct SplitWeight {
    rows: usize,
    cols: usize,
    dtype: DType,
    row_bytes: u64,
    parts: Vec<WeightPart>,
}

impl SplitWeight {
    /// A zero-filled weight of `rows` × `cols` elements, split as [`split_rows`] says for this device.
    pub fn new(gpu: &Gpu, label: &str, rows: usize, cols: usize, dtype: DType) -> Result<SplitWeight> {
        let row_bytes = tensor_bytes(label, &[cols], dtype)?;
        let ranges = split_rows(label, rows, row_bytes, gpu.max_binding_bytes())?;
        let parts = ranges
            .into_iter()
            .enumerate()
            .map(|(i, (first_row, n_rows))| {
                let tensor = Tensor::new(gpu, &format!("{label}[part {i}]"), &[n_rows, cols], dtype)?;
                Ok(WeightPart { tensor, first_row, n_rows })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SplitWeight { rows, cols, dtype, row_bytes, parts })
    }

    /// A weight holding `data`, its rows in order (exactly `rows * row_bytes` bytes).
    pub fn from_bytes(gpu: &Gpu, label: &str, rows: usize, cols: usize, dtype: DType, data: &[u8]) -> Result<Self> {
        let weight = SplitWeight::new(gpu, label, rows, cols, dtype)?;
        let mut writer = weight.writer();
        writer.write(gpu, data)?;
        writer.finish(gpu)?;
        Ok(weight)
    }

    /// A writer for the weight's bytes, in file order, in pieces of any size; it crosses part boundaries itself.
    pub fn writer(&self) -> ByteWriter {
        ByteWriter::new(
            self.parts.iter().map(|p| (p.tensor.buffer().clone(), p.tensor.offset(), p.tensor.byte_size())).collect(),
        )
    }

    /// A writer for rows `first_row .. first_row + n_rows` only, in file order: one GGUF tensor of a weight that stacks
    /// several of the same type and width (the loader stacks Q, K and V, and gate and up; see `src/model/weights.rs`).
    pub fn writer_rows(&self, first_row: usize, n_rows: usize) -> Result<ByteWriter> {
        let end = first_row
            .checked_add(n_rows)
            .filter(|&end| end <= self.rows)
            .ok_or_else(|| err!(Usage, "rows {first_row}..+{n_rows} of a weight of {} rows", self.rows))?;
        let pieces = self
            .parts
            .iter()
            .filter_map(|p| {
                let from = first_row.max(p.first_row);
                let to = end.min(p.first_row + p.n_rows);
                let offset = p.tensor.offset() + (from - p.first_row) as u64 * self.row_bytes;
                (from < to).then(|| (p.tensor.buffer().clone(), offset, (to - from) as u64 * self.row_bytes))
            })
            .collect();
        Ok(ByteWriter::new(pieces))
    }

    /// Rows `first..first + n` of a weight held in one part, as a weight of their own sharing its buffer (gate and
    /// up of a stacked `[gate; up]`). The rows must start on the device's storage offset alignment.
    pub fn view_rows(&self, gpu: &Gpu, first: usize, n: usize) -> Result<SplitWeight> {
        let [part] = self.parts.as_slice() else {
            return Err(err!(Usage, "a view of rows of a weight in {} parts", self.parts.len()));
        };
        let tensor = part.tensor.view_rows(gpu, first, n)?;
        let parts = vec![WeightPart { tensor, first_row: 0, n_rows: n }];
        Ok(SplitWeight { rows: n, cols: self.cols, dtype: self.dtype, row_bytes: self.row_bytes, parts })
    }

    pub fn parts(&self) -> &[WeightPart] {
        &self.parts
    }

    /// The part holding `row`, and the row's index inside it.
    pub fn part_of_row(&self, row: usize) -> Option<(&WeightPart, usize)> {
        let part = self.parts.iter().find(|p| row >= p.first_row && row < p.first_row + p.n_rows)?;
        Some((part, row - part.first_row))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn row_bytes(&self) -> u64 {
        self.row_bytes
    }

    pub fn byte_size(&self) -> u64 {
        self.row_bytes * self.rows as u64
    }

    /// Reads the whole weight back, parts concatenated (for tests).
    pub async fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.byte_size() as usize);
        for part in &self.parts {
            out.extend(part.tensor.read_bytes(gpu).await?);
        }
        Ok(out)
    }
}

/// Splits `rows` rows of `row_bytes` bytes into consecutive `(first_row, n_rows)` ranges of at most `max_bytes` each,
/// as few and as even as possible (so no part is a sliver). A row larger than `max_bytes` is a `gpu.limits` error that
/// names the numbers.
pub fn split_rows(label: &str, rows: usize, row_bytes: u64, max_bytes: u64) -> Result<Vec<(usize, usize)>> {
    if row_bytes > max_bytes {
        return Err(err!(
            GpuLimits,
            "{label}: one row is {row_bytes} bytes, more than a GPU binding may hold here ({max_bytes} bytes)"
        ));
    }
    if rows == 0 {
        return Ok(vec![(0, 0)]);
    }
    let rows_per_part_max = (max_bytes / row_bytes.max(1)).min(rows as u64) as usize;
    let n_parts = rows.div_ceil(rows_per_part_max);
    let (base, extra) = (rows / n_parts, rows % n_parts);
    let mut first = 0;
    Ok((0..n_parts)
        .map(|i| {
            let n = base + usize::from(i < extra);
            let range = (first, n);
            first += n;
            range
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_whole_rows_within_the_cap() {
        for (rows, row_bytes, max) in
            [(1, 4, 4), (10, 4, 40), (10, 4, 39), (151_936, 1260, 128 << 20), (7, 144, 300), (65, 18, 100)]
        {
            let parts = split_rows("w", rows, row_bytes, max).unwrap();
            assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), rows);
            let mut next = 0;
            for &(first, n) in &parts {
                assert_eq!(first, next);
                assert!(n > 0 && n as u64 * row_bytes <= max, "{rows} rows of {row_bytes} in {max}: {parts:?}");
                next += n;
            }
            let fewest = (rows as u64 * row_bytes).div_ceil(max / row_bytes * row_bytes) as usize;
            assert_eq!(parts.len(), fewest, "{rows} rows of {row_bytes} in {max}");
            let sizes: Vec<usize> = parts.iter().map(|p| p.1).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "uneven: {sizes:?}");
        }
        // The 7B's Q4_K embedding (152064 rows of 3584 elements, 144 bytes per 256) at 128 MiB: 3 parts.
        assert_eq!(split_rows("token_embd", 152_064, 3584 / 256 * 144, 128 << 20).unwrap().len(), 3);
    }

    #[test]
    fn a_row_larger_than_the_cap_names_the_numbers() {
        let e = split_rows("output.weight", 10, 1000, 512).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::GpuLimits);
        assert!(e.message.contains("1000") && e.message.contains("512"), "{}", e.message);
    }
}
