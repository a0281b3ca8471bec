// A model file replaced on disk is loaded beside the running one, held to its golden samples and
// swapped in, in turn with every other model change; a bad file leaves the serving model alone.
import fs from 'node:fs';
import path from 'node:path';
import { loadModel } from '../inference/model.js';
import { modelOptions } from '../inference/model-options.js';
import type { Pipeline } from '../pipeline.js';
import type { Logger } from '../shared/log.js';
import type { AuditActor, AuditLog } from './audit.js';
import type { ConfigState } from './config-state.js';
import type { GoldenGate, ModelQueue } from './model-queue.js';

export interface ModelWatchHooks {
  /** A replaced model now serves (a device held not-ready may start its cameras). */
  swapped(): void;
  /** The last model error, for the device status. */
  rejected(error: string): void;
}

/** Copies arrive in several writes: a file quiet this long is taken as complete. */
const QUIET_MS = 500;

export class ModelFileWatch {
  private watcher: fs.FSWatcher | null = null;
  private pending: NodeJS.Timeout | null = null;

  constructor(
    private readonly state: ConfigState,
    private readonly pipeline: () => Pipeline,
    private readonly queue: ModelQueue,
    private readonly gate: GoldenGate,
    private readonly audit: AuditLog,
    private readonly hooks: ModelWatchHooks,
    private readonly log: Logger,
  ) {}

  /** Watch `model.path` of the running configuration (again, after a push changed it). */
  watch(): void {
    this.stop();
    const file = this.state.config.model.path;
    try {
      this.watcher = fs.watch(path.dirname(file), (_event, name) => {
        if (name !== path.basename(file)) return;
        if (this.pending) clearTimeout(this.pending);
        this.pending = setTimeout(() => {
          this.pending = null;
          void this.reload(file);
        }, QUIET_MS);
      });
    } catch (err) {
      this.log.warn({ err, file }, 'cannot watch the model file; replacing it on disk will not be noticed');
    }
  }

  /** Stop watching; a reload still waiting for the file to settle is dropped with the old path. */
  stop(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.pending) clearTimeout(this.pending);
    this.pending = null;
  }

  reload(file: string): Promise<void> {
    return this.queue.run(`model file ${file}`, async () => {
      if (!fs.existsSync(file)) return;
      const actor: AuditActor = { kind: 'file', file };
      const revision = this.state.revision;
      const before = this.pipeline().latestModel.info.hash;
      try {
        const loaded = await loadModel(file, modelOptions(this.state.config), this.log);
        if (loaded.info.hash === before) {
          await loaded.release();
          return;
        }
        const model = await this.gate.admit(loaded, this.state.config, actor, 'model file replaced on disk');
        this.pipeline().replaceModel(model);
        this.audit.tryRecord({ kind: 'model', outcome: 'applied', actor, revisionBefore: revision, revisionAfter: revision, changes: [{ key: 'model.hash', old: before, new: model.info.hash }] }, this.log);
        this.hooks.swapped();
      } catch (err) {
        this.log.error({ err, file }, 'replaced model file rejected; previous model still serving');
        this.hooks.rejected((err as Error).message);
        this.audit.tryRecord({ kind: 'model', outcome: 'rejected', actor, revisionBefore: revision, revisionAfter: revision, error: (err as Error).message }, this.log);
      }
    });
  }
}
