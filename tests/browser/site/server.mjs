// A static server on localhost for the demo-site tests, laid out as `webr1 web` serves it: www/ at /, the npm package
// at /pkg/, and model files at /models/NAME (with Range requests). It logs every request.

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

// `www`, `pkg`: directories; `models`: {NAME: path}. Resolves to {url, log, close}.
export function serveSite({ www, pkg, models = {} }) {
  const log = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const pathname = decodeURIComponent(url.pathname);
    log.push({ path: pathname, range: req.headers.range ?? null });
    let file = null;
    if (pathname.startsWith('/models/')) file = models[pathname.slice('/models/'.length)] ?? null;
    else if (!pathname.split('/').some((s) => s.startsWith('.'))) {
      const [base, rest] = pathname.startsWith('/pkg/') ? [pkg, pathname.slice(5)] : [www, pathname.slice(1)];
      file = path.join(base, rest || 'index.html');
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      return res.end('not found');
    }
    sendFile(req, res, file);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const url = `http://localhost:${server.address().port}`;
      const close = () => new Promise((r) => (server.closeAllConnections(), server.close(r)));
      resolve({ url, log, close });
    });
  });
}

function sendFile(req, res, file) {
  const size = fs.statSync(file).size;
  const headers = {
    'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    'Cache-Control': 'no-cache',
    // As `webr1 web` sends them.
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
  };
  let start = 0;
  let end = size - 1;
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (range) {
    start = Number(range[1]);
    end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
    if (start >= size) {
      res.writeHead(416, { 'Content-Range': `bytes */${size}` });
      return res.end();
    }
    res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Length': end - start + 1 });
  } else res.writeHead(200, { ...headers, 'Content-Length': size });
  if (req.method === 'HEAD' || size === 0) return res.end();
  fs.createReadStream(file, { start, end }).pipe(res);
}
