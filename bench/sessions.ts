// `node --import tsx bench/sessions.ts`: the bare runtime as model.sessions runs it. N onnxruntime
// sessions, each on its own worker thread (the daemon's WorkerSession and session options), run
// batches of the sample images back to back, side by side; the configurations (sessions x
// intra-op threads, spinning off as the daemon's default) take turns round by round, so that the
// machine's drift hits all alike. Prints images/s (all sessions together) and the time of one
// run, medians of the rounds.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { loadConfig } from '../src/config/load.js';
import { modelOptions, sessionOptions } from '../src/inference/model-options.js';
import { WorkerSession } from '../src/inference/ort-worker.js';
import { INPUT_NAME, MAP_OUTPUT, SCORE_OUTPUT } from '../src/inference/model-contract.js';
import { listImages, preprocessedImages } from './lib/runtime.js';
import { median } from './lib/stats.js';

const root = path.resolve(import.meta.dirname, '..');
const opts = new Command('sessions')
  .option('--model <file>', 'ONNX model (float input form)', path.join(root, 'models/demo/crad-demo.onnx'))
  .option('--images <dir>', 'images', path.join(root, 'samples'))
  .option('--configs <list>', 'sessions x intra-op threads (0 = one per core), "s" for spinning on', `1x${os.availableParallelism()},1x${os.availableParallelism()}s,2x1,2x${os.availableParallelism()}`)
  .option('--batch <n>', 'frames per run', (v) => Number(v), 1)
  .option('--seconds <n>', 'seconds per configuration and round', (v) => Number(v), 6)
  .option('--rounds <n>', 'rounds', (v) => Number(v), 3)
  .parse()
  .opts<{ model: string; images: string; configs: string; batch: number; seconds: number; rounds: number }>();

const size = 224;
const images = await preprocessedImages(listImages(opts.images), size, size);
const perImage = 3 * size * size;
const count = images.length / perImage;
const batches = Array.from({ length: count }, (_, i) => {
  const data = new Float32Array(opts.batch * perImage);
  for (let j = 0; j < opts.batch; j++) data.set(images.subarray(((i + j) % count) * perImage, ((i + j) % count + 1) * perImage), j * perImage);
  return new ort.Tensor('float32', data, [opts.batch, 3, size, size]);
});
const bytes = new Uint8Array(fs.readFileSync(opts.model));

const configs = opts.configs.split(',').map((c) => {
  const match = /^(\d+)x(\d+)(s?)$/.exec(c.trim());
  if (!match) throw new Error(`--configs: "${c}" is not <sessions>x<threads>[s]`);
  return { name: c.trim(), sessions: Number(match[1]), threads: Number(match[2]), spinning: match[3] === 's' };
});

/** All sessions of a configuration running back to back for `seconds`: images/s and run times. */
async function measure(config: (typeof configs)[number]): Promise<{ imagesPerSecond: number; runMs: number }> {
  // The daemon's own session options for these settings (the config's defaults otherwise).
  const model = { executionProviders: ['cpu'], intraOpThreads: config.threads, intraOpSpinning: config.spinning };
  const settings = { ...sessionOptions(modelOptions(loadConfig(undefined, { model }))), executionProviders: ['cpu'] };
  const sessions = await Promise.all(Array.from({ length: config.sessions }, () => WorkerSession.create(bytes, settings)));
  try {
    for (const session of sessions) for (let i = 0; i < 2; i++) await session.run({ [INPUT_NAME]: batches[0]! }, [MAP_OUTPUT, SCORE_OUTPUT]);
    const runMs: number[] = [];
    const started = performance.now();
    const until = started + opts.seconds * 1000;
    let runs = 0;
    await Promise.all(sessions.map(async (session, s) => {
      for (let i = s; performance.now() < until; i++) {
        const t0 = performance.now();
        await session.run({ [INPUT_NAME]: batches[i % batches.length]! }, [MAP_OUTPUT, SCORE_OUTPUT]);
        runMs.push(performance.now() - t0);
        runs++;
      }
    }));
    return { imagesPerSecond: (runs * opts.batch) / ((performance.now() - started) / 1000), runMs: median(runMs) };
  } finally {
    await Promise.all(sessions.map((session) => session.release()));
  }
}

const results = new Map(configs.map((c) => [c.name, [] as { imagesPerSecond: number; runMs: number }[]]));
for (let round = 0; round < opts.rounds; round++) {
  for (const config of round % 2 ? [...configs].reverse() : configs) {
    const r = await measure(config);
    results.get(config.name)!.push(r);
    process.stderr.write(`round ${round + 1} ${config.name}: ${r.imagesPerSecond.toFixed(1)} images/s, run ${r.runMs.toFixed(1)} ms\n`);
  }
}
const f = (x: number) => x.toFixed(1);
const lines = [
  `${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores; ${path.relative(root, opts.model)}, batch ${opts.batch}; ${opts.rounds} rounds of ${opts.seconds} s per configuration, taking turns`,
  '',
  '| sessions x intra-op threads | spinning | images/s, all sessions (median; range) | one run (ms, median) |',
  '| --- | --- | --- | --- |',
];
for (const config of configs) {
  const rs = results.get(config.name)!;
  const ips = rs.map((r) => r.imagesPerSecond);
  lines.push(`| ${config.sessions} x ${config.threads || 'default'} | ${config.spinning ? 'on' : 'off'} | ${f(median(ips))} (${f(Math.min(...ips))}-${f(Math.max(...ips))}) | ${f(median(rs.map((r) => r.runMs)))} |`);
}
process.stdout.write(lines.join('\n') + '\n');
