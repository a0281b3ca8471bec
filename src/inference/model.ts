// The loaded model: an onnxruntime session over a contract-checked file, the OpenCV
// preprocessing that feeds it, and the session's lifetime (release() frees native memory;
// sessions re-created without it leak on a line PC that reloads models for months).
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import cv, { type Mat } from '../cv.js';
import type { Frame } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import type { Logger } from '../shared/log.js';
import { INPUT_NAME, MAP_OUTPUT, ModelContractError, ModelFileError, readModelFile, SCORE_OUTPUT, type ModelFile } from './model-file.js';
import { protectedThreadIds, WorkerSession, type SessionLike } from './ort-worker.js';
import { lowerOwnThreads } from './thread-priority.js';
import type { FrameInference, Inference, InputForm, ModelInfo } from './types.js';

export interface ModelOptions {
  /** onnxruntime execution providers in order of preference; cpu is always tried last. */
  executionProviders: string[];
  intraOpThreads: number;
  interOpThreads: number;
  graphOptimization: 'disabled' | 'basic' | 'extended' | 'all';
  memoryArena: boolean;
  /** false: idle intra-op threads sleep between runs (session.intra_op.allow_spinning 0). */
  intraOpSpinning: boolean;
  warmupRuns: number;
  /** Where session.run runs (model.inferenceThread with auto resolved by core count); default main. */
  inferenceThread?: 'main' | 'worker';
  /** onnxruntime sessions that run batches side by side, each on its own worker thread when more than 1; default 1. */
  sessions?: number;
  /** Sessions on workers: one more batch than sessions, preprocessed and queued while they run (model.prepareAhead). */
  prepareAhead?: boolean;
  /** Sessions on workers: nice levels the daemon's own threads run below the inference threads (model.daemonNice). */
  daemonNice?: number;
  /** Largest batch the pipeline sends; warm-up also runs it once, so the first real batch is not slow. */
  maxBatch: number;
  tensorrt: { fp16: boolean; engineCacheDir: string; workspaceBytes: number };
  cuda: { deviceId: number };
}

/** ModelOptions from the config's model and inference sections. */
export function modelOptions(config: AppConfig): ModelOptions {
  const m = config.model;
  return {
    executionProviders: [...m.executionProviders],
    intraOpThreads: m.intraOpThreads,
    interOpThreads: m.interOpThreads,
    graphOptimization: m.graphOptimization as ModelOptions['graphOptimization'],
    memoryArena: m.memoryArena,
    intraOpSpinning: m.intraOpSpinning,
    warmupRuns: m.warmupRuns,
    inferenceThread: resolveInferenceThread(m.inferenceThread),
    sessions: m.sessions,
    prepareAhead: m.prepareAhead,
    daemonNice: m.daemonNice,
    maxBatch: config.inference.maxBatch,
    tensorrt: { ...m.tensorrt },
    cuda: { ...m.cuda },
  };
}

/** The machine's cores, read once: the pipeline resolves model.inferenceThread for every batch. */
const CORES = os.availableParallelism();

/** auto: a worker thread where cores are to spare (4 or more), else the main thread. */
export function resolveInferenceThread(setting: string, cores = CORES): 'main' | 'worker' {
  if (setting === 'main' || setting === 'worker') return setting;
  return cores >= 4 ? 'worker' : 'main';
}

/** What the caller of CradModel.run may do at the points a run passes. */
export interface RunHooks {
  /** The frames' pixels are in the batch: the model needs them no more. */
  preprocessed?(): void;
  /**
   * Awaited just before a session.run that holds the main thread (a session on the main thread),
   * after preprocessing: the last moment for work that should not wait out the run. The wait
   * counts as the batch's queueing, not its inference. Not called for sessions on workers.
   */
  beforeBlockingRun?(): Promise<void>;
}

export interface CradModel {
  readonly info: ModelInfo;
  /**
   * Preprocess and run one batch. As many batches run at once as the model has sessions; a
   * further call preprocesses its batch and waits for a session.
   */
  run(frames: Frame[], hooks?: RunHooks): Promise<Inference>;
  /** Release the onnxruntime sessions (waits for the runs in flight; runs still waiting for a session are refused). Safe to call more than once. */
  release(): Promise<void>;
}

