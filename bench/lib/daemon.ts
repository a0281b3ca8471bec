// Part b: the daemon end to end. `crad-edge run` as its own process (the real entry point and
// config path), folder cameras reading the images as fast as they decode, a real mosquitto, and
// a subscriber here that receives every result. Everything the table says about the daemon is
// measured from outside it: /proc for CPU and memory, the result messages for throughput,
// latency and drops, and the preloaded probe for the event loop.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { cpuPercent, OtherLoad, sampleProcess, type ProcSample } from './proc.js';
import { summarize, slope, type Summary } from './stats.js';

/** One GStreamer videotestsrc camera (256 x 256 BGR) at `fps`, by default as fast as it renders: a live source that never waits for the model. */
export function gstreamerCamera(fps = 1000): Record<string, unknown> {
  return { id: 'cam1', source: 'gstreamer', pipeline: `videotestsrc pattern=ball ! video/x-raw,width=256,height=256,framerate=${fps}/1 ! videoconvert ! video/x-raw,format=BGR ! appsink` };
}

export interface DaemonRunOptions {
  root: string;
  modelPath: string;
  imagesDir: string;
  brokerUrl: string;
  cameras: number;
  /** Camera fps (0 = unthrottled: each folder camera reads as fast as images decode). */
  cameraFps: number;
  warmupSeconds: number;
  seconds: number;
  /** Live cameras instead of the folder ones (camera config entries; their ids must be cam1..). */
  cameraConfigs?: Record<string, unknown>[];
  /** Config overrides merged over the benchmark's config (model, inference, crops, ...). */
  overrides?: Record<string, Record<string, unknown>>;
  /** The broker's process id, for its CPU use (0: not measured). */
  brokerPid: number;
  /** Called once results flow, before the warm-up: e.g. connect a console viewer; returns its teardown. */
  attach?: () => Promise<() => void>;
  /** Write a V8 CPU profile of the daemon's measurement window to this file. */
  cpuProfileFile?: string;
  /** Pin the daemon to these CPUs (taskset's list, e.g. "1"): two runs side by side, one core each. */
  cpus?: string;
  /** Device id (default bench<cameras>); runs side by side on one broker need different ones. */
  deviceId?: string;
}

export interface DaemonRunResult {
  cameras: number;
  /** The cameras' source kind (folder unless cameraConfigs said otherwise). */
  source?: string;
  cameraFps: number;
  /** onnxruntime sessions the daemon ran side by side (model.sessions); absent in reports from before it: 1. */
  sessions?: number;
  /** The execution provider the daemon's results name (it falls back to cpu when one does not load). */
  provider: string;
  seconds: number;
  framesProcessed: number;
  framesPerSecond: number;
  /** Frames the cameras captured in the window (sequence numbers), and those never published. */
  framesCaptured: number;
  framesDropped: number;
  meanBatchSize: number;
  /** The daemon's own capture-to-publish time (result.latencyMs.total, monotonic clock). */
  captureToPublishMs: Summary;
  /** capturedAt to arrival at the subscriber (wall clock, 1 ms resolution): includes the broker hop. */
  captureToSubscriberMs: Summary;
  /**
   * Where the time goes: the daemon's per-frame breakdown, means in ms. publish is the rest of
   * capture-to-publish: the outbox commit, its fsync, and waiting for the main thread to send.
   */
  stagesMs: { queue: number; preprocess: number; inference: number; postprocess: number; publish?: number };
  /** The publish stage's own spread (its tail is not the model's). */
  publishMs?: Summary;
  /** The model's time per batch as the results report it (latencyMs.inference): its own tail, beside the total's. */
  inferenceMs?: Summary;
  /** capture-to-publish minus the model's run, frame by frame: what the daemon adds, its own tail beside the model's. */
  aroundModelMs?: Summary;
  cpuPercent: number;
  brokerCpuPercent: number;
  rssStartMiB: number;
  rssEndMiB: number;
  /** Peak RSS (VmHWM) when the window starts (after start-up and warm-up) and when it ends. */
  peakRssStartMiB: number;
  peakRssMiB: number;
  /** RSS change per 1000 frames over the window's second half (least squares): ~0 when memory does not grow with frames. */
  rssGrowthMiBPer1000Frames: number;
  /** CPU used by other processes on the machine during the window, % of one core (noise indicator). */
  otherLoadPercent: number;
  /** gcPauses: the main thread's GC pauses in the window (absent from older reports). */
  probe: { eventLoopDelayMs: Summary | Record<string, number>; eventLoopUtilization: number; heapUsedBytes: number; gcPauses?: { count: number; ms: number } } | null;
  cpuProfile?: string;
}

