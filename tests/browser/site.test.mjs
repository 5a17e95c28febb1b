// The demo site (www/) driven in headless Chromium (Debian's /usr/bin/chromium through playwright-core; WebGPU is
// SwiftShader here: no shader-f16, slow, so every answer is kept to a few tokens).
//
// A copy of smol135 whose chat template opens `<think>` after the assistant's turn marker makes the small model reason,
// and the site's thinking budget closes the reasoning, so the Thinking panel and the answer both hold real model text.
// Screenshots (desktop and phone width, light and dark) go to target/site-screenshots/. Any console error or uncaught
// exception on a page fails the test. Without the browser, the model or the built package the tests skip, or fail under
// CI=true.
//
//   WEBR1_MODELS   where smol135.gguf is (default ~/.cache/webr1-test-models)
//   WEBR1_PKG      the built npm package (default pkg/ of this tree; scripts/build-web.sh builds it)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serveSite } from './site/server.mjs';
import { rewriteChatTemplate } from './site/gguf-template.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WWW = path.join(ROOT, 'www');
const PKG = process.env.WEBR1_PKG || path.join(ROOT, 'pkg');
const MODELS = process.env.WEBR1_MODELS || path.join(process.env.HOME || '', '.cache/webr1-test-models');
const SMOL = path.join(MODELS, 'smol135.gguf');
const CHROMIUM = process.env.WEBR1_CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(ROOT, 'target', 'site-test');
const SHOTS = path.join(ROOT, 'target', 'site-screenshots');
const FLAGS = ['--no-sandbox', '--headless=new', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-features=Vulkan'];

const missing = [
  !fs.existsSync(CHROMIUM) && `no browser at ${CHROMIUM} (apt-get install -y chromium)`,
  !fs.existsSync(SMOL) && `no test model at ${SMOL} (../shared/scripts/fetch-test-models.sh)`,
  !(fs.existsSync(path.join(PKG, 'index.js')) && fs.existsSync(path.join(PKG, 'webr1_bg.wasm'))) &&
    `the npm package is not built in ${PKG} (scripts/build-web.sh)`,
].filter(Boolean);
const skip = missing.length > 0 && process.env.CI !== 'true' ? `skipped: ${missing.join('; ')}` : false;

let server;
let browser;

before(async () => {
  if (skip) return console.log(`site tests ${skip}`);
  assert.deepEqual(missing, [], 'under CI=true the site tests need all of these');
  fs.mkdirSync(OUT, { recursive: true });
  fs.mkdirSync(SHOTS, { recursive: true });
  const think = path.join(OUT, 'smol135-think.gguf');
  // The template opens <think>, and leaves out SmolLM's default system prompt: a shorter prompt is a faster test.
  const template = rewriteChatTemplate(SMOL, think, (t) =>
    t
      .replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
      .replace(/\{% if loop\.first and messages\[0\]\['role'\] != 'system' %\}.*?\{% endif %\}/s, ''),
  );
  assert.ok(template.includes('assistant\n<think>\n'), 'the test model template now opens <think>');
  assert.ok(!template.includes('named SmolLM'), 'the default system prompt is gone');
  server = await serveSite({ www: WWW, pkg: PKG, models: { 'smol135-think.gguf': think, 'smol135.gguf': SMOL } });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: [...FLAGS, '--enable-unsafe-webgpu'], headless: true });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

// A page whose console errors and uncaught exceptions are collected; `allow(message)` may excuse expected ones.
async function openPage(b, { viewport = { width: 1280, height: 800 }, colorScheme = 'light', allow = () => false, init } = {}) {
  const context = await b.newContext({ viewport, colorScheme });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && !allow(m) && errors.push(`console: ${m.text()} (${m.location().url})`));
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  await page.goto(`${server.url}/`);
  await page.waitForSelector('html[data-booted="true"]', { timeout: 30_000 });
  return { page, context, errors };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
}

