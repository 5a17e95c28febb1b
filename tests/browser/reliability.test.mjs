// Reliability in headless Chromium (SwiftShader): a GPUDevice destroyed mid-generation and the engine reloaded; the
// OPFS cache with faults injected (a cached file cut short or with a bit flipped, a write that fails, a small storage
// quota); and a local `webr1 serve` that pages on other origins, or on a rebinding DNS name, can neither read nor
// drive, while `--cors` and `--allow-host` let the intended ones in. Without Chromium or smol135 the tests skip,
// except under CI=true, where they fail; the server tests need the native binary (tests/browser.rs passes it in
// WEBR1_BIN).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { serve, modelsDir } from './server.mjs';
import { PKG, ROOT } from './pack.mjs';
import os from 'node:os';
import { launch, launchPersistent, inCi, missing } from './browser.mjs';

const MODEL = path.join(modelsDir(), 'smol135.gguf');

const why = missing(['smol135']);
if (why.length > 0 && inCi) throw new Error(`browser tests cannot run under CI=true: ${why.join('; ')}`);
const skip = why.length > 0 ? `SKIP: ${why.join('; ')}` : false;
const BIN = process.env.WEBR1_BIN;
if (!skip && !BIN && inCi) throw new Error('browser tests cannot run under CI=true: WEBR1_BIN is not set (cargo test --test browser sets it)');
const serveSkip = skip || (BIN ? false : 'SKIP: WEBR1_BIN is not set (run through cargo test --test browser)');

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await serve({ '/pkg/': PKG });
  // rebind.test and models.test resolve to this machine, as an attacker's rebinding DNS name would. Chromium's own
  // Private Network Access checks would also stop a page on a public address from reaching 127.0.0.1; they are off
  // here, as in browsers without them, so that what is tested is the server's own refusal.
  const noPna = 'BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,LocalNetworkAccessChecks';
  browser = await launch({ args: ['--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP models.test 127.0.0.1', `--disable-features=${noPna}`] });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function page(url = `${server.url}/page.html`) {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(url);
  return p;
}

// Runs `fn(webr1, arg)` in the page with the package imported from `from`.
function inPage(p, fn, arg, from = `${server.url}/pkg/index.js`) {
  return p.evaluate(
    async ({ source, arg, from }) => {
      const webr1 = await import(from);
      const fn = new Function(`return (${source})`)();
      try {
        return await fn(webr1, arg);
      } catch (e) {
        return { thrown: { code: e.code, message: e.message, name: e.name } };
      }
    },
    { source: fn.toString(), arg, from },
  );
}

function promptIds() {
  const file = path.join(ROOT, 'tests/fixtures/greedy-f32.smol135.jsonl');
  // The first prompt's first 8 tokens: SwiftShader is slow, and any prompt shows the loss.
  return JSON.parse(fs.readFileSync(file, 'utf8').split('\n')[0]).prompt_ids.slice(0, 8);
}

test('a GPUDevice destroyed mid-generation: a gpu.device_lost error at once, later calls fail fast, reload() gives the same greedy tokens', { skip, timeout: 900_000 }, async () => {
  const p = await page();
  const out = await inPage(p, async (webr1, ids) => {
    const engine = await webr1.load('/models/smol135.gguf', { contextLength: 64, cache: false });
    const ask = (max_tokens, stream = false) => engine.chat.completions.create({ prompt_ids: ids, temperature: 0, max_tokens, stream });
    const before = (await ask(3)).token_ids;
    const stream = await ask(30, true);
    let lostAt = null;
    let error = null;
    let chunks = 0;
    try {
      for await (const chunk of stream) {
        chunks += 1;
        if (chunks === 2) {
          // The first generated token has arrived: the generation is running.
          engine._loseDevice();
          lostAt = performance.now();
        }
      }
    } catch (e) {
      error = { code: e.code, message: e.message, ms: performance.now() - lostAt };
    }
    const t = performance.now();
    let later = null;
    try {
      await ask(1);
    } catch (e) {
      later = { code: e.code, ms: performance.now() - t };
    }
    const r = performance.now();
    await engine.reload();
    const reloadMs = performance.now() - r;
    const after = (await ask(3)).token_ids;
    await engine.unload();
    return { before, after, error, later, chunks, reloadMs };
  }, promptIds());
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  console.log(`device loss in Chromium: error ${JSON.stringify(out.error)}; the next call failed in ${out.later?.ms?.toFixed(1)} ms; reload ${Math.round(out.reloadMs)} ms; tokens before ${JSON.stringify(out.before)}, after ${JSON.stringify(out.after)}`);
  assert.ok(out.error, `the stream ended with an error (${out.chunks} chunks)`);
  assert.equal(out.error.code, 'gpu.device_lost', out.error.message);
  assert.ok(out.error.ms < 1000, `the error came ${out.error.ms} ms after destroy()`);
  assert.equal(out.later?.code, 'gpu.device_lost', 'a later call fails with the same code');
  assert.ok(out.later.ms < 200, `and fails fast: ${out.later.ms} ms`);
  assert.equal(out.before.length, 3);
  assert.deepEqual(out.after, out.before, 'the same greedy tokens after reload()');
  await p.close();
});