interface Received {
  atMono: number;
  provider: string;
  camera: string;
  sequence: number;
  totalMs: number;
  toSubscriberMs: number;
  queue: number;
  preprocess: number;
  inference: number;
  postprocess: number;
  batchSize: number;
}

const MiB = 2 ** 20;

function merge(base: Record<string, unknown>, extra: Record<string, Record<string, unknown>> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra ?? {})) {
    const current = out[key];
    out[key] = current && typeof current === 'object' && !Array.isArray(current) ? { ...(current as object), ...value } : value;
  }
  return out;
}

export async function runDaemon(options: DaemonRunOptions): Promise<DaemonRunResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-bench-'));
  const prefix = 'bench';
  const device = options.deviceId ?? `bench${options.cameras}`;
  const config = merge(
    {
      device: { id: device },
      log: { level: 'warn' },
      model: { path: options.modelPath },
      cameras: options.cameraConfigs ?? Array.from({ length: options.cameras }, (_, i) => ({ id: `cam${i + 1}`, source: 'folder', path: options.imagesDir, loop: true, fps: options.cameraFps })),
      mqtt: { url: options.brokerUrl, topicPrefix: prefix },
      outbox: { path: path.join(dir, 'outbox.sqlite') },
      service: { stateDir: dir, shutdownTimeoutMs: 5000 },
    },
    options.overrides,
  );
  const configFile = path.join(dir, 'config.json');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));

  const received: Received[] = [];
  const subscriber = await mqtt.connectAsync(options.brokerUrl, { protocolVersion: 5, reconnectPeriod: 0, clientId: `crad-bench-sub-${process.pid}-${device}` });
  await subscriber.subscribeAsync(`${prefix}/${device}/+/result`, { qos: 0 });
  subscriber.on('message', (_topic, payload) => {
    const atMono = performance.now();
    const r = JSON.parse(payload.toString()) as {
      camera: string; sequence: number; capturedAt: string; batchSize: number; model: { executionProvider: string };
      latencyMs: { queue: number; preprocess: number; inference: number; postprocess: number; total: number };
    };
    received.push({
      atMono, provider: r.model.executionProvider, camera: r.camera, sequence: r.sequence, totalMs: r.latencyMs.total, toSubscriberMs: Date.now() - Date.parse(r.capturedAt),
      queue: r.latencyMs.queue, preprocess: r.latencyMs.preprocess, inference: r.latencyMs.inference, postprocess: r.latencyMs.postprocess, batchSize: r.batchSize,
    });
  });

  const nodeArgs = ['--import', 'tsx', '--import', path.join(options.root, 'bench/lib/probe.ts')];
  const command = [process.execPath, ...nodeArgs, path.join(options.root, 'src/main.ts'), 'run', '--config', configFile];
  // taskset execs node in place: same pid (for /proc), same IPC channel.
  if (options.cpus !== undefined) command.unshift('taskset', '-c', options.cpus);
  const child: ChildProcess = spawn(command[0]!, command.slice(1), {
    cwd: options.root,
    // UV_THREADPOOL_SIZE as bin/crad-edge.js sets it for the installed daemon (this runs src/ directly).
    env: { UV_THREADPOOL_SIZE: '16', ...process.env, CRAD_LOG_LEVEL: 'warn', ...(options.cpuProfileFile ? { CRAD_BENCH_PROFILE: options.cpuProfileFile } : {}) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code));
  const probeAnswer = () =>
    new Promise<DaemonRunResult['probe']>((resolve) => {
      const timer = setTimeout(() => resolve(null), 10_000);
      child.once('message', (m) => {
        clearTimeout(timer);
        resolve((m as { probe: DaemonRunResult['probe'] }).probe);
      });
      child.send('snapshot');
    });

  const brokerPid = options.brokerPid;
  let detach: (() => void) | undefined;
  try {
    const startDeadline = performance.now() + 60_000;
    while (received.length === 0) {
      if (exitCode !== undefined) throw new Error(`daemon exited (code ${exitCode}) before publishing a result:\n${output.slice(-3000)}`);
      if (performance.now() > startDeadline) throw new Error(`daemon published no result within 60 s:\n${output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    detach = await options.attach?.();
    await new Promise((r) => setTimeout(r, options.warmupSeconds * 1000));

    child.send('reset');
    const windowStart = performance.now();
    const first = sampleProcess(child.pid!);
    const brokerFirst = brokerPid ? sampleProcess(brokerPid) : null;
    const otherLoad = new OtherLoad();
    const countAtStart = received.length;
    const samples: { frames: number; sample: ProcSample }[] = [];
    while (performance.now() - windowStart < options.seconds * 1000) {
      await new Promise((r) => setTimeout(r, 500));
      const s = sampleProcess(child.pid!);
      if (s) samples.push({ frames: received.length - countAtStart, sample: s });
    }
    const last = sampleProcess(child.pid!);
    const brokerLast = brokerPid ? sampleProcess(brokerPid) : null;
    const windowEnd = performance.now();
    const ownSeconds = (first && last ? last.cpuSeconds - first.cpuSeconds : 0) + (brokerFirst && brokerLast ? brokerLast.cpuSeconds - brokerFirst.cpuSeconds : 0);
    const otherLoadPercent = otherLoad.percent(ownSeconds);
    const probe = await probeAnswer();
    if (!first || !last) throw new Error(`daemon process ${child.pid} vanished during the measurement:\n${output.slice(-3000)}`);

    const inWindow = received.filter((r) => r.atMono >= windowStart && r.atMono < windowEnd);
    const seconds = (windowEnd - windowStart) / 1000;
    let captured = 0;
    for (const camera of new Set(inWindow.map((r) => r.camera))) {
      const sequences = inWindow.filter((r) => r.camera === camera).map((r) => r.sequence);
      captured += Math.max(...sequences) - Math.min(...sequences) + 1;
    }
    const publishMs = inWindow.map((r) => r.totalMs - r.queue - r.preprocess - r.inference - r.postprocess);
    const later = samples.slice(Math.floor(samples.length / 2));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    return {
      cameras: options.cameras,
      source: String(options.cameraConfigs?.[0]?.source ?? 'folder'),
      cameraFps: options.cameraFps,
      sessions: Number(options.overrides?.model?.sessions ?? 1),
      provider: [...new Set(inWindow.map((r) => r.provider))].join(','),
      seconds,
      framesProcessed: inWindow.length,
      framesPerSecond: inWindow.length / seconds,
      framesCaptured: captured,
      framesDropped: captured - inWindow.length,
      meanBatchSize: mean(inWindow.map((r) => r.batchSize)),
      captureToPublishMs: summarize(inWindow.map((r) => r.totalMs)),
      captureToSubscriberMs: summarize(inWindow.map((r) => r.toSubscriberMs)),
      inferenceMs: summarize(inWindow.map((r) => r.inference)),
      aroundModelMs: summarize(inWindow.map((r) => r.totalMs - r.inference)),
      stagesMs: {
        queue: mean(inWindow.map((r) => r.queue)),
        preprocess: mean(inWindow.map((r) => r.preprocess)),
        inference: mean(inWindow.map((r) => r.inference)),
        postprocess: mean(inWindow.map((r) => r.postprocess)),
        publish: mean(publishMs),
      },
      publishMs: summarize(publishMs),
      cpuPercent: cpuPercent(first, last),
      brokerCpuPercent: brokerFirst && brokerLast ? cpuPercent(brokerFirst, brokerLast) : Number.NaN,
      rssStartMiB: first.rssBytes / MiB,
      rssEndMiB: last.rssBytes / MiB,
      peakRssStartMiB: first.peakRssBytes / MiB,
      peakRssMiB: last.peakRssBytes / MiB,
      // Second half of the window only: the first still holds allocator and JIT warm-up.
      rssGrowthMiBPer1000Frames: (slope(later.map((s) => s.frames), later.map((s) => s.sample.rssBytes)) * 1000) / MiB,
      otherLoadPercent,
      probe,
    };
  } finally {
    detach?.();
    if (exitCode === undefined) child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
    await subscriber.endAsync();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Share of the window the daemon spent inside session.run (batches/s x inference ms, per
 * session with model.sessions above 1): the part of b/a that does not depend on how fast the
 * machine happens to be at the moment. 1 - this is the time the model waited for the rest of the
 * pipeline.
 */
export function modelBusy(d: DaemonRunResult): number {
  return ((d.framesPerSecond / Math.max(1, d.meanBatchSize)) * d.stagesMs.inference) / 1000 / Math.max(1, d.sessions ?? 1);
}

/**
 * The daemon's own time per frame: wall time not spent in session.run, per frame (session time
 * with more than one session). With one session on the main thread, session.run holds it, so
 * this is what the rest of the daemon costs the model (drift-free in the same way as model busy:
 * both sides slow down together).
 */
export function ownMsPerFrame(d: DaemonRunResult): number {
  return ((1 - modelBusy(d)) * 1000 * Math.max(1, d.sessions ?? 1)) / d.framesPerSecond;
}
