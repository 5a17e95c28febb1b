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

// --- The cache: <key>.gguf holds a file, <key>.json its URL, size and modification time, written only once the file
// is complete. A cached file is used only while it matches: a file cut short, or written to since (a flipped bit), is
// removed and downloaded again. A write that fails (a full disk, the origin's storage quota) removes the partial file
// and fails the load with `io.write`. ---

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

// The cached File for `url`, or null unless it is complete and unchanged (its size and modification time are those
// recorded when it was finished). A file that does not match is removed, so that it is downloaded again.
async function cachedFile(dir, key, url) {
  let meta;
  let file;
  try {
    meta = JSON.parse(await (await (await dir.getFileHandle(`${key}.json`)).getFile()).text());
    file = await (await dir.getFileHandle(`${key}.gguf`)).getFile();
  } catch {
    return null;
  }
  if (meta.url === url && file.size === meta.size && file.lastModified === meta.modified) return file;
  await removeEntries(dir, key);
  return null;
}

async function removeEntries(dir, key) {
  for (const name of [`${key}.json`, `${key}.gguf`]) await dir.removeEntry(name).catch(() => {});
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

  // Appends a chunk; a write that fails removes the partial file and throws `io.write`.
  async write(chunk) {
    if (this.failed) return;
    try {
      await this.writable.write({ type: 'write', position: this.written, data: chunk });
      this.written += chunk.byteLength;
    } catch (e) {
      await this.drop();
      throw webr1Error(
        'io.write',
        `caching the model in this site's storage failed after ${this.written} bytes (${e?.name ?? 'Error'}: ${e?.message ?? e}); the partial file was removed. Free some storage, or load with cache: false`,
      );
    }
  }

  async commit() {
    if (this.failed || this.written !== this.length) return this.drop();
    try {
      await this.writable.close();
      const file = await (await this.dir.getFileHandle(`${this.key}.gguf`)).getFile();
      const meta = await this.dir.getFileHandle(`${this.key}.json`, { create: true });
      const out = await meta.createWritable();
      await out.write(JSON.stringify({ url: this.url, size: file.size, modified: file.lastModified, cached_at: Date.now() }));
      await out.close();
    } catch {
      await this.drop();
    }
  }

  // Gives up caching this file: the partial file is removed.
  async drop() {
    if (this.failed) return;
    this.failed = true;
    await this.writable.abort().catch(() => {});
    await removeEntries(this.dir, this.key);
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
