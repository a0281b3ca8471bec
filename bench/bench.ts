// `npm run bench`: one run, one model file, one set of images, four measurements side by side.
//   a. the limit: bare onnxruntime-node session.run on preprocessed tensors
//   b. the daemon: `crad-edge run` end to end (folder cameras unthrottled -> RxJS pipeline ->
//      inference -> regions/crops -> real mosquitto), 1, 2 and 4 cameras
//   c. the alternative: the trainer's PyTorch detector in eval mode on CPU
//   d. model variants: CRAD vs CRAD-S, GridSample vs GridSample-free, the available backbones
// Prints markdown tables (README-ready) with the ratios b/a and a/c and the targets, and writes
// everything as JSON (--out), so that runs can be compared (--compare <earlier.json>).
// See bench/README.md for what each figure means.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { Mosquitto } from '../test/helpers/mosquitto.js';
import { describeMachine, type Machine } from './lib/machine.js';
import { gstreamerCamera, modelBusy, ownMsPerFrame, runDaemon, type DaemonRunResult } from './lib/daemon.js';
import { sparkplugCost, type PlaneCost } from './lib/planes.js';
import { summarizeProfile, type ProfileSummary } from './lib/profile.js';
import { median } from './lib/stats.js';
import { listImages, openSession, preprocessedImages, timeBatches, timePaced, type BatchTiming, type SessionSettings } from './lib/runtime.js';
import { connectLiveViewer, type LiveViewer } from './lib/viewer.js';

const root = path.resolve(import.meta.dirname, '..');
/** How the rows with the overlap settings are named (followed by the daemonNice). */
const AHEAD_NAME = 'worker + prepareAhead + daemonNice';
const PYTHON = process.env.CRAD_PYTHON ?? '/usr/bin/python3';

/** The variants of part d: backbone:variant:sampling. CRAD = E 4C, CRAD-S = E C (model.py). */
const VARIANT_SPECS = [
  'mobilenet-v2-nsfwjs:crad-s:gridsample',
  'mobilenet-v2-nsfwjs:crad-s:tent',
  'mobilenet-v2-nsfwjs:crad:gridsample',
  'mobilenet-v2:crad-s:gridsample',
  'mobilenet-v1-0.75:crad-s:gridsample',
  'efficientnet-b4:crad-s:gridsample',
  'efficientnet-b4:crad:gridsample',
  'efficientnet-b4:crad:tent',
];

interface Options {
  model: string;
  images: string;
  parts: string;
  cameras: string;
  batches: string;
  providers: string;
  seconds: number;
  cameraFps: number;
  runtimeSeconds: number;
  warmup: number;
  out: string;
  compare?: string;
  render?: string;
  profile: boolean;
  quick: boolean;
  sweep: boolean;
  paced: boolean;
  live: boolean;
  sessions: number;
  ahead: number;
  pairRounds: number;
  pairMode: 'side-by-side' | 'alternate';
  /** Live-view viewers of the console row. */
  viewers: number;
  label: string;
}

interface VariantRow {
  name: string;
  backbone: string;
  variant: string;
  sampling: string;
  C: number;
  E: number;
  parameters: number;
  backboneWeights: string;
  macs: { total: number; backbone: number };
  onnx: string;
  onnxBytes: number;
  runtime?: BatchTiming[];
  error?: string;
}

interface BenchReport {
  format: 'crad-bench/1';
  label: string;
  startedAt: string;
  durationSeconds: number;
  machine: Machine;
  settings: Record<string, unknown>;
  model: { path: string; bytes: number; images: string; imageCount: number; imageSize: string };
  runtime?: { provider: string; session: SessionSettings; batches: BatchTiming[]; best: number; sweep?: { name: string; settings: SessionSettings; batch: number; timing: BatchTiming }[] };
  /** reference: the bare runtime at the daemon's batch size just before and after the run (b/a uses their mean). */
  /** The same daemon run with the JSON plane alone and with the Sparkplug plane beside it, in paired rounds (pairedRounds: medians; ratio: median of the rounds' ratios); cost: the plane's CPU per result. */
  sparkplug?: { cameras: number; jsonOnly: number; bothPlanes: number; ratio: number; roundRatios?: number[]; cost?: PlaneCost & { framesPerSecond: number; ratio: number } };
  /** Console off against on with live-view viewers connected (server-sent events), in paired rounds (likewise). */
  console?: { viewers?: number; cameras: number; off: number; withViewer: number; ratio: number; roundRatios?: number[]; viewerFrames: number; rssGrowthMiBPer1000Frames: number };
  /** paced: one camera at about half the model's batch-1 capacity (the latency target's row). */
  /** bareAtPace (paced row): the bare runtime started at the row's frame rate, right after it: the model's own spread at that pace. */
  /** ahead: the row ran with model.inferenceThread worker, prepareAhead, and daemonNice = this. */
  daemon?: (DaemonRunResult & { maxBatch: number; paced?: boolean; ahead?: number; bareAtPace?: BatchTiming; reference?: { batch: number; before: BatchTiming; after: BatchTiming; imagesPerSecond: number } })[];
  torch?: {
    model: Record<string, unknown>;
    threads: number;
    /** onnxruntime at the same batch sizes just before and after the PyTorch run (a/c uses their mean). */
    reference?: { batch: number; imagesPerSecond: number; before: BatchTiming; after: BatchTiming }[];
    batches: Record<string, { batch: number; imagesPerSecond: number; latencyMs: { mean: number; p50: number; p99: number } }> };
  variants?: VariantRow[];
  profile?: ProfileSummary;
  ratios?: Record<string, number>;
  targets?: { name: string; value: string; limit: string; met: boolean }[];
}

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
const f = (x: number | undefined, digits = 1) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits));

