// Model sources for the engine's loader: a URL (fetched as a stream, resumed with Range requests, cached whole in the
// origin private file system) or local Files/Blobs. The engine calls `open(part, name, offset)` for each file of the
// model and pulls its bytes with `reader.read()`; see src/web/source.rs for the contract.

import { webr1Error } from './errors.js';

const CACHE_DIR = 'webr1-cache';

export function modelSource(model, { signal, cache = true } = {}) {
  if (typeof model === 'string' || model instanceof URL) {
    const url = new URL(String(model), globalThis.location?.href).href;
    return urlSource(url, signal, cache);
  }
  const blobs = Array.isArray(model) ? model : [model];
  if (blobs.length > 0 && blobs.every((b) => b instanceof Blob)) return blobSource(blobs, signal);
  throw webr1Error('usage', 'load() takes a URL, a File or Blob, or an array of the Files of a split model');
}

function aborted() {
  return webr1Error('aborted', 'the load was aborted');
}

// A reader over a ReadableStream reader: `read()` gives a Uint8Array or null, errors carry webr1 codes.
function pullReader(reader, signal, { onChunk, onEnd, onCancel } = {}) {
  let broken = false;
  return {
    async read() {
      if (signal?.aborted) throw aborted();
      let result;
      try {
        result = await reader.read();
      } catch (e) {
        broken = true;
        if (signal?.aborted) throw aborted();
        throw webr1Error('download.interrupted', `the transfer broke off: ${e?.message ?? e}`);
      }
      if (result.done) {
        await onEnd?.();
        return null;
      }
      await onChunk?.(result.value);
      return result.value;
    },
    cancel() {
      // After a break the engine resumes where it stopped: what was cached so far stays.
      if (!broken) onCancel?.();
      reader.cancel().catch(() => {});
    },
  };
}

function blobSource(blobs, signal) {
  return {
    name: blobs[0].name || 'model.gguf',
    async open(part, name, offset) {
      const blob = blobs[part];
      if (!blob) {
        throw webr1Error('download.failed', `the model is split: ${name} (part ${part + 1}) was not given; pass all its files`);
      }
      return { reader: pullReader(blob.slice(offset).stream().getReader(), signal), length: blob.size };
    },
  };
}

// --- The cache: <key>.gguf holds a file, <key>.json its URL and size, written only once the file is complete. ---

async function cacheDir() {
  try {
    const root = await navigator.storage.getDirectory();
    return await root.getDirectoryHandle(CACHE_DIR, { create: true });
  } catch {
    return null;
  }
}

async function cacheKey(url) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(url));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// The cached File for `url`, or null unless it is complete (its size is the one recorded when it was finished).
async function cachedFile(dir, key, url) {
  try {
    const meta = JSON.parse(await (await (await dir.getFileHandle(`${key}.json`)).getFile()).text());
    const file = await (await dir.getFileHandle(`${key}.gguf`)).getFile();
    return meta.url === url && file.size === meta.size ? file : null;
  } catch {
    return null;
  }
}

// Writes one download into the cache; commits only when all `length` bytes arrived in order.
class CacheWriter {
  static async create(dir, key, url, length) {
    try {
      await dir.removeEntry(`${key}.json`).catch(() => {});
      const handle = await dir.getFileHandle(`${key}.gguf`, { create: true });
      return new CacheWriter(dir, key, url, length, await handle.createWritable({ keepExistingData: false }));
    } catch {
      return null;
    }
  }

  constructor(dir, key, url, length, writable) {
    Object.assign(this, { dir, key, url, length, writable, written: 0, failed: false });
  }

  async write(chunk) {
    if (this.failed) return;
    try {
      await this.writable.write({ type: 'write', position: this.written, data: chunk });
      this.written += chunk.byteLength;
    } catch {
      this.drop();
    }
  }

  async commit() {
    if (this.failed || this.written !== this.length) return this.drop();
    try {
      await this.writable.close();
      const meta = await this.dir.getFileHandle(`${this.key}.json`, { create: true });
      const out = await meta.createWritable();
      await out.write(JSON.stringify({ url: this.url, size: this.length, cached_at: Date.now() }));
      await out.close();
    } catch {
      this.failed = true;
    }
  }

  drop() {
    if (this.failed) return;
    this.failed = true;
    this.writable.abort().catch(() => {});
  }
}

function contentLength(response, offset) {
  const range = response.headers.get('Content-Range');
  const total = range && /\/(\d+)\s*$/.exec(range);
  if (total) return Number(total[1]);
  const length = response.headers.get('Content-Length');
  if (length !== null && !response.headers.get('Content-Encoding')) return offset + Number(length);
  return null;
}

function urlSource(url, signal, useCache) {
  const writers = new Map();
  let dirPromise = null;
  const dir = () => (dirPromise ??= useCache && globalThis.navigator?.storage?.getDirectory ? cacheDir() : null);
  return {
    name: url,
    async open(part, name, offset) {
      const cache = await dir();
      const key = cache && (await cacheKey(name));
      const hit = cache && (await cachedFile(cache, key, name));
      if (hit) return { reader: pullReader(hit.slice(offset).stream().getReader(), signal), length: hit.size };
      if (signal?.aborted) throw aborted();
      let response;
      try {
        response = await fetch(name, { headers: offset > 0 ? { Range: `bytes=${offset}-` } : {}, signal });
      } catch (e) {
        if (signal?.aborted) throw aborted();
        throw webr1Error('download.failed', `fetching ${name} failed: ${e?.message ?? e}`);
      }
      if (offset > 0 && response.status !== 206) {
        response.body?.cancel().catch(() => {});
        throw webr1Error('download.http', `${name}: resuming at byte ${offset} needs a Range response, the server answered ${response.status}`);
      }
      if (!response.ok || !response.body) {
        throw webr1Error('download.http', `${name}: HTTP ${response.status} ${response.statusText}`);
      }
      const length = contentLength(response, offset);
      let writer = writers.get(name);
      if (offset === 0 || writer?.written !== offset) {
        writer?.drop();
        writer = cache && length !== null && offset === 0 ? await CacheWriter.create(cache, key, name, length) : null;
        writers.set(name, writer);
      }
      const reader = pullReader(response.body.getReader(), signal, {
        onChunk: (chunk) => writer?.write(chunk),
        onEnd: () => writer?.commit(),
        onCancel: () => writer?.drop(),
      });
      return { reader, length };
    },
  };
}

// Removes every cached model file.
export async function clearCache() {
  try {
    const root = await navigator.storage.getDirectory();
    await root.removeEntry(CACHE_DIR, { recursive: true });
  } catch {
    // Nothing cached.
  }
}
