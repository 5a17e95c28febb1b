// webr1 as a user gets it: pkg/ packed with `npm pack` and installed from the tarball into a fresh project.

import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PKG = path.join(ROOT, 'pkg');

// Packs pkg/ into `dir` and installs the tarball into a new project `dir/app` (package.json only). Returns the app's path.
export function installPacked(dir) {
  const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: PKG, encoding: 'utf8' }).trim().split('\n').pop();
  const app = path.join(dir, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', path.join(dir, tarball)], { cwd: app, stdio: 'pipe' });
  return app;
}