function python(args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [path.join(root, 'bench/crad_bench.py'), ...args], {
      cwd: root,
      env: { ...process.env, PYTHONPATH: path.join(root, 'training'), PYTHONWARNINGS: 'ignore' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      for (const line of d.toString().split('\n')) if (line.startsWith('[crad_bench]')) log(line.slice(13));
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`${PYTHON} bench/crad_bench.py ${args[0]} exited with ${code}:\n${stderr.slice(-3000)}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').at(-1)!));
      } catch {
        reject(new Error(`bench/crad_bench.py ${args[0]} printed no JSON:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`));
      }
    });
  });
}

function defaultSession(providers: string[]): SessionSettings {
  // The daemon's defaults (src/config/schema.ts model.*), so that a and b run the same session;
  // except intra-op spinning, left at onnxruntime's default (on): back to back, the bare runtime
  // is faster with it, so b/a is taken against the stricter limit (the daemon is faster without).
  return { executionProviders: providers, intraOpThreads: 0, interOpThreads: 0, graphOptimization: 'all', memoryArena: true };
}

/** The session-option candidates of the sweep (issue 5, item 3), each against the default. */
function sweepCandidates(base: SessionSettings): { name: string; settings: SessionSettings }[] {
  return [
    { name: 'default (intra 0 = cores, graph all, arena on)', settings: base },
    { name: 'intra-op threads 1', settings: { ...base, intraOpThreads: 1 } },
    { name: `intra-op threads ${os.availableParallelism()}`, settings: { ...base, intraOpThreads: os.availableParallelism() } },
    { name: 'graph optimisation basic', settings: { ...base, graphOptimization: 'basic' } },
    { name: 'graph optimisation extended', settings: { ...base, graphOptimization: 'extended' } },
    { name: 'memory arena off', settings: { ...base, memoryArena: false } },
    { name: 'parallel execution, inter-op 2', settings: { ...base, executionMode: 'parallel', interOpThreads: 2 } },
    { name: 'intra-op spinning off', settings: { ...base, spinning: false } },
  ];
}

async function partRuntime(opts: Options, report: BenchReport, images: Float32Array, count: number, size: number): Promise<void> {
  const providers = opts.providers.split(',').map((p) => p.trim()).filter(Boolean);
  const batches = opts.batches.split(',').map(Number);
  const session = defaultSession(providers);
  log(`a. bare runtime: ${providers.join(',')}, batches ${batches.join(',')}, ${opts.runtimeSeconds} s each`);
  const s = await openSession(opts.model, session);
  const timings = await timeBatches(s, images, count, size, size, batches, opts.runtimeSeconds, 5);
  await s.release();
  const best = timings.reduce((a, b) => (b.imagesPerSecond > a.imagesPerSecond ? b : a)).batch;
  report.runtime = { provider: providers.join(','), session, batches: timings, best };
  for (const t of timings) log(`   batch ${t.batch}: ${f(t.imagesPerSecond)} images/s, ${f(t.latencyMs.mean)} ms per run`);
  if (!opts.sweep) return;
  report.runtime.sweep = [];
  for (const candidate of sweepCandidates(session)) {
    for (const batch of [...new Set([1, best])]) {
      const cs = await openSession(opts.model, candidate.settings);
      const [timing] = await timeBatches(cs, images, count, size, size, [batch], Math.max(1, opts.runtimeSeconds * 0.6), 5, 1);
      await cs.release();
      report.runtime.sweep.push({ name: candidate.name, settings: candidate.settings, batch, timing: timing! });
      log(`   sweep ${candidate.name}, batch ${batch}: ${f(timing!.imagesPerSecond)} images/s`);
    }
  }
}

/**
 * The bare runtime at one batch size, measured right next to the figure it is compared with:
 * this machine's speed drifts (shared cores: up to 2x within minutes, invisible in /proc/stat),
 * so a ratio is only sound between measurements taken moments apart.
 */
async function bracket(opts: Options, images: Float32Array, count: number, size: number, batch: number): Promise<BatchTiming> {
  const providers = opts.providers.split(',').map((p) => p.trim()).filter(Boolean);
  const s = await openSession(opts.model, defaultSession(providers));
  const [timing] = await timeBatches(s, images, count, size, size, [batch], Math.max(1, opts.runtimeSeconds * 0.6), 5, 1);
  await s.release();
  return timing!;
}

async function partDaemon(opts: Options, report: BenchReport, imagesDir: string, images: Float32Array, count: number, size: number): Promise<void> {
  const broker = await Mosquitto.start();
  // The helper keeps its process private; the pid is only read for the broker's CPU use.
  const brokerPid = (broker as unknown as { process: { pid?: number } | null }).process?.pid ?? 0;
  report.daemon = [];
  const profileDir = opts.profile ? fs.mkdtempSync(path.join(os.tmpdir(), 'crad-bench-prof-')) : undefined;
  const profileFile = profileDir ? path.join(profileDir, 'daemon.cpuprofile') : undefined;
  try {
    const providers = opts.providers.split(',').map((p) => p.trim()).filter(Boolean);
    const counts = opts.cameras.split(',').map(Number);
    // The default maxBatch is 4; where the runtime is faster per image at a smaller batch, the
    // largest camera count runs once more with maxBatch = that batch (a config choice to weigh).
    const best = report.runtime?.best;
    const runs: { cameras: number; maxBatch?: number; sessions?: number; ahead?: true }[] = counts.map((cameras) => ({ cameras }));
    if (best !== undefined && best < 4 && Math.max(...counts) > best) runs.push({ cameras: Math.max(...counts), maxBatch: best });
    // Sessions side by side: the throughput setting, beside the default (b/a against one bare session).
    if (opts.sessions > 1) runs.push({ cameras: Math.max(...counts), sessions: opts.sessions });
    // The session on a worker with the next batch queued and the daemon's threads below it: the
    // overlap setting, with the fewest and the most cameras.
    if (opts.ahead > 0) for (const cameras of new Set([Math.min(...counts), Math.max(...counts)])) runs.push({ cameras, ahead: true });
    for (const { cameras, maxBatch, sessions, ahead } of runs) {
      log(`b. daemon: ${cameras} camera(s)${maxBatch ? `, maxBatch ${maxBatch}` : ''}${sessions ? `, ${sessions} sessions` : ''}${ahead ? `, ${AHEAD_NAME}` : ''}, ${opts.warmup} s warm-up, ${opts.seconds} s measured`);
      const referenceBatch = Math.min(cameras, maxBatch ?? 4);
      const before = await bracket(opts, images, count, size, referenceBatch);
      const result = await runDaemon({
        root, modelPath: opts.model, imagesDir, brokerUrl: broker.url, cameras, brokerPid, cameraFps: opts.cameraFps,
        warmupSeconds: opts.warmup, seconds: opts.seconds,
        overrides: { model: { executionProviders: providers, ...(sessions ? { sessions } : {}), ...(ahead ? { inferenceThread: 'worker', prepareAhead: true, daemonNice: opts.ahead } : {}) }, ...(maxBatch ? { inference: { maxBatch } } : {}) },
        cpuProfileFile: cameras === 1 && !sessions && !ahead ? profileFile : undefined,
      });
      const after = await bracket(opts, images, count, size, referenceBatch);
      report.daemon.push({ ...result, maxBatch: maxBatch ?? 4, ...(ahead ? { ahead: opts.ahead } : {}), reference: { batch: referenceBatch, before, after, imagesPerSecond: (before.imagesPerSecond + after.imagesPerSecond) / 2 } });
      log(`   ${f(result.framesPerSecond)} frames/s, p99 capture-to-publish ${f(result.captureToPublishMs.p99)} ms, CPU ${f(result.cpuPercent, 0)} %, peak RSS ${f(result.peakRssMiB, 0)} MiB`);
    }
    if (opts.paced && opts.cameraFps === 0) {
      // At saturation a frame waits for the model by design; the latency target is for cameras
      // that leave the model idle half the time: one camera at half its batch-1 capacity.
      // The model's capacity is what session.run takes in the daemon (slower than bare: it shares
      // the cores), from this run's unthrottled 1-camera row when there is one.
      const before = await bracket(opts, images, count, size, 1);
      const oneCamera = report.daemon.find((d) => d.cameras === 1 && d.cameraFps === 0 && (d.source ?? 'folder') === 'folder' && !d.ahead);
      const capacity = oneCamera ? 1000 / oneCamera.stagesMs.inference : before.imagesPerSecond;
      const fps = Math.max(1, Math.round(capacity / 2));
      log(`b. daemon: 1 camera paced at ${fps} fps (half of ${f(capacity)} images/s at batch 1, ${oneCamera ? 'the 1-camera row\'s session.run' : 'the bare runtime'}), ${opts.warmup} s warm-up, ${opts.seconds} s measured`);
      const result = await runDaemon({
        root, modelPath: opts.model, imagesDir, brokerUrl: broker.url, cameras: 1, brokerPid, cameraFps: fps,
        warmupSeconds: opts.warmup, seconds: opts.seconds, overrides: { model: { executionProviders: providers } },
      });
      const after = await bracket(opts, images, count, size, 1);
      // The model alone at the same pace, with the daemon's session options (spinning off): how
      // much of the row's tail is the runtime's own.
      const session = await openSession(opts.model, { ...defaultSession(providers), spinning: false });
      const bareAtPace = await timePaced(session, images, count, size, size, fps, opts.seconds).finally(() => session.release());
      report.daemon.push({ ...result, maxBatch: 4, paced: true, bareAtPace, reference: { batch: 1, before, after, imagesPerSecond: (before.imagesPerSecond + after.imagesPerSecond) / 2 } });
      log(`   ${f(result.framesPerSecond)} frames/s, p50 / p99 capture-to-publish ${f(result.captureToPublishMs.p50)} / ${f(result.captureToPublishMs.p99)} ms, inference ${f(result.stagesMs.inference)} ms; bare runtime at ${fps} runs/s: p50 / p99 ${f(bareAtPace.latencyMs.p50)} / ${f(bareAtPace.latencyMs.p99)} ms`);
    }
    if (opts.live) await liveRows(opts, report, { root, modelPath: opts.model, imagesDir, brokerUrl: broker.url, cameras: 1, brokerPid, cameraFps: 0, warmupSeconds: opts.warmup, seconds: opts.seconds, overrides: { model: { executionProviders: providers } } });
    if (profileFile && fs.existsSync(profileFile)) report.profile = summarizeProfile(profileFile);
    await consoleRow(opts, report, { root, modelPath: opts.model, imagesDir, brokerUrl: broker.url, cameras: counts[0]!, brokerPid, cameraFps: opts.cameraFps, warmupSeconds: opts.warmup, seconds: opts.seconds, overrides: { model: { executionProviders: providers } } });
    await planesRow(opts, report, { root, modelPath: opts.model, imagesDir, brokerUrl: broker.url, cameras: counts[0]!, brokerPid, cameraFps: opts.cameraFps, warmupSeconds: opts.warmup, seconds: opts.seconds, overrides: { model: { executionProviders: providers } } });
  } finally {
    await broker.dispose();
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  }
}

/**
 * One live camera at full rate beside the folder rows: a line camera does not decode files, it
 * delivers raw frames faster than the model takes them (latest frame wins, so these rows drop).
 * GStreamer's videotestsrc (256 x 256 BGR, unthrottled), then aravis's simulated GigE camera.
 */
async function liveRows(opts: Options, report: BenchReport, run: Parameters<typeof runDaemon>[0]): Promise<void> {
  const rows: { name: string; camera: Record<string, unknown>; setup?: () => Promise<() => Promise<void>> }[] = [
    { name: 'GStreamer videotestsrc', camera: gstreamerCamera() },
    {
      name: 'simulated GigE camera (arv-fake-gv-camera)',
      camera: { id: 'cam1', source: 'gige' },
      setup: async () => {
        const { FakeGigeCamera } = await import('../test/helpers/fake-gige.js');
        const fake = new FakeGigeCamera();
        await fake.start();
        rows[1]!.camera.address = fake.address;
        return () => fake.stop();
      },
    },
  ];
  for (const row of rows) {
    log(`b. daemon: 1 live camera, ${row.name}, ${opts.warmup} s warm-up, ${opts.seconds} s measured`);
    let teardown: (() => Promise<void>) | undefined;
    try {
      teardown = await row.setup?.();
      const result = await runDaemon({ ...run, cameraConfigs: [row.camera] });
      report.daemon!.push({ ...result, maxBatch: 4 });
      log(`   ${f(result.framesPerSecond)} frames/s, model busy ${f(modelBusy(result) * 100, 0)} %, own ${f(ownMsPerFrame(result), 2)} ms per frame`);
    } catch (err) {
      log(`   skipped: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      await teardown?.();
    }
  }
}

