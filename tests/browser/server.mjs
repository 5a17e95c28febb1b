// A static server on localhost for the browser tests: the package (/pkg/), a blank page, the test models
// (/models/NAME, with Range requests), garbage bytes (/garbage.gguf), and a model whose first transfer breaks off
// halfway (/flaky/NAME). It logs every request so tests can tell what went over the network.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
};

export function modelsDir() {
  return process.env.WEBR1_MODELS || path.join(process.env.HOME || '', '.cache/webr1-test-models');
}

// Starts the server; `roots` maps URL prefixes to directories. Resolves to {url, log, close, bytesServed}.
export function serve(roots) {
  const log = [];
  const served = new Map();
  const flakyDone = new Set();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const entry = { path: url.pathname, range: req.headers.range ?? null };
    log.push(entry);
    if (url.pathname === '/' || url.pathname === '/page.html') {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      return res.end('<!doctype html><meta charset="utf-8"><title>webr1 test</title><input type="file" id="file" multiple>');
    }
    if (url.pathname === '/garbage.gguf') {
      const bytes = Buffer.alloc(1 << 20, 0);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 13;
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes.length });
      return res.end(bytes);
    }
    let file = null;
    let flaky = false;
    if (url.pathname.startsWith('/models/') || url.pathname.startsWith('/flaky/')) {
      flaky = url.pathname.startsWith('/flaky/');
      file = path.join(modelsDir(), path.basename(url.pathname));
    } else {
      for (const [prefix, dir] of Object.entries(roots)) {
        if (url.pathname.startsWith(prefix)) file = path.join(dir, decodeURIComponent(url.pathname.slice(prefix.length)));
      }
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404);
      return res.end('not found');
    }
    const onData = (n) => {
      entry.bytes = (entry.bytes ?? 0) + n;
      served.set(entry.path, (served.get(entry.path) ?? 0) + n);
    };
    sendFile(req, res, file, { flaky: flaky && !flakyDone.has(url.pathname), onData });
    if (flaky) flakyDone.add(url.pathname);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const url = `http://localhost:${server.address().port}`;
      resolve({ url, log, served, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) });
    });
  });
}

// Sends `file`, or the byte range the request asks for (206, or 416 past the end), with the content type of its
// extension and `headers` on top. `onData(n)` hears of every chunk sent. A `flaky` transfer stops at the middle of
// the file and drops the connection.
export function sendFile(req, res, file, { headers = {}, flaky = false, onData = () => {} } = {}) {
  const size = fs.statSync(file).size;
  let start = 0;
  let end = size - 1;
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const all = { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Accept-Ranges': 'bytes', 'Cache-Control': 'no-store', ...headers };
  if (range) {
    start = Number(range[1]);
    end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
    if (start >= size) {
      res.writeHead(416, { 'Content-Range': `bytes */${size}` });
      return res.end();
    }
    res.writeHead(206, { ...all, 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Length': end - start + 1 });
  } else {
    res.writeHead(200, { ...all, 'Content-Length': size });
  }
  if (req.method === 'HEAD' || size === 0) return res.end();
  const stop = flaky ? Math.floor(size / 2) : end;
  const stream = fs.createReadStream(file, { start, end: Math.max(start, stop) });
  stream.on('data', (chunk) => onData(chunk.length));
  stream.on('end', () => (flaky ? res.destroy() : res.end()));
  stream.pipe(res, { end: false });
  res.on('close', () => stream.destroy());
}
