// How the model's onnxruntime sessions are set up: ModelOptions from the config, how many sessions
// run side by side and where, and the session options each one gets.
import os from 'node:os';
import type * as ort from 'onnxruntime-node';
import type { AppConfig } from '../config/load.js';

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

export function providerConfig(name: string, options: ModelOptions): ort.InferenceSession.ExecutionProviderConfig {
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