/** How a paired row places its two daemons (see pairedRounds). */
type Placement = { cpus?: string; deviceId?: string; overrides?: Record<string, Record<string, unknown>> };

/**
 * A setting's cost as a throughput ratio, `rounds` times. side-by-side (2 or more CPUs): the
 * daemon without the setting (base) and with it run at the same time, each pinned to a core of
 * its own with one intra-op thread, swapping cores every round: whatever the machine's speed does
 * during a window, it does to both. alternate: one after the other, alternating which goes first
 * (base-with, with-base, ...), each with the whole machine. Each round gives one ratio; the figure
 * is their median, reported with the range.
 */
async function pairedRounds(
  opts: Options,
  run: Parameters<typeof runDaemon>[0],
  base: (placement: Placement) => Promise<DaemonRunResult>,
  withIt: (placement: Placement) => Promise<DaemonRunResult>,
): Promise<{ base: DaemonRunResult[]; with: DaemonRunResult[]; ratios: number[]; ratio: number; baseFramesPerSecond: number; withFramesPerSecond: number }> {
  const out = { base: [] as DaemonRunResult[], with: [] as DaemonRunResult[], ratios: [] as number[] };
  const oneCore = { ...run.overrides, model: { ...run.overrides?.model, intraOpThreads: 1 } };
  for (let round = 0; round < opts.pairRounds; round++) {
    let got: { base: DaemonRunResult; with: DaemonRunResult };
    if (opts.pairMode === 'side-by-side') {
      const [baseCpu, withCpu] = round % 2 === 0 ? ['0', '1'] : ['1', '0'];
      const [b, w] = await Promise.all([
        base({ cpus: baseCpu, deviceId: 'bench-base', overrides: oneCore }),
        withIt({ cpus: withCpu, deviceId: 'bench-with', overrides: oneCore }),
      ]);
      got = { base: b, with: w };
    } else if (round % 2 === 0) {
      const b = await base({});
      got = { base: b, with: await withIt({}) };
    } else {
      const w = await withIt({});
      got = { base: await base({}), with: w };
    }
    out.base.push(got.base);
    out.with.push(got.with);
    out.ratios.push(got.with.framesPerSecond / got.base.framesPerSecond);
    log(`   round ${round + 1}: ${f(got.base.framesPerSecond)} -> ${f(got.with.framesPerSecond)} frames/s (${f(out.ratios.at(-1)!, 3)})`);
  }
  log(`   median ratio ${f(median(out.ratios), 3)} (rounds ${out.ratios.map((x) => f(x, 3)).join(', ')})`);
  return {
    ...out,
    ratio: median(out.ratios),
    baseFramesPerSecond: median(out.base.map((r) => r.framesPerSecond)),
    withFramesPerSecond: median(out.with.map((r) => r.framesPerSecond)),
  };
}