type Roi = { x: number; y: number; width: number; height: number };

/**
 * The part of the frame the model inspects: the frame's ROI clipped to the image, or the whole
 * image. Post-processing maps boxes back through the same rectangle.
 */
export function effectiveRoi(frame: Pick<Frame, 'image' | 'roi' | 'cameraId' | 'sequence'>): Roi {
  const { cols, rows } = frame.image;
  if (!frame.roi) return { x: 0, y: 0, width: cols, height: rows };
  const x0 = Math.max(0, frame.roi.x);
  const y0 = Math.max(0, frame.roi.y);
  const x1 = Math.min(cols, frame.roi.x + frame.roi.width);
  const y1 = Math.min(rows, frame.roi.y + frame.roi.height);
  if (x1 <= x0 || y1 <= y0) {
    throw new Error(
      `camera ${frame.cameraId} frame ${frame.sequence}: ROI ${JSON.stringify(frame.roi)} lies outside the ${cols}x${rows} image`,
    );
  }
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** The trainer's resize rule (training/crad/data.py): bilinear only when both sides grow, else area. */
export function resizeInterpolation(src: { width: number; height: number }, dst: { width: number; height: number }): number {
  return dst.height >= src.height && dst.width >= src.width ? cv.INTER_LINEAR : cv.INTER_AREA;
}

/**
 * A batch in the model's input form: float32 RGB planes (NCHW, in [0, 1]) or uint8 BGR pixels
 * (NHWC, in [0, 255]); 3 x H x W elements per frame either way.
 */
export type InputBuffer = Float32Array | Uint8Array;

/** A zeroed buffer for `frames` frames of the input form. */
export function inputBuffer(form: InputForm, frames: number, height: number, width: number): InputBuffer {
  const elements = frames * 3 * height * width;
  return form === 'uint8-bgr-nhwc' ? new Uint8Array(elements) : new Float32Array(elements);
}

/** The graph's input tensor over the first n frames of a batch buffer (its type gives the form). */
export function inputTensor(data: InputBuffer, n: number, height: number, width: number): ort.Tensor {
  return data instanceof Uint8Array ? new ort.Tensor('uint8', data, [n, height, width, 3]) : new ort.Tensor('float32', data, [n, 3, height, width]);
}

/**
 * The frame's ROI resized to height x width as 8-bit BGR (gray and BGRA converted). `view`: it is
 * still a region of the frame's image (an ROI of exactly the model's size), not a Mat of its own.
 * The Mats it makes go to `own` for the caller to release.
 */
async function resizedBgr(frame: Frame, height: number, width: number, own: (m: Mat) => Mat): Promise<{ bgr: Mat; view: boolean }> {
  const image = frame.image;
  if (image.empty) throw new Error(`camera ${frame.cameraId} frame ${frame.sequence}: the image is empty (released?)`);
  if (image.depth !== cv.CV_8U) {
    throw new Error(`camera ${frame.cameraId} frame ${frame.sequence}: image depth ${image.depth} is not 8-bit; capture must deliver 8-bit BGR`);
  }
  const roi = effectiveRoi(frame);
  const wholeImage = roi.x === 0 && roi.y === 0 && roi.width === image.cols && roi.height === image.rows;
  // getRegion is a view (no copy); releasing the view leaves the frame's image alone.
  const region = wholeImage ? image : own(image.getRegion(new cv.Rect(roi.x, roi.y, roi.width, roi.height)));
  let mat = region;
  if (roi.width !== width || roi.height !== height) {
    // The one large operation (full-resolution ROI in): async, so capture and MQTT keep running.
    mat = own(await mat.resizeAsync(height, width, 0, 0, resizeInterpolation(roi, { width, height })));
  }
  if (mat.channels === 1) mat = own(mat.cvtColor(cv.COLOR_GRAY2BGR));
  else if (mat.channels === 4) mat = own(mat.cvtColor(cv.COLOR_BGRA2BGR));
  else if (mat.channels !== 3) throw new Error(`camera ${frame.cameraId} frame ${frame.sequence}: ${mat.channels}-channel image is not supported`);
  return { bgr: mat, view: mat === region && !wholeImage };
}

/** Float form: RGB planes in [0, 1] (NCHW). All pixel work is OpenCV; JS only copies three planes. */
function writeRgbPlanes(bgr: Mat, input: Float32Array, offset: number, height: number, width: number, own: (m: Mat) => Mat): void {
  const scaled = own(bgr.convertTo(cv.CV_32FC3, 1 / 255));
  const planes = scaled.splitChannels();
  for (const plane of planes) own(plane);
  // BGR planes written in reverse order = BGR->RGB without a cvtColor pass.
  const planeBytes = height * width * 4;
  const target = new Uint8Array(input.buffer, input.byteOffset + offset * 4, 3 * planeBytes);
  for (let c = 0; c < 3; c++) {
    const data = planes[2 - c]!.getData();
    if (data.length !== planeBytes) throw new Error(`internal: plane of ${data.length} bytes, expected ${planeBytes}`);
    // Byte copy: a Buffer from getData need not be 4-byte aligned for a Float32Array view.
    target.set(data, c * planeBytes);
  }
}

/** uint8 form: the resized BGR bytes as they are (NHWC); the graph casts, scales and transposes. */
function writeBgrPixels(bgr: Mat, view: boolean, input: Uint8Array, offset: number, height: number, width: number, own: (m: Mat) => Mat): void {
  // getData refuses a region of a larger image: an ROI of exactly the model's size needs a copy.
  const data = (view ? own(bgr.copy()) : bgr).getData();
  if (data.length !== 3 * height * width) throw new Error(`internal: image of ${data.length} bytes, expected ${3 * height * width}`);
  input.set(data, offset);
}

/**
 * Write one frame into `input` at `offset` (in elements) as the model's input form wants it (the
 * buffer's type says which), resized to height x width.
 */
export async function preprocessFrame(frame: Frame, input: InputBuffer, offset: number, height: number, width: number): Promise<void> {
  const owned: Mat[] = [];
  const own = (m: Mat): Mat => {
    owned.push(m);
    return m;
  };
  try {
    const { bgr, view } = await resizedBgr(frame, height, width, own);
    if (input instanceof Float32Array) writeRgbPlanes(bgr, input, offset, height, width, own);
    else writeBgrPixels(bgr, view, input, offset, height, width, own);
  } finally {
    for (const m of owned) m.release();
  }
}

/** Preprocess a batch into the start of `input` (frame i at element i*3*H*W). */
export async function preprocessInto(frames: Frame[], input: InputBuffer, height: number, width: number): Promise<void> {
  const perFrame = 3 * height * width;
  if (input.length < frames.length * perFrame) throw new Error(`input buffer holds ${input.length / perFrame} frames, batch has ${frames.length}`);
  // Frames in parallel (OpenCV's async calls run on libuv's thread pool); allSettled, so that no
  // frame is still writing into the buffer when the batch fails.
  const outcomes = await Promise.allSettled(frames.map((frame, i) => preprocessFrame(frame, input, i * perFrame, height, width)));
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) throw failed.reason;
}

