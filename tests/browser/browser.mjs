// Debian's Chromium through playwright-core, with WebGPU on (SwiftShader here: no shader-f16, no subgroups).

import { chromium } from 'playwright-core';
import fs from 'node:fs';

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

// A browser with WebGPU (or without, for the webgpu.unavailable test).
export function launch({ webgpu = true } = {}) {
  const args = webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS;
  return chromium.launch({ executablePath: CHROMIUM, args, headless: true });
}
