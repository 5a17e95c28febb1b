// The demo site's logic that needs no browser: the catalogue, GPU-memory arithmetic, error explanations, settings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { explainError, explainNoWebGpu } from '../../www/errors.js';
import { formatBytes, gpuBytesNeeded, kvCacheBytes, resolveModelUrl, smallerThan } from '../../www/models.js';

const catalogue = JSON.parse(fs.readFileSync(new URL('../../www/models.json', import.meta.url), 'utf8'));
const models = catalogue.models.map((m) => ({ ...m, isDefault: m.id === catalogue.default }));
const byId = (id) => models.find((m) => m.id === id);

test('the catalogue: four R1 distills at Q4_K_M on Hugging Face, with sizes and shapes; the default is the 1.5B', () => {
  assert.deepEqual(models.map((m) => m.id), ['r1-qwen-1.5b', 'r1-qwen-7b', 'r1-llama-8b', 'r1-qwen-14b']);
  for (const m of models) {
    assert.match(m.url, /^https:\/\/huggingface\.co\/[\w.-]+\/[\w.-]+\/resolve\/main\/[\w.-]+-Q4_K_M\.gguf$/, m.id);
    assert.ok(m.url.includes(m.name), `${m.id}: the file is the model named`);
    assert.ok(m.bytes > 1e9 && m.bytes < 1e10, m.id);
    assert.ok(m.sha256 === null || /^[0-9a-f]{64}$/.test(m.sha256), m.id);
    for (const k of ['n_layer', 'n_head_kv', 'head_dim', 'n_vocab', 'context_length']) assert.ok(m.shape[k] > 0, `${m.id}.${k}`);
  }
  // The site resolves an hf: name as the CLI does (whose default model is this catalogue's default entry).
  const hfName = 'hf:unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF/DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf';
  assert.equal(resolveModelUrl(hfName), byId(catalogue.default).url);
});

test('KV cache and GPU memory: 2 × layers × kv heads × head dim × tokens × element size', () => {
  const qwen15 = byId('r1-qwen-1.5b');
  assert.equal(kvCacheBytes(qwen15.shape, 4096, true), 2 * 28 * 2 * 128 * 4096 * 2); // 117,440,512
  assert.equal(kvCacheBytes(qwen15.shape, 4096, false), 2 * kvCacheBytes(qwen15.shape, 4096, true));
  const qwen14 = byId('r1-qwen-14b');
  assert.equal(kvCacheBytes(qwen14.shape, 8192, true), 2 * 48 * 8 * 128 * 8192 * 2); // 1.6 GB
  for (const m of models) {
    const need = gpuBytesNeeded(m, 4096, true);
    assert.ok(need > m.bytes + kvCacheBytes(m.shape, 4096, true), m.id);
    assert.ok(need < m.bytes * 1.5, `${m.id}: working buffers stay a small part`);
  }
  assert.equal(formatBytes(1_117_320_768), '1.1 GB');
  assert.equal(formatBytes(98_362_432), '98.4 MB');
  assert.equal(formatBytes(999), '999 B');
});

test('hf: names resolve as the CLI resolves them; other text passes through', () => {
  assert.equal(resolveModelUrl(' hf:a/b/sub/m.gguf '), 'https://huggingface.co/a/b/resolve/main/sub/m.gguf');
  assert.equal(resolveModelUrl('https://x.example/m.gguf'), 'https://x.example/m.gguf');
  assert.throws(() => resolveModelUrl('hf:a/b'), /hf:OWNER\/REPO\/FILE\.gguf/);
});

