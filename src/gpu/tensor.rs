//! Tensors on the GPU: a `wgpu::Buffer` with a shape and a dtype, uploads in bounded chunks, and readback that works
//! on both targets.
//!
//! Shapes are listed outermost first and the last dimension is contiguous (`[rows, n]`, as in PyTorch). GGUF lists
//! dimensions the other way round (`ne[0]` is the contiguous one): a GGUF tensor with `ne = [n_embd, n_vocab]` is a
//! webr1 tensor of shape `[n_vocab, n_embd]`. Quantised weights keep their raw GGML blocks ([`DType::Ggml`]); a row
//! of `n` elements is `row_bytes(n)` bytes, a whole number of blocks.
//!
//! Readback is `map_async` plus a small future woken by the map callback, awaited through [`Gpu::wait`] (which counts
//! it). In the browser the callback runs from the event loop; natively `Gpu::wait` drives it with a blocking
//! `device.poll`, so natively the future is ready by the time it is first polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::context::{Gpu, WRITE_CHUNK};
use super::profile::Submission;
use crate::quant::GgmlType;
use crate::{err, Result};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// IEEE half. Computing on f16 tensors needs the `shader-f16` feature; storing them does not.
    F16,
    U32,
    /// Raw GGML blocks as in the GGUF file (weights), e.g. `Ggml(GgmlType::Q4_K)`.
    Ggml(GgmlType),
}

impl DType {
    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole number of blocks or overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        match self {
            DType::F32 | DType::U32 => n.checked_mul(4),
            DType::F16 => n.checked_mul(2),
            DType::Ggml(ty) => ty.row_bytes(n),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::Ggml(ty) => ty.name(),
        }
    }
}

/// Bytes of a tensor of `shape` and `dtype`, or a `usage` error naming why there is no such tensor.
pub fn tensor_bytes(label: &str, shape: &[usize], dtype: DType) -> Result<u64> {
    let Some((&cols, outer)) = shape.split_last() else {
        return Err(err!(Usage, "{label}: a tensor needs at least one dimension"));
    };
    let row = dtype
        .row_bytes(cols as u64)
        .ok_or_else(|| err!(Usage, "{label}: rows of {cols} elements are not whole {} blocks", dtype.name()))?;
    outer
        .iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| err!(Usage, "{label}: shape {shape:?} overflows"))
}

/// The size of the buffer that holds a tensor of `bytes` bytes: at least 4 bytes and a multiple of 4, so that every
/// tensor can be bound, copied and written (the memory plan counts buffers with this too).
pub fn buffer_bytes(bytes: u64) -> u64 {
    bytes.max(4).next_multiple_of(4)
}

/// A tensor in one GPU buffer (so at most [`Gpu::max_binding_bytes`]; larger weights are a
/// [`crate::gpu::SplitWeight`]). Cloning is cheap and shares the buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    /// Byte offset of the data in the buffer: 0, except for a view of some rows of another tensor.
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    bytes: u64,
}

impl Tensor {
    /// A zero-filled tensor (WebGPU zero-initialises buffers). It may be bound for reading and writing, copied from
    /// and written by the queue.
    pub fn new(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = tensor_bytes(label, shape, dtype)?;
        if bytes > gpu.max_binding_bytes() {
            return Err(err!(
                GpuLimits,
                "{label}: {bytes} bytes ({} {shape:?}) is more than one GPU binding may hold here ({} bytes); \
                 split it by rows",
                dtype.name(),
                gpu.max_binding_bytes()
            ));
        }
        let size = buffer_bytes(bytes);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let buffer = gpu.create_buffer(label, size, usage)?;
        Ok(Tensor { buffer, offset: 0, shape: shape.to_vec(), dtype, bytes })
    }