/** One run of a paired row: shorter than the main rows (there are several), placed as pairedRounds says. */
function pairedRun(opts: Options, run: Parameters<typeof runDaemon>[0], placement: Placement, extra: Record<string, Record<string, unknown>> = {}): Parameters<typeof runDaemon>[0] {
  const overrides = { ...(placement.overrides ?? run.overrides) };
  for (const [key, value] of Object.entries(extra)) overrides[key] = { ...overrides[key], ...value };
  return { ...run, cpus: placement.cpus, deviceId: placement.deviceId, overrides, seconds: Math.max(4, Math.round(opts.seconds / 2)) };
}

/**
 * Throughput with the operator console on and one viewer watching the live view (its event stream
 * read to the end) against the console off, in paired rounds; and whether memory grows with a viewer.
 */
async function consoleRow(opts: Options, report: BenchReport, run: Parameters<typeof runDaemon>[0]): Promise<void> {
  log(`b. daemon: ${run.cameras} camera(s), console off against on with ${opts.viewers} live-view viewer(s), ${opts.pairRounds} rounds ${opts.pairMode}`);
  const { freePort } = await import('../test/helpers/mosquitto.js');
  const viewerFrames: number[] = [];
  const paired = await pairedRounds(
    opts,
    run,
    (placement) => runDaemon(pairedRun(opts, run, placement)),
    async (placement) => {
      const port = await freePort();
      const viewers: LiveViewer[] = [];
      const result = await runDaemon({
        ...pairedRun(opts, run, placement, { http: { enabled: true, host: '127.0.0.1', port } }),
        attach: async () => {
          for (let i = 0; i < opts.viewers; i++) viewers.push(await connectLiveViewer(`http://127.0.0.1:${port}/api/cameras/cam1/live`));
          return () => viewers.forEach((v) => v.close());
        },
      });
      viewerFrames.push(...viewers.map((v) => v.frames()));
      return result;
    },
  );
  report.console = {
    viewers: opts.viewers,
    cameras: run.cameras,
    off: paired.baseFramesPerSecond,
    withViewer: paired.withFramesPerSecond,
    ratio: paired.ratio,
    roundRatios: paired.ratios,
    viewerFrames: Math.min(...viewerFrames),
    rssGrowthMiBPer1000Frames: median(paired.with.map((r) => r.rssGrowthMiBPer1000Frames)),
  };
  log(`   each viewer got at least ${report.console.viewerFrames} frames`);
}

/** Throughput with both planes (JSON + Sparkplug B) against JSON alone, in paired rounds, and the plane's CPU per result. */
async function planesRow(opts: Options, report: BenchReport, run: Parameters<typeof runDaemon>[0]): Promise<void> {
  log(`b. daemon: ${run.cameras} camera(s), JSON alone against JSON + Sparkplug B, ${opts.pairRounds} rounds ${opts.pairMode}`);
  const paired = await pairedRounds(
    opts,
    run,
    (placement) => runDaemon(pairedRun(opts, run, placement)),
    (placement) => runDaemon(pairedRun(opts, run, placement, { sparkplug: { enabled: true, groupId: 'bench' } })),
  );
  // The drift-free figure: the plane's CPU per result, against the time a frame takes in this
  // run's 1-camera row, charged as if it ran serially with the model (an upper bound).
  const cost = await sparkplugCost(run.brokerUrl, run.brokerPid);
  const oneCamera = report.daemon?.find((d) => d.cameras === run.cameras && d.cameraFps === 0 && (d.source ?? 'folder') === 'folder' && !d.ahead && (d.sessions ?? 1) === 1);
  const framesPerSecond = oneCamera?.framesPerSecond ?? paired.baseFramesPerSecond;
  const costRatio = 1 / (1 + ((cost.cpuMsPerResult + Math.max(0, cost.brokerCpuMsPerResult)) * framesPerSecond) / 1000);
  report.sparkplug = {
    cameras: run.cameras,
    jsonOnly: paired.baseFramesPerSecond,
    bothPlanes: paired.withFramesPerSecond,
    ratio: paired.ratio,
    roundRatios: paired.ratios,
    cost: { ...cost, framesPerSecond, ratio: costRatio },
  };
  log(`   the plane's CPU per result: ${f(cost.cpuMsPerResult, 3)} ms (+ broker ${f(cost.brokerCpuMsPerResult, 3)} ms), ${cost.rounds} rounds of ${cost.block}; at ${f(framesPerSecond)} frames/s: ratio ${f(costRatio, 4)}`);
}

async function partTorch(opts: Options, report: BenchReport, files: string[], images: Float32Array, size: number): Promise<void> {
  const batches = [...new Set([1, report.runtime?.best ?? 4])];
  log(`c. PyTorch eval mode: batches ${batches.join(',')}, onnxruntime measured right before and after`);
  const before: BatchTiming[] = [];
  for (const b of batches) before.push(await bracket(opts, images, files.length, size, b));
  report.torch = (await python(['torch', '--images', ...files, '--batches', batches.join(','), '--seconds', String(opts.runtimeSeconds)])) as BenchReport['torch'];
  const after: BatchTiming[] = [];
  for (const b of batches) after.push(await bracket(opts, images, files.length, size, b));
  report.torch!.reference = batches.map((batch, i) => ({ batch, imagesPerSecond: (before[i]!.imagesPerSecond + after[i]!.imagesPerSecond) / 2, before: before[i]!, after: after[i]! }));
}