function providerConfig(name: string, options: ModelOptions): ort.InferenceSession.ExecutionProviderConfig {
  switch (name) {
    case 'cuda':
      return { name: 'cuda', deviceId: options.cuda.deviceId };
    case 'tensorrt':
      return { name: 'tensorrt', deviceId: options.cuda.deviceId };
    default:
      return name;
  }
}

/** Session config entries that make idle intra-op (and inter-op) threads sleep instead of spin-waiting. */
export const NO_SPINNING: ort.InferenceSession.SessionOptions['extra'] = { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };

/** Sessions the model runs side by side (model.sessions). */
export function sessionCount(options: Pick<ModelOptions, 'sessions'>): number {
  return Math.max(1, options.sessions ?? 1);
}

/** Whether session.run runs on worker threads (more than one session, or model.inferenceThread worker). */
export function onWorkers(options: Pick<ModelOptions, 'sessions' | 'inferenceThread'>): boolean {
  return sessionCount(options) > 1 || options.inferenceThread === 'worker';
}

/** Runs a session takes at once: two (one running, the next queued on its thread) with model.prepareAhead on workers. */
export function runsPerSession(options: Pick<ModelOptions, 'sessions' | 'inferenceThread' | 'prepareAhead'>): number {
  return options.prepareAhead && onWorkers(options) ? 2 : 1;
}

