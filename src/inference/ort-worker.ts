// An onnxruntime session on a worker thread. onnxruntime-node's session.run holds the thread that
// calls it for the whole inference; on a machine with cores to spare (Jetson Orin: 6-12) running
// it here leaves the main thread to capture, preprocessing, post-processing and the outbox. On 2
// cores it costs throughput (the freed main thread competes with the intra-op threads), hence
// model.inferenceThread and its default by core count, and model.daemonNice (thread-priority.ts),
// which hands the cores to the inference threads first.
import { createRequire } from 'node:module';
import { MessageChannel, Worker } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';

/** What the model needs of a session, on this thread or on the worker. */
export interface SessionLike {
  run(feeds: Record<string, ort.Tensor>, outputs: string[]): Promise<Record<string, { type: string; dims: readonly number[]; data: unknown }>>;
  release(): Promise<void>;
}

/** Linux thread ids (/proc/thread-self) of a session's worker and of the threads onnxruntime made for it; [] elsewhere. */
export type ThreadIds = number[];

// Plain CommonJS, evaluated as the worker's source: the same file works under tsx and from dist/.
// Talks over workerData.port when a spawner made it, else over parentPort. Reports the run's own
// time (without the copies and the wait in this thread's queue) and, after create, its thread id
// and those of the threads that appeared while onnxruntime created the session (its intra-op pool).
const SESSION_SOURCE = `
const fs = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ort);
const port = workerData.port || parentPort;
const threadId = () => { try { return Number(fs.readlinkSync('/proc/thread-self').split('/').pop()); } catch { return null; } };
const threads = () => { try { return fs.readdirSync('/proc/self/task').map(Number); } catch { return []; } };
let session = null;
port.on('message', async (m) => {
  try {
    if (m.op === 'create') {
      const before = new Set(threads());
      session = await ort.InferenceSession.create(m.bytes, m.options);
      const own = threadId();
      const made = threads().filter((tid) => !before.has(tid));
      port.postMessage({ id: m.id, result: own === null ? [] : [own, ...made] });
    } else if (m.op === 'run') {
      const feeds = {};
      for (const [name, t] of Object.entries(m.feeds)) feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
      const started = performance.now();
      const out = await session.run(feeds, m.outputs);
      const runMs = performance.now() - started;
      const outputs = {};
      for (const name of m.outputs) outputs[name] = { type: out[name].type, dims: out[name].dims, data: out[name].data };
      port.postMessage({ id: m.id, result: { outputs, runMs } });
    } else if (m.op === 'release') {
      if (session) await session.release();
      session = null;
      port.postMessage({ id: m.id });
    }
  } catch (err) {
    port.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

// The spawner: a thread made before the daemon lowers its own threads' priority, which then makes
// every session worker, so that those (and their intra-op threads) inherit its priority rather
// than the lowered one of the main thread; a model swapped in later keeps it too.
const SPAWNER_SOURCE = `
const fs = require('node:fs');
const { parentPort, Worker } = require('node:worker_threads');
const workers = new Map();
let tid = null;
try { tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop()); } catch {}
parentPort.postMessage({ op: 'ready', tid });
parentPort.on('message', (m) => {
  if (m.op === 'spawn') {
    const worker = new Worker(m.source, { eval: true, workerData: { ort: m.ort, port: m.port }, transferList: [m.port] });
    workers.set(m.key, worker);
    worker.on('error', (err) => parentPort.postMessage({ op: 'error', key: m.key, message: String((err && err.message) || err) }));
    worker.on('exit', (code) => { workers.delete(m.key); parentPort.postMessage({ op: 'exit', key: m.key, code }); });
  } else if (m.op === 'terminate') {
    const worker = workers.get(m.key);
    if (worker) void worker.terminate();
    else parentPort.postMessage({ op: 'exit', key: m.key, code: null });
  }
});
`;

/** The two ends a WorkerSession needs of its thread, however it was made. */
interface SessionThread {
  post(message: unknown): void;
  onMessage(listener: (message: unknown) => void): void;
  onFailure(listener: (err: Error) => void): void;
  terminate(): Promise<void>;
}

function directThread(ortPath: string): SessionThread {
  const worker = new Worker(SESSION_SOURCE, { eval: true, workerData: { ort: ortPath } });
  return {
    post: (message) => worker.postMessage(message),
    onMessage: (listener) => worker.on('message', listener),
    onFailure: (listener) => {
      worker.on('error', listener);
      worker.on('exit', (code) => listener(new Error(`inference worker exited (code ${code})`)));
    },
    terminate: async () => void (await worker.terminate()),
  };
}

class Spawner {
  private static instance: Promise<Spawner> | null = null;
  private readonly exits = new Map<number, { failed: (err: Error) => void; exited: () => void }>();
  private nextKey = 0;
  /** Workers being ended now. */
  private ending = 0;

  private constructor(private readonly worker: Worker, readonly threadId: number | null) {
    worker.on('message', (m: { op: string; key: number; code?: number | null; message?: string }) => {
      const watcher = this.exits.get(m.key);
      if (m.op === 'error') watcher?.failed(new Error(m.message));
      if (m.op === 'exit') {
        this.exits.delete(m.key);
        watcher?.failed(new Error(`inference worker exited (code ${m.code})`));
        watcher?.exited();
      }
    });
    // It only makes and ends workers: it must not keep the daemon alive by itself.
    worker.unref();
  }

  /** The one spawner of this process, made on first use (before the daemon lowers its own threads). */
  static get(): Promise<Spawner> {
    Spawner.instance ??= new Promise<Spawner>((resolve, reject) => {
      const worker = new Worker(SPAWNER_SOURCE, { eval: true });
      worker.once('error', reject);
      worker.once('message', (m: { tid: number | null }) => resolve(new Spawner(worker, m.tid)));
    });
    return Spawner.instance;
  }

  spawn(ortPath: string): SessionThread {
    const key = this.nextKey++;
    const { port1, port2 } = new MessageChannel();
    const failures: ((err: Error) => void)[] = [];
    let exited!: () => void;
    const gone = new Promise<void>((resolve) => (exited = resolve));
    this.exits.set(key, { failed: (err) => failures.forEach((f) => f(err)), exited });
    this.worker.postMessage({ op: 'spawn', key, source: SESSION_SOURCE, ort: ortPath, port: port2 }, [port2]);
    // The channel closes with the worker, however it ends (the spawner ending takes it too).
    port1.on('close', () => failures.forEach((f) => f(new Error('inference worker exited'))));
    return {
      post: (message) => port1.postMessage(message),
      onMessage: (listener) => port1.on('message', listener),
      onFailure: (listener) => failures.push(listener),
      terminate: async () => {
        // The end arrives from the spawner, which is unref'd: hold the process open for it.
        if (this.ending++ === 0) this.worker.ref();
        try {
          this.worker.postMessage({ op: 'terminate', key });
          await gone;
          port1.close();
        } finally {
          if (--this.ending === 0) this.worker.unref();
        }
      },
    };
  }
}

/** Thread ids of the spawner and of every live session worker with its intra-op threads: the ones the daemon must not lower. */
const inferenceThreads = new Map<WorkerSession, ThreadIds>();

export async function protectedThreadIds(): Promise<Set<number>> {
  const ids = new Set<number>([...inferenceThreads.values()].flat());
  const spawner = await Spawner.get();
  if (spawner.threadId !== null) ids.add(spawner.threadId);
  return ids;
}

export interface WorkerSessionOptions {
  /** Made by the spawner (its priority), not by this thread: with model.daemonNice. */
  viaSpawner?: boolean;
}

export class WorkerSession implements SessionLike {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 0;

  private constructor(private readonly thread: SessionThread) {
    thread.onMessage((raw) => {
      const m = raw as { id: number; error?: string; result?: unknown };
      const call = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) call?.reject(new Error(m.error));
      else call?.resolve(m.result);
    });
    thread.onFailure((err) => this.failAll(err));
  }

  /** A session on a new worker thread, created with the same bytes and options as on the main thread. */
  static async create(bytes: Uint8Array, options: ort.InferenceSession.SessionOptions, how: WorkerSessionOptions = {}): Promise<WorkerSession> {
    const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    const thread = how.viaSpawner ? (await Spawner.get()).spawn(ortPath) : directThread(ortPath);
    const session = new WorkerSession(thread);
    try {
      const threads = (await session.call({ op: 'create', bytes, options })) as ThreadIds;
      inferenceThreads.set(session, threads);
    } catch (err) {
      await thread.terminate();
      throw err;
    }
    return session;
  }

  /**
   * Runs queue on the worker: a second one sent while the first runs starts the moment it ends
   * (model.prepareAhead). runMs is the worker's own time for session.run, without the copies.
   */
  async runTimed(feeds: Record<string, ort.Tensor>, outputs: string[]): Promise<{ outputs: Awaited<ReturnType<SessionLike['run']>>; runMs: number }> {
    // Copies the batch (the model's input buffer is reused for the next one); outputs come back copied.
    const plain = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, { type: t.type, dims: t.dims, data: (t.data as Float32Array | Uint8Array).slice() }]));
    return (await this.call({ op: 'run', feeds: plain, outputs })) as { outputs: Awaited<ReturnType<SessionLike['run']>>; runMs: number };
  }

  async run(feeds: Record<string, ort.Tensor>, outputs: string[]): ReturnType<SessionLike['run']> {
    return (await this.runTimed(feeds, outputs)).outputs;
  }

  async release(): Promise<void> {
    try {
      await this.call({ op: 'release' });
    } finally {
      inferenceThreads.delete(this);
      await this.thread.terminate();
    }
  }

  private call(message: Record<string, unknown>): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.thread.post({ ...message, id });
    });
  }

  private failAll(err: Error): void {
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }
}
