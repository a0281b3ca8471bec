// An onnxruntime session on a worker thread. onnxruntime-node's session.run holds the thread that
// calls it for the whole inference; on a machine with cores to spare (Jetson Orin: 6-12) running
// it here leaves the main thread to capture, preprocessing, post-processing and the outbox. On 2
// cores it costs throughput (the freed main thread competes with the intra-op threads), hence
// model.inferenceThread and its default by core count.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';

/** What the model needs of a session, on this thread or on the worker. */
export interface SessionLike {
  run(feeds: Record<string, ort.Tensor>, outputs: string[]): Promise<Record<string, { type: string; dims: readonly number[]; data: unknown }>>;
  release(): Promise<void>;
}

// Plain CommonJS, evaluated as the worker's source: the same file works under tsx and from dist/.
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ort);
let session = null;
parentPort.on('message', async (m) => {
  try {
    if (m.op === 'create') {
      session = await ort.InferenceSession.create(m.bytes, m.options);
      parentPort.postMessage({ id: m.id });
    } else if (m.op === 'run') {
      const feeds = {};
      for (const [name, t] of Object.entries(m.feeds)) feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
      const out = await session.run(feeds, m.outputs);
      const result = {};
      for (const name of m.outputs) result[name] = { type: out[name].type, dims: out[name].dims, data: out[name].data };
      parentPort.postMessage({ id: m.id, result });
    } else if (m.op === 'release') {
      if (session) await session.release();
      session = null;
      parentPort.postMessage({ id: m.id });
    }
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

export class WorkerSession implements SessionLike {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 0;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: { id: number; error?: string; result?: unknown }) => {
      const call = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) call?.reject(new Error(m.error));
      else call?.resolve(m.result);
    });
    worker.on('error', (err) => this.failAll(err));
    worker.on('exit', (code) => this.failAll(new Error(`inference worker exited (code ${code})`)));
  }

  /** A session on a new worker thread, created with the same bytes and options as on the main thread. */
  static async create(bytes: Uint8Array, options: ort.InferenceSession.SessionOptions): Promise<WorkerSession> {
    const worker = new Worker(SOURCE, { eval: true, workerData: { ort: createRequire(import.meta.url).resolve('onnxruntime-node') } });
    const session = new WorkerSession(worker);
    try {
      await session.call({ op: 'create', bytes, options });
    } catch (err) {
      await worker.terminate();
      throw err;
    }
    return session;
  }

  run(feeds: Record<string, ort.Tensor>, outputs: string[]): ReturnType<SessionLike['run']> {
    // Copies the batch (the model's input buffer is reused for the next one); outputs come back copied.
    const plain = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, { type: t.type, dims: t.dims, data: (t.data as Float32Array | Uint8Array).slice() }]));
    return this.call({ op: 'run', feeds: plain, outputs }) as ReturnType<SessionLike['run']>;
  }

  async release(): Promise<void> {
    try {
      await this.call({ op: 'release' });
    } finally {
      await this.worker.terminate();
    }
  }

  private call(message: Record<string, unknown>): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id });
    });
  }

  private failAll(err: Error): void {
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }
}