/** Batches the pipeline keeps in flight: as many as the sessions take at once. */
export function batchesInFlight(options: Pick<ModelOptions, 'sessions' | 'inferenceThread' | 'prepareAhead'>): number {
  return sessionCount(options) * runsPerSession(options);
}

/**
 * Intra-op threads of each session: the configured number, or with 0 (one per core) the cores
 * shared out between the sessions, so that sessions side by side do not oversubscribe the CPU.
 */
export function intraOpThreadsPerSession(options: Pick<ModelOptions, 'intraOpThreads' | 'sessions'>, cores = os.availableParallelism()): number {
  if (options.intraOpThreads > 0) return options.intraOpThreads;
  const sessions = sessionCount(options);
  return sessions > 1 ? Math.max(1, Math.floor(cores / sessions)) : 0;
}

/** The onnxruntime session options of ModelOptions (the providers are added per attempt). */
export function sessionOptions(options: ModelOptions): ort.InferenceSession.SessionOptions {
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: options.graphOptimization,
    enableCpuMemArena: options.memoryArena,
    // onnxruntime's own log goes to stderr unformatted; keep only its errors.
    logSeverityLevel: 3,
  };
  const intraOp = intraOpThreadsPerSession(options);
  // 0 means "runtime default" in the config; onnxruntime takes 0 the same way, but omit it to be plain.
  return {
    ...base,
    ...(intraOp > 0 ? { intraOpNumThreads: intraOp } : {}),
    ...(options.interOpThreads > 0 ? { interOpNumThreads: options.interOpThreads } : {}),
    ...(options.intraOpSpinning ? {} : { extra: NO_SPINNING }),
  };
}

/**
 * The model's sessions on the first execution provider of the preference list that works,
 * logging each one that does not and naming the one in use. cpu is always the last resort.
 * More than one session: each on its own worker thread (a session.run on the main thread holds
 * it, so two there could never overlap).
 */
async function createSessions(file: ModelFile, options: ModelOptions, log: Logger): Promise<{ sessions: SessionLike[]; provider: string }> {
  const preference = [...new Set([...options.executionProviders.map((p) => p.toLowerCase()), 'cpu'])];
  if (preference.includes('tensorrt')) {
    // onnxruntime-node's binding hands TensorRT only the device id (its session_options_helper
    // ignores every other TensorRT option, and the EP then ignores the ORT_TENSORRT_* variables).
    log.warn(
      { fp16: options.tensorrt.fp16, engineCacheDir: options.tensorrt.engineCacheDir, workspaceBytes: options.tensorrt.workspaceBytes },
      'model.tensorrt.* options cannot be passed through onnxruntime-node; TensorRT will run with its defaults (fp32, no engine cache) if it is used',
    );
  }
  const count = sessionCount(options);
  const onWorker = onWorkers(options);
  // Made by the spawner, so that they keep the priority the daemon's own threads are lowered from.
  const viaSpawner = onWorker && (options.daemonNice ?? 0) > 0;
  const failures: string[] = [];
  for (const name of preference) {
    const settings = { ...sessionOptions(options), executionProviders: [providerConfig(name, options)] };
    const sessions: SessionLike[] = [];
    try {
      while (sessions.length < count) {
        sessions.push(onWorker ? await WorkerSession.create(file.bytes, settings, { viaSpawner }) : await ort.InferenceSession.create(file.bytes, settings));
      }
      if (failures.length > 0) log.warn({ provider: name, skipped: failures }, `execution provider fallback: running on ${name}`);
      return { sessions, provider: name };
    } catch (err) {
      await Promise.allSettled(sessions.map((session) => session.release()));
      const message = (err as Error).message.split('\n')[0] ?? String(err);
      failures.push(`${name}: ${message}`);
      log.warn({ provider: name, err: message }, `execution provider ${name} is not usable, trying the next one`);
    }
  }
  throw new ModelFileError(file.info.path, `onnxruntime cannot load model ${file.info.path}: ${failures.join('; ')}`);
}

