// `npm run soak -- --minutes N`: the daemon at full rate for N minutes, to see whether memory grows
// with frames (an OpenCV Mat or onnxruntime tensor that is never released shows here long before
// a line PC runs out of memory).
//
// Two cameras: the sample folder read as fast as images decode, and a GStreamer videotestsrc at
// 30 fps (the VideoCapture path), both into the demo model, crops and overlays for every frame,
// results to a real mosquitto started here. The daemon runs in this process so that V8's own
// figures can be read: every 10 s a full GC (with --expose-gc, which the npm script passes), then
// process.memoryUsage() and the daemon's counters. One line per minute; at the end the
// least-squares slope of each figure in MB/min over everything after the warm-up minute.
// --viewer turns the operator console on and keeps one live-view viewer (its event stream, overlay on)
// connected for the whole run: the console's memory must stay flat while someone watches.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { loadConfig } from '../src/config/load.js';
import { Daemon } from '../src/service/daemon.js';
import { createLogger } from '../src/shared/log.js';
import { freePort, Mosquitto } from '../test/helpers/mosquitto.js';
import { slope } from './lib/stats.js';
import { connectLiveViewer, type LiveViewer } from './lib/viewer.js';

const root = path.resolve(import.meta.dirname, '..');
const SAMPLE_EVERY_MS = 10_000;
const WARMUP_MS = 60_000;
const MB = 2 ** 20;

const GSTREAMER_TEST_PIPELINE =
  'videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! appsink max-buffers=1 drop=true';

interface Sample {
  atMs: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  processed: number;
  dropped: number;
}

const program = new Command('soak')
  .description('run the daemon at full rate and report memory per minute and its growth (MB/min)')
  .option('--minutes <n>', 'how long to run (the first minute is warm-up)', '10')
  .option('--model <file>', 'ONNX model', path.join(root, 'models/demo/crad-demo.onnx'))
  .option('--images <dir>', 'folder the first camera reads', path.join(root, 'samples'))
  .option('--no-gstreamer', 'two folder cameras instead of folder + GStreamer videotestsrc')
  .option('--sessions <n>', 'model.sessions: onnxruntime sessions side by side', '1')
  .option('--ahead <nice>', 'the model on a worker with model.prepareAhead and model.daemonNice = nice (0: not)', '0')
  .option('--viewer', 'console on, one live-view viewer (event stream, overlay on) connected to the first camera throughout')
  .parse();
const opts = program.opts<{ minutes: string; model: string; images: string; gstreamer: boolean; sessions: string; ahead: string; viewer?: boolean }>();
const minutes = Number(opts.minutes);
if (!Number.isFinite(minutes) || minutes < 2) {
  console.error(`--minutes must be a number >= 2 (one warm-up minute, then at least one measured), got "${opts.minutes}"`);
  process.exit(2);
}
for (const [what, file] of [['--model', opts.model], ['--images', opts.images]] as const) {
  if (!fs.existsSync(file)) {
    console.error(`${what} ${file}: no such file or directory`);
    process.exit(2);
  }
}
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) console.warn('no global gc (run with node --expose-gc, as `npm run soak` does): heap figures include garbage not yet collected');

const state = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-soak-'));
const broker = await Mosquitto.start();
const consolePort = opts.viewer ? await freePort() : undefined;
const config = loadConfig(undefined, {
  device: { id: 'soak' },
  log: { level: 'warn' },
  model: { path: path.resolve(opts.model), sessions: Number(opts.sessions), ...(Number(opts.ahead) > 0 ? { inferenceThread: 'worker', prepareAhead: true, daemonNice: Number(opts.ahead) } : {}) },
  cameras: [
    { id: 'folder', source: 'folder', path: path.resolve(opts.images), loop: true, fps: 0 },
    opts.gstreamer
      ? { id: 'gst', source: 'gstreamer', pipeline: GSTREAMER_TEST_PIPELINE }
      : { id: 'folder2', source: 'folder', path: path.resolve(opts.images), loop: true, fps: 0 },
  ],
  crops: { enabled: true, onlyNG: false },
  overlay: { enabled: true, onlyNG: false },
  mqtt: { url: broker.url, topicPrefix: 'soak' },
  outbox: { path: path.join(state, 'outbox.sqlite') },
  service: { stateDir: state },
  ...(consolePort ? { http: { enabled: true, host: '127.0.0.1', port: consolePort } } : {}),
});
const daemon = new Daemon({ config, log: createLogger('warn') });