async function setSettings(page, values) {
  await page.click('#open-settings');
  for (const [name, value] of Object.entries(values)) {
    await page.$eval(`#${name}`, (e, v) => {
      e.value = String(v);
      e.dispatchEvent(new Event('input', { bubbles: true }));
    }, value);
  }
  await page.click('#settings button[value="done"]');
}

// Loads a model through the URL field, by keyboard.
async function loadByUrl(page, url) {
  await page.focus('#url-input');
  await page.keyboard.type(url);
  await page.keyboard.press('Enter');
  await page.waitForSelector('html[data-view="chat"]', { timeout: 180_000 });
}

// Sends a prompt by keyboard and returns the new assistant message's locator.
async function ask(page, text) {
  const before = await page.locator('.msg.assistant').count();
  await page.focus('#prompt');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => document.querySelectorAll('.msg.assistant').length > n, before);
  return page.locator('.msg.assistant').nth(before);
}

const idle = (page, timeout = 400_000) => page.waitForSelector('html[data-generating="false"]', { timeout });

test('the page: own JS + CSS under 100 KB, first contentful paint under 1 s, no console errors', { skip }, async () => {
  const own = fs.readdirSync(WWW).filter((f) => /\.(js|css|html)$/.test(f));
  const bytes = own.filter((f) => !f.endsWith('.html')).reduce((n, f) => n + fs.statSync(path.join(WWW, f)).size, 0);
  const { page, context, errors } = await openPage(browser);
  const measured = await page.evaluate(() => {
    const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null;
    const own = performance
      .getEntriesByType('resource')
      .filter((r) => /\.(js|css)$/.test(new URL(r.name).pathname) && !new URL(r.name).pathname.startsWith('/pkg/'));
    return { fcp, transferred: own.reduce((n, r) => n + r.encodedBodySize, 0), files: own.map((r) => new URL(r.name).pathname) };
  });
  console.log(`site: own JS+CSS ${bytes} bytes on disk, ${measured.transferred} loaded (${measured.files.join(' ')}); FCP ${measured.fcp?.toFixed(0)} ms`);
  assert.ok(bytes < 100_000, `www JS + CSS is ${bytes} bytes`);
  assert.ok(measured.transferred > 0 && measured.transferred < 100_000, `the page loaded ${measured.transferred} bytes of its own JS + CSS`);
  assert.ok(measured.fcp !== null && measured.fcp < 1000, `first contentful paint ${measured.fcp} ms`);
  assert.match(await page.textContent('#gpu-line'), /no shader-f16|shader-f16/);
  assert.equal(await page.locator('#model-list li').count(), 4, 'the four catalogue models are listed');
  assert.match(await page.textContent('#model-list'), /DeepSeek-R1-Distill-Qwen-1\.5B.*1\.1 GB download.*GPU memory/s);
  for (const [name, viewport] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
    for (const scheme of ['light', 'dark']) {
      await page.setViewportSize(viewport);
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `picker-${name}-${scheme}`);
    }
  }
  // At phone width nothing scrolls sideways.
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no horizontal scroll at 390 px');
  assert.deepEqual(errors, []);
  await context.close();
});

test('without WebGPU the page explains which browsers work, for a missing adapter and a missing navigator.gpu', { skip }, async () => {
  const plain = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  try {
    const cases = [
      ['no-adapter', undefined],
      ['no-navigator-gpu', () => delete Navigator.prototype.gpu],
    ];
    for (const [name, init] of cases) {
      const { page, context, errors } = await openPage(plain, { init });
      await page.waitForSelector('#notice:not([hidden])');
      assert.equal(await page.textContent('#notice h2'), 'WebGPU is not available', name);
      const text = await page.textContent('#notice');
      assert.match(text, /Chrome or Edge 113/, name);
      assert.match(text, /Safari 26/, name);
      assert.match(text, /Firefox 141/, name);
      assert.match(text, name === 'no-adapter' ? /offered no GPU/ : /does not offer/, name);
      assert.ok(await page.locator('#model-list button:disabled').count() === 4, `${name}: Load buttons are disabled`);
      await page.setViewportSize({ width: 390, height: 844 });
      await shot(page, `no-webgpu-${name}-phone`);
      assert.deepEqual(errors, [], name);
      await context.close();
    }
  } finally {
    await plain.close();
  }
});