test('not enough GPU memory: a shorter context and the next smaller models, largest first', () => {
  const error = Object.assign(new Error('needs 5.3 GB, the adapter allows 4 GB'), { code: 'model.too_large' });
  const e = explainError(error, { during: 'load', model: byId('r1-llama-8b'), models, contextLength: 8192 });
  assert.equal(e.title, 'Not enough GPU memory');
  assert.match(e.text, /DeepSeek-R1-Distill-Llama-8B with a context of 8192 tokens/);
  assert.match(e.text, /DeepSeek-R1-Distill-Qwen-7B \(4\.7 GB\) is the next smaller model/);
  assert.deepEqual(e.actions.map((a) => a.kind + (a.model ? `:${a.model.id}` : a.contextLength ? `:${a.contextLength}` : '')), [
    'context:2048',
    'model:r1-qwen-7b',
    'model:r1-qwen-1.5b',
    'pick',
  ]);
  assert.equal(e.detail, error.message, 'the engine message, with its numbers, is kept');
  // The smallest model at the smallest context: nothing smaller to offer.
  const oom = explainError({ code: 'gpu.out_of_memory', message: 'x' }, { during: 'load', model: byId('r1-qwen-1.5b'), models, contextLength: 2048 });
  assert.deepEqual(oom.actions.map((a) => a.kind), ['pick']);
  assert.match(oom.text, /Close other tabs/);
  assert.deepEqual(smallerThan(models, Infinity).map((m) => m.id), ['r1-qwen-14b', 'r1-llama-8b', 'r1-qwen-7b', 'r1-qwen-1.5b']);
});

test('each error code gets a title a person understands and actions that fit it', () => {
  const cases = [
    ['download.failed', 'load', 'The download failed', ['retry', 'pick']],
    ['download.interrupted', 'load', 'The download failed', ['retry', 'pick']],
    ['gpu.device_lost', 'chat', 'The GPU was reset', ['reload']],
    ['context.full', 'chat', 'The conversation is longer than the context', ['new-chat', 'reload']],
    ['gguf.bad_magic', 'load', 'webr1 cannot run this file', ['pick']],
    ['config.unsupported_architecture', 'load', 'webr1 cannot run this file', ['pick']],
    ['webgpu.unavailable', 'load', 'WebGPU is not available', []],
    ['something.new', 'load', 'The model did not load', ['retry', 'pick']],
    ['something.new', 'chat', 'The answer stopped with an error', ['reload']],
  ];
  for (const [code, during, title, actions] of cases) {
    const e = explainError(Object.assign(new Error(`detail of ${code}`), { code }), { during, models });
    assert.equal(e.title, title, code);
    assert.deepEqual(e.actions.map((a) => a.kind), actions, code);
    assert.match(e.detail, new RegExp(`detail of ${code.replace('.', '\\.')}`), code);
  }
});

test('no WebGPU: the reason differs for an insecure page, a missing adapter and a missing navigator.gpu', () => {
  assert.match(explainNoWebGpu({ gpuPresent: false, secure: false }).text, /https:\/\/ or from localhost/);
  assert.match(explainNoWebGpu({ gpuPresent: true, secure: true }).text, /offered no GPU/);
  const missing = explainNoWebGpu({ gpuPresent: false, secure: true });
  assert.match(missing.text, /does not offer/);
  assert.equal(missing.list.length, 4);
});

test('settings: R1 defaults, and stored values are clamped and rounded', async () => {
  const store = new Map();
  globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, String(v)) };
  const { DEFAULTS, loadSettings } = await import('../../www/settings.js');
  assert.deepEqual({ ...DEFAULTS }, { temperature: 0.6, top_p: 0.95, max_tokens: 4096, thinking_budget: 0, context_length: 4096 });
  assert.deepEqual(loadSettings(), { ...DEFAULTS });
  store.set('webr1.settings', JSON.stringify({ temperature: 9, top_p: -1, max_tokens: 12.7, thinking_budget: 'x', context_length: 2048 }));
  assert.deepEqual(loadSettings(), { temperature: 2, top_p: 0.01, max_tokens: 13, thinking_budget: 0, context_length: 2048 });
  store.set('webr1.settings', '{not json');
  assert.deepEqual(loadSettings(), { ...DEFAULTS });
  delete globalThis.localStorage;
});
