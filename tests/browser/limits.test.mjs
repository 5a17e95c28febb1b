// Memory planning and phone-sized limits in the browser (README: "Memory planning", "Phone-sized limits"), on
// Chromium's SwiftShader: a `gpuMemory` budget too small for smol135 or qwen05 is refused with code
// `model.too_large` before any GPU buffer exists, and the same page then loads a model; sizes that are 0, negative or
// malformed are `usage` errors; smol135 under a 128 MiB / 256 MiB cap and under an 8 MiB binding cap gives the same
// greedy tokens as without, no binding passes the cap, and the large tensors are split.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serve } from './server.mjs';
import { PKG } from './pack.mjs';
import { launch, inCi, missing, missingModel } from './browser.mjs';

const MiB = 1 << 20;
const why = missing(['smol135']);
if (why.length > 0 && inCi) throw new Error(`browser tests cannot run under CI=true: ${why.join('; ')}`);
const skip = why.length > 0 ? `SKIP: ${why.join('; ')}` : false;
const noQwen05 = missingModel('qwen05');
if (!skip && noQwen05 && inCi) throw new Error(`browser tests cannot run under CI=true: ${noQwen05}`);

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await serve({ '/pkg/': PKG });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

// Runs `fn(webr1, core, arg)` in a fresh page, the package and its core (the wasm instance a `worker: false` engine
// uses) imported from `/pkg/`.
async function inPage(fn, arg) {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(`${server.url}/page.html`);
  try {
    return await p.evaluate(
      async ({ source, arg }) => {
        const webr1 = await import('/pkg/index.js');
        const core = await import('/pkg/src/core.js');
        const fn = new Function(`return (${source})`)();
        try {
          return await fn(webr1, core, arg);
        } catch (e) {
          return { thrown: { code: e.code, message: e.message } };
        }
      },
      { source: fn.toString(), arg },
    );
  } finally {
    await p.close();
  }
}

test('a gpuMemory budget too small is model.too_large with no GPU buffer created, and a model loads afterwards', { skip, timeout: 300_000 }, async () => {
  const models = noQwen05 ? ['smol135'] : ['smol135', 'qwen05'];
  if (noQwen05) console.log(`==================== SKIP the qwen05 case: ${noQwen05}`);
  const out = await inPage(async (webr1, core, models) => {
    const refused = [];
    for (const name of models) {
      const before = await core.gpuBuffersCreated();
      const error = await webr1.load(`/models/${name}.gguf`, { gpuMemory: '40MiB', worker: false, cache: false }).then(
        () => null,
        (e) => ({ code: e.code, message: e.message }),
      );
      refused.push({ name, error, created: (await core.gpuBuffersCreated()) - before });
    }
    const bad = [];
    for (const gpuMemory of [0, -1, '0', '-8GiB', 'lots', 1.5]) {
      bad.push(await webr1.load('/models/smol135.gguf', { gpuMemory, worker: false, cache: false }).then(() => 'loaded', (e) => e.code));
    }
    // The same wasm instance loads a model that fits, with the context the budget leaves.
    const engine = await webr1.load('/models/smol135.gguf', { gpuMemory: '128MiB', worker: false, cache: false });
    const info = await engine.info();
    await engine.unload();
    return { refused, bad, info };
  }, models);
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  for (const { name, error, created } of out.refused) {
    console.log(`${name} with gpuMemory 40MiB: ${error?.code}: ${error?.message}`);
    assert.equal(error?.code, 'model.too_large', `${name}: ${JSON.stringify(error)}`);
    assert.match(error.message, /budget of 40\.0 MiB/);
    assert.match(error.message, /smaller quantisation/);
    assert.equal(created, 0, `${name}: the refused load created ${created} GPU buffers`);
  }
  assert.deepEqual(out.bad, ['usage', 'usage', 'usage', 'usage', 'usage', 'usage']);
  const { plan } = out.info;
  console.log(`smol135 with gpuMemory 128MiB: context ${out.info.context_length}, plan total ${plan.total} B, ${out.info.gpu_bytes} B created`);
  assert.equal(plan.budget, 128 * MiB);
  assert.ok(plan.total <= 128 * MiB && out.info.gpu_bytes <= 128 * MiB, JSON.stringify(plan));
  assert.ok(out.info.context_length >= 256 && out.info.context_length < 8192, `the budget chose ${out.info.context_length}`);
});

test('phone-sized limits give the same greedy tokens, no binding over the cap, the large tensors split (smol135, in a worker)', { skip, timeout: 900_000 }, async () => {
  const cases = [{}, { maxStorageBufferBindingSize: '128MiB', maxBufferSize: '256MiB' }, { maxStorageBufferBindingSize: 8 * MiB }];
  const out = await inPage(async (webr1, core, cases) => {
    const runs = [];
    for (const caps of cases) {
      const engine = await webr1.load('/models/smol135.gguf', { contextLength: 128, cache: false, ...caps });
      // One prompt token: only the decode list is built (SwiftShader compiles each load's pipelines anew).
      const r = await engine.chat.completions.create({ prompt_ids: [1], temperature: 0, max_tokens: 4 });
      const info = await engine.info();
      await engine.unload();
      runs.push({ caps, tokens: r.token_ids, info });
    }
    return runs;
  }, cases);
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  const [free, ...capped] = out;
  assert.ok(free.tokens.length >= 2, JSON.stringify(free.tokens));
  console.log(`smol135 without caps: ${JSON.stringify(free.tokens)}; limits ${JSON.stringify(free.info.limits)}, largest binding ${free.info.largest_binding} B`);
  for (const run of capped) {
    const { info } = run;
    const split = info.plan.split_weights.map((w) => `${w.name} in ${w.parts}`).join(', ') || 'none';
    console.log(`smol135 with ${JSON.stringify(run.caps)}: ${JSON.stringify(run.tokens)}; largest binding ${info.largest_binding} B, largest buffer ${info.largest_buffer} B, ${info.plan.weight_buffers} weight buffers, split: ${split}`);
    assert.deepEqual(run.tokens, free.tokens, `the same greedy tokens under ${JSON.stringify(run.caps)}`);
    assert.ok(info.largest_binding <= info.limits.binding_cap, `a binding of ${info.largest_binding} B passed the cap of ${info.limits.binding_cap} B`);
    assert.ok(info.largest_buffer <= info.limits.buffer_cap, `a buffer of ${info.largest_buffer} B passed the cap of ${info.limits.buffer_cap} B`);
    if (run.caps.maxBufferSize) assert.equal(info.limits.buffer_cap, 256 * MiB);
    if (run.caps.maxStorageBufferBindingSize === 8 * MiB) {
      assert.equal(info.limits.binding_cap, 8 * MiB);
      // smol135's Q8_0 embedding (the tied LM head) is 28.7 MiB: 4 buffers of at most 8 MiB.
      assert.deepEqual(info.plan.split_weights.map((w) => [w.name, w.parts]), [['token_embd.weight', 4]]);
      assert.ok(info.largest_binding > 4 * MiB, 'the parts are bound whole');
    }
  }
});