test('model output with <script> and <img onerror> renders as text in both the reasoning and the answer', { skip }, async () => {
  const { page, context, errors } = await openPage(browser);
  const result = await page.evaluate(async () => {
    const { Conversation } = await import('/chat.js');
    window.__pwned = 0;
    const hostile =
      '<script>window.__pwned++</script><img src=x onerror="window.__pwned++"> ' +
      '[link](javascript:window.__pwned++) <svg onload="window.__pwned++"></svg>\n\n```html\n<script>window.__pwned++</script>\n```';
    const list = document.createElement('div');
    document.querySelector('#main').append(list);
    const view = new Conversation(list, document.querySelector('#main')).addAssistant();
    view.appendReasoning(hostile);
    view.appendContent(hostile);
    view.finish({ completion_tokens: 2, completion_tokens_details: { reasoning_tokens: 1 }, decode_tokens_per_second: 1, prefill_tokens_per_second: 1 }, 'stop');
    await new Promise((r) => setTimeout(r, 500));
    return {
      pwned: window.__pwned,
      elements: [...list.querySelectorAll('script, img, svg, iframe, [onerror], [onload], a[href^="javascript"]')].length,
      answer: list.querySelector('.answer').textContent,
      reasoning: list.querySelector('.reasoning').textContent,
    };
  });
  assert.equal(result.pwned, 0);
  assert.equal(result.elements, 0);
  assert.ok(result.reasoning.includes('<script>window.__pwned++</script><img src=x onerror="window.__pwned++">'));
  assert.ok(result.answer.includes('<img src=x onerror="window.__pwned++">'));
  assert.ok(result.answer.includes('[link](javascript:window.__pwned++)'));
  assert.deepEqual(errors, []);
  await context.close();
});

test('a download that fails says so and offers to try again', { skip }, async () => {
  const allow = (m) => m.location().url.includes('/models/absent.gguf');
  const { page, context, errors } = await openPage(browser, { allow });
  await page.fill('#url-input', '/models/absent.gguf');
  await page.click('#url-form button');
  await page.waitForSelector('#notice:not([hidden])', { timeout: 60_000 });
  assert.equal(await page.textContent('#notice h2'), 'The download failed');
  assert.match(await page.textContent('#notice .actions'), /Try again/);
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Try again', 'focus moves to the first action');
  assert.deepEqual(errors, []);
  await context.close();
});

test('keyboard: Tab reaches the controls in reading order; Esc cancels a load', { skip }, async () => {
  const { page, context, errors } = await openPage(browser);
  const order = [];
  for (let i = 0; i < 14; i++) {
    await page.keyboard.press('Tab');
    order.push(await page.evaluate(() => {
      const e = document.activeElement;
      return e.id || e.getAttribute('aria-label') || e.className || e.tagName;
    }));
  }
  const expected = ['skip', 'webr1 home', 'open-settings', 'Load DeepSeek-R1-Distill-Qwen-1.5B', 'Load DeepSeek-R1-Distill-Qwen-7B',
    'Load DeepSeek-R1-Distill-Llama-8B', 'Load DeepSeek-R1-Distill-Qwen-14B', 'url-input', 'file-input'];
  const at = expected.map((name) => order.indexOf(name));
  assert.ok(at.every((i, k) => i >= 0 && (k === 0 || i > at[k - 1])), `Tab order: ${order.join(' → ')}`);

  await page.focus('#url-input');
  await page.keyboard.type('/models/smol135.gguf');
  await page.keyboard.press('Enter');
  await page.waitForSelector('html[data-view="loading"]');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'cancel-load', 'focus moves to Cancel');
  await page.keyboard.press('Escape');
  await page.waitForSelector('html[data-view="picker"]', { timeout: 30_000 });
  assert.equal(await page.isHidden('#notice'), true, 'a cancelled load is not an error');
  assert.equal(await page.isHidden('#model-chip'), true);
  assert.deepEqual(errors, []);
  await context.close();
});