    /// Rows `first..first + n` of this tensor as a tensor of their own, sharing the buffer (e.g. the last token's
    /// hidden state, for the LM head). The start must fall on the device's storage offset alignment (256 bytes on
    /// most devices): a `gpu.limits` error otherwise.
    pub fn view_rows(&self, gpu: &Gpu, first: usize, n: usize) -> Result<Tensor> {
        let (rows, cols) = (self.rows(), self.cols());
        if n == 0 || first.checked_add(n).is_none_or(|end| end > rows) {
            return Err(err!(Usage, "rows {first}..{} of a tensor of {rows} rows", first.saturating_add(n)));
        }
        let row_bytes = self.dtype.row_bytes(cols as u64).unwrap_or(0);
        let offset = self.offset + first as u64 * row_bytes;
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment);
        if offset % align != 0 {
            return Err(err!(
                GpuLimits,
                "a view starting at byte {offset} is not aligned to the device's {align}-byte storage offset alignment"
            ));
        }
        let mut shape = vec![n];
        shape.extend_from_slice(&self.shape[self.shape.len().saturating_sub(1)..]);
        let bytes = n as u64 * row_bytes;
        Ok(Tensor { buffer: self.buffer.clone(), offset, shape, dtype: self.dtype, bytes })
    }

    /// A tensor holding `data` (exactly the tensor's bytes).
    pub fn from_bytes(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType, data: &[u8]) -> Result<Tensor> {
        let tensor = Tensor::new(gpu, label, shape, dtype)?;
        tensor.upload(gpu, data)?;
        Ok(tensor)
    }

    pub fn from_f32(gpu: &Gpu, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, label, shape, DType::F32, bytemuck::cast_slice(data))
    }

    pub fn from_f16(gpu: &Gpu, label: &str, shape: &[usize], data: &[half::f16]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, label, shape, DType::F16, bytemuck::cast_slice(data))
    }

    pub fn from_u32(gpu: &Gpu, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, label, shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Replaces the whole content with `data` (exactly [`Tensor::byte_size`] bytes), in bounded chunks.
    pub fn upload(&self, gpu: &Gpu, data: &[u8]) -> Result<()> {
        let mut writer = self.writer();
        writer.write(gpu, data)?;
        writer.finish(gpu)
    }

    /// A writer that takes the tensor's bytes in pieces of any size, as they arrive from a file or a download.
    pub fn writer(&self) -> ByteWriter {
        ByteWriter::new(vec![(self.buffer.clone(), self.offset, self.bytes)])
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of the last (contiguous) dimension.
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Rows: the product of all dimensions but the last.
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len().saturating_sub(1)].iter().product()
    }

    /// Bytes of data (the buffer may be up to 3 bytes longer).
    pub fn byte_size(&self) -> u64 {
        self.bytes
    }

    /// The tensor's bytes (rounded up to whole 4-byte words), for a bind group entry.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        if self.offset == 0 && self.bytes.next_multiple_of(4).max(4) == self.buffer.size() {
            return self.buffer.as_entire_binding();
        }
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.bytes.next_multiple_of(4).max(4)),
        })
    }

    /// Byte offset of the tensor's data in its buffer.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether two tensors share a buffer (WebGPU forbids binding one buffer as both input and output of a dispatch).
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        self.buffer == other.buffer
    }

    /// Reads the tensor's bytes back (allocates a staging buffer: for repeated reads keep a [`Readback`]).
    pub async fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let mut readback = Readback::new(gpu, self.bytes.max(4))?;
        readback.read(gpu, &self.buffer, self.offset, self.bytes).await
    }

    /// Reads an `F32` tensor, or an `F16` one widened to f32.
    pub async fn read_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(gpu).await?;
        match self.dtype {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => Ok(bytes.chunks_exact(2).map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32()).collect()),
            other => Err(err!(Usage, "read_f32 of a {} tensor", other.name())),
        }
    }

    pub async fn read_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        match self.dtype {
            DType::U32 => Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(gpu).await?)),
            other => Err(err!(Usage, "read_u32 of a {} tensor", other.name())),
        }
    }
}

