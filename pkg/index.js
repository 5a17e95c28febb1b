// webr1: DeepSeek-R1 distilled models on the user's GPU through WebGPU, with an OpenAI-shaped chat API.
//
//   import * as webr1 from 'webr1';
//   const engine = await webr1.load(url, { onProgress, contextLength: 4096 });
//   for await (const chunk of await engine.chat.completions.create({ messages, stream: true })) { ... }
//
// The engine runs in a Web Worker by default (`worker: false` runs it on the calling thread); the API is the same.

import { revive, webr1Error } from './src/errors.js';

export { clearCache } from './src/source.js';

let counter = 0;

// The engine on this thread.
class LocalBackend {
  static async create(model, options, onProgress, signal) {
    const { loadCore } = await import('./src/core.js');
    return new LocalBackend(await loadCore(model, options, onProgress, signal));
  }

  constructor(core) {
    this.core = core;
  }

  info() {
    return this.core.info();
  }

  generate(request, onEvent) {
    return this.core.generate(request, onEvent);
  }

  abort() {
    this.core.abort();
  }

  async reload(onProgress) {
    await this.core.reload(onProgress);
    return this.core.info();
  }

  loseDevice() {
    this.core.loseDevice();
  }

  unload() {
    this.core.unload();
  }
}

// Starts the engine's worker. The literal `new Worker(new URL('./worker.js', import.meta.url), { type: 'module' })` is
// the form bundlers recognise: they build worker.js and its imports (the glue and the wasm) into files of their own.
// Keep it literal; `workerUrl` is for apps that place the worker themselves.
function startWorker(workerUrl) {
  if (workerUrl) return new Worker(workerUrl, { type: 'module' });
  return new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
}

// The engine in a Web Worker, reached by messages.
class WorkerBackend {
  static async create(model, options, onProgress, signal) {
    const backend = new WorkerBackend(startWorker(options.workerUrl));
    const onAbort = () => backend.worker.postMessage({ type: 'abort-load' });
    signal?.addEventListener('abort', onAbort);
    try {
      const { workerUrl: _, ...rest } = options;
      await backend.call({ type: 'load', model, options: rest }, { progress: onProgress });
      return backend;
    } catch (e) {
      backend.worker.terminate();
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  constructor(worker) {
    this.worker = worker;
    this.pending = new Map();
    this.next = 0;
    worker.onmessage = ({ data }) => {
      const call = this.pending.get(data.id);
      if (!call) return;
      if (data.type === 'progress') call.progress?.(data.progress);
      else if (data.type === 'event') call.event?.(data.event);
      else {
        this.pending.delete(data.id);
        if (data.type === 'result') call.resolve(data.value);
        else call.reject(revive(data.error));
      }
    };
    worker.onerror = (e) => {
      const error = webr1Error('usage', `the webr1 worker failed: ${e.message ?? 'it could not start'}`);
      for (const call of this.pending.values()) call.reject(error);
      this.pending.clear();
    };
  }

  call(message, handlers = {}) {
    const id = ++this.next;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...handlers });
      this.worker.postMessage({ id, ...message });
    });
  }

  info() {
    return this.call({ type: 'info' });
  }

  generate(request, onEvent) {
    return this.call({ type: 'generate', request }, { event: onEvent });
  }

  abort() {
    this.worker.postMessage({ type: 'abort' });
  }

  reload(onProgress) {
    return this.call({ type: 'reload' }, { progress: onProgress });
  }

  loseDevice() {
    this.worker.postMessage({ type: 'lose-device' });
  }

  async unload() {
    await this.call({ type: 'unload' });
    this.worker.terminate();
  }
}

/**
 * Loads a GGUF model: a URL (streamed to the GPU, cached in the origin private file system), a File or Blob, or the
 * Files of a split model. See index.d.ts for the options.
 */
export async function load(model, options = {}) {
  const { onProgress, signal, worker = true, ...rest } = options ?? {};
  if (signal?.aborted) throw webr1Error('aborted', 'the load was aborted');
  // URLs are relative to the page wherever the engine runs, and strings (a URL object cannot be posted to the worker).
  const fromPage = (url) => new URL(String(url), globalThis.location?.href).href;
  if (typeof model === 'string' || model instanceof URL) model = fromPage(model);
  if (rest.wasmUrl != null) rest.wasmUrl = fromPage(rest.wasmUrl);
  const inWorker = worker && typeof Worker !== 'undefined';
  const create = inWorker ? WorkerBackend.create.bind(WorkerBackend) : LocalBackend.create.bind(LocalBackend);
  const backend = await create(model, rest, onProgress, signal);
  const name = typeof model === 'string' ? model.split('/').pop().split('?')[0] : (model.name ?? model[0]?.name ?? 'model');
  return new Engine(backend, name, await backend.info());
}

