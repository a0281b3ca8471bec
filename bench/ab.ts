// `npm run bench:ab -- --baseline <tree> [--tree <tree>]`: part b's daemon runs of two source trees (a baseline
// checkout, e.g. `git worktree add` / `git archive` of main, and this one), interleaved round by
// round (A B, then B A, ...), so that a shared or drifting machine slows both sides alike. Prints,
// per row, the medians over rounds of the drift-free figures (model busy, own ms per frame) and of
// the rest, with the machine's load (1-min load average, other processes' CPU) of every round.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { Mosquitto } from '../test/helpers/mosquitto.js';
import { gstreamerCamera, modelBusy, ownMsPerFrame, runDaemon, type DaemonRunResult } from './lib/daemon.js';
import { median } from './lib/stats.js';

const root = path.resolve(import.meta.dirname, '..');
const f = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

interface Row {
  name: string;
  cameras: number;
  fps: number;
  overrides?: Record<string, Record<string, unknown>>;
  /** Live cameras instead of folder ones. */
  cameraConfigs?: Record<string, unknown>[];
}

async function main(): Promise<void> {
  const opts = new Command('bench:ab')
    .requiredOption('--baseline <dir>', 'the other source tree (A)')
    .option('--tree <dir>', 'the source tree under test (B); a snapshot keeps edits here out of the runs', root)
    .option('--rows <list>', 'rows: <cameras> or <cameras>@<fps> (folder cameras), or gst[@<fps>] (one GStreamer videotestsrc camera, by default as fast as it renders)', '1,4,1@20')
    .option('--rounds <n>', 'rounds (each runs A and B once per row)', (v) => Number(v), 3)
    .option('--seconds <n>', 'measured seconds per run', (v) => Number(v), 10)
    .option('--warmup <n>', 'seconds before measuring', (v) => Number(v), 3)
    .option('--set <json>', 'config overrides for B only (e.g. a new setting under test)', '')
    .option('--out <file>', 'JSON of every run', path.join(root, '.work/bench', `ab-${Date.now()}.json`))
    .parse()
    .opts<{ baseline: string; tree: string; rows: string; rounds: number; seconds: number; warmup: number; set: string; out: string }>();
  const trees = { A: path.resolve(opts.baseline), B: path.resolve(opts.tree) };
  const rows: Row[] = opts.rows.split(',').map((r) => {
    const [what, rate] = r.split('@');
    const fps = Number(rate ?? 0);
    if (what === 'gst') return { name: fps ? `1 GStreamer camera at ${fps} fps` : '1 GStreamer camera at full rate', cameras: 1, fps: 0, cameraConfigs: [gstreamerCamera(fps || undefined)] };
    return { name: fps ? `${what} camera(s) at ${fps} fps` : `${what} camera(s) unthrottled`, cameras: Number(what), fps };
  });
  const extraB = opts.set ? (JSON.parse(opts.set) as Record<string, Record<string, unknown>>) : undefined;
  const broker = await Mosquitto.start();
  const brokerPid = (broker as unknown as { process: { pid?: number } | null }).process?.pid ?? 0;
  const runs: { round: number; row: string; side: 'A' | 'B'; load1: number; result: DaemonRunResult }[] = [];
  try {
    for (let round = 0; round < opts.rounds; round++) {
      for (const row of rows) {
        for (const side of round % 2 === 0 ? (['A', 'B'] as const) : (['B', 'A'] as const)) {
          const load1 = os.loadavg()[0]!;
          const result = await runDaemon({
            root: trees[side], modelPath: path.join(root, 'models/demo/crad-demo.onnx'), imagesDir: path.join(root, 'samples'), brokerUrl: broker.url,
            cameras: row.cameras, cameraFps: row.fps, warmupSeconds: opts.warmup, seconds: opts.seconds, brokerPid,
            overrides: side === 'B' ? extraB : undefined, cameraConfigs: row.cameraConfigs,
          });
          runs.push({ round, row: row.name, side, load1, result });
          process.stderr.write(`[ab] round ${round + 1} ${row.name} ${side}: ${f(result.framesPerSecond)} frames/s, busy ${f(modelBusy(result) * 100, 0)} %, own ${f(ownMsPerFrame(result), 2)} ms/frame, p99 ${f(result.captureToPublishMs.p99)} ms, load ${f(load1, 1)}, other ${f(result.otherLoadPercent, 0)} %\n`);
        }
      }
    }
  } finally {
    await broker.dispose();
  }
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(opts.out, JSON.stringify({ trees, opts, runs }, null, 1) + '\n');
  const out = [
    `A = ${trees.A}, B = ${trees.B}${extraB ? ` with ${opts.set}` : ''}; ${opts.rounds} interleaved rounds of ${opts.seconds} s; medians over rounds`,
    '',
    '| row | side | frames/s | model busy % | own ms per frame | pre / infer / post / publish (ms) | publish p99 (ms) | p50 / p99 capture-to-publish (ms) | load avg 1 min | other load % |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const row of rows) {
    for (const side of ['A', 'B'] as const) {
      const mine = runs.filter((r) => r.row === row.name && r.side === side);
      const m = (g: (r: DaemonRunResult) => number) => median(mine.map((r) => g(r.result)));
      out.push(`| ${row.name} | ${side} | ${f(m((r) => r.framesPerSecond))} | ${f(m((r) => modelBusy(r) * 100), 0)} | ${f(m(ownMsPerFrame), 2)} | ${f(m((r) => r.stagesMs.preprocess))} / ${f(m((r) => r.stagesMs.inference))} / ${f(m((r) => r.stagesMs.postprocess))} / ${f(m((r) => r.stagesMs.publish ?? Number.NaN))} | ${f(m((r) => r.publishMs?.p99 ?? Number.NaN))} | ${f(m((r) => r.captureToPublishMs.p50))} / ${f(m((r) => r.captureToPublishMs.p99))} | ${f(median(mine.map((r) => r.load1)))} | ${f(m((r) => r.otherLoadPercent), 0)} |`);
    }
  }
  process.stdout.write(out.join('\n') + `\nJSON: ${path.relative(process.cwd(), opts.out)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench:ab: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