/// Streams bytes into a sequence of buffers (one tensor, or the parts of a split weight), in order.
///
/// Pieces may have any size; WebGPU writes whole 4-byte words at 4-byte offsets, so up to 3 bytes wait for the next
/// piece, and the last word of each buffer is padded with zeros. Memory held is at most one piece.
pub struct ByteWriter {
    /// (buffer, byte offset, bytes of data there); the data of part k follows that of part k-1.
    parts: Vec<(wgpu::Buffer, u64, u64)>,
    part: usize,
    /// Bytes of the current part already written to the GPU (a multiple of 4).
    written: u64,
    /// Bytes of the current part not yet written (fewer than 4).
    carry: Vec<u8>,
    total: u64,
    received: u64,
}

impl ByteWriter {
    pub(crate) fn new(parts: Vec<(wgpu::Buffer, u64, u64)>) -> ByteWriter {
        let total = parts.iter().map(|(_, _, n)| n).sum();
        ByteWriter { parts, part: 0, written: 0, carry: Vec::with_capacity(4), total, received: 0 }
    }

    /// Appends `data` to what was written so far.
    pub fn write(&mut self, gpu: &Gpu, mut data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.total - self.received {
            return Err(err!(
                Usage,
                "{} bytes written to a tensor of {} bytes",
                self.received + data.len() as u64,
                self.total
            ));
        }
        self.received += data.len() as u64;
        while !data.is_empty() {
            self.skip_full_parts(gpu)?;
            let (buffer, base, len) = self.parts[self.part].clone();
            let room = len - self.written - self.carry.len() as u64;
            let (piece, rest) = data.split_at(data.len().min(room as usize));
            self.write_piece(gpu, &buffer, base, piece)?;
            data = rest;
        }
        self.skip_full_parts(gpu)
    }

    /// Checks that every byte arrived.
    pub fn finish(mut self, gpu: &Gpu) -> Result<()> {
        self.skip_full_parts(gpu)?;
        match self.received == self.total {
            true => Ok(()),
            false => Err(err!(Usage, "only {} of a tensor's {} bytes were written", self.received, self.total)),
        }
    }

    fn write_piece(&mut self, gpu: &Gpu, buffer: &wgpu::Buffer, base: u64, mut piece: &[u8]) -> Result<()> {
        if !self.carry.is_empty() {
            let take = piece.len().min(4 - self.carry.len());
            self.carry.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if self.carry.len() < 4 {
                return Ok(());
            }
            gpu.write_buffer(buffer, base + self.written, &self.carry)?;
            self.written += 4;
            self.carry.clear();
        }
        let whole = piece.len() / 4 * 4;
        for chunk in piece[..whole].chunks(WRITE_CHUNK) {
            gpu.write_buffer(buffer, base + self.written, chunk)?;
            self.written += chunk.len() as u64;
        }
        self.carry.extend_from_slice(&piece[whole..]);
        Ok(())
    }

    /// Moves past parts whose data is complete, writing their zero-padded last word.
    fn skip_full_parts(&mut self, gpu: &Gpu) -> Result<()> {
        while let Some((buffer, base, len)) = self.parts.get(self.part) {
            if self.written + self.carry.len() as u64 != *len {
                break;
            }
            if !self.carry.is_empty() {
                self.carry.resize(4, 0);
                gpu.write_buffer(buffer, base + self.written, &self.carry)?;
                self.carry.clear();
            }
            self.part += 1;
            self.written = 0;
        }
        Ok(())
    }
}

/// A staging buffer for reading GPU data back, reusable (decode reads one token id per step through the same one).
pub struct Readback {
    staging: wgpu::Buffer,
}

impl Readback {
    /// The size of the staging buffer [`Readback::new`] creates for reads of up to `capacity` bytes.
    pub fn buffer_size(capacity: u64) -> u64 {
        buffer_bytes(capacity)
    }

    /// A staging buffer for reads of up to `capacity` bytes.
    pub fn new(gpu: &Gpu, capacity: u64) -> Result<Readback> {
        let size = Self::buffer_size(capacity);
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        Ok(Readback { staging: gpu.create_buffer("readback", size, usage)? })
    }

    pub fn capacity(&self) -> u64 {
        self.staging.size()
    }