class OrtCradModel implements CradModel {
  /** Runs each session has now (running, or queued on its worker): at most runsPerSession. */
  private readonly runsOn: Map<SessionLike, number>;
  /** Runs whose batch is preprocessed and waits for a session, first come first served. */
  private readonly waiting: { resolve: (session: SessionLike) => void; reject: (err: Error) => void }[] = [];
  /** Batch buffers of the model's input form not in use now: one per batch in flight, reused. */
  private readonly buffers: InputBuffer[] = [];
  /** Runs started and not yet settled (release waits for them). */
  private readonly running = new Set<Promise<unknown>>();
  private released = false;

  constructor(
    readonly info: ModelInfo,
    private readonly sessions: SessionLike[],
    private readonly height: number,
    private readonly width: number,
    private readonly runsPerSession = 1,
  ) {
    this.runsOn = new Map(sessions.map((session) => [session, 0]));
  }

  run(frames: Frame[], hooks: RunHooks = {}): Promise<Inference> {
    if (this.released) return Promise.reject(this.releasedError());
    const run = this.runNow(frames, hooks);
    const settled = run.then(() => undefined, () => undefined);
    this.running.add(settled);
    void settled.then(() => this.running.delete(settled));
    return run;
  }

  private async runNow(frames: Frame[], hooks: RunHooks): Promise<Inference> {
    const n = frames.length;
    if (n === 0) return { frames: [], model: this.info, timings: { preprocessMs: 0, inferenceMs: 0, batchSize: 0 } };
    const t0 = performance.now();
    const perFrame = 3 * this.height * this.width;
    const input = this.takeBuffer(n * perFrame);
    try {
      // Preprocessing needs no session: it overlaps the batches other sessions are running.
      await preprocessInto(frames, input, this.height, this.width);
      hooks.preprocessed?.();
      const t1 = performance.now();
      const session = await this.acquire();
      let t2: number;
      let output: { maps: Float32Array; scores: Float32Array; runMs?: number };
      try {
        if (!(session instanceof WorkerSession)) await hooks.beforeBlockingRun?.();
        t2 = performance.now();
        output = await this.infer(session, input.subarray(0, n * perFrame), n);
      } finally {
        this.giveBack(session);
      }
      // On a worker, the run's own time: the copies and a wait in the worker's queue are queueing.
      const inferenceMs = output.runMs ?? performance.now() - t2;
      const plane = this.height * this.width;
      const results: FrameInference[] = frames.map((frame, i) => ({
        frame,
        raw: output.scores[i]!,
        map: output.maps.subarray(i * plane, (i + 1) * plane),
        mapHeight: this.height,
        mapWidth: this.width,
      }));
      // The wait for a free session is neither: the pipeline counts it as queueing.
      return { frames: results, model: this.info, timings: { preprocessMs: t1 - t0, inferenceMs, batchSize: n } };
    } finally {
      if (!this.released) this.buffers.push(input);
    }
  }

  private takeBuffer(elements: number): InputBuffer {
    const reused = this.buffers.pop();
    return reused && reused.length >= elements ? reused : inputBuffer(this.info.input.form, elements / (3 * this.height * this.width), this.height, this.width);
  }

