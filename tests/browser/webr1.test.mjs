// webr1's npm package in headless Chromium (Debian's, WebGPU on SwiftShader: the f32 path), through its published JS
// API, against a localhost server that logs every request. SwiftShader is slow, so prompts are short and few tokens are
// generated. Without Chromium or the smol135 model the tests skip, except under CI=true, where they fail.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serve, modelsDir } from './server.mjs';
import { installPacked, ROOT, PKG } from './pack.mjs';
import { launch, inCi, missing, missingModel } from './browser.mjs';

const MODEL = path.join(modelsDir(), 'smol135.gguf');

const why = missing(['smol135']);
if (why.length > 0 && inCi) throw new Error(`browser tests cannot run under CI=true: ${why.join('; ')}`);
const skip = why.length > 0 ? `SKIP: ${why.join('; ')}` : false;

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

async function page(b = browser) {
  const p = await b.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(`${server.url}/page.html`);
  return p;
}

// Runs `fn(webr1, arg)` in the page with the package imported from `/pkg/`.
function inPage(p, fn, arg, from = '/pkg/index.js') {
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

// llama.cpp's greedy records on the F32-dequantised weights of test model `model`.
function reference(model = 'smol135') {
  const file = path.join(ROOT, `tests/fixtures/greedy-f32.${model}.jsonl`);
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

// Greedy tokens must equal llama.cpp's f32 tokens; they may part only where the reference's top two logits are
// within 0.05 of each other.
function assertGreedyMatches(got, want, steps, label) {
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    if (got[i] !== want[i]) {
      const [first, second] = steps[i].top;
      const margin = first[1] - second[1];
      assert.ok(margin < 0.05, `${label}: token ${i} is ${got[i]}, llama.cpp's f32 reference has ${want[i]} (margin ${margin.toFixed(3)}); got ${JSON.stringify(got)}, want ${JSON.stringify(want.slice(0, got.length))}`);
      return;
    }
  }
}

test('greedy tokens in the browser equal the f32 reference (smol135 by URL, in a worker)', { skip, timeout: 600_000 }, async () => {
  const cases = reference().slice(0, 2);
  const p = await page();
  const started = Date.now();
  const out = await inPage(p, async (webr1, cases) => {
    const t = performance.now();
    const engine = await webr1.load('/models/smol135.gguf', { contextLength: 256, cache: false });
    const loadMs = performance.now() - t;
    const results = [];
    for (const c of cases) {
      const r = await engine.chat.completions.create({ prompt_ids: c.prompt_ids, temperature: 0, max_tokens: 4 });
      results.push({ token_ids: r.token_ids, usage: r.usage });
    }
    const info = await engine.info();
    await engine.unload();
    return { loadMs, results, info };
  }, cases);
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  for (const [i, c] of cases.entries()) {
    const r = out.results[i];
    console.log(`browser smol135 prompt ${i}: prefill ${r.usage.prefill_tokens_per_second.toFixed(2)} tok/s, decode ${r.usage.decode_tokens_per_second.toFixed(2)} tok/s, tokens ${JSON.stringify(r.token_ids)}`);
    assert.ok(r.token_ids.length > 0);
    assertGreedyMatches(r.token_ids, c.greedy_ids, c.steps, `prompt ${i}`);
  }
  console.log(`load ${Math.round(out.loadMs)} ms, adapter ${out.info.adapter.name}, shader_f16 ${out.info.features.shader_f16}, wasm heap peak ${out.info.wasm_memory_peak_during_load} B, whole test ${Date.now() - started} ms`);
  assert.ok(out.info.wasm_memory_peak_during_load < 64 << 20, 'the wasm heap stays far below the model size');
  await p.close();
});

// qwen05 is 5× smol135's weights with a 3× larger vocabulary; CI has it, and one prompt with 3 tokens takes about
// a minute on SwiftShader.
const noQwen05 = missingModel('qwen05');
if (!skip && noQwen05 && inCi) throw new Error(`browser tests cannot run under CI=true: ${noQwen05}`);
const qwen05Skip = skip || (noQwen05 ? `SKIP: ${noQwen05}` : false);

test('greedy tokens in the browser equal the f32 reference (qwen05 by URL, in a worker)', { skip: qwen05Skip, timeout: 600_000 }, async () => {
  const [c] = reference('qwen05');
  const p = await page();
  const started = Date.now();
  const out = await inPage(p, async (webr1, c) => {
    const engine = await webr1.load('/models/qwen05.gguf', { contextLength: 128, cache: false });
    const r = await engine.chat.completions.create({ prompt_ids: c.prompt_ids, temperature: 0, max_tokens: 3 });
    await engine.unload();
    return { token_ids: r.token_ids, usage: r.usage };
  }, c);
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  console.log(`browser qwen05 prompt 0 (${c.prompt_ids.length} tokens): prefill ${out.usage.prefill_tokens_per_second.toFixed(2)} tok/s, decode ${out.usage.decode_tokens_per_second.toFixed(2)} tok/s, tokens ${JSON.stringify(out.token_ids)}, whole test ${Date.now() - started} ms`);
  assert.equal(out.token_ids.length, 3);
  assertGreedyMatches(out.token_ids, c.greedy_ids, c.steps, 'qwen05 prompt 0');
  await p.close();
});

// The native engine's teacher-forced logits on the forced-f32 path (tests/browser.rs writes them before node starts):
// the browser's GPU path must give the same, position by position, within the golden f32 bounds (top-10 logits within
// 0.05, the same top-1 wherever native's leader is ahead by 0.05).
const nativeTeacherForced = process.env.WEBR1_NATIVE_TEACHER_FORCED;
if (!skip && !nativeTeacherForced && inCi) throw new Error('browser tests cannot run under CI=true: WEBR1_NATIVE_TEACHER_FORCED is not set (cargo test --test browser sets it)');
const teacherForcedSkip = skip || (nativeTeacherForced ? false : 'SKIP: no native reference (run through cargo test --test browser)');

test('teacher-forced logits in the browser equal native f32 (smol135, the first 128 tokens of GFDL-1.3)', { skip: teacherForcedSkip, timeout: 600_000 }, async () => {
  const want = JSON.parse(fs.readFileSync(nativeTeacherForced, 'utf8'));
  const p = await page();
  const started = Date.now();
  const out = await inPage(p, async (core, ids) => {
    const url = new URL('/models/smol135.gguf', location.href).href;
    const engine = await core.loadCore(url, { contextLength: ids.length, cache: false, forceF32: true });
    const t = performance.now();
    const rows = await engine.teacherForced(ids, 40);
    const ms = performance.now() - t;
    const info = engine.info();
    engine.unload();
    return { rows, ms, info };
  }, want.ids, '/pkg/src/core.js');
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  assert.equal(out.rows.length, want.steps.length);
  const failures = [];
  let worst = 0;
  for (const [i, step] of want.steps.entries()) {
    const got = new Map(out.rows[i].top.map(([id, logit]) => [id, logit]));
    for (const [id, logit] of step.top) {
      if (!got.has(id)) failures.push(`position ${i}: native's token ${id} is not in the browser's top 40`);
      else {
        const delta = Math.abs(got.get(id) - logit);
        worst = Math.max(worst, delta);
        if (delta > 0.05) failures.push(`position ${i}: token ${id}'s logit ${got.get(id).toFixed(4)} in the browser, ${logit.toFixed(4)} natively`);
      }
    }
    const lead = step.top[0][1] - step.top[1][1];
    if (out.rows[i].top[0][0] !== step.top[0][0] && lead >= 0.05) failures.push(`position ${i}: top-1 ${out.rows[i].top[0][0]} in the browser, ${step.top[0][0]} natively (ahead by ${lead.toFixed(3)})`);
    if (Math.abs(out.rows[i].lse - step.lse) > 0.05) failures.push(`position ${i}: log-sum-exp ${out.rows[i].lse.toFixed(4)} in the browser, ${step.lse.toFixed(4)} natively`);
  }
  console.log(`browser teacher-forced ${want.ids.length} tokens on ${out.info.adapter.name} (shader_f16 ${out.info.features.shader_f16}, subgroups ${out.info.features.subgroups}): ${Math.round(out.ms)} ms; largest top-10 |Δlogit| against native f32 ${worst.toFixed(4)}; whole test ${Date.now() - started} ms`);
  assert.deepEqual(failures, []);
  await p.close();
});

// `webr1 bench --profile` in the browser: the counters come from the same places as natively (dispatches where they
// are encoded, the one counted wait: here each token's mapAsync, bytes from the bindings).
test('profile: dispatches, waits and bytes per decode token in the browser (smol135)', { skip, timeout: 600_000 }, async () => {
  const p = await page();
  const started = Date.now();
  const out = await inPage(p, async (core) => {
    const url = new URL('/models/smol135.gguf', location.href).href;
    const engine = await core.loadCore(url, { contextLength: 16, cache: false, forceF32: true });
    // One step, no warm-up: SwiftShader takes seconds a token, and each step runs twice (counted, then timed).
    const profile = await engine.profile({ tokens: 1, warmup: false });
    const info = engine.info();
    engine.unload();
    return { profile, info };
  }, undefined, '/pkg/src/core.js');
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  const d = out.profile.decode;
  const mb = (x) => (x / 1e6).toFixed(2);
  console.log(`browser smol135 profile on ${out.info.adapter.name}: ${d.dispatches_per_token} dispatches a token (${d.dispatches_per_layer} per layer, ${d.dispatches_outside_layers_per_token} outside), ${d.waits_per_token} waits (${d.idle_waits_per_token} idle), ${mb(d.bytes_read_per_token)} MB read (weights ${mb(d.weight_bytes_read_per_token)} of ${mb(d.weight_bytes)} MB needed, KV ${mb(d.kv_bytes_read_per_token)}, activations ${mb(d.activation_bytes_read_per_token)}), timing ${d.timing}, wall ${d.wall_ms_per_token.toFixed(1)} ms, GPU ${d.gpu_ms_per_token?.toFixed(1) ?? '-'} ms a token; whole test ${Date.now() - started} ms`);
  assert.equal(out.profile.prefill, null);
  assert.equal(d.phase, 'decode');
  assert.equal(d.tokens, 1);
  assert.equal(d.n_layer, out.info.model.n_layer);
  assert.equal(d.dispatches_per_layer * d.n_layer + d.dispatches_outside_layers_per_token, d.dispatches_per_token);
  assert.ok(Number.isInteger(d.dispatches_per_layer) && d.dispatches_per_layer > 0, `${d.dispatches_per_layer}`);
  assert.equal(d.ops.reduce((n, o) => n + o.calls_per_token, 0), d.dispatches_per_token);
  assert.equal(d.waits_per_token, 1, 'one awaited mapAsync a token');
  assert.equal(d.idle_waits_per_token, 1, 'with nothing queued behind it');
  assert.ok(Math.abs(d.weight_bytes_read_per_token / d.weight_bytes - 1) < 1e-3, 'every weight a token needs, once');
  assert.ok(d.kv_bytes_read_per_token > 0 && d.kv_bytes_read_per_token === d.kv_bytes_needed_per_token);
  assert.ok(d.wall_ms_per_token > 0 && d.tokens_per_second > 0);
  if (d.timing === 'none') assert.equal(d.gpu_ms_per_token, null);
  else assert.ok(d.gpu_ms_per_token > 0 && d.gpu_ms_per_token <= d.timed_wall_ms_per_token);
  await p.close();
});

test('streaming: reasoning_content first, then content, then a final chunk with usage (main thread)', { skip, timeout: 600_000 }, async () => {
  const p = await page();
  const ids = reference()[0].prompt_ids;
  const out = await inPage(p, async (webr1, ids) => {
    const engine = await webr1.load('/models/smol135.gguf', { contextLength: 256, worker: false, cache: false });
    // The output starts inside the reasoning (as after R1's `<think>\n`); the thinking budget closes it after 2
    // tokens, so both parts come from real generation.
    const chunks = [];
    const stream = await engine.chat.completions.create({
      prompt_ids: ids,
      starts_in_reasoning: true,
      stream: true,
      temperature: 0,
      thinking_budget: 2,
      // 2 reasoning tokens, the tokens of the forced `\n</think>\n\n`, then answer tokens.
      max_tokens: 12,
    });
    for await (const chunk of stream) chunks.push(chunk);
    await engine.unload();
    return { chunks };
  }, ids);
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  const chunks = out.chunks;
  assert.equal(chunks[0].object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const kinds = chunks.slice(1, -1).map((c) => ('reasoning_content' in c.choices[0].delta ? 'r' : 'c')).join('');
  assert.match(kinds, /^r+c+$/, `reasoning chunks, then content chunks: ${kinds}`);
  const last = chunks.at(-1);
  assert.equal(last.choices[0].finish_reason, 'length');
  assert.equal(last.usage.completion_tokens_details.reasoning_tokens, 2);
  assert.equal(last.usage.completion_tokens, 12);
  assert.ok(last.usage.decode_tokens_per_second > 0);
  await p.close();
});

test('structured output: a schema-valid answer and a streamed tool call from the same build (smol135, in a worker)', { skip, timeout: 900_000 }, async () => {
  const p = await page();
  const started = Date.now();
  const out = await inPage(p, async (webr1) => {
    const engine = await webr1.load('/models/smol135.gguf', { contextLength: 512, cache: false });
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false };
    const json = await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Is the sky blue?' }],
      response_format: { type: 'json_schema', json_schema: { name: 'answer', schema } },
      temperature: 0,
      max_tokens: 16,
    });
    const stream = await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Time?' }],
      tools: [{ type: 'function', function: { name: 'now', description: 'The time (no arguments).' } }],
      tool_choice: 'required',
      parallel_tool_calls: false,
      temperature: 0,
      max_tokens: 40,
      stream: true,
    });
    const deltas = [];
    let finish = null;
    for await (const chunk of stream) {
      deltas.push(...(chunk.choices[0].delta.tool_calls ?? []));
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    let bad = null;
    try {
      await engine.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'strin' } } } });
    } catch (e) {
      bad = { code: e.code, message: e.message };
    }
    await engine.unload();
    return { json: { content: json.choices[0].message.content, finish: json.choices[0].finish_reason }, deltas, finish, bad };
  });
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  console.log(`structured output in the browser (${((Date.now() - started) / 1000).toFixed(0)}s): ${JSON.stringify(out)}`);
  assert.equal(out.json.finish, 'stop');
  assert.equal(typeof JSON.parse(out.json.content).ok, 'boolean', out.json.content);
  assert.deepEqual(Object.keys(JSON.parse(out.json.content)), ['ok']);
  assert.equal(out.finish, 'tool_calls');
  assert.equal(out.deltas[0].function.name, 'now');
  assert.match(out.deltas[0].id, /^call_/);
  assert.equal(out.deltas.map((d) => d.function.arguments).join(''), '{}');
  assert.equal(out.bad?.code, 'structured.schema', JSON.stringify(out.bad));
  assert.match(out.bad.message, /strin/);
  await p.close();
});

