#!/usr/bin/env node
// An installed package runs the compiled dist/. A git checkout (src/ beside bin/, tsx installed as a
// dev dependency) runs the sources through tsx: it needs no build step after `npm install` and never
// runs a stale build.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const compiled = new URL('../dist/cli/main.js', import.meta.url);

async function entry() {
  if (existsSync(source)) {
    try {
      const { register } = await import('tsx/esm/api');
      register();
      return source;
    } catch {
      // No tsx (installed without dev dependencies): use a build if there is one.
    }
  }
  if (existsSync(compiled)) return compiled;
  console.error('livestick: dist/ is missing and tsx is not installed: run `npm install` (or `npm run build`) first');
  process.exit(1);
}

const { main } = await import((await entry()).href);
await main(process.argv);
