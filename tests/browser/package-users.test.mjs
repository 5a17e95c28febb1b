// webr1 as its users consume it: the packed package installed into a fresh project (pack.mjs), type-checked by
// TypeScript users (app/usage.ts must pass `tsc --noEmit`, app/type-errors.ts must fail on each marked line, and so
// must the ```js examples of README.md and pkg/README.md, checked as JavaScript) and built
// by Vite users (app/index.html + app/main.js: the built app must find the wasm and the worker and answer in Chromium).
// TypeScript and Vite are this folder's pinned devDependencies. Without them, Chromium, a built pkg/ or the smol135
// model the tests skip, except under CI=true, where they fail.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { serve } from './server.mjs';
import { installPacked, ROOT } from './pack.mjs';
import { launch, inCi, missing } from './browser.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const APP = path.join(HERE, 'app');
const TSC = path.join(HERE, 'node_modules/.bin/tsc');
const VITE = path.join(HERE, 'node_modules/.bin/vite');

function skipUnless(why) {
  if (why.length > 0 && inCi) throw new Error(`package user tests cannot run under CI=true: ${why.join('; ')}`);
  return why.length > 0 ? `SKIP: ${why.join('; ')}` : false;
}

const noTools = [TSC, VITE].filter((f) => !fs.existsSync(f)).map((f) => `no ${path.basename(f)} in tests/browser/node_modules (npm ci there)`);
const skipTypes = skipUnless(noTools);
const skipVite = skipUnless([
  ...noTools,
  ...missing(['smol135']),
]);

let dir;
let app;

before(() => {
  if (skipTypes && skipVite) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webr1-users-'));
  app = installPacked(dir);
  for (const f of fs.readdirSync(APP)) fs.copyFileSync(path.join(APP, f), path.join(app, f));
});

after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

