// The engine where it runs (in the worker, or on the main thread): the wasm module, loading, and generation.

import init, { WebEngine, gpu_buffers_created } from '../webr1.js';
import { webr1Error } from './errors.js';
import { modelSource } from './source.js';

let wasm = null;

async function ready(wasmUrl) {
  wasm ??= init(wasmUrl ? { module_or_path: wasmUrl } : undefined);
  return wasm;
}

// Bytes of the wasm heap right now.
export async function wasmMemoryBytes() {
  return (await ready()).memory.buffer.byteLength;
}

// GPU buffers this wasm instance has created so far (for tests: a load its memory plan refuses creates none).
export async function gpuBuffersCreated() {
  await ready();
  return gpu_buffers_created();
}

async function checkWebGpu() {
  const gpu = globalThis.navigator?.gpu;
  const how =
    'Use a browser with WebGPU switched on (Chrome or Edge 113+, Safari 26+, Firefox 141+ on Windows), in a secure context (https:// or localhost)';
  if (!gpu) throw webr1Error('webgpu.unavailable', `this browser has no WebGPU (navigator.gpu is missing). ${how}`);
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch {
    adapter = null;
  }
  if (!adapter) {
    throw webr1Error('webgpu.unavailable', `this browser offers no WebGPU adapter (it may be switched off or the GPU blocked). ${how}`);
  }
}

// Loads a model: a URL, a File/Blob, or the Files of a split model. Returns the core engine.
export async function loadCore(model, options = {}, onProgress, signal) {
  const memory = await ready(options.wasmUrl);
  await checkWebGpu();
  let peak = memory.memory.buffer.byteLength;
  const progress = (p) => {
    peak = Math.max(peak, memory.memory.buffer.byteLength);
    onProgress?.(p);
  };
  const source = modelSource(model, { signal, cache: options.cache !== false });
  const engine = await WebEngine.load(
    source,
    {
      context_length: options.contextLength,
      force_f32: options.forceF32 === true,
      gpu_memory: options.gpuMemory,
      max_storage_buffer_binding_size: options.maxStorageBufferBindingSize,
      max_buffer_size: options.maxBufferSize,
    },
    progress,
  );
  return new CoreEngine(engine, memory, peak, { model, options });
}

export class CoreEngine {
  constructor(engine, wasm, loadPeak, from) {
    Object.assign(this, { engine, wasm, loadPeak, from });
  }

  // Loads the model again from where it came (a cached download is read from the cache) onto a new GPU device, after
  // the device was lost (`gpu.device_lost`); the old engine is freed.
  async reload(onProgress) {
    const fresh = await loadCore(this.from.model, this.from.options, onProgress);
    const old = this.engine;
    Object.assign(this, { engine: fresh.engine, loadPeak: fresh.loadPeak });
    try {
      old.unload();
      old.free();
    } catch {
      // A lost device has nothing left to free.
    }
  }

  // A hook for tests (not part of the package's API): destroys the engine's GPUDevice, as a driver reset or a
  // reclaimed background tab loses it.
  loseDevice() {
    this.engine.lose_device();
  }

  info() {
    const info = this.engine.info();
    info.wasm_memory_bytes = this.wasm.memory.buffer.byteLength;
    info.wasm_memory_peak_during_load = this.loadPeak;
    return info;
  }

  generate(request, onEvent) {
    return this.engine.generate(request, onEvent);
  }

  // A hook for tests that compare this GPU path with native webr1 (not part of the package's API): teacher-forced
  // logits of `ids` from position 0, `[{top: [[id, logit], ...], lse}, ...]` with the `topK` highest of each position.
  teacherForced(ids, topK = 10) {
    return this.engine.teacher_forced(Uint32Array.from(ids), topK);
  }

  // A hook for measurements and tests (not part of the package's API): `webr1 bench --profile` in the browser.
  // Profiles `tokens` greedy decode steps (after a prefill of `prompt` tokens unless 0; each after an unprofiled
  // warm-up run unless `warmup` is false) and resolves to `{decode, prefill}`: dispatches, submissions, waits and bytes
  // read per token, GPU time per op where the adapter has timestamp-query (`timing`), wall time per token always. A
  // cached chat prefix is lost.
  profile({ tokens = 8, prompt = 0, warmup = true } = {}) {
    return this.engine.profile(tokens, prompt, warmup);
  }

  abort() {
    this.engine.abort();
  }

  unload() {
    this.engine.unload();
    this.engine.free();
  }
}