  private acquire(): Promise<SessionLike> {
    if (this.released) return Promise.reject(this.releasedError());
    const session = this.leastBusy();
    if (session) {
      this.runsOn.set(session, this.runsOn.get(session)! + 1);
      return Promise.resolve(session);
    }
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private giveBack(session: SessionLike): void {
    this.runsOn.set(session, this.runsOn.get(session)! - 1);
    const next = this.waiting.shift();
    if (!next) return;
    const free = this.leastBusy()!;
    this.runsOn.set(free, this.runsOn.get(free)! + 1);
    next.resolve(free);
  }

  /** The session with the fewest runs that can take one more (an idle one first), or none. */
  private leastBusy(): SessionLike | undefined {
    let best: SessionLike | undefined;
    for (const [session, runs] of this.runsOn) if (runs < this.runsPerSession && (best === undefined || runs < this.runsOn.get(best)!)) best = session;
    return best;
  }

  private releasedError(): Error {
    return new Error(`model ${this.info.path} has been released`);
  }

  /** session.run on a batch of the input form, with the output shapes the contract promises checked. */
  async infer(session: SessionLike, data: InputBuffer, n: number): Promise<{ maps: Float32Array; scores: Float32Array; runMs?: number }> {
    const feeds = { [INPUT_NAME]: inputTensor(data, n, this.height, this.width) };
    const timed = session instanceof WorkerSession ? await session.runTimed(feeds, [MAP_OUTPUT, SCORE_OUTPUT]) : null;
    const out = timed ? timed.outputs : await session.run(feeds, [MAP_OUTPUT, SCORE_OUTPUT]);
    const map = out[MAP_OUTPUT]!;
    const score = out[SCORE_OUTPUT]!;
    const mapDims = map.dims.join('x');
    if (map.type !== 'float32' || mapDims !== `${n}x1x${this.height}x${this.width}`) {
      throw new ModelContractError(this.info.path, [`output "${MAP_OUTPUT}" came back as ${map.type} [${map.dims.join(', ')}], expected float32 [${n}, 1, ${this.height}, ${this.width}]`]);
    }
    if (score.type !== 'float32' || score.dims.join('x') !== `${n}`) {
      throw new ModelContractError(this.info.path, [`output "${SCORE_OUTPUT}" came back as ${score.type} [${score.dims.join(', ')}], expected float32 [${n}]`]);
    }
    return { maps: map.data as Float32Array, scores: score.data as Float32Array, ...(timed ? { runMs: timed.runMs } : {}) };
  }

  /** Blank batches through every session, so that the first real frame does not pay for allocation. */
  async warmUp(runs: number, maxBatch: number): Promise<void> {
    const sizes = [...Array<number>(Math.max(1, runs)).fill(1), ...(maxBatch > 1 ? [maxBatch] : [])];
    await Promise.all(this.sessions.map(async (session) => {
      for (const n of sizes) await this.infer(session, inputBuffer(this.info.input.form, n, this.height, this.width), n);
    }));
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    for (const waiter of this.waiting.splice(0)) waiter.reject(this.releasedError());
    await Promise.all(this.running);
    this.buffers.length = 0;
    await Promise.all(this.sessions.map((session) => session.release()));
  }
}

/**
 * Load a CRAD model: read and check the file against the contract, open an onnxruntime session
 * on the preferred execution provider, and warm it up. Every failure is a ModelFileError (or
 * ModelContractError) whose message names the file and what is wrong.
 */
export async function loadModel(path: string, options: ModelOptions, log: Logger): Promise<CradModel> {
  const file = await readModelFile(path);
  for (const warning of file.warnings) log.warn({ model: path }, warning);
  const { sessions, provider } = await createSessions(file, options, log);
  const info: ModelInfo = { ...file.info, executionProvider: provider };
  const model = new OrtCradModel(info, sessions, file.height, file.width, runsPerSession(options));
  try {
    // At least one run even when warmupRuns is 0: it is what checks the output shapes.
    await model.warmUp(options.warmupRuns, options.maxBatch);
  } catch (err) {
    await model.release();
    if (err instanceof ModelFileError) throw err;
    throw new ModelFileError(path, `model ${path} failed its warm-up run on ${provider}: ${(err as Error).message}`);
  }
  // Every time a model loads: threads made since (a recipe model's pool, say) are lowered too,
  // never the sessions' own (each model's workers come from the spawner, at the start priority).
  if (onWorkers(options) && (options.daemonNice ?? 0) > 0) lowerOwnThreads(options.daemonNice!, await protectedThreadIds(), log);
  log.info(
    { model: path, hash: info.hash, variant: info.variant, backbone: info.backbone, input: `${file.height}x${file.width}`, inputForm: info.input.form, calibrated: info.calibration !== null, provider, thread: sessions.length > 1 ? 'worker' : options.inferenceThread ?? 'main', sessions: sessions.length, prepareAhead: runsPerSession(options) > 1 },
    `model loaded on execution provider ${provider}`,
  );
  return model;
}
