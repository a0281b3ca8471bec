#!/usr/bin/env node
// Runs the compiled daemon (npm run build, done by scripts/setup.sh).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('crad-edge: not built yet. Run scripts/setup.sh (or npm run build) first.');
  process.exit(1);
}
await import(main.href);