function textOf(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part?.type === 'text' && typeof part.text === 'string' ? part.text : '')).join('');
  }
  throw webr1Error('chat.bad_messages', 'a message content must be a string or an array of {type: "text", text} parts');
}

function toRequest(params) {
  if (params === null || typeof params !== 'object') throw webr1Error('usage', 'create() takes an object of parameters');
  const request = {};
  if (params.prompt_ids !== undefined) {
    request.prompt_ids = Array.from(params.prompt_ids);
    request.starts_in_reasoning = params.starts_in_reasoning === true;
  } else {
    if (!Array.isArray(params.messages) || params.messages.length === 0) {
      throw webr1Error('chat.bad_messages', 'messages must be a non-empty array of {role, content}');
    }
    request.messages = params.messages.map((m) => {
      if (!m || typeof m.role !== 'string') throw webr1Error('chat.bad_messages', 'each message needs a string role');
      const message = { role: m.role, content: textOf(m.content ?? '') };
      if (Array.isArray(m.tool_calls) && m.tool_calls.length > 0) message.tool_calls = m.tool_calls.map(toolCallOf);
      if (m.tool_call_id != null) message.tool_call_id = String(m.tool_call_id);
      return message;
    });
  }
  // Structured output crosses to the engine as JSON texts: the engine parses them with a nesting limit.
  for (const key of ['response_format', 'tools', 'tool_choice']) {
    if (params[key] != null) request[key] = JSON.stringify(params[key]);
  }
  for (const key of ['grammar', 'regex']) {
    if (params[key] != null) {
      if (typeof params[key] !== 'string') throw webr1Error('usage', `${key} must be a string`);
      request[key] = params[key];
    }
  }
  if (params.parallel_tool_calls != null) request.parallel_tool_calls = params.parallel_tool_calls === true;
  for (const key of ['temperature', 'top_p', 'top_k', 'min_p', 'seed', 'max_tokens', 'thinking_budget']) {
    if (params[key] !== undefined && params[key] !== null) {
      if (typeof params[key] !== 'number' || !Number.isFinite(params[key])) throw webr1Error('usage', `${key} must be a number`);
      request[key] = params[key];
    }
  }
  if (params.max_completion_tokens != null && request.max_tokens === undefined) request.max_tokens = params.max_completion_tokens;
  if (params.stop != null) {
    const stop = Array.isArray(params.stop) ? params.stop : [params.stop];
    if (!stop.every((s) => typeof s === 'string' && s.length > 0)) throw webr1Error('usage', 'stop must be a string or an array of strings');
    request.stop = stop;
  }
  return request;
}

// An assistant message's tool call as the engine reads it: {id, type, function: {name, arguments}}.
function toolCallOf(call) {
  const fn = call?.function;
  if (typeof call?.id !== 'string' || typeof fn?.name !== 'string') {
    throw webr1Error('tools.invalid', 'each tool call needs a string id and a function with a string name');
  }
  const args = typeof fn.arguments === 'string' ? fn.arguments : JSON.stringify(fn.arguments ?? {});
  return { id: call.id, type: 'function', function: { name: fn.name, arguments: args } };
}

// A streamed piece of a tool call as OpenAI's `delta.tool_calls[0]`.
function toolCallDelta(e) {
  const call = { index: e.index, function: { arguments: e.arguments } };
  if (e.id != null) Object.assign(call, { id: e.id, type: 'function' });
  if (e.name != null) call.function.name = e.name;
  return { tool_calls: [call] };
}

function usageOf(f) {
  return {
    prompt_tokens: f.prompt_tokens,
    completion_tokens: f.completion_tokens,
    total_tokens: f.prompt_tokens + f.completion_tokens,
    prompt_tokens_details: { cached_tokens: f.cached_tokens },
    completion_tokens_details: { reasoning_tokens: f.reasoning_tokens },
    prefill_tokens_per_second: f.prefill_tokens_per_second,
    decode_tokens_per_second: f.decode_tokens_per_second,
  };
}

