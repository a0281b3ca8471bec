// The loaded model: onnxruntime sessions over a contract-checked file, batches preprocessed into
// them (preprocess.ts) and run, and the sessions' lifetime (release() frees native memory;
// sessions re-created without it leak on a line PC that reloads models for months). How the
// sessions are set up is in model-options.ts.
import * as ort from 'onnxruntime-node';
import type { Frame } from '../capture/frame.js';
import type { Logger } from '../shared/log.js';
import { INPUT_NAME, MAP_OUTPUT, SCORE_OUTPUT, type ModelFile } from './model-contract.js';
import { ModelContractError, ModelFileError, readModelFile } from './model-file.js';
import { onWorkers, providerConfig, runsPerSession, sessionCount, sessionOptions, type ModelOptions } from './model-options.js';
import { protectedThreadIds, WorkerSession, type SessionLike } from './ort-worker.js';
import { inputBuffer, inputTensor, preprocessInto, type InputBuffer } from './preprocess.js';
import { lowerOwnThreads } from './thread-priority.js';
import type { FrameInference, Inference, ModelInfo } from './types.js';

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
