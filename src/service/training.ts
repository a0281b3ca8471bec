// On-device training, the room: one run at a time from a camera's recorded good images to a
// candidate model (the trainer as a child process: teach-runner.ts), then its check (the
// station's golden samples, then the shadow check beside the serving model: teach-shadow.ts),
// then promotion through the same path as any pushed model (model queue, golden gate, probation
// with automatic rollback), versioned in the state dir (teach-store.ts) with a one-call rollback.
// Nothing here changes the serving model or the configuration except a promotion or a rollback.
import fs from 'node:fs';
import path from 'node:path';
import type { AppConfig } from '../config/load.js';
import type { ConfigPushResponse } from '../config/remote.js';
import type { AuditActor } from '../control/actor.js';
import type { DatasetCapture } from '../console/dataset.js';
import { recipeModelConfig, recipesWithModel } from '../config/recipes.js';
import { goldenDirFor, goldenFailureText, runGoldenSamples } from '../inference/golden.js';
import { loadModel, type CradModel } from '../inference/model.js';
import { modelOptions } from '../inference/model-options.js';
import { postprocessOptions } from '../inference/postprocess.js';
import type { Pipeline } from '../pipeline.js';
import { datasetAdvice } from '../shared/dataset-advice.js';
import type { Logger } from '../shared/log.js';
import { ENDED_STATES, TeachRefused, type TeachProgress, type TeachRun, type TeachState, type TeachStatus } from '../shared/teach-status.js';
import type { AuditLog } from './audit.js';
import type { ConfigState } from './config-state.js';
import { TeachProcess, type TeachDone } from './teach-runner.js';
import { ShadowCheck, shadowPlane } from './teach-shadow.js';
import { placeModel, TeachStore, type StoredRun, type StoredVersion } from './teach-store.js';
import type { Plane } from './fanout.js';

export interface TrainingParts {
  state: ConfigState;
  audit: AuditLog;
  dataset(): DatasetCapture;
  pipeline(): Pipeline;
  /**
   * Push config changes as the daemon's own (model queue, golden gate, probation); `ownKeys` may
   * change beyond remoteConfig.allow and without a signature (ConfigPushOptions.ownKeys).
   */
  push(payload: Buffer, actor: AuditActor, ownKeys: string[]): Promise<ConfigPushResponse>;
  /** The run changed: publish it (retained <prefix>/train/progress). */
  publish(run: TeachRun | null): void;
}

export const SHADOW_URL = '/api/teach/shadow';
const PHASE_STATE: Record<string, TeachState> = { prepare: 'training', train: 'training', calibrate: 'calibrating', export: 'exporting' };
const IMAGE = /\.(png|jpe?g|bmp|tiff?|webp)$/i;

export class Training {
  private readonly store: TeachStore;
  private current: StoredRun | null = null;
  private process: TeachProcess | null = null;
  private candidate: CradModel | null = null;
  private shadow: ShadowCheck | null = null;

  constructor(private readonly parts: TrainingParts, private readonly log: Logger) {
    this.store = new TeachStore(parts.state.config.service.stateDir, log);
  }

  /** Read back the run the last daemon left (one it was running is now `interrupted`) and publish it. */
  open(): void {
    this.current = this.store.load(() => new Date());
    if (this.current?.run.state === 'interrupted') this.log.warn({ run: this.current.run.id, reason: this.current.run.error }, 'training run interrupted');
    this.parts.publish(this.current?.run ?? null);
  }

  private get config(): AppConfig {
    return this.parts.state.config;
  }

  /** The room as a plane: started and stopped with the others; the shadow check reads live results from it. */
  plane(): Plane {
    return { ...shadowPlane(() => this.shadow), start: () => this.open(), stop: () => this.stop() };
  }

  /** Where the shadow check's example frames are. */
  get shadowDir(): string {
    return path.join(this.store.dir, 'shadow');
  }

  status(): TeachStatus {
    const run = this.current?.run ?? null;
    const cameraId = run?.cameraId ?? this.config.cameras.find((c) => c.enabled)?.id ?? null;
    const versions = this.store.versions();
    return {
      run,
      dataset: { cameraId, ...datasetAdvice(cameraId ? this.imageCount(cameraId) : 0) },
      models: versions.map((v) => ({
        sha256: v.sha256, recipe: v.recipe ?? null, promotedAt: v.promotedAt, datasetSha256: v.datasetSha256, trainerVersion: v.trainerVersion, figures: v.figures,
        serving: this.serves(v),
      })),
      previous: this.rollbackTarget()?.replaced?.sha256 ?? null,
    };
  }

