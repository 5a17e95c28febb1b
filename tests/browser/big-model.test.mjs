// A 4.7 GB model in a tab (README: "Big models"): the synthetic r1-qwen-7b (`webr1 synth r1-qwen-7b`, Q4_K_M, the
// exact shapes of DeepSeek-R1-Distill-Qwen-7B) loads into a Web Worker on Chromium's software WebGPU, by URL and as a
// File the user picked, with the wasm heap under 128 MiB throughout (sampled at every progress event and after the
// token), split as the adapter's limits require, progress events reporting bytes and phase the whole way, and produces
// a token from a one-token prompt. It takes minutes and needs the file, so it runs only with WEBR1_SLOW=1 and
// WEBR1_BIG_MODELS=DIR holding r1-qwen-7b.gguf (scripts/big-models.sh DIR makes it; so does `webr1 synth r1-qwen-7b
// -o DIR/r1-qwen-7b.gguf`); it skips loudly otherwise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from './server.mjs';
import { PKG } from './pack.mjs';
import { launch, missing } from './browser.mjs';

const MiB = 1 << 20;
const HEAP_LIMIT = 128 * MiB;
const dir = process.env.WEBR1_BIG_MODELS;
const file = dir && path.join(dir, 'r1-qwen-7b.gguf');
const why = missing();
if (process.env.WEBR1_SLOW !== '1') why.push('the 7B browser test runs only with WEBR1_SLOW=1');
else if (!file || !fs.existsSync(file)) why.push(`no ${file ?? 'WEBR1_BIG_MODELS'}/r1-qwen-7b.gguf (scripts/big-models.sh DIR)`);
const skip = why.length > 0 ? `SKIP: ${why.join('; ')}` : false;
if (skip) console.log(`==================== ${skip}`);

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await serve({ '/pkg/': PKG, '/big/': dir });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

// Loads `what` ('url' or 'file') in a worker with `caps`, then one prompt token and one generated token; returns what
// was seen.
async function loadAndGenerate(what, caps = {}) {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  p.on('console', (m) => m.type() === 'error' && console.error('page console:', m.text()));
  await p.goto(`${server.url}/page.html`);
  if (what === 'file') await p.setInputFiles('#file', file);
  try {
    return await p.evaluate(async ({ what, caps }) => {
      const webr1 = await import('/pkg/index.js');
      const model = what === 'file' ? document.querySelector('#file').files[0] : '/big/r1-qwen-7b.gguf';
      const events = [];
      const started = performance.now();
      try {
        const engine = await webr1.load(model, {
          contextLength: 64,
          cache: false,
          ...caps,
          onProgress: (p) => events.push({ ...p, at: performance.now() - started }),
        });
        const loadMs = performance.now() - started;
        const loaded = await engine.info();
        const t = performance.now();
        const r = await engine.chat.completions.create({ prompt_ids: [151646], temperature: 0, max_tokens: 1 });
        const generateMs = performance.now() - t;
        const after = await engine.info();
        await engine.unload();
        return { loadMs, generateMs, loaded, after, tokens: r.token_ids, usage: r.usage, events };
      } catch (e) {
        return { thrown: { code: e.code, message: e.message }, events: events.slice(-3) };
      }
    }, { what, caps });
  } finally {
    await p.close();
  }
}

function check(what, out) {
  assert.equal(out.thrown, undefined, `${what}: ${JSON.stringify(out)}`);
  const size = fs.statSync(file).size;
  const { loaded, after, events } = out;
  const heapPeak = Math.max(loaded.wasm_memory_peak_during_load, loaded.wasm_memory_bytes, after.wasm_memory_bytes);
  const split = loaded.plan.split_weights.map((w) => `${w.name} ${(w.bytes / MiB).toFixed(1)} MiB in ${w.parts}`).join(', ');
  console.log(
    `r1-qwen-7b by ${what}: load ${(out.loadMs / 1000).toFixed(1)} s (${(size / 1e6 / (out.loadMs / 1000)).toFixed(1)} MB/s of a ${size}-byte file), ` +
      `wasm heap peak ${(heapPeak / MiB).toFixed(1)} MiB (during load ${loaded.wasm_memory_peak_during_load} B, after load ${loaded.wasm_memory_bytes} B, after the token ${after.wasm_memory_bytes} B), ` +
      `GPU ${(loaded.gpu_bytes / MiB).toFixed(1)} MiB in ${loaded.gpu_buffers} buffers (plan ${(loaded.plan.total / MiB).toFixed(1)} MiB), ` +
      `adapter ${loaded.adapter.name} limits ${JSON.stringify(loaded.limits)}, largest binding ${loaded.largest_binding} B, split: ${split}; ` +
      `token ${JSON.stringify(out.tokens)} in ${(out.generateMs / 1000).toFixed(1)} s; ${events.length} progress events`,
  );
  assert.ok(heapPeak < HEAP_LIMIT, `${what}: the wasm heap peaked at ${heapPeak} B`);
  assert.equal(out.tokens.length, 1);
  assert.ok(loaded.gpu_bytes > size * 0.95, `the weights went to the GPU: ${loaded.gpu_bytes} B for a ${size}-byte file`);
  // Split as the adapter's limits require: no binding over the device's, the 292 MiB embedding and 426 MiB LM head in
  // more than one buffer wherever a binding holds less.
  assert.ok(loaded.largest_binding <= loaded.limits.binding_cap);
  for (const name of ['token_embd.weight', 'output.weight']) {
    const w = loaded.plan.split_weights.find((w) => w.name === name);
    const bytes = name === 'output.weight' ? 447_068_160 : 306_561_024;
    if (bytes > loaded.limits.binding_cap) assert.ok(w && w.parts >= Math.ceil(bytes / loaded.limits.binding_cap), `${name} split: ${JSON.stringify(w)}`);
  }
  // Progress: the header phase, then upload, bytes never going back, and the upload ending with every byte.
  const phases = [...new Set(events.map((e) => e.phase))];
  assert.deepEqual(phases, ['header', 'upload'], `phases ${phases}`);
  const upload = events.filter((e) => e.phase === 'upload');
  for (let i = 1; i < upload.length; i++) assert.ok(upload[i].loaded >= upload[i - 1].loaded && upload[i].total === upload[0].total);
  const last = upload[upload.length - 1];
  assert.equal(last.loaded, last.total);
  assert.ok(last.total > size * 0.99, `upload total ${last.total} of a ${size}-byte file`);
  // Events all the way: no gap of more than 1 % of the file between two of them.
  const gaps = upload.slice(1).map((e, i) => e.loaded - upload[i].loaded);
  assert.ok(Math.max(...gaps) <= size / 100, `the largest gap between progress events is ${Math.max(...gaps)} B`);
}

test('r1-qwen-7b (4.7 GB) loads by URL into a worker with the wasm heap under 128 MiB and makes a token', { skip, timeout: 3_600_000 }, async () => {
  check('url', await loadAndGenerate('url'));
});

// SwiftShader allows 1 GiB bindings, so by URL nothing needs splitting; the File is loaded under a phone's 128 MiB.
test('r1-qwen-7b (4.7 GB) loads as a File the user picked, the same way, under a 128 MiB binding cap', { skip, timeout: 3_600_000 }, async () => {
  const out = await loadAndGenerate('file', { maxStorageBufferBindingSize: '128MiB' });
  check('file', out);
  assert.equal(out.loaded.limits.binding_cap, 128 * MiB);
  const parts = Object.fromEntries(out.loaded.plan.split_weights.map((w) => [w.name, w.parts]));
  assert.deepEqual(parts, { 'token_embd.weight': 3, 'output.weight': 4 });
});