// A small async queue: events pushed by the engine, pulled by `for await`.
class ChunkQueue {
  constructor() {
    this.items = [];
    this.waiting = null;
    this.done = false;
    this.error = null;
  }

  push(item) {
    this.items.push(item);
    this.wake();
  }

  end(error = null) {
    this.done = true;
    this.error = error;
    this.wake();
  }

  wake() {
    this.waiting?.();
    this.waiting = null;
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this.items.length > 0) yield this.items.shift();
      else if (this.error) throw this.error;
      else if (this.done) return;
      else await new Promise((resolve) => (this.waiting = resolve));
    }
  }
}

/** A loaded model. */
export class Engine {
  #backend;
  #queue = Promise.resolve();
  #unloaded = false;

  constructor(backend, model, info) {
    this.#backend = backend;
    this.model = model;
    this.loadInfo = info;
    this.chat = { completions: { create: (params) => this.#create(params) } };
  }

  /** Model, context, adapter, features, limits and memory. */
  async info() {
    this.#check();
    return this.#backend.info();
  }

  /**
   * Loads the model again onto a new GPU device, after the device was lost (every call then fails with
   * `gpu.device_lost`: a driver reset, a mobile browser reclaiming a background tab's GPU). A model that came by URL
   * is read from the cache when it was cached. Waits for the running request to end first.
   */
  async reload({ onProgress } = {}) {
    this.#check();
    return this.#serial(async () => {
      this.loadInfo = await this.#backend.reload(onProgress);
      return this.loadInfo;
    });
  }

  /** A hook for tests, not part of the API: destroys the engine's GPUDevice now, as a driver reset would lose it. */
  _loseDevice() {
    this.#check();
    this.#backend.loseDevice();
  }

  /** Frees the GPU memory (and the worker). The engine cannot be used afterwards. */
  async unload() {
    if (this.#unloaded) return;
    this.#unloaded = true;
    this.#backend.abort();
    await this.#backend.unload();
  }

  #check() {
    if (this.#unloaded) throw webr1Error('usage', 'the model was unloaded');
  }

  // Runs `job` after the requests before it (one generation at a time).
  #serial(job) {
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #create(params) {
    this.#check();
    const request = toRequest(params);
    const signal = params.signal;
    const id = `chatcmpl-${Date.now().toString(36)}${(++counter).toString(36)}`;
    const head = { id, created: Math.floor(Date.now() / 1000), model: this.model };
    const run = (onEvent) =>
      this.#serial(async () => {
        if (signal?.aborted) return { finish_reason: 'abort', prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0, reasoning_tokens: 0, prefill_tokens_per_second: 0, decode_tokens_per_second: 0, token_ids: [] };
        const onAbort = () => this.#backend.abort();
        signal?.addEventListener('abort', onAbort);
        try {
          return await this.#backend.generate(request, onEvent);
        } finally {
          signal?.removeEventListener('abort', onAbort);
        }
      });
    if (params.stream) return this.#stream(head, run);
    let content = '';
    let reasoning = '';
    const f = await run((e) => {
      if (e.type === 'content') content += e.text;
      else if (e.type === 'reasoning') reasoning += e.text;
    });
    const message = { role: 'assistant', content, reasoning_content: reasoning };
    if (f.tool_calls?.length > 0) {
      message.tool_calls = f.tool_calls;
      if (content === '') message.content = null;
    }
    return {
      ...head,
      object: 'chat.completion',
      choices: [
        {
          index: 0,
          message,
          logprobs: null,
          finish_reason: f.finish_reason,
        },
      ],
      usage: usageOf(f),
      token_ids: f.token_ids,
    };
  }

  #stream(head, run) {
    const queue = new ChunkQueue();
    const chunk = (delta, finish_reason = null, extra = {}) => ({
      ...head,
      object: 'chat.completion.chunk',
      choices: [{ index: 0, delta, logprobs: null, finish_reason }],
      ...extra,
    });
    queue.push(chunk({ role: 'assistant', content: '' }));
    const deltaOf = (e) =>
      e.type === 'content' ? { content: e.text } : e.type === 'reasoning' ? { reasoning_content: e.text } : toolCallDelta(e);
    run((e) => queue.push(chunk(deltaOf(e)))).then(
      (f) => {
        queue.push(chunk({}, f.finish_reason, { usage: usageOf(f), token_ids: f.token_ids }));
        queue.end();
      },
      (error) => queue.end(error),
    );
    return queue;
  }
}