test('an AbortSignal stops a generation with finish_reason "abort", and the next request works', { skip, timeout: 600_000 }, async () => {
  const p = await page();
  const out = await inPage(p, async (webr1) => {
    const engine = await webr1.load('/models/smol135.gguf', { contextLength: 256, cache: false });
    const controller = new AbortController();
    const stream = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Count to fifty.' }], stream: true, max_tokens: 200, signal: controller.signal, temperature: 0 });
    let last;
    let pieces = 0;
    let abortedAt = 0;
    for await (const chunk of stream) {
      last = chunk;
      if (chunk.choices[0].delta.content || chunk.choices[0].delta.reasoning_content) {
        if (++pieces === 1) {
          abortedAt = performance.now();
          controller.abort();
        }
      }
    }
    const stopMs = performance.now() - abortedAt;
    // The same conversation again: its prompt is cached, so only one token is computed.
    const next = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Count to fifty.' }], max_tokens: 1, temperature: 0 });
    await engine.unload();
    return { finish: last.choices[0].finish_reason, tokens: last.usage.completion_tokens, stopMs, next: next.choices[0].finish_reason, nextTokens: next.usage.completion_tokens };
  });
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown));
  assert.equal(out.finish, 'abort');
  assert.ok(out.tokens < 5, `stopped within a few tokens: ${out.tokens}`);
  assert.equal(out.nextTokens, 1, JSON.stringify(out));
  console.log(`abort took effect after ${Math.round(out.stopMs)} ms`);
  await p.close();
});