    /// Copies `len` bytes at `offset` of `source` (a multiple of 4) to the CPU, after all work submitted before.
    /// Errors the device reported meanwhile ([`Gpu::check`]) are returned instead of the data.
    pub async fn read(&mut self, gpu: &Gpu, source: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let copy = len.next_multiple_of(4);
        if offset % 4 != 0 || copy > self.capacity() || offset + copy > source.size() {
            return Err(err!(
                Usage,
                "cannot read {len} bytes at {offset} of a {}-byte buffer through a {}-byte readback",
                source.size(),
                self.capacity()
            ));
        }
        let mut encoder =
            gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        encoder.copy_buffer_to_buffer(source, offset, &self.staging, 0, copy);
        let submission = gpu.submit_commands([encoder.finish()]);
        read_mapped(gpu, &self.staging, len, &submission).await
    }
}

/// Maps the first `len` bytes of `staging` (a `MAP_READ` buffer) once `submission` has run, and copies them out.
/// This is the one counted wait ([`Gpu::wait`]: natively `device.poll` until then, in the browser the map's promise),
/// and the GPU goes on with any later submissions meanwhile. Errors the device reported ([`Gpu::check`]) are returned
/// instead of the data.
pub(crate) async fn read_mapped(
    gpu: &Gpu,
    staging: &wgpu::Buffer,
    len: u64,
    submission: &Submission,
) -> Result<Vec<u8>> {
    let copy = len.next_multiple_of(4);
    gpu.count_read_back(copy);
    let (future, signal) = map_signal();
    staging.map_async(wgpu::MapMode::Read, 0..copy, move |result| signal.send(result));
    let mapped = gpu.wait(Some(submission), future).await?;
    let was_mapped = mapped.is_ok();
    let data = mapped.map_err(|e| e.to_string()).and_then(|()| {
        let view = staging.get_mapped_range(0..copy).map_err(|e| e.to_string())?;
        Ok(view[..len as usize].to_vec())
    });
    if was_mapped {
        staging.unmap();
    } else {
        // A map that failed because the device was lost: in the browser the loss is reported a moment later.
        gpu.settle_loss().await;
    }
    // An error the device reported (a rejected dispatch, a lost device) explains a failed map, and voids the data.
    gpu.check()?;
    data.map_err(|e| err!(GpuValidation, "reading GPU memory back failed: {e}"))
}

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

#[derive(Default)]
struct MapState {
    result: Option<MapResult>,
    waker: Option<Waker>,
}

/// The future half of a one-shot channel from a `map_async` callback.
struct MapFuture(Arc<Mutex<MapState>>);

/// The callback half: `send` stores the result and wakes the future.
struct MapSignal(Arc<Mutex<MapState>>);

fn map_signal() -> (MapFuture, MapSignal) {
    let state = Arc::new(Mutex::new(MapState::default()));
    (MapFuture(state.clone()), MapSignal(state))
}

impl MapSignal {
    fn send(self, result: MapResult) {
        let waker = {
            let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
            state.result = Some(result);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Future for MapFuture {
    type Output = MapResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MapResult> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match state.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_dtype() {
        assert_eq!(tensor_bytes("t", &[3, 5], DType::F32).unwrap(), 60);
        assert_eq!(tensor_bytes("t", &[3, 5], DType::F16).unwrap(), 30);
        assert_eq!(tensor_bytes("t", &[7], DType::U32).unwrap(), 28);
        assert_eq!(tensor_bytes("t", &[2, 256], DType::Ggml(GgmlType::Q4_K)).unwrap(), 288);
        assert_eq!(tensor_bytes("t", &[4, 64], DType::Ggml(GgmlType::Q8_0)).unwrap(), 4 * 2 * 34);
        assert!(tensor_bytes("t", &[2, 100], DType::Ggml(GgmlType::Q4_K)).is_err());
        assert!(tensor_bytes("t", &[], DType::F32).is_err());
        assert!(tensor_bytes("t", &[usize::MAX, usize::MAX], DType::F32).is_err());
    }
}
