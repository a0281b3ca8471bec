#!/usr/bin/env node
// Runs the compiled daemon (npm run build, done by scripts/setup.sh).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Each live camera keeps one libuv worker busy waiting for its next frame (OpenCV readAsync), and
// file I/O and DNS share those workers: the default of 4 is too few for a multi-camera line. It
// must be set before the pool's first use, so here, before anything else loads.
process.env.UV_THREADPOOL_SIZE ??= '16';

const main = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('crad-edge: not built yet. Run scripts/setup.sh (or npm run build) first.');
  process.exit(1);
}
await import(main.href);