// Runs a tool in the app's folder; returns its exit status, output and time.
function run(tool, args) {
  const started = Date.now();
  const r = spawnSync(tool, args, { cwd: app, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}`, ms: Date.now() - started };
}

test('TypeScript: a usage example type-checks against the installed package (tsc --noEmit, strict)', { skip: skipTypes, timeout: 120_000 }, () => {
  const installedTypes = path.join(app, 'node_modules/webr1/index.d.ts');
  assert.ok(fs.existsSync(installedTypes), 'the tarball holds index.d.ts');
  const r = run(TSC, ['--noEmit', '-p', 'tsconfig.json', '--listFilesOnly']);
  assert.equal(r.status, 0, r.output);
  assert.ok(r.output.split('\n').some((f) => path.resolve(app, f.trim()) === installedTypes), `tsc reads the installed index.d.ts:\n${r.output}`);
  const check = run(TSC, ['--noEmit', '-p', 'tsconfig.json']);
  assert.equal(check.status, 0, `usage.ts does not type-check:\n${check.output}`);
  console.log(`tsc --noEmit on usage.ts: ${check.ms} ms (${run(TSC, ['--version']).output.trim()})`);
});

test('TypeScript: the declarations reject the mistakes a user can make, each on the line that makes it', { skip: skipTypes, timeout: 120_000 }, () => {
  fs.writeFileSync(path.join(app, 'tsconfig.errors.json'), JSON.stringify({ extends: './tsconfig.json', files: ['type-errors.ts'] }));
  const source = fs.readFileSync(path.join(app, 'type-errors.ts'), 'utf8').split('\n');
  const marked = source.flatMap((line, i) => (/^\s*[^/\s].*\/\/ error:/.test(line) ? [i + 1] : []));
  assert.ok(marked.length >= 5, 'type-errors.ts marks its mistakes');
  const r = run(TSC, ['--noEmit', '-p', 'tsconfig.errors.json']);
  assert.notEqual(r.status, 0, `tsc accepted type-errors.ts:\n${r.output}`);
  const failing = [...new Set([...r.output.matchAll(/^type-errors\.ts\((\d+),\d+\): error TS\d+/gm)].map((m) => Number(m[1])))];
  assert.deepEqual(failing.sort((a, b) => a - b), marked, `tsc errors on lines ${failing}, type-errors.ts marks ${marked}:\n${r.output}`);
  assert.doesNotMatch(r.output, /^(?!type-errors\.ts)\S+\(\d+,\d+\): error/m, `tsc found errors outside type-errors.ts:\n${r.output}`);
});

// The ```js blocks of the READMEs, in order, each with the line of the README its code starts on.
function readmeExamples() {
  const examples = [];
  for (const doc of ['README.md', 'pkg/README.md']) {
    const lines = fs.readFileSync(path.join(ROOT, doc), 'utf8').split('\n');
    let open = null;
    lines.forEach((line, i) => {
      if (open === null && line.trim() === '```js') open = i + 1;
      else if (open !== null && line.trim() === '```') {
        examples.push({ doc, line: open + 1, file: `readme-${examples.length}.js`, code: lines.slice(open, i).join('\n') });
        open = null;
      }
    });
  }
  return examples;
}

test('TypeScript: the JS examples of README.md and pkg/README.md type-check against the installed package', { skip: skipTypes, timeout: 120_000 }, () => {
  const examples = readmeExamples();
  assert.ok(examples.some((e) => e.doc === 'README.md') && examples.some((e) => e.doc === 'pkg/README.md'), 'both READMEs have a ```js example');
  for (const e of examples) fs.writeFileSync(path.join(app, e.file), `${e.code}\n`);
  // JavaScript checked as strictly as usage.ts; app/readme-globals.d.ts declares what the examples leave to the page.
  const files = ['readme-globals.d.ts', ...examples.map((e) => e.file)];
  fs.writeFileSync(path.join(app, 'tsconfig.readme.json'), JSON.stringify({ extends: './tsconfig.json', compilerOptions: { allowJs: true, checkJs: true }, files }));
  const r = run(TSC, ['--noEmit', '-p', 'tsconfig.readme.json']);
  const errors = [...r.output.matchAll(/^(readme-\d+\.js)\((\d+),(\d+)\): (error TS\d+: .*)$/gm)].map(([, file, line, column, message]) => {
    const e = examples.find((x) => x.file === file);
    return `${e.doc}:${e.line + Number(line) - 1}:${column}: ${message}`;
  });
  assert.equal(r.status, 0, `the READMEs' JS examples do not type-check:\n${errors.length > 0 ? errors.join('\n') : r.output}`);
  console.log(`tsc --noEmit on ${examples.length} README examples (${examples.map((e) => `${e.doc}:${e.line}`).join(', ')}): ${r.ms} ms`);
});

test('Vite: a built app finds the wasm and the worker and answers in Chromium (smol135 by URL, 4 greedy tokens)', { skip: skipVite, timeout: 600_000 }, async () => {
  const build = run(VITE, ['build']);
  assert.equal(build.status, 0, `vite build failed:\n${build.output}`);
  console.log(`vite build: ${build.ms} ms\n${build.output.trim()}`);
  const dist = path.join(app, 'dist');
  const assets = fs.readdirSync(path.join(dist, 'assets'));
  assert.ok(assets.some((f) => f.endsWith('.wasm')), `dist/assets holds the wasm: ${assets}`);

  const server = await serve({ '/': dist });
  const browser = await launch();
  try {
    const p = await browser.newPage();
    const workers = [];
    p.on('worker', (w) => workers.push(new URL(w.url()).pathname));
    p.on('pageerror', (e) => console.error('page error:', e.message));
    const started = Date.now();
    await p.goto(`${server.url}/index.html?model=/models/smol135.gguf`);
    await p.waitForFunction(() => ['done', 'failed'].includes(document.querySelector('#status').textContent), null, { timeout: 540_000, polling: 500 });
    const out = JSON.parse(await p.textContent('#result'));
    assert.equal(out.error, undefined, JSON.stringify(out.error));
    const text = out.choice.message.reasoning_content + out.choice.message.content;
    console.log(`Vite app answered in ${Date.now() - started} ms: ${JSON.stringify(text)} ${JSON.stringify(out.token_ids)}, decode ${out.usage.decode_tokens_per_second.toFixed(2)} tok/s`);
    assert.equal(out.architecture, 'llama');
    assert.equal(out.choice.finish_reason, 'length');
    assert.equal(out.usage.completion_tokens, 4);
    assert.equal(out.token_ids.length, 4);
    assert.ok(text.trim().length > 0, 'the answer has text');
    // The engine ran in a worker that Vite built, and the wasm came from dist/.
    const paths = server.log.map((r) => r.path);
    assert.ok(workers.length === 1 && workers[0].startsWith('/assets/') && fs.existsSync(path.join(dist, workers[0])), `one worker from dist/assets: ${workers}`);
    assert.ok(paths.some((f) => f.startsWith('/assets/') && f.endsWith('.wasm')), `the wasm was fetched from dist/assets: ${paths}`);
    await p.close();
  } finally {
    await browser.close();
    await server.close();
  }
});