test('errors carry stable codes: bad URL, garbage bytes, bad arguments', { skip, timeout: 120_000 }, async () => {
  const p = await page();
  const out = await inPage(p, async (webr1) => {
    const code = async (f) => {
      try {
        await f();
        return 'no error';
      } catch (e) {
        return `${e.name}:${e.code}`;
      }
    };
    return {
      notFound: await code(() => webr1.load('/models/no-such-model.gguf')),
      badHost: await code(() => webr1.load('http://127.0.0.1:9/model.gguf', { worker: false })),
      garbage: await code(() => webr1.load('/garbage.gguf')),
      garbageBlob: await code(() => webr1.load(new Blob([new Uint8Array(4096).fill(7)]), { worker: false })),
      notAModel: await code(() => webr1.load(42)),
    };
  });
  assert.deepEqual(out, {
    notFound: 'Webr1Error:download.http',
    badHost: 'Webr1Error:download.failed',
    garbage: 'Webr1Error:gguf.bad_magic',
    garbageBlob: 'Webr1Error:gguf.bad_magic',
    notAModel: 'Webr1Error:usage',
  });
  await p.close();
});

test('without WebGPU: webgpu.unavailable, whether navigator.gpu is missing or offers no adapter', { skip, timeout: 120_000 }, async () => {
  const plain = await launch({ webgpu: false });
  try {
    const p = await page(plain);
    const noAdapter = await inPage(p, (webr1) => webr1.load('/models/smol135.gguf', { worker: false, cache: false }));
    const noGpu = await p.evaluate(async () => {
      Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined });
      const webr1 = await import('/pkg/index.js');
      try {
        await webr1.load('/models/smol135.gguf', { worker: false, cache: false });
      } catch (e) {
        return e.code;
      }
    });
    assert.equal(noAdapter.thrown?.code, 'webgpu.unavailable', JSON.stringify(noAdapter));
    assert.equal(noGpu, 'webgpu.unavailable');
  } finally {
    await plain.close();
  }
});

