// Debian's Chromium through playwright-core, with WebGPU on (SwiftShader here: no shader-f16, no subgroups).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { PKG } from './pack.mjs';
import { modelsDir } from './server.mjs';

export const CHROMIUM = process.env.WEBR1_CHROMIUM || '/usr/bin/chromium';
export const inCi = process.env.CI === 'true';

const FLAGS = [
  '--no-sandbox',
  '--headless=new',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--enable-features=Vulkan',
];

export function haveChromium() {
  return fs.existsSync(CHROMIUM);
}

// Why test model `name` cannot be used (null when its file is there).
export function missingModel(name) {
  const file = path.join(modelsDir(), `${name}.gguf`);
  return fs.existsSync(file) ? null : `no test model ${file} (../shared/scripts/fetch-test-models.sh ${modelsDir()} ${name})`;
}

// Why the package cannot be run in Chromium here: no Chromium, pkg/ not built, or one of the test `models` missing
// (empty when everything is there).
export function missing(models = []) {
  const why = [];
  if (!haveChromium()) why.push(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  if (!fs.existsSync(path.join(PKG, 'webr1_bg.wasm'))) why.push('pkg/ is not built (scripts/build-web.sh)');
  for (const name of models) {
    const reason = missingModel(name);
    if (reason) why.push(reason);
  }
  return why;
}

// A browser context with a profile kept in `dir` (not an incognito one: its origin private file system is on disk,
// with modification times), WebGPU on.
export function launchPersistent(dir, { args = [] } = {}) {
  return chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, args: [...FLAGS, '--enable-unsafe-webgpu', ...args], headless: true });
}

// A browser with WebGPU (or without, for the webgpu.unavailable test), with `args` besides the usual flags.
export function launch({ webgpu = true, args = [] } = {}) {
  const all = webgpu ? [...FLAGS, '--enable-unsafe-webgpu', ...args] : [...FLAGS, ...args];
  return chromium.launch({ executablePath: CHROMIUM, args: all, headless: true });
}