  /** The file of a version promoted here, while it is still in model.modelsDir. */
  modelFile(sha256: string): string | null {
    const version = this.store.versions().find((v) => v.sha256 === sha256);
    return version && fs.existsSync(version.file) ? version.file : null;
  }

  /** Start a run on the camera's recorded good images. */
  start(request: { cameraId?: unknown; recipe?: unknown }, actor: AuditActor): TeachStatus {
    const { cameraId, recipe = null } = request;
    if (typeof cameraId !== 'string' || !this.config.cameras.some((c) => c.id === cameraId && c.enabled)) {
      throw new TeachRefused(400, `no enabled camera ${JSON.stringify(cameraId ?? null)} (cameraId names the camera whose recorded good images train the model)`);
    }
    if (recipe !== null && (typeof recipe !== 'string' || !Object.hasOwn(this.config.recipes, recipe))) throw new TeachRefused(400, `no recipe ${JSON.stringify(recipe)}`);
    const busy = this.current?.run.state;
    if (busy === 'training' || busy === 'calibrating' || busy === 'exporting' || busy === 'checking') {
      throw new TeachRefused(409, `a training run is already ${busy} (run ${this.current!.run.id}); one at a time: cancel it first`);
    }
    const advice = datasetAdvice(this.imageCount(cameraId));
    if (advice.count < advice.minimum) throw new TeachRefused(400, advice.why);
    if (this.current && !ENDED_STATES.includes(this.current.run.state)) this.end('cancelled', `replaced by a new run started ${new Date().toISOString()}`);
    const id = new Date().toISOString().replace(/[-:.]/g, '').replace('T', '-').replace('Z', '');
    const work = this.store.workDir(id);
    const run: TeachRun = {
      id, cameraId, recipe: recipe as string | null, state: 'training', startedAt: new Date().toISOString(),
      images: { train: 0, calibration: 0 }, progress: { phase: 'prepare', epoch: 0, epochs: 0, loss: null, etaSec: null, fraction: 0 },
    };
    this.current = { run, work, onnx: null };
    const job = { data: this.parts.dataset().goodDir(cameraId), work: path.join(work, 'trainer'), out: path.join(work, 'candidate.onnx') };
    const process = new TeachProcess(this.config, job, (progress) => this.progress(run.id, progress), this.log);
    this.process = process;
    this.current.pid = process.pid;
    this.changed();
    this.record('started', actor, { run: id, cameraId, images: advice.count });
    process.done.then((done) => this.trained(run.id, done), (err: Error) => {
      if (this.current?.run.id !== run.id) return;
      this.process = null;
      if (err.message === 'cancelled') return; // cancel() ended the run
      this.record('failed', { kind: 'daemon' }, { run: id }, err.message);
      this.end('failed', err.message);
    });
    return this.status();
  }

  cancel(actor: AuditActor): TeachStatus {
    const run = this.current?.run;
    if (!run || ENDED_STATES.includes(run.state)) throw new TeachRefused(409, 'no training run to cancel');
    this.process?.cancel();
    this.process = null;
    this.record('cancelled', actor, { run: run.id, state: run.state });
    this.end('cancelled', `cancelled while ${run.state}; nothing was changed`);
    return this.status();
  }

  /**
   * Serve the candidate where it was trained for: placed in model.modelsDir and pushed as model.path,
   * or as its recipe's model (recipes.<name>.model.path), through the golden gate and probation.
   */
  async promote(actor: AuditActor): Promise<TeachStatus> {
    const stored = this.current;
    if (!stored || !stored.onnx || (stored.run.state !== 'ready' && stored.run.state !== 'shadow')) {
      throw new TeachRefused(409, `no candidate to promote${stored ? ` (the run is ${stored.run.state})` : ''}: train one first`);
    }
    const { run } = stored;
    const config = this.config;
    if (run.recipe !== null && !Object.hasOwn(config.recipes, run.recipe)) {
      throw new TeachRefused(409, `recipe ${run.recipe}, which the candidate was trained for, no longer exists: nothing was changed`);
    }
    const serving = this.servingModel(run.recipe).info;
    // The golden samples the serving model is held to go along, so that the gate holds the copies to them.
    const own = recipeModelConfig(config, run.recipe);
    const golden = own.model.goldenDir ? null : goldenDirFor(own, serving.path);
    const placed = await placeModel(stored.onnx, config.model.modelsDir, `teach-${run.id}.onnx`, golden);
    const replaced = isInside(serving.path, config.model.modelsDir)
      ? { file: serving.path, sha256: serving.hash }
      : await placeModel(serving.path, config.model.modelsDir, `before-teach-${run.id}.onnx`, golden);
    const answer = await this.pushModel(placed.file, run.recipe, `teach-promote-${run.id}`, actor);
    if (answer.status !== 'ok') {
      this.record('rejected', actor, { run: run.id, sha256: placed.sha256 }, answer.error);
      throw new TeachRefused(422, `the candidate was not promoted, the serving model is unchanged: ${answer.error}`);
    }
    this.store.addVersion({
      sha256: placed.sha256, file: placed.file, recipe: run.recipe, promotedAt: new Date().toISOString(), runId: run.id, replaced,
      datasetSha256: run.candidate?.datasetSha256 ?? '', trainerVersion: run.candidate?.trainerVersion ?? '', figures: run.candidate?.figures ?? {},
    });
    this.record('promoted', actor, { run: run.id, recipe: run.recipe, sha256: placed.sha256, file: placed.file, replaced: replaced.sha256, revision: answer.revision });
    this.end('promoted');
    return this.status();
  }

