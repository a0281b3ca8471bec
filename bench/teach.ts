// On-device training, measured (#27; `npm run bench:teach`): a real class from ../shared/data
// (Magnetic Tile: free images as the good set, its defects as the check), the real daemon
// inspecting a folder camera at its normal rate the whole time, a real mosquitto, and MQTT only:
//   1. inspection alone for --baseline seconds: frames/s and capture-to-publish p50/p99;
//   2. train/start -> ready (the daemon's `crad teach`, the trainer's defaults unless given)
//      while the camera goes on: frames/s and p50/p99 during training;
//   3. the shadow check (the candidate beside the serving model): frames/s and p50/p99 again;
//      train/promote -> the first result carrying the candidate's hash: time from "train" to "serving";
//   4. the candidate on held-out free images and the defects (`crad-edge infer`): image AUROC.
// Figures print as markdown and go to .work/bench/teach-<time>.json. Long (minutes): run it niced.
import { execFileSync } from 'node:child_process';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { Mosquitto } from '../test/helpers/mosquitto.js';
import { describeMachine } from './lib/machine.js';
import { percentile } from './lib/stats.js';

const root = path.resolve(import.meta.dirname, '..');
const { values: args } = parseArgs({
  options: {
    data: { type: 'string', default: process.env.CRAD_SHARED_DATA ?? path.resolve(root, '../shared/data') },
    every: { type: 'string', default: '5' },
    fps: { type: 'string', default: '5' },
    baseline: { type: 'string', default: '60' },
    backbone: { type: 'string', default: 'mobilenet-v2' },
    epochs: { type: 'string', default: '0' },
    'input-size': { type: 'string', default: '0' },
    threads: { type: 'string', default: '1' },
    nice: { type: 'string', default: '10' },
    'shadow-frames': { type: 'string', default: '150' },
    'shadow-share': { type: 'string', default: '0.25' },
    defects: { type: 'string', default: '20' },
    python: { type: 'string', default: process.env.CRAD_PYTHON ?? '/usr/bin/python3' },
    out: { type: 'string', default: path.join(root, '.work/bench') },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log('npm run bench:teach -- [--every 5] [--fps 5] [--baseline 60] [--backbone mobilenet-v2] [--epochs 0 (trainer default)] [--input-size 0] [--threads 1] [--nice 10] [--shadow-frames 150] [--shadow-share 0.25] [--defects 20]');
  process.exit(0);
}
const num = (name: keyof typeof args) => Number(args[name]);

interface Window {
  frames: number;
  seconds: number;
  totals: number[];
}
const windowFigures = (w: Window) => {
  const sorted = [...w.totals].sort((a, b) => a - b);
  return { framesPerSecond: w.frames / w.seconds, p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), frames: w.frames, seconds: w.seconds };
};

function auroc(good: number[], bad: number[]): number {
  let wins = 0;
  for (const b of bad) for (const g of good) wins += b > g ? 1 : b === g ? 0.5 : 0;
  return wins / (good.length * bad.length);
}

async function main(): Promise<void> {
  const tile = path.join(args.data!, 'magnetic-tile');
  const jpgs = (kind: string) => fs.readdirSync(path.join(tile, kind, 'Imgs')).filter((f) => f.endsWith('.jpg')).sort().map((f) => path.join(tile, kind, 'Imgs', f));
  const free = jpgs('MT_Free');
  const every = num('every');
  // Every Nth free image trains (the good set the line recorded); the next one of each N is the line and the check.
  const goodSet = free.filter((_, i) => i % every === 0);
  const heldOut = free.filter((_, i) => i % every === Math.floor(every / 2));
  const defects = ['MT_Blowhole', 'MT_Break', 'MT_Crack', 'MT_Fray', 'MT_Uneven'].flatMap((kind) => jpgs(kind).slice(0, num('defects')));

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-teach-'));
  const good = path.join(work, 'dataset', 'cam1', 'train', 'good');
  fs.mkdirSync(good, { recursive: true });
  for (const file of goodSet) fs.copyFileSync(file, path.join(good, path.basename(file)));
  const line = path.join(work, 'line');
  fs.mkdirSync(line);
  for (const file of heldOut) fs.copyFileSync(file, path.join(line, path.basename(file)));
  const models = path.join(work, 'models');
  fs.mkdirSync(models);
  fs.copyFileSync(path.join(root, 'models/demo/crad-demo.onnx'), path.join(models, 'serving.onnx'));

  const broker = await Mosquitto.start();
  const training: Record<string, unknown> = { python: args.python, threads: num('threads'), nice: num('nice'), backbone: args.backbone, shadowShare: num('shadow-share'), shadowFrames: num('shadow-frames') };
  if (num('epochs') > 0) training.epochs = num('epochs');
  if (num('input-size') > 0) training.inputSize = num('input-size');
  const config = {
    device: { id: 'bench-teach' },
    mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, topicPrefix: 'crad' },
    model: { path: path.join(models, 'serving.onnx'), modelsDir: models },
    cameras: [{ id: 'cam1', source: 'folder', path: line, loop: true, fps: num('fps') }],
    crops: { enabled: false },
    outbox: { path: path.join(work, 'outbox.sqlite') },
    service: { stateDir: work },
    training,
  };
  fs.writeFileSync(path.join(work, 'config.json'), JSON.stringify(config));
  const daemon = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), 'run', '--config', path.join(work, 'config.json')], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
  let daemonErr = '';
  daemon.stderr.on('data', (d: Buffer) => (daemonErr = (daemonErr + d.toString()).slice(-4000)));

  const prefix = 'crad/bench-teach';
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`);
  await client.subscribeAsync([`${prefix}/cam1/result`, `${prefix}/train/#`]);
  let window: Window | null = null;
  let run: any = null;
  let lastHash = '';
  const answers: any[] = [];
  client.on('message', (topic, payload) => {
    const json = JSON.parse(payload.toString());
    if (topic.endsWith('/result')) {
      lastHash = json.model?.hash ?? lastHash;
      if (window) {
        window.frames++;
        window.totals.push(json.latencyMs.total);
      }
    } else if (topic.endsWith('/train/progress')) run = json;
    else if (topic.endsWith('/train/response')) answers.push(json);
  });
  const until = async (what: string, predicate: () => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline || daemon.exitCode !== null) throw new Error(`${what}: not within ${timeoutMs / 1000} s\n${daemonErr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const measure = async (seconds: number | null, done?: () => boolean) => {
    window = { frames: 0, seconds: 0, totals: [] };
    const t0 = performance.now();
    await until('the window', () => (done ? done() : performance.now() - t0 >= seconds! * 1000), 4 * 3600_000);
    window.seconds = (performance.now() - t0) / 1000;
    const figures = windowFigures(window);
    window = null;
    return figures;
  };

  try {
    await until('the first result', () => lastHash !== '', 120_000);
    const servingHash = lastHash;
    await new Promise((resolve) => setTimeout(resolve, 10_000)); // warm-up
    console.error(`baseline: ${args.baseline} s of inspection alone at ${args.fps} fps`);
    const baseline = await measure(num('baseline'));
    console.error(`training on ${goodSet.length} free images (${args.backbone}), the camera still at ${args.fps} fps`);
    const t0 = performance.now();
    client.publish(`${prefix}/train/start`, JSON.stringify({ cameraId: 'cam1', transaction: 'bench-start' }));
    const during = await measure(null, () => ['shadow', 'ready', 'failed'].includes(run?.state));
    const trainedS = (performance.now() - t0) / 1000;
    if (run.state === 'failed') throw new Error(`the run failed: ${run.error}`);
    // The shadow check: the candidate scores a share of the frames beside the serving model.
    const shadow = await measure(null, () => ['ready', 'failed'].includes(run?.state));
    const readyS = (performance.now() - t0) / 1000;
    client.publish(`${prefix}/train/promote`, JSON.stringify({ transaction: 'bench-promote' }));
    const candidate = run.candidate;
    await until('a result from the promoted model', () => lastHash === candidate.sha256, 600_000);
    const servingS = (performance.now() - t0) / 1000;
    const promoted = answers.find((a) => a.transaction === 'bench-promote');
    const file = promoted?.models?.[0] ? path.join(models, `teach-${run.id}.onnx`) : null;
    // The candidate on held-out free images and the defects, the daemon's way.
    const check = path.join(work, 'check');
    fs.mkdirSync(check);
    heldOut.forEach((f, i) => fs.copyFileSync(f, path.join(check, `good-${i}.jpg`)));
    defects.forEach((f, i) => fs.copyFileSync(f, path.join(check, `defect-${i}.jpg`)));
    const lines = execFileSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), 'infer', check, '--model', file!, '--json'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 })
      .trim().split('\n').map((l) => JSON.parse(l) as { file: string; raw: number; verdict: string | null });
    const scores = (prefix: string) => lines.filter((l) => path.basename(l.file).startsWith(prefix)).map((l) => l.raw);
    const goodVerdicts = lines.filter((l) => path.basename(l.file).startsWith('good-'));
    const badVerdicts = lines.filter((l) => path.basename(l.file).startsWith('defect-'));
    const report = {
      machine: describeMachine(root, args.python!),
      command: `npm run bench:teach -- ${process.argv.slice(2).join(' ')}`.trim(),
      data: { good: goodSet.length, lineAndCheckGood: heldOut.length, defects: defects.length },
      settings: { fps: num('fps'), threads: num('threads'), nice: num('nice'), backbone: args.backbone, epochs: num('epochs') || 'trainer default' },
      baseline, during, shadow, ratio: during.framesPerSecond / baseline.framesPerSecond,
      seconds: { trainToCandidate: trainedS, trainToReady: readyS, trainToServing: servingS },
      candidate: {
        sha256: candidate.sha256, figures: candidate.figures, shadow: { ...run.shadow, examples: run.shadow?.examples?.length ?? 0 },
        imageAuroc: auroc(scores('good-'), scores('defect-')),
        goodNg: goodVerdicts.filter((l) => l.verdict === 'NG').length, defectsNg: badVerdicts.filter((l) => l.verdict === 'NG').length,
      },
      servingHashBefore: servingHash,
    };
    fs.mkdirSync(args.out!, { recursive: true });
    const out = path.join(args.out!, `teach-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(out, JSON.stringify(report, null, 1));
    const f1 = (x: number) => x.toFixed(1);
    console.log(`| | frames/s | p50 ms | p99 ms |\n|---|---|---|---|\n| inspection alone | ${f1(baseline.framesPerSecond)} | ${f1(baseline.p50Ms)} | ${f1(baseline.p99Ms)} |\n| while training | ${f1(during.framesPerSecond)} | ${f1(during.p50Ms)} | ${f1(during.p99Ms)} |\n| shadow check (share ${args['shadow-share']}) | ${f1(shadow.framesPerSecond)} | ${f1(shadow.p50Ms)} | ${f1(shadow.p99Ms)} |`);
    console.log(`\nthroughput during training / alone: ${report.ratio.toFixed(2)}; train -> candidate ${f1(trainedS)} s, -> ready (shadow) ${f1(readyS)} s, -> serving ${f1(servingS)} s`);
    console.log(`candidate: image AUROC ${report.candidate.imageAuroc.toFixed(3)} on ${heldOut.length} good + ${defects.length} defective; NG: ${report.candidate.goodNg}/${heldOut.length} good, ${report.candidate.defectsNg}/${defects.length} defects`);
    console.log(`report: ${out}`);
  } finally {
    await client.endAsync();
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon.once('exit', resolve));
    await broker.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