// Full GET requests of the model since `mark` (the cache's downloads).
function downloads(mark) {
  return server.log.slice(mark).filter((r) => r.path === '/models/smol135.gguf').length;
}

test('the OPFS cache: a cached file cut short or with a bit flipped is downloaded again; a failing write or a small quota is io.write and leaves no partial file', { skip, timeout: 900_000 }, async () => {
  // A profile on disk: an incognito context keeps its files in memory without modification times.
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'webr1-opfs-'));
  const context = await launchPersistent(profile);
  const p = await context.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(`${server.url}/page.html`);
  // Runs on the page's thread (worker: false), so that the test can reach the cache and the writer.
  const load = (options = {}) =>
    inPage(p, async (webr1, options) => {
      const engine = await webr1.load('/models/smol135.gguf', { contextLength: 64, worker: false, ...options });
      await engine.unload();
      return 'loaded';
    }, options);
  // The cache's files: name and size.
  const files = () =>
    inPage(p, async () => {
      const root = await navigator.storage.getDirectory();
      const dir = await root.getDirectoryHandle('webr1-cache', { create: true });
      const out = [];
      for await (const [name, handle] of dir.entries()) out.push([name, (await handle.getFile()).size]);
      return out.sort();
    });
  // Changes the cached model file in place: `cut` to that many bytes, or `flip` one bit at that offset.
  const tamper = (how) =>
    inPage(p, async (_, how) => {
      const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('webr1-cache');
      for await (const [name, handle] of dir.entries()) {
        if (!name.endsWith('.gguf')) continue;
        const file = await handle.getFile();
        const w = await handle.createWritable({ keepExistingData: true });
        if (how.cut) await w.truncate(how.cut);
        if (how.flip) {
          const byte = new Uint8Array(await file.slice(how.flip, how.flip + 1).arrayBuffer())[0];
          await w.write({ type: 'write', position: how.flip, data: new Uint8Array([byte ^ 0x08]) });
        }
        await w.close();
      }
      return true;
    }, how);
  const size = fs.statSync(MODEL).size;

  await inPage(p, (webr1) => webr1.clearCache());
  let mark = server.log.length;
  assert.equal(await load(), 'loaded');
  assert.equal(downloads(mark), 1);
  assert.deepEqual((await files()).map(([, n]) => n).sort((a, b) => a - b), [(await files()).find(([n]) => n.endsWith('.json'))[1], size].sort((a, b) => a - b));
  mark = server.log.length;
  assert.equal(await load(), 'loaded');
  assert.equal(downloads(mark), 0, 'an intact cached file is used');

  for (const how of [{ cut: Math.floor(size / 3) }, { flip: Math.floor(size / 2) }]) {
    assert.equal(await tamper(how), true);
    mark = server.log.length;
    assert.equal(await load(), 'loaded', JSON.stringify(how));
    assert.equal(downloads(mark), 1, `${JSON.stringify(how)}: the changed file is downloaded again`);
    assert.ok((await files()).some(([n, s]) => n.endsWith('.gguf') && s === size), 'and cached whole again');
  }

  // A write that fails, injected through the writer (the third write throws).
  await inPage(p, (webr1) => webr1.clearCache());
  const injected = await inPage(p, async (webr1) => {
    const write = FileSystemWritableFileStream.prototype.write;
    let calls = 0;
    FileSystemWritableFileStream.prototype.write = function (...args) {
      calls += 1;
      return calls === 3 ? Promise.reject(new DOMException('injected failure', 'InvalidStateError')) : write.apply(this, args);
    };
    try {
      await webr1.load('/models/smol135.gguf', { contextLength: 64, worker: false });
      return 'loaded';
    } finally {
      FileSystemWritableFileStream.prototype.write = write;
    }
  });
  assert.equal(injected.thrown?.code, 'io.write', JSON.stringify(injected));
  assert.match(injected.thrown.message, /partial file was removed/);
  assert.deepEqual(await files(), [], 'no partial file is left');

  // A storage quota of 1 MiB for the origin (the DevTools protocol), far below the model.
  const cdp = await p.context().newCDPSession(p);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url, quotaSize: 1 << 20 });
  const quota = await load();
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url });
  assert.equal(quota.thrown?.code, 'io.write', JSON.stringify(quota));
  assert.match(quota.thrown.message, /QuotaExceeded/);
  assert.deepEqual(await files(), [], 'no partial file is left');
  // And with the cache off, the same quota does not matter.
  assert.equal(await load({ cache: false }), 'loaded');
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
});