  /** Serve again the model the newest promotion still serving (base or recipe) replaced. */
  async rollback(actor: AuditActor): Promise<TeachStatus> {
    const version = this.rollbackTarget();
    if (!version?.replaced) throw new TeachRefused(409, 'nothing to roll back to: no serving model was promoted by on-device training');
    const answer = await this.pushModel(version.replaced.file, version.recipe ?? null, `teach-rollback-${version.runId}`, actor);
    if (answer.status !== 'ok') {
      this.record('rejected', actor, { rollbackTo: version.replaced.sha256 }, answer.error);
      throw new TeachRefused(422, `the rollback failed, the serving model is unchanged: ${answer.error}`);
    }
    this.record('rolled-back', actor, { recipe: version.recipe ?? null, from: version.sha256, to: version.replaced.sha256, revision: answer.revision });
    this.parts.publish(this.current?.run ?? null);
    return this.status();
  }

  /** The daemon stops: the trainer goes with it (the run is reported interrupted at the next start). */
  async stop(): Promise<void> {
    this.process?.cancel();
    this.shadow?.stop();
    await this.candidate?.release();
  }

  /** model.path, or the recipe's model only: the one key this promotion or rollback may change. */
  private pushModel(file: string, recipe: string | null, transaction: string, actor: AuditActor): Promise<ConfigPushResponse> {
    const key = recipe === null ? 'model.path' : 'recipes';
    const value = recipe === null ? file : recipesWithModel(this.config.recipes, recipe, file);
    const payload = { transaction, baseRevision: this.parts.state.revision, changes: { [key]: value } };
    return this.parts.push(Buffer.from(JSON.stringify(payload)), actor, [key]);
  }

  /** The model inspecting under `recipe` now (a recipe without a model of its own runs on the base model). */
  private servingModel(recipe: string | null): CradModel {
    const pipeline = this.parts.pipeline();
    return (recipe !== null && Object.hasOwn(this.config.recipes, recipe) ? pipeline.recipeModels.model(recipe) : null) ?? pipeline.latestModel;
  }

  /** Whether a promoted version serves in its place (the base configuration or its recipe) now. */
  private serves(version: StoredVersion): boolean {
    const recipe = version.recipe ?? null;
    if (recipe !== null && !Object.hasOwn(this.config.recipes, recipe)) return false;
    try {
      return this.servingModel(recipe).info.hash === version.sha256;
    } catch {
      return false;
    }
  }

  /** The newest promoted version that serves now: a rollback returns its place to what it replaced. */
  private rollbackTarget(): StoredVersion | undefined {
    return this.store.versions().find((v) => this.serves(v));
  }

  private progress(runId: string, progress: TeachProgress): void {
    const run = this.current?.run;
    if (!run || run.id !== runId || ENDED_STATES.includes(run.state)) return;
    run.progress = progress;
    run.state = PHASE_STATE[progress.phase] ?? run.state;
    this.changed();
  }