test('a download that breaks off halfway resumes with a Range request, and the second load comes from the cache', { skip, timeout: 600_000 }, async () => {
  const p = await page();
  const size = fs.statSync(MODEL).size;
  const from = server.log.length;
  const first = await inPage(p, async (webr1) => {
    await webr1.clearCache();
    const engine = await webr1.load('/flaky/smol135.gguf', { contextLength: 64 });
    await engine.unload();
    return true;
  });
  assert.equal(first, true, JSON.stringify(first));
  const requests = server.log.slice(from).filter((r) => r.path === '/flaky/smol135.gguf');
  const served = requests.reduce((n, r) => n + (r.bytes ?? 0), 0);
  assert.ok(requests.some((r) => r.range && Number(/bytes=(\d+)/.exec(r.range)[1]) > 0), `a Range request past byte 0: ${JSON.stringify(requests)}`);
  assert.ok(served < 1.5 * size, `${served} bytes served for a ${size}-byte file`);
  const mark = server.log.length;
  const second = await inPage(p, async (webr1) => {
    const engine = await webr1.load('/flaky/smol135.gguf', { contextLength: 64 });
    const info = await engine.info();
    await engine.unload();
    return info.model.n_layer;
  });
  assert.equal(second, 30);
  assert.deepEqual(server.log.slice(mark).filter((r) => r.path.endsWith('.gguf')), [], 'the second load made no request for the model');
  await p.close();
});