const samples: Sample[] = [];
let startedAt = 0;
function sample(): Sample {
  gc?.();
  const memory = process.memoryUsage();
  const { pipeline } = daemon.stats();
  const s: Sample = {
    atMs: performance.now() - startedAt,
    rss: memory.rss / MB,
    heapUsed: memory.heapUsed / MB,
    external: memory.external / MB,
    arrayBuffers: memory.arrayBuffers / MB,
    processed: pipeline.processed,
    dropped: Object.values(pipeline.dropped).reduce((a, b) => a + b, 0),
  };
  samples.push(s);
  return s;
}

const columns = ['minute', 'rss MB', 'heap MB', 'external MB', 'arrayBuf MB', 'processed', 'fps', 'dropped'];
const row = (cells: (string | number)[]) => cells.map((c, i) => String(c).padStart(i === 0 ? 6 : 12)).join('');
const fixed = (n: number, digits = 1) => n.toFixed(digits);

let finished = false;
async function finish(reason: string): Promise<void> {
  if (finished) return;
  finished = true;
  clearInterval(timer);
  // The timer's last sample may be a moment old; one more only if it is not.
  const previous = samples.at(-1);
  const last = previous && performance.now() - startedAt - previous.atMs < 1000 ? previous : sample();
  const { pipeline, publisher } = daemon.stats();
  viewer?.close();
  await daemon.stop();
  await broker.dispose();
  fs.rmSync(state, { recursive: true, force: true });

  const measured = samples.filter((s) => s.atMs >= WARMUP_MS);
  const minutesOf = measured.map((s) => s.atMs / 60_000);
  console.log('');
  console.log(`${reason}: ${fixed(last.atMs / 60_000, 2)} min, ${last.processed} frames processed (${fixed(last.processed / (last.atMs / 1000))} fps), ` +
    `${last.dropped} replaced by newer frames before inference (latest-frame-wins), ${pipeline.failedBatches} failed batches, ` +
    `${publisher.publishedResults} results acknowledged by the broker, outbox ${publisher.outbox.pending} pending` +
    (viewer ? `; the live-view viewer received ${viewer.frames()} frames` : ''));
  if (measured.length < 2) {
    console.log('not enough samples after the warm-up minute for a slope');
    return;
  }
  console.log(`growth after the warm-up minute (least squares over ${measured.length} samples, ${fixed(minutesOf[0]!, 2)}-${fixed(minutesOf.at(-1)!, 2)} min):`);
  for (const key of ['rss', 'heapUsed', 'external', 'arrayBuffers'] as const) {
    const perMinute = slope(minutesOf, measured.map((s) => s[key]));
    const perKFrames = slope(measured.map((s) => s.processed / 1000), measured.map((s) => s[key]));
    console.log(`  ${key.padEnd(12)} ${fixed(perMinute, 3).padStart(8)} MB/min  ${fixed(perKFrames, 3).padStart(8)} MB per 1000 frames  (${fixed(measured[0]![key])} -> ${fixed(measured.at(-1)![key])} MB)`);
  }
}

await daemon.start();
const viewer: LiveViewer | undefined = consolePort
  ? await connectLiveViewer(`http://127.0.0.1:${consolePort}/api/cameras/folder/live?overlay=true`)
  : undefined;
startedAt = performance.now();
console.log(`soak: ${minutes} min, cameras ${config.cameras.map((c) => `${c.id} (${c.source})`).join(' + ')}, model ${path.relative(root, config.model.path)}, pid ${process.pid}` +
  (viewer ? `, console on port ${consolePort} with one live-view viewer` : ''));
console.log(row(columns));
let lastMinute = { atMs: 0, processed: 0 };
const timer = setInterval(() => {
  const s = sample();
  const minute = Math.round(s.atMs / 60_000);
  if (Math.abs(s.atMs - minute * 60_000) < SAMPLE_EVERY_MS / 2 && minute > 0) {
    const fps = (s.processed - lastMinute.processed) / ((s.atMs - lastMinute.atMs) / 1000);
    console.log(row([minute, fixed(s.rss), fixed(s.heapUsed), fixed(s.external), fixed(s.arrayBuffers), s.processed, fixed(fps), s.dropped]));
    lastMinute = { atMs: s.atMs, processed: s.processed };
  }
  if (s.atMs >= minutes * 60_000 - SAMPLE_EVERY_MS / 2) void finish('done');
}, SAMPLE_EVERY_MS);
sample();
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void finish(`stopped by ${signal}`));
