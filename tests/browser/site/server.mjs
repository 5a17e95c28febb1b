// A static server on localhost for the demo-site tests, laid out as `webr1 web` serves it: www/ at /, the npm package
// at /pkg/, and model files at /models/NAME (with Range requests). It logs every request.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { sendFile } from '../server.mjs';

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
    sendFile(req, res, file, { headers: SITE_HEADERS });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const url = `http://localhost:${server.address().port}`;
      const close = () => new Promise((r) => (server.closeAllConnections(), server.close(r)));
      resolve({ url, log, close });
    });
  });
}

// As `webr1 web` sends them.
const SITE_HEADERS = {
  'Cache-Control': 'no-cache',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};