test('a File picked by the user loads without the network', { skip, timeout: 600_000 }, async () => {
  const p = await page();
  await p.setInputFiles('#file', MODEL);
  const mark = server.log.length;
  const out = await p.evaluate(async () => {
    const webr1 = await import('/pkg/index.js');
    const file = document.querySelector('#file').files[0];
    const engine = await webr1.load(file, { contextLength: 64 });
    const info = await engine.info();
    await engine.unload();
    return info.model.architecture;
  });
  assert.equal(out, 'llama');
  assert.deepEqual(server.log.slice(mark).filter((r) => r.path.endsWith('.gguf')), []);
  await p.close();
});

test('wasmUrl places the wasm for apps that move it: a URL object or a page-relative string, in a worker and on the main thread', { skip, timeout: 120_000 }, async () => {
  const own = await serve({ '/pkg/': PKG, '/moved/': PKG });
  try {
    const p = await browser.newPage();
    await p.goto(`${own.url}/page.html`);
    const out = await inPage(p, async (webr1) => {
      const code = (options) => webr1.load('/garbage.gguf', options).then(() => 'no error', (e) => e.code);
      return [
        await code({ wasmUrl: new URL('/moved/webr1_bg.wasm', location.href) }),
        await code({ wasmUrl: 'moved/webr1_bg.wasm' }),
        await code({ wasmUrl: 'moved/webr1_bg.wasm', worker: false }),
      ];
    });
    // Each load reached the GGUF parser, so the wasm ran; all three fetched it from /moved/.
    assert.deepEqual(out, ['gguf.bad_magic', 'gguf.bad_magic', 'gguf.bad_magic']);
    const wasm = own.log.filter((r) => r.path.endsWith('.wasm')).map((r) => r.path);
    assert.deepEqual(wasm, ['/moved/webr1_bg.wasm', '/moved/webr1_bg.wasm', '/moved/webr1_bg.wasm']);
    await p.close();
  } finally {
    await own.close();
  }
});

test('npm pack: the tarball installs into a fresh project and imports from a page', { skip, timeout: 300_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webr1-pack-'));
  try {
    const installed = path.join(installPacked(dir), 'node_modules/webr1');
    for (const f of ['index.js', 'index.d.ts', 'worker.js', 'webr1.js', 'webr1_bg.wasm', 'src/core.js']) {
      assert.ok(fs.existsSync(path.join(installed, f)), `the package holds ${f}`);
    }
    const own = await serve({ '/node_modules/webr1/': installed });
    try {
      const p = await browser.newPage();
      await p.goto(`${own.url}/page.html`);
      // Through the worker: the installed package finds its worker, its wasm and its glue.
      const out = await inPage(p, (webr1) => webr1.load('/garbage.gguf'), null, '/node_modules/webr1/index.js');
      assert.equal(out.thrown?.code, 'gguf.bad_magic', JSON.stringify(out));
      await p.close();
    } finally {
      await own.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