async function partVariants(opts: Options, report: BenchReport, images: Float32Array, count: number, size: number): Promise<void> {
  const out = path.join(root, '.work/bench/variants');
  log(`d. variants: export (cached in ${path.relative(root, out)}) and MAC count`);
  const { variants } = (await python(['variants', '--out', out, '--specs', ...VARIANT_SPECS])) as { variants: VariantRow[] };
  const providers = opts.providers.split(',').map((p) => p.trim()).filter(Boolean);
  const batches = [...new Set([1, report.runtime?.best ?? 4])];
  for (const row of variants) {
    try {
      const s = await openSession(row.onnx, defaultSession(providers));
      row.runtime = await timeBatches(s, images, count, size, size, batches, Math.max(1, opts.runtimeSeconds * 0.6), 3, 1);
      await s.release();
      log(`   ${row.name}: ${row.runtime.map((t) => `batch ${t.batch} ${f(t.imagesPerSecond)} images/s`).join(', ')}`);
    } catch (err) {
      row.error = (err as Error).message.split('\n')[0];
      log(`   ${row.name}: ${row.error}`);
    }
  }
  report.variants = variants;
}

type DaemonRow = NonNullable<BenchReport['daemon']>[number];

/** Row name: cameras (maxBatch), and the pacing of a paced row. */
function rowName(d: DaemonRow): string {
  return `${d.cameras} ${d.source && d.source !== 'folder' ? `${d.source} ` : ''}camera(s), maxBatch ${d.maxBatch}${(d.sessions ?? 1) > 1 ? `, ${d.sessions} sessions` : ''}${d.ahead ? `, ${AHEAD_NAME} ${d.ahead}` : ''}${d.cameraFps > 0 ? `, paced ${d.cameraFps} fps` : ''}`;
}

/** b/a against the bracketing reference when there is one, else against part a. */
function bOverA(report: BenchReport, d: DaemonRow): number | undefined {
  if (d.reference) return d.framesPerSecond / d.reference.imagesPerSecond;
  const limit = runtimeAt(report, d.meanBatchSize);
  return limit ? d.framesPerSecond / limit.imagesPerSecond : undefined;
}

/** onnxruntime / PyTorch at one batch size, against the bracketing reference when there is one. */
function aOverC(report: BenchReport, batch: number): number | undefined {
  const torch = report.torch?.batches[String(batch)];
  const ort = report.torch?.reference?.find((r) => r.batch === batch)?.imagesPerSecond ?? report.runtime?.batches.find((t) => t.batch === batch)?.imagesPerSecond;
  return torch && ort ? ort / torch.imagesPerSecond : undefined;
}

function runtimeAt(report: BenchReport, batch: number): BatchTiming | undefined {
  // The measured batch size closest to (not above, where possible) the daemon's mean batch.
  const timings = report.runtime?.batches ?? [];
  const candidates = timings.filter((t) => t.batch <= Math.max(1, Math.round(batch)));
  return (candidates.length ? candidates : timings).reduce<BatchTiming | undefined>((a, t) => (!a || Math.abs(t.batch - batch) < Math.abs(a.batch - batch) ? t : a), undefined);
}

/** " (range a-b)" of several rounds' figures, or nothing. */
function spread(xs: number[] | undefined): string {
  return xs && xs.length > 1 ? ` (${f(Math.min(...xs), 3)}-${f(Math.max(...xs), 3)})` : '';
}

