// Measures the Sparkplug history store (src/sparkplug/history.ts) on this machine's disk and prints
// the figures the README quotes: rows appended per second while the plane is down (one fsync each,
// synchronous=FULL), rows read and deleted per second in replay windows, bytes per row.
// Run: node --import tsx test/helpers/sparkplug-history-bench.ts [rows]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { History } from '../../src/sparkplug/history.js';
import { createLogger } from '../../src/shared/log.js';

const rows = Number(process.argv[2] ?? 2000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spb-history-bench-'));
try {
  const file = path.join(dir, 'history.sqlite');
  const history = new History(file, 1_000_000, createLogger('silent'));
  const values = {
    'Inspection/Raw Score': 0.123456, 'Inspection/Normalized Score': 0.5, 'Inspection/Verdict': 'OK', 'Inspection/Region Count': 0,
    'Inspection/Latency Ms': 12.345, 'Inspection/Trigger Id': 'spb-abc-1', 'Counters/OK': 123456, 'Counters/NG': 12,
  };
  let t = performance.now();
  for (let i = 0; i < rows; i++) history.append('cam1', Date.now(), values);
  const appendMs = performance.now() - t;
  history.close();
  const bytes = fs.statSync(file).size;
  const reopened = new History(file, 1_000_000, createLogger('silent'));
  t = performance.now();
  for (let batch = reopened.oldest('cam1', 250); batch.length > 0; batch = reopened.oldest('cam1', 250)) reopened.remove(batch.map((r) => r.id));
  const drainMs = performance.now() - t;
  reopened.close();
  console.log(`append: ${rows} rows in ${appendMs.toFixed(0)} ms = ${Math.round((rows / appendMs) * 1000)} rows/s (${(appendMs / rows).toFixed(2)} ms each, blocking)`);
  console.log(`read + delete in windows of 250: ${Math.round((rows / drainMs) * 1000)} rows/s`);
  console.log(`file: ${bytes} bytes = ${Math.round(bytes / rows)} bytes a row`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