  /** The trainer is done: hold the candidate to the golden samples, then shadow it. */
  private async trained(runId: string, done: TeachDone): Promise<void> {
    const stored = this.current;
    if (!stored || stored.run.id !== runId || ENDED_STATES.includes(stored.run.state)) return;
    this.process = null;
    const { run } = stored;
    stored.onnx = done.onnx;
    run.state = 'checking';
    run.images = done.images;
    run.progress = { ...run.progress, phase: 'checking', fraction: 1, etaSec: null };
    this.changed();
    try {
      const config = this.config;
      // Its own session on a worker thread, one thread: the serving model's batches never wait for it.
      const candidate = await loadModel(done.onnx, { ...modelOptions(config), inferenceThread: 'worker', sessions: 1, intraOpThreads: 1, prepareAhead: false, maxBatch: 1, warmupRuns: 1 }, this.log);
      if (this.current !== stored || ENDED_STATES.includes(run.state)) return void (await candidate.release());
      this.candidate = candidate;
      const threshold = candidate.info.calibration?.image.threshold ?? Number.NaN;
      run.candidate = { sha256: candidate.info.hash, threshold, figures: done.figures, trainerVersion: done.trainerVersion, datasetSha256: done.datasetSha256 };
      const goldenDir = goldenDirFor(recipeModelConfig(config, run.recipe), this.servingModel(run.recipe).info.path);
      if (goldenDir) {
        const golden = await runGoldenSamples(candidate, goldenDir, postprocessOptions(config), 1);
        run.candidate.golden = { passed: golden.total - golden.failed.length, total: golden.total };
        if (!golden.passed) throw new Error(`the candidate did not pass the station's golden samples, nothing was changed: ${goldenFailureText(golden)}`);
      }
      if (this.current !== stored || ENDED_STATES.includes(run.state)) return;
      this.shadowCheck(stored, candidate);
    } catch (err) {
      if (this.current !== stored || ENDED_STATES.includes(run.state)) return;
      this.record('failed', { kind: 'daemon' }, { run: run.id, stage: 'check' }, (err as Error).message);
      this.end('failed', (err as Error).message);
    }
  }

  private shadowCheck(stored: StoredRun, candidate: CradModel): void {
    const { shadowFrames, shadowShare } = this.config.training;
    if (shadowFrames === 0 || shadowShare === 0) return this.ready(stored);
    stored.run.state = 'shadow';
    fs.rmSync(this.shadowDir, { recursive: true, force: true });
    let published = 0;
    this.shadow = new ShadowCheck(candidate, {
      cameraId: stored.run.cameraId, recipe: stored.run.recipe, share: shadowShare, dir: this.shadowDir, urlPrefix: SHADOW_URL,
      post: () => postprocessOptions(this.config),
      changed: (figures) => {
        stored.run.shadow = structuredClone(figures);
        if (figures.frames >= this.config.training.shadowFrames) this.ready(stored);
        else if (figures.frames - published >= 10 || figures.changed > (stored.run.shadow?.changed ?? 0)) {
          published = figures.frames;
          this.parts.publish(stored.run);
        }
      },
    }, this.log);
    stored.run.shadow = structuredClone(this.shadow.figures);
    this.changed();
  }

  private ready(stored: StoredRun): void {
    if (this.current !== stored || stored.run.state === 'ready') return;
    this.shadow?.stop();
    this.shadow = null;
    stored.run.state = 'ready';
    this.changed();
    this.record('ready', { kind: 'daemon' }, { run: stored.run.id, candidate: stored.run.candidate, shadow: stored.run.shadow ?? null });
    if (this.config.training.autoPromote) {
      this.promote({ kind: 'daemon' }).catch((err: Error) => this.log.warn({ run: stored.run.id, err: err.message }, 'automatic promotion failed'));
    }
  }

  /** End the run: nothing of a run that does not serve stays on disk but its record. */
  private end(state: 'failed' | 'cancelled' | 'promoted', error?: string): void {
    const stored = this.current;
    if (!stored) return;
    this.shadow?.stop();
    this.shadow = null;
    void this.candidate?.release();
    this.candidate = null;
    stored.run.state = state;
    stored.run.endedAt = new Date().toISOString();
    if (error !== undefined) stored.run.error = error;
    this.store.discardWork(stored);
    stored.onnx = null;
    delete stored.pid;
    this.changed();
  }

  private changed(): void {
    if (!this.current) return;
    try {
      this.store.save(this.current);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'training run state not saved');
    }
    this.parts.publish(this.current.run);
  }

  private record(outcome: string, actor: AuditActor, details: Record<string, unknown>, error?: string): void {
    const revision = this.parts.state.revision;
    this.parts.audit.tryRecord({ kind: 'teach', outcome, actor, revisionBefore: revision, revisionAfter: this.parts.state.revision, details, ...(error !== undefined ? { error } : {}) }, this.log);
  }


  private imageCount(cameraId: string): number {
    try {
      return fs.readdirSync(this.parts.dataset().goodDir(cameraId)).filter((name) => IMAGE.test(name)).length;
    } catch {
      return 0;
    }
  }
}

function isInside(file: string, dir: string): boolean {
  const relative = path.relative(path.resolve(dir), path.resolve(file));
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}
