// `node --import tsx bench/outbox-commit.ts --baseline <tree>`: main-thread time per result of the
// outbox (its append commit plus its acknowledgement's commit) in the baseline tree's Outbox and
// in this one's, interleaved round by round so that load on a shared machine hits both alike.
// The fsync that this tree runs on libuv's pool is awaited between results but not counted: it
// is not main-thread time.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { createLogger } from '../src/shared/log.js';
import type { Outbox as OutboxType } from '../src/publish/outbox.js';

type OutboxLike = Pick<OutboxType, 'commit' | 'close'> & { sync?: () => Promise<void> };

const root = path.resolve(import.meta.dirname, '..');
const opts = new Command('outbox-commit')
  .requiredOption('--baseline <dir>', 'the other source tree')
  .option('--rounds <n>', 'rounds', (v) => Number(v), 6)
  .option('--results <n>', 'results per round', (v) => Number(v), 100)
  .parse()
  .opts<{ baseline: string; rounds: number; results: number }>();

const load = async (tree: string) =>
  ((await import(pathToFileURL(path.join(path.resolve(tree), 'src/publish/outbox.ts')).href)) as { Outbox: new (...args: unknown[]) => OutboxLike }).Outbox;
const sides = { baseline: await load(opts.baseline), this: await load(root) };
const log = createLogger('silent');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-outbox-commit-'));
const limits = { maxBytes: 1e9, maxAgeMs: 3.6e6 };
const entry = (i: number) => ({ kind: 'result' as const, messageId: `m${i}`, topic: 't/r', payload: Buffer.alloc(1500, 1), qos: 1 as const, retain: false, meta: { i }, createdAt: Date.now(), live: true });
const perResult: Record<keyof typeof sides, number[]> = { baseline: [], this: [] };
try {
  const boxes = { baseline: new sides.baseline(path.join(dir, 'a.sqlite'), limits, log), this: new sides.this(path.join(dir, 'b.sqlite'), limits, log) };
  for (let round = 0; round < opts.rounds; round++) {
    for (const side of round % 2 ? (['this', 'baseline'] as const) : (['baseline', 'this'] as const)) {
      const box = boxes[side];
      let ms = 0;
      for (let i = 0; i < opts.results; i++) {
        const t0 = performance.now();
        const [id] = box.commit([entry(i)], []);
        box.commit([], [id!]);
        ms += performance.now() - t0;
        await (box.sync?.() ?? new Promise((r) => setImmediate(r)));
      }
      perResult[side].push(ms / opts.results);
    }
  }
  for (const box of Object.values(boxes)) box.close();
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(
  `main-thread ms per result (append + acknowledgement commits), median of ${opts.rounds} interleaved rounds of ${opts.results}; load average ${os.loadavg()[0]!.toFixed(1)}\n` +
    `baseline ${median(perResult.baseline).toFixed(2)} (${perResult.baseline.map((x) => x.toFixed(2)).join(' ')})\n` +
    `this     ${median(perResult.this).toFixed(2)} (${perResult.this.map((x) => x.toFixed(2)).join(' ')})\n`,
);
