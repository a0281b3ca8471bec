// Every model change, one at a time in arrival order, whoever asked: a config push (and the model
// delivery and recipe changes that arrive as pushes), the model file replaced on disk, an
// on-demand golden run. Each loads its model beside the serving one, holds it to its golden
// samples, and either hands it to the pipeline or releases it: the golden gate below, written once.
import type { AppConfig } from '../config/load.js';
import { goldenDirFor, goldenFailureText, runGoldenSamples, type GoldenRun } from '../inference/golden.js';
import { loadModel, type CradModel } from '../inference/model.js';
import { modelOptions } from '../inference/model-options.js';
import { postprocessOptions } from '../inference/postprocess.js';
import type { GoldenStatus } from '../publish/payloads.js';
import type { Logger } from '../shared/log.js';
import type { AuditActor, AuditLog } from './audit.js';

export class ModelQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private asked = 0;

  constructor(private readonly log: Logger) {}

  /** Run `work` after every change asked for before it; resolves (or rejects) with its own outcome. */
  run<T>(label: string, work: () => Promise<T>): Promise<T> {
    const turn = ++this.asked;
    const done = this.tail.then(async () => {
      this.log.debug({ turn, label }, 'model change started');
      try {
        return await work();
      } finally {
        this.log.debug({ turn, label }, 'model change finished');
      }
    });
    this.tail = done.catch(() => undefined);
    return done;
  }
}

/** A model that failed its golden samples (already released). */
export class GoldenFailed extends Error {
  constructor(readonly run: GoldenRun) {
    super(goldenFailureText(run));
  }
}

export interface GoldenGateHooks {
  /** The golden status changed (a run, or readiness): publish it. */
  changed(status: GoldenStatus): void;
  revision(): number;
}

/** The golden samples: every run audited and published; `status` says whether the cameras may run. */
export class GoldenGate {
  status: GoldenStatus = { ready: true, reason: null, lastRun: null };

  constructor(private readonly audit: AuditLog, private readonly hooks: GoldenGateHooks, private readonly log: Logger) {}

  /** Run the golden samples of `config` on `model`; null when the model has no golden set. */
  async run(model: CradModel, config: AppConfig, actor: AuditActor, why: string, transaction: string | null = null): Promise<GoldenRun | null> {
    const dir = goldenDirFor(config, model.info.path);
    if (!dir) return null;
    const run = await runGoldenSamples(model, dir, postprocessOptions(config), config.inference.maxBatch);
    this.status = { ...this.status, lastRun: run };
    this.hooks.changed(this.status);
    const revision = this.hooks.revision();
    this.audit.tryRecord({ kind: 'golden', outcome: run.passed ? 'passed' : 'failed', actor, transaction, revisionBefore: revision, revisionAfter: revision, details: { why, run } }, this.log);
    if (!run.passed) this.log.warn({ why, reason: goldenFailureText(run) }, 'golden samples failed');
    return run;
  }

  /**
   * Load a model file and hold it to the golden samples of `config`: the model when it may serve;
   * a load error, or GoldenFailed (the model released), when it may not.
   */
  async load(file: string, config: AppConfig, actor: AuditActor, why: string, transaction: string | null = null, onRun?: (run: GoldenRun) => void): Promise<CradModel> {
    return this.admit(await loadModel(file, modelOptions(config), this.log), config, actor, why, transaction, onRun);
  }

  /** Hold a loaded model to the golden samples: it, when it may serve; else GoldenFailed (released). */
  async admit(model: CradModel, config: AppConfig, actor: AuditActor, why: string, transaction: string | null = null, onRun?: (run: GoldenRun) => void): Promise<CradModel> {
    const run = await this.run(model, config, actor, why, transaction);
    if (run) onRun?.(run);
    if (run && !run.passed) {
      await model.release();
      throw new GoldenFailed(run);
    }
    return model;
  }

  /** Not ready: the cameras wait until a model passes. */
  hold(reason: string): void {
    this.status = { ...this.status, ready: false, reason };
    this.hooks.changed(this.status);
  }

  /** Ready again; false when it already was. */
  release(): boolean {
    if (this.status.ready) return false;
    this.status = { ...this.status, ready: true, reason: null };
    this.hooks.changed(this.status);
    return true;
  }
}