test('chat: load by URL, streamed reasoning then answer, Stop (Esc), more turns, new chat; screenshots', { skip }, async () => {
  const { page, context, errors } = await openPage(browser);
  // Few tokens: SwiftShader is slow. The budget closes the reasoning after 6 tokens; then a short answer.
  await setSettings(page, { temperature: 0, max_tokens: 16, thinking_budget: 6 });
  const t0 = Date.now();
  await loadByUrl(page, '/models/smol135-think.gguf');
  const loadSeconds = (Date.now() - t0) / 1000;
  console.log(`site chat: loaded in ${loadSeconds.toFixed(1)} s`);
  const status = await page.textContent('#status');
  assert.match(status, /f32 path/, status);
  assert.match(status, /on the GPU/, status);
  assert.equal(await page.textContent('#model-chip'), 'smol135-think.gguf');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'prompt', 'the message box has focus once the model is ready');

  // Turn 1: count the updates of the reasoning text and the answer as they stream.
  await page.evaluate(() => {
    window.__updates = { reasoning: 0, answer: 0 };
    new MutationObserver((records) => {
      for (const r of records) {
        const el = r.target.nodeType === 3 ? r.target.parentElement : r.target;
        if (el?.closest?.('.reasoning')) window.__updates.reasoning++;
        else if (el?.closest?.('.answer')) window.__updates.answer++;
      }
    }).observe(document.querySelector('#messages'), { subtree: true, childList: true, characterData: true });
  });
  const t1 = Date.now();
  const first = await ask(page, 'What is 2 + 2?');
  await page.waitForSelector('html[data-generating="true"]');
  assert.equal(await page.isVisible('#stop'), true, 'Stop shows while generating');
  await idle(page);
  const turnSeconds = (Date.now() - t1) / 1000;
  console.log(`site chat: first turn ${turnSeconds.toFixed(1)} s: ${await first.locator('.stats').textContent()}`);
  const reasoning = await first.locator('.reasoning').textContent();
  const answer = await first.locator('.answer').textContent();
  const updates = await page.evaluate(() => window.__updates);
  assert.ok(reasoning.trim().length > 0, 'the Thinking panel holds the model reasoning');
  assert.ok(answer.trim().length > 0, 'an answer follows the reasoning');
  assert.ok(updates.reasoning >= 2, `the reasoning streamed in pieces (${updates.reasoning} updates)`);
  assert.match(await first.locator('.thinking summary').textContent(), /^Thought for \d+ s$/);
  assert.equal(await first.locator('.thinking').getAttribute('open'), null, 'the panel collapsed when the answer began');
  assert.match(await first.locator('.stats').textContent(), /\d+ tokens \(\d+ thinking\) · [\d.]+ tok\/s/);
  assert.equal(await first.locator('.copy').isVisible(), true);

  // Turn 2: a long answer, stopped with Esc once the first reasoning arrives.
  await setSettings(page, { max_tokens: 400, thinking_budget: 0 });
  const second = await ask(page, 'Count slowly from one to one hundred.');
  await second.locator('.reasoning').filter({ hasText: /\S/ }).waitFor({ timeout: 120_000 });
  const t2 = Date.now();
  await page.keyboard.press('Escape');
  await idle(page, 60_000);
  const stopSeconds = (Date.now() - t2) / 1000;
  console.log(`site chat: Stop took ${stopSeconds.toFixed(2)} s: ${await second.locator('.stats').textContent()}`);
  const stopped = await second.locator('.stats').textContent();
  assert.match(stopped, /^Stopped · (\d+) tokens/);
  assert.ok(Number(/(\d+) tokens/.exec(stopped)[1]) < 400, 'stopped well before max_tokens');
  // The engine stops between tokens: allow a few of them (SwiftShader on a busy machine can take seconds each).
  const tokenSeconds = 1 / Math.max(0.01, Number(/([\d.]+) tok\/s/.exec(stopped)?.[1] ?? 1));
  assert.ok(stopSeconds < Math.max(10, 3 * tokenSeconds + 2), `Stop took ${stopSeconds} s (${tokenSeconds.toFixed(1)} s a token)`);

  // Turn 3 works after the stop, with the two turns before it in the prompt.
  await setSettings(page, { max_tokens: 5, thinking_budget: 2 });
  const third = await ask(page, 'And 3 + 3?');
  await idle(page);
  // What a 135M model says in 5 tokens may be only white space, or it may end at once; that it generated and finished
  // on its own (end of generation or the token limit, not Stop) is the point.
  const thirdStats = await third.locator('.stats').textContent();
  assert.match(thirdStats, /^(Hit the token limit · )?\d+ tokens/, thirdStats); // not "Stopped"
  assert.equal(await page.locator('.msg.user').count(), 3);
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'prompt', 'focus returns to the message box');

  // The first answer's reasoning, opened again, is in the pictures.
  await first.locator('.thinking summary').click();
  assert.equal(await first.locator('.thinking').getAttribute('open'), '');
  for (const [name, viewport] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
    for (const scheme of ['light', 'dark']) {
      await page.setViewportSize(viewport);
      await page.emulateMedia({ colorScheme: scheme });
      await page.evaluate(() => (document.querySelector('#main').scrollTop = 0));
      await shot(page, `chat-${name}-${scheme}`);
    }
  }
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no horizontal scroll at 390 px');

  await page.click('#new-chat');
  assert.equal(await page.locator('.msg').count(), 0);
  assert.equal(await page.isVisible('#empty'), true);
  console.log(`site chat: load ${loadSeconds.toFixed(1)} s, first turn ${turnSeconds.toFixed(1)} s, Stop ${stopSeconds.toFixed(2)} s; ${await page.textContent('#status')}`);
  assert.deepEqual(errors, []);
  await context.close();
});