function evaluate(report: BenchReport): void {
  const ratios: Record<string, number> = {};
  const targets: NonNullable<BenchReport['targets']> = [];
  for (const d of report.daemon ?? []) {
    if (d.cameraFps > 0 && !(report.daemon ?? []).every((x) => x.cameraFps > 0)) continue; // a paced row is not at capacity
    const ratio = bOverA(report, d);
    if (ratio === undefined) continue;
    const batch = d.reference?.batch ?? runtimeAt(report, d.meanBatchSize)?.batch;
    ratios[`b/a ${rowName(d)} (runtime at batch ${batch})`] = ratio;
    targets.push({ name: `daemon throughput, ${rowName(d)} (b/a at batch ${batch})`, value: f(ratio, 2), limit: '>= 0.95', met: ratio >= 0.95 });
  }
  if (report.console) {
    const { cameras, ratio, roundRatios, viewers = 1 } = report.console;
    targets.push({ name: `throughput with the console on and ${viewers === 1 ? 'one viewer' : `${viewers} viewers`}, ${cameras} camera(s) (on / off${roundRatios ? `, median of ${roundRatios.length} rounds` : ''})`, value: f(ratio, 3) + spread(roundRatios), limit: '>= 0.97', met: ratio >= 0.97 });
  }
  if (report.sparkplug) {
    const { cameras, ratio, roundRatios } = report.sparkplug;
    targets.push({ name: `throughput with Sparkplug B beside JSON, ${cameras} camera(s) (both / JSON alone${roundRatios ? `, median of ${roundRatios.length} rounds` : ''})`, value: f(ratio, 3) + spread(roundRatios), limit: '>= 0.97', met: ratio >= 0.97 });
    const cost = report.sparkplug.cost;
    if (cost) {
      targets.push({
        name: `throughput with Sparkplug B beside JSON, ${cameras} camera(s), from the plane's CPU per result (${f(cost.cpuMsPerResult, 3)} ms + broker ${f(cost.brokerCpuMsPerResult, 3)} ms, in-process, drift-free) at ${f(cost.framesPerSecond)} frames/s`,
        value: f(cost.ratio, 4), limit: '>= 0.97', met: cost.ratio >= 0.97,
      });
    }
  }
  for (const d of report.daemon ?? []) {
    if (d.cameraFps > 0) continue;
    const own = ownMsPerFrame(d);
    targets.push({ name: `daemon's own time per frame (wall outside session.run), ${rowName(d)} (ms)`, value: f(own, 2), limit: '< 1.5', met: own < 1.5 });
    const busyLimit = d.cameras === 1 ? 0.92 : d.cameras >= 4 ? 0.95 : undefined;
    if (busyLimit !== undefined) targets.push({ name: `model busy, ${rowName(d)} (%)`, value: f(modelBusy(d) * 100, 0), limit: `>= ${busyLimit * 100}`, met: modelBusy(d) >= busyLimit });
  }
  const paced = report.daemon?.find((d) => d.paced);
  if (paced) {
    // The row's own mean session.run: measured in the same run as the latencies it bounds.
    const limit = 1.2 * paced.stagesMs.inference + 10;
    const parts = [
      paced.inferenceMs && `session.run itself: p50 ${f(paced.inferenceMs.p50)}, p99 ${f(paced.inferenceMs.p99)}`,
      paced.bareAtPace && `the bare runtime alone at ${paced.cameraFps} runs/s: p50 ${f(paced.bareAtPace.latencyMs.p50)}, p99 ${f(paced.bareAtPace.latencyMs.p99)}`,
      paced.aroundModelMs && `all but session.run, frame by frame: p50 ${f(paced.aroundModelMs.p50)}, p99 ${f(paced.aroundModelMs.p99)}`,
      paced.publishMs && `publishing: p50 ${f(paced.publishMs.p50)}, p99 ${f(paced.publishMs.p99)}`,
    ].filter(Boolean);
    const modelTail = parts.length ? ` (${parts.join('; ')})` : '';
    targets.push({ name: `p99 capture-to-publish, ${rowName(paced)} (ms)`, value: f(paced.captureToPublishMs.p99) + modelTail, limit: `<= 1.2 x ${f(paced.stagesMs.inference)} + 10 = ${f(limit)}`, met: paced.captureToPublishMs.p99 <= limit });
  }
  const oneCamera = report.daemon?.find((d) => d.cameras === 1 && d.maxBatch === 4 && !d.paced && !d.ahead);
  // Mean batch-1 inference time: measured around the 1-camera run when it was, else part a's.
  const reference = oneCamera?.reference;
  const inferenceMs = reference ? (reference.before.latencyMs.mean + reference.after.latencyMs.mean) / 2 : report.runtime?.batches.find((t) => t.batch === 1)?.latencyMs.mean;
  if (oneCamera && inferenceMs !== undefined) {
    const limit = 1.2 * inferenceMs + 10;
    targets.push({ name: 'p99 capture-to-publish, 1 camera unpaced (saturated: reported, not the target) (ms)', value: f(oneCamera.captureToPublishMs.p99), limit: `<= 1.2 x ${f(inferenceMs)} + 10 = ${f(limit)}`, met: oneCamera.captureToPublishMs.p99 <= limit });
  }
  for (const key of Object.keys(report.torch?.batches ?? {})) {
    const ratio = aOverC(report, Number(key));
    if (ratio === undefined) continue;
    ratios[`a/c batch ${key}`] = ratio;
    targets.push({ name: `onnxruntime vs PyTorch, batch ${key} (a/c)`, value: f(ratio, 2), limit: '>= 2', met: ratio >= 2 });
  }
  for (const d of report.daemon ?? []) {
    // The peak RSS must not rise while frames are processed: VmHWM at the window's end against
    // VmHWM at its start (after start-up and warm-up), over the window's ~1000 frames or more.
    // 2 % of the peak is allocator noise; a leaked 256x256 frame per frame would add ~190 MiB.
    const name = rowName(d);
    if (d.peakRssStartMiB !== undefined) {
      const growth = d.peakRssMiB - d.peakRssStartMiB;
      targets.push({ name: `peak RSS growth over ${d.framesProcessed} frames, ${name} (MiB)`, value: f(growth, 1), limit: `<= 2 % of ${f(d.peakRssStartMiB, 0)}`, met: growth <= 0.02 * d.peakRssStartMiB });
    } else {
      targets.push({ name: `RSS growth with frames, ${name} (MiB per 1000 frames)`, value: f(d.rssGrowthMiBPer1000Frames, 2), limit: '<= 1', met: d.rssGrowthMiBPer1000Frames <= 1 });
    }
  }
  report.ratios = ratios;
  report.targets = targets;
}

