// The wasm heap does not grow with the model: weights stream from the network to the GPU in bounded chunks, and the
// heap holds only the header and the vocabulary. Each present test model (smol135 98 MB, qwen05 491 MB, qwen15 1.1 GB)
// loads by URL through the package, in its own worker (a fresh wasm instance), and the heap's peak while it loads is
// recorded: every peak is under 128 MiB, and qwen15's is within 16 MiB of qwen05's (the same vocabulary, 2.3× the
// weights). CI fetches smol135 and qwen05, so under CI=true those two must be present; qwen15 runs wherever its file is
// (WEBR1_SLOW=1 in .ci/run fetches it) and is skipped loudly otherwise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { serve, modelsDir } from './server.mjs';
import { PKG } from './pack.mjs';
import { launch, inCi, missing, missingModel } from './browser.mjs';

const MiB = 1 << 20;
const HEAP_LIMIT = 128 * MiB;
const SAME_VOCABULARY_SPREAD = 16 * MiB;
const MODELS = [
  { name: 'smol135', neededInCi: true },
  { name: 'qwen05', neededInCi: true },
  { name: 'qwen15', neededInCi: false },
];

const why = missing();
if (why.length > 0 && inCi) throw new Error(`the wasm heap tests cannot run under CI=true: ${why.join('; ')}`);

// Why a model's test skips (false when it runs).
function skipFor({ name, neededInCi }) {
  if (why.length > 0) return why.join('; ');
  const message = missingModel(name);
  if (!message) return false;
  if (inCi && neededInCi) throw new Error(`the wasm heap tests need ${name} under CI=true: ${message}`);
  console.log(`==================== SKIP ${name}: ${message}`);
  return message;
}

let server;
let browser;
const peaks = new Map();

before(async () => {
  if (why.length > 0) return;
  server = await serve({ '/pkg/': PKG });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

const mib = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`;

for (const model of MODELS) {
  const skip = skipFor(model);
  test(`the wasm heap stays under 128 MiB while ${model.name} loads by URL (in a worker)`, { skip, timeout: 900_000 }, async () => {
    const size = fs.statSync(path.join(modelsDir(), `${model.name}.gguf`)).size;
    const p = await browser.newPage();
    p.on('pageerror', (e) => console.error('page error:', e.message));
    await p.goto(`${server.url}/page.html`);
    const out = await p.evaluate(async (name) => {
      const webr1 = await import('/pkg/index.js');
      try {
        const started = performance.now();
        const engine = await webr1.load(`/models/${name}.gguf`, { contextLength: 256, cache: false });
        const loadMs = performance.now() - started;
        const info = engine.loadInfo;
        await engine.unload();
        return { loadMs, info };
      } catch (e) {
        return { thrown: { code: e.code, message: e.message } };
      }
    }, model.name);
    await p.close();
    assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
    const { wasm_memory_peak_during_load: duringLoad, wasm_memory_bytes: afterLoad, gpu_bytes: gpu } = out.info;
    // The heap never shrinks, so its size right after the load bounds every sample taken during it.
    const peak = Math.max(duringLoad, afterLoad);
    peaks.set(model.name, peak);
    console.log(
      `wasm heap ${model.name}: peak ${mib(peak)} (${peak} B; sampled during load ${duringLoad} B, right after ${afterLoad} B), ` +
        `load ${(out.loadMs / 1000).toFixed(1)} s, file ${mib(size)}, GPU buffers ${mib(gpu)}`,
    );
    assert.ok(gpu > size / 2, `the weights went to the GPU: ${gpu} B of GPU buffers for a ${size}-byte file`);
    assert.ok(peak < HEAP_LIMIT, `${model.name}: the wasm heap peaked at ${mib(peak)}, over ${mib(HEAP_LIMIT)}`);
  });
}

const both = MODELS.filter((m) => m.name === 'qwen05' || m.name === 'qwen15');
const skipPair = why.length > 0 ? why.join('; ') : both.some((m) => missingModel(m.name)) && 'it needs both qwen05 and qwen15';
test('the wasm heap peaks of qwen15 and qwen05 (same vocabulary, 2.3× the weights) are within 16 MiB', { skip: skipPair, timeout: 10_000 }, () => {
  const [small, large] = [peaks.get('qwen05'), peaks.get('qwen15')];
  assert.ok(small && large, 'both models loaded above');
  console.log(`wasm heap qwen15 − qwen05: ${mib(large - small)}`);
  assert.ok(Math.abs(large - small) <= SAME_VOCABULARY_SPREAD, `qwen05 peaked at ${mib(small)}, qwen15 at ${mib(large)}: more than ${mib(SAME_VOCABULARY_SPREAD)} apart`);
});