test('a local GGUF loads through the file picker, and another by drag and drop', { skip }, async () => {
  const { page, context, errors } = await openPage(browser);
  const requests = () => server.log.filter((r) => r.path === '/models/smol135.gguf').length;
  await page.setInputFiles('#file-input', SMOL);
  await page.waitForSelector('html[data-view="chat"]', { timeout: 180_000 });
  assert.equal(await page.textContent('#model-chip'), 'smol135.gguf');
  assert.equal(requests(), 0, 'no network request for a picked file');

  // Dropping files on the page: a file that is not a GGUF is refused with a word, a GGUF replaces the model.
  const drop = (name) =>
    page.evaluate(async (name) => {
      const bytes = name.endsWith('.gguf') ? await (await fetch('/models/smol135.gguf')).blob() : new Blob(['hello']);
      const data = new DataTransfer();
      data.items.add(new File([bytes], name));
      for (const type of ['dragenter', 'dragover', 'drop']) {
        window.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
      }
    }, name);
  await drop('notes.txt');
  assert.equal(await page.textContent('#notice h2'), 'Not a GGUF file');
  assert.equal(await page.isHidden('#drop-overlay'), true);
  await drop('dropped.gguf');
  await page.waitForFunction(() => document.querySelector('#model-chip').textContent === 'dropped.gguf' && document.documentElement.dataset.view === 'chat', null, { timeout: 180_000 });
  assert.equal(await page.isHidden('#notice'), true);
  assert.deepEqual(errors, []);
  await context.close();
});