// Starts `webr1 serve` on smol135 with `args`; resolves to {url, log, close}.
function webr1Serve(args) {
  const child = spawn(BIN, ['serve', MODEL, '--port', '0', '--ctx', '128', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const log = [];
  return new Promise((resolve, reject) => {
    let buffer = '';
    child.stderr.on('data', (data) => {
      buffer += data;
      const lines = buffer.split('\n');
      buffer = lines.pop();
      for (const line of lines) {
        log.push(line);
        const at = /http:\/\/([^/]+)\/v1/.exec(line);
        if (at) resolve({ url: `http://${at[1]}`, port: at[1].split(':').pop(), log, close: () => child.kill() });
      }
    });
    child.on('exit', (code) => reject(new Error(`webr1 serve exited with ${code}: ${log.join('\n')}`)));
  });
}

const REQUEST = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, temperature: 0 };

test('pages on other origins or on a rebinding name can neither read nor drive a local webr1 serve; --cors and --allow-host let the intended ones in', { skip: serveSkip, timeout: 900_000 }, async () => {
  const api = await webr1Serve([]);
  try {
    const p = await page();
    const out = await p.evaluate(async ({ base, request }) => {
      const attempt = async (f) => {
        try {
          const r = await f();
          return { status: r.status, type: r.type, body: r.type === 'opaque' ? null : await r.text() };
        } catch (e) {
          return { failed: e.name };
        }
      };
      return {
        // A "simple" cross-site POST, which needs no preflight: sent, but refused (415) and unreadable (opaque).
        simple: await attempt(() => fetch(`${base}/v1/chat/completions`, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify(request) })),
        // A JSON POST: its preflight is refused, so it is never sent.
        json: await attempt(() => fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(request) })),
        // A GET of the model list: refused (403 without CORS headers), so the page cannot read it.
        models: await attempt(() => fetch(`${base}/v1/models`)),
      };
    }, { base: api.url, request: REQUEST });
    console.log(`a page on ${server.url} against ${api.url}: ${JSON.stringify(out)}`);
    assert.equal(out.simple.type, 'opaque', 'the simple request gets nothing the page can read');
    assert.equal(out.json.failed, 'TypeError', 'the JSON POST fails its preflight');
    assert.equal(out.models.failed, 'TypeError', 'the model list is unreadable');
    // DNS rebinding: a page served as http://rebind.test:PORT (the attacker's name, resolved to 127.0.0.1) asks its
    // "own" origin, which is the local server.
    const rebindUrl = `http://rebind.test:${api.port}`;
    const rebound = await browser.newPage();
    await rebound.route(`${rebindUrl}/page.html`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>rebind</title>' }));
    await rebound.goto(`${rebindUrl}/page.html`);
    const stolen = await rebound.evaluate(async (request) => {
      const models = await fetch('/v1/models');
      const chat = await fetch('/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(request) });
      return { models: [models.status, await models.text()], chat: [chat.status, await chat.text()] };
    }, REQUEST);
    console.log(`a rebinding page: ${JSON.stringify(stolen)}`);
    assert.equal(stolen.models[0], 403);
    assert.ok(!stolen.models[1].includes('smol135'), 'the model list did not leak');
    assert.equal(stolen.chat[0], 403);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(api.log.filter((l) => /#\d+/.test(l)), [], 'no completion ran');
    await rebound.close();
    await p.close();
  } finally {
    api.close();
  }

  // The intended ones: --cors lets this page call the server; --allow-host admits its name.
  const open = await webr1Serve(['--cors', '--allow-host', 'models.test']);
  try {
    const p = await page();
    const answered = await p.evaluate(async ({ base, request }) => {
      const r = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(request) });
      return [r.status, (await r.json()).object];
    }, { base: open.url, request: REQUEST });
    assert.deepEqual(answered, [200, 'chat.completion'], 'with --cors a page on another origin is answered');
    const namedUrl = `http://models.test:${open.port}`;
    const named = await browser.newPage();
    await named.route(`${namedUrl}/page.html`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>named</title>' }));
    await named.goto(`${namedUrl}/page.html`);
    const listed = await named.evaluate(async () => {
      const r = await fetch('/v1/models');
      return [r.status, (await r.json()).data?.[0]?.id];
    });
    assert.deepEqual(listed, [200, 'smol135.gguf'], 'a name given with --allow-host is served');
    await named.close();
    await p.close();
  } finally {
    open.close();
  }
});