function table(header: string[], rows: string[][]): string {
  return [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function render(report: BenchReport, previous?: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(`## crad-edge benchmark: ${report.label}`, '');
  out.push(`Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}`);
  out.push(`Versions: ${Object.entries(m.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  out.push(`Model: ${path.relative(root, report.model.path)} (${(report.model.bytes / 2 ** 20).toFixed(1)} MiB), images: ${report.model.imageCount} from ${path.relative(root, report.model.images) || '.'} (${report.model.imageSize}), run took ${f(report.durationSeconds, 0)} s`);
  out.push('');
  if (report.runtime) {
    const r = report.runtime;
    out.push(`### a. Limit: bare onnxruntime-node session.run (${r.provider}; intra-op ${r.session.intraOpThreads || 'default'}, graph ${r.session.graphOptimization}, arena ${r.session.memoryArena ? 'on' : 'off'})`, '');
    out.push(table(['batch', 'images/s (median of rounds; range)', 'latency per run mean (ms)', 'p50 (ms)', 'p99 (ms)', 'runs', 'other load %'], r.batches.map((t) => [
      `${t.batch}${t.batch === r.best ? ' (best)' : ''}`, `${f(t.imagesPerSecond)} (${f(t.imagesPerSecondRange?.[0])}-${f(t.imagesPerSecondRange?.[1])})`, f(t.latencyMs.mean), f(t.latencyMs.p50), f(t.latencyMs.p99), String(t.runs), f(t.otherLoadPercent, 0),
    ])), '');
    if (r.sweep?.length) {
      out.push('Session options (item 3), same model:', '');
      out.push(table(['options', 'batch', 'images/s', 'mean (ms)', 'p99 (ms)', 'other load %'], r.sweep.map((s) => [s.name, String(s.batch), f(s.timing.imagesPerSecond), f(s.timing.latencyMs.mean), f(s.timing.latencyMs.p99), f(s.timing.otherLoadPercent, 0)])), '');
    }
  }
  if (report.daemon?.length) {
    const pacing = report.daemon[0]!.cameraFps > 0 ? `paced at ${report.daemon[0]!.cameraFps} fps each` : 'unthrottled, and a paced row';
    out.push(`### b. Daemon end to end (folder cameras ${pacing} -> pipeline -> inference -> regions/crops -> mosquitto)`, '');
    out.push(table(
      ['cameras (maxBatch)', 'provider', 'frames/s', 'b/a (a measured just before + after)', 'mean batch', 'capture-to-publish p50 / p99 (ms)', 'to subscriber p50 / p99 (ms)', 'queue / pre / infer / post / publish (ms)', 'model busy %', 'own ms per frame', 'GC pause ms per frame', 'CPU daemon (broker) %', 'RSS start / end, peak start / end (MiB)', 'RSS MiB per 1000 frames', 'event-loop delay p99 / max (ms), utilisation', 'captured / dropped', 'other load %'],
      report.daemon.map((d) => {
        const p = d.probe;
        return [
          `${d.cameras} (${d.maxBatch})${(d.sessions ?? 1) > 1 ? `, ${d.sessions} sessions` : ''}${d.ahead ? `, ${AHEAD_NAME} ${d.ahead}` : ''}${d.cameraFps > 0 ? ` at ${d.cameraFps} fps` : ''}${d.source && d.source !== 'folder' ? ` ${d.source}` : ''}`, d.provider, f(d.framesPerSecond),
          d.reference ? `${f(bOverA(report, d), 2)} (a = ${f(d.reference.imagesPerSecond)} at batch ${d.reference.batch})` : f(bOverA(report, d), 2),
          f(d.meanBatchSize, 2),
          `${f(d.captureToPublishMs.p50)} / ${f(d.captureToPublishMs.p99)}`, `${f(d.captureToSubscriberMs.p50)} / ${f(d.captureToSubscriberMs.p99)}`,
          `${f(d.stagesMs.queue)} / ${f(d.stagesMs.preprocess)} / ${f(d.stagesMs.inference)} / ${f(d.stagesMs.postprocess)} / ${f(d.stagesMs.publish ?? Number.NaN)}`, f(modelBusy(d) * 100, 0), f(ownMsPerFrame(d), 2),
          p?.gcPauses ? f(p.gcPauses.ms / Math.max(1, d.framesProcessed), 2) : 'n/a',
          `${f(d.cpuPercent, 0)} (${f(d.brokerCpuPercent, 0)})`, `${f(d.rssStartMiB, 0)} / ${f(d.rssEndMiB, 0)}, ${f(d.peakRssStartMiB, 0)} / ${f(d.peakRssMiB, 0)}`, f(d.rssGrowthMiBPer1000Frames, 2),
          p ? `${f(p.eventLoopDelayMs.p99)} / ${f(p.eventLoopDelayMs.max)}, ${f(p.eventLoopUtilization * 100, 0)} %` : 'n/a',
          `${d.framesCaptured} / ${d.framesDropped}`, f(d.otherLoadPercent, 0),
        ];
      }),
    ), '');
  }
  if (report.torch) {
    const t = report.torch;
    out.push(`### c. Alternative: the trainer's PyTorch detector, eval mode, CPU (torch ${String((t as { torch?: string }).torch ?? '')}, ${t.threads} threads; ${String(t.model.backbone)} ${String(t.model.variant)}, backbone weights ${String(t.model.backboneWeights)}, random head)`, '');
    out.push(table(['batch', 'PyTorch images/s', 'onnxruntime images/s (measured just before / after)', 'a/c', 'PyTorch latency per run mean (ms)'], Object.values(t.batches).map((b) => {
      const ref = t.reference?.find((r) => r.batch === b.batch);
      const ort = ref ? `${f(ref.imagesPerSecond)} (${f(ref.before.imagesPerSecond)} / ${f(ref.after.imagesPerSecond)})` : f(report.runtime?.batches.find((x) => x.batch === b.batch)?.imagesPerSecond);
      return [String(b.batch), f(b.imagesPerSecond), ort, f(aOverC(report, b.batch), 2), f(b.latencyMs.mean)];
    })), '');
  }
  if (report.variants?.length) {
    const batches = [...new Set(report.variants.flatMap((v) => (v.runtime ?? []).map((t) => t.batch)))];
    out.push('### d. Model variants (onnxruntime, same session options; random heads, weights do not change speed)', '');
    out.push(table(
      ['backbone', 'variant (C, E)', 'sampling', 'GMAC per image (backbone)', 'parameters (M)', ...batches.map((b) => `images/s batch ${b}`), 'backbone weights'],
      report.variants.map((v) => [
        v.backbone, `${v.variant} (${v.C}, ${v.E})`, v.sampling === 'tent' ? 'tent (GridSample-free)' : 'GridSample',
        `${f(v.macs.total / 1e9, 2)} (${f(v.macs.backbone / 1e9, 2)})`, f(v.parameters / 1e6, 2),
        ...batches.map((b) => (v.error ? 'failed' : f(v.runtime?.find((t) => t.batch === b)?.imagesPerSecond))), v.backboneWeights,
      ]),
    ), '');
  }
  if (report.profile) {
    const p = report.profile;
    out.push(`### Profile of the daemon's main thread (1 camera, V8 CPU profile of the measured ${f(p.wallMs / 1000)} s; busy ${f((100 * p.busyMs) / p.wallMs, 0)} %)`, '');
    out.push(table(['where', 'ms', 'share of wall'], p.byPlace.map((x) => [x.place, f(x.ms, 0), `${f(x.share * 100)} %`])), '');
    out.push(table(['function (self time)', 'ms', 'share of wall'], p.topFunctions.map((x) => [x.fn.replace(/\|/g, '\\|'), f(x.ms, 0), `${f(x.share * 100)} %`])), '');
  }
  if (report.targets?.length) {
    out.push('### Targets', '');
    out.push(table(['target', 'measured', 'limit', 'met'], report.targets.map((t) => [t.name, t.value, t.limit, t.met ? 'yes' : '**no**'])), '');
  }
  if (previous) out.push(renderComparison(previous, report), '');
  return out.join('\n');
}

function renderComparison(before: BenchReport, after: BenchReport): string {
  const rows: string[][] = [];
  const add = (name: string, a: number | undefined, b: number | undefined, digits = 1) => {
    if (a === undefined && b === undefined) return;
    rows.push([name, f(a, digits), f(b, digits), a && b ? `${f((100 * (b - a)) / a, 0)} %` : 'n/a']);
  };
  for (const t of after.runtime?.batches ?? []) add(`a. runtime images/s, batch ${t.batch}`, before.runtime?.batches.find((x) => x.batch === t.batch)?.imagesPerSecond, t.imagesPerSecond);
  for (const d of after.daemon ?? []) {
    const p = before.daemon?.find((x) => x.cameras === d.cameras && (x.maxBatch ?? 4) === d.maxBatch && Boolean(x.paced) === Boolean(d.paced) && (x.source ?? 'folder') === (d.source ?? 'folder') && (x.sessions ?? 1) === (d.sessions ?? 1) && Boolean(x.ahead) === Boolean(d.ahead));
    const name = d.paced ? `${d.cameras} camera(s), paced at half capacity` : rowName(d);
    add(`b. daemon frames/s, ${name}`, p?.framesPerSecond, d.framesPerSecond);
    add(`b. b/a, ${name}`, p ? bOverA(before, p) : undefined, bOverA(after, d), 2);
    add(`b. model busy %, ${name}`, p ? modelBusy(p) * 100 : undefined, modelBusy(d) * 100, 0);
    add(`b. own ms per frame, ${name}`, p ? ownMsPerFrame(p) : undefined, ownMsPerFrame(d), 2);
    add(`b. p50 capture-to-publish ms, ${name}`, p?.captureToPublishMs.p50, d.captureToPublishMs.p50);
    add(`b. p99 capture-to-publish ms, ${name}`, p?.captureToPublishMs.p99, d.captureToPublishMs.p99);
    add(`b. p99 publishing ms (commit, fsync, send), ${name}`, p?.publishMs?.p99, d.publishMs?.p99);
    add(`b. CPU %, ${name}`, p?.cpuPercent, d.cpuPercent, 0);
    add(`b. peak RSS MiB, ${name}`, p?.peakRssMiB, d.peakRssMiB, 0);
    add(`b. frames dropped, ${name}`, p?.framesDropped, d.framesDropped, 0);
  }
  for (const [k, t] of Object.entries(after.torch?.batches ?? {})) {
    add(`c. PyTorch images/s, batch ${k}`, before.torch?.batches[k]?.imagesPerSecond, t.imagesPerSecond);
    add(`c. a/c, batch ${k}`, aOverC(before, Number(k)), aOverC(after, Number(k)), 2);
  }
  return [`### Before / after: ${before.label} (${before.startedAt}) -> ${after.label}`, '', table(['figure', 'before', 'after', 'change'], rows)].join('\n');
}

async function main(): Promise<void> {
  const program = new Command('bench')
    .description('crad-edge benchmark: bare runtime, daemon end to end, PyTorch, model variants (see bench/README.md)')
    .option('--model <file>', 'ONNX model (contract form)', path.join(root, 'models/demo/crad-demo.onnx'))
    .option('--images <dir>', 'images every part uses', path.join(root, 'samples'))
    .option('--parts <list>', 'parts to run: a (runtime), b (daemon), c (torch), d (variants)', 'a,b,c,d')
    .option('--cameras <list>', 'camera counts of part b', '1,2,4')
    .option('--batches <list>', 'batch sizes of part a', '1,2,4,8')
    .option('--providers <list>', 'onnxruntime execution providers, in order (cpu, cuda, tensorrt)', 'cpu')
    .option('--seconds <n>', 'measured seconds per daemon run', (v) => Number(v), 20)
    .option('--camera-fps <n>', 'fps of each folder camera in part b (0 = unthrottled)', (v) => Number(v), 0)
    .option('--runtime-seconds <n>', 'seconds per batch size in parts a and c', (v) => Number(v), 5)
    .option('--warmup <n>', 'seconds of each daemon run before measuring', (v) => Number(v), 5)
    .option('--no-sweep', 'skip the session-option sweep of part a')
    .option('--no-paced', 'skip the paced row of part b (1 camera at half the model\'s capacity)')
    .option('--no-live', 'skip the live-source rows of part b (GStreamer videotestsrc, the simulated GigE camera)')
    .option('--ahead <nice>', 'part b runs the fewest and the most cameras once more with the model on a worker, model.prepareAhead and model.daemonNice = nice (0: not)', (v) => Number(v), 10)
    .option('--sessions <n>', 'part b runs the most cameras once more with model.sessions = n (1: not)', (v) => Number(v), 2)
    .option('--pair-rounds <n>', 'rounds of the console and Sparkplug rows (each runs the daemon with and without, half --seconds)', (v) => Number(v), 5)
    .option('--viewers <n>', 'live-view viewers in the console row', (v) => Number(v), 1)
    .option('--pair-mode <mode>', 'side-by-side (both daemons at once, one core each; default with 2+ CPUs) or alternate (one after the other)', os.availableParallelism() >= 2 ? 'side-by-side' : 'alternate')
    .option('--profile', 'V8 CPU profile of the 1-camera daemon run, summarised in the table', false)
    .option('--quick', 'short settings for a smoke run (figures are noisy)', false)
    .option('--label <text>', 'name of this run in the table and JSON', 'cpu')
    .option('--out <file>', 'JSON report (default .work/bench/bench-<time>.json)', '')
    .option('--compare <file>', 'an earlier JSON report: print before/after')
    .option('--render <file>', 'measure nothing: print the tables of a saved JSON report (with --compare, against another)');
  program.parse();
  const opts = program.opts<Options>();
  if (opts.quick) {
    opts.seconds = Math.min(opts.seconds, 4);
    opts.runtimeSeconds = Math.min(opts.runtimeSeconds, 1);
    opts.warmup = Math.min(opts.warmup, 1);
    opts.pairRounds = Math.min(opts.pairRounds, 1);
  }
  if (opts.pairMode !== 'side-by-side' && opts.pairMode !== 'alternate') program.error(`--pair-mode must be side-by-side or alternate, not "${String(opts.pairMode)}"`);
  if (opts.render) {
    const saved = JSON.parse(fs.readFileSync(opts.render, 'utf8')) as BenchReport;
    evaluate(saved);
    const previous = opts.compare ? (JSON.parse(fs.readFileSync(opts.compare, 'utf8')) as BenchReport) : undefined;
    process.stdout.write(render(saved, previous) + '\n');
    return;
  }
  const parts = new Set(opts.parts.split(',').map((p) => p.trim()));
  const started = performance.now();
  const files = listImages(opts.images);
  const size = 224;
  const report: BenchReport = {
    format: 'crad-bench/1',
    label: opts.label,
    startedAt: new Date().toISOString(),
    durationSeconds: 0,
    machine: describeMachine(root, PYTHON),
    settings: { ...opts, parts: [...parts] },
    model: { path: path.resolve(opts.model), bytes: fs.statSync(opts.model).size, images: path.resolve(opts.images), imageCount: files.length, imageSize: '' },
  };
  const { default: cv } = await import('../src/cv.js');
  const probe = cv.imread(files[0]!);
  report.model.imageSize = `${probe.cols}x${probe.rows}, model input ${size}x${size}`;
  probe.release();
  const images = await preprocessedImages(files, size, size);
  const previous = opts.compare ? (JSON.parse(fs.readFileSync(opts.compare, 'utf8')) as BenchReport) : undefined;

  if (parts.has('a')) await partRuntime(opts, report, images, files.length, size);
  if (parts.has('b')) await partDaemon(opts, report, opts.images, images, files.length, size);
  if (parts.has('c')) await partTorch(opts, report, files, images, size);
  if (parts.has('d')) await partVariants(opts, report, images, files.length, size);
  evaluate(report);
  report.durationSeconds = (performance.now() - started) / 1000;

  const out = opts.out || path.join(root, '.work/bench', `bench-${report.startedAt.replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(report, null, 1) + '\n');
  process.stdout.write(render(report, previous) + '\n');
  process.stdout.write(`JSON: ${path.relative(process.cwd(), out)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
