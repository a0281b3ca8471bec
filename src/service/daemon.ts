// The running daemon: builds the stages from config, joins them with the pipeline, and owns
// everything that outlives one stage — remote configuration, model hot swap, systemd, shutdown.
import fs from 'node:fs';
import path from 'node:path';
import { redact, type AppConfig } from '../config/load.js';
import { loadLayered, type LayeredConfig, type LayerRevision } from '../config/layers.js';
import { pendingRestart } from '../config/policy.js';
import { applyConfigPush, configPushResponse, pushOptionsFrom, type ConfigPushResponse } from '../config/remote.js';
import { valueAt, type CameraConfig } from '../config/schema.js';
import { createCamera, roiFitsFrame, roiMisfit, type Camera } from '../capture/index.js';
import { recipeExists, type RecipeName } from '../config/recipes.js';
import { deviceCommands } from '../control/commands.js';
import { RecipeSelectionStore, type RecipeResponse, type RecipeSetRequest } from '../control/recipes.js';
import { CommandGroup, CommandRouter } from '../control/router.js';
import { loadModel, modelOptions, type CradModel } from '../inference/model.js';
import { RecipeModels } from '../inference/recipes.js';
import { Pipeline, type PipelineSink, type PipelineStats } from '../pipeline.js';
import type { ConfigLayerStatus } from '../publish/payloads.js';
import { Publisher, type PublisherStats } from '../publish/index.js';
import type { Logger } from '../shared/log.js';
import { buildInfo } from './build-info.js';
import { SystemdNotifier, type Health } from './systemd.js';

export interface DaemonOptions {
  /** The operator's config file: read, never written (pushes go to a layer in service.stateDir). */
  configFile?: string;
  /** A config object used instead of a file (demo, tests); pushes still layer over it. */
  config?: AppConfig;
  /** The configuration already loaded in layers (the run loop loads it to roll back at start-up). */
  layered?: LayeredConfig;
  /** Asked to stop this daemon and start a new one on the recorded configuration (a rollback). */
  onRestart?: (reason: string) => void;
  /** Told of every recipe switch that took effect (an audit trail records it). */
  onRecipeSelected?: (change: { camera: string; recipe: RecipeName; previous: RecipeName; by: 'recipe/set' | 'trigger'; transaction: string | null }) => void;
  log: Logger;
}

/** A push on probation: what must show it works before the window closes. */
interface Probation {
  revision: number;
  transaction: string | null;
  since: number;
  /** Free-run cameras that must deliver a result; triggered ones must be online. */
  cameras: string[];
  timer: NodeJS.Timeout;
}

export class Daemon {
  private config: AppConfig;
  private revision = 0;
  private readonly layered: LayeredConfig;
  /** The pushed layer's changes over the file at the running revision. */
  private layerChanges: Record<string, unknown>;
  /** Pushes are checked and applied one after another, each against what the last one left. */
  private pushes: Promise<unknown> = Promise.resolve();
  private probation: Probation | null = null;
  private rollbackInfo: ConfigLayerStatus['rollback'] = null;
  private readonly cameraHandles = new Map<string, Camera>();
  private readonly lastResultMono = new Map<string, number>();
  private readonly cameraStates = new Map<string, string>();
  private publisher!: Publisher;
  private router!: CommandRouter;
  private commands!: CommandGroup;
  private pipeline!: Pipeline;
  private readonly notifier: SystemdNotifier;
  private modelWatcher: fs.FSWatcher | null = null;
  private swapTimer: NodeJS.Timeout | null = null;
  private modelLoading: Promise<unknown> = Promise.resolve();
  private recipeSelections!: RecipeSelectionStore;
  private stopping: Promise<void> | null = null;
  /** One child logger per stage, so every line says where it came from. */
  private readonly logs: Record<'capture' | 'inference' | 'pipeline' | 'publish' | 'control', Logger>;

  constructor(private readonly options: DaemonOptions) {
    this.layered = options.layered ?? loadLayered(options.configFile, options.config);
    this.config = this.layered.config;
    this.revision = this.layered.revision;
    this.layerChanges = this.layerRecord(this.revision)?.changes ?? {};
    const origin = this.layerRecord(this.revision)?.origin;
    if (origin?.kind === 'rollback') {
      this.rollbackInfo = { undid: origin.undid, to: this.revision, at: this.layerRecord(this.revision)!.createdAt, reason: origin.reason };
    }
    this.notifier = new SystemdNotifier(options.log);
    const stage = (name: keyof Daemon['logs']) => options.log.child({ stage: name });
    this.logs = { capture: stage('capture'), inference: stage('inference'), pipeline: stage('pipeline'), publish: stage('publish'), control: stage('control') };
  }

  get log(): Logger {
    return this.options.log;
  }

  async start(): Promise<void> {
    const model = await loadModel(this.config.model.path, modelOptions(this.config), this.logs.inference);
    this.publisher = new Publisher(this.config, this.logs.publish);
    this.publisher.setDeviceStatus({ ...buildInfo(), model: model.info, revision: this.revision, config: this.configStatus() });
    this.router = new CommandRouter(this.publisher.inbound, this.logs.control);
    this.commands = new CommandGroup(this.router);
    this.syncCommands();
    await this.publisher.start();

    const recipes = await this.loadRecipeModels(this.config);
    this.publisher.setDeviceStatus({ recipes: recipes.status() });
    this.pipeline = new Pipeline(this.config, model, this.sink(), this.logs.pipeline, recipes);
    this.restoreRecipeSelections();
    for (const camera of this.config.cameras.filter((c) => c.enabled)) this.addCamera(camera);
    this.pipeline.start();
    this.watchModelFile();
    if (this.layered.fallback) {
      this.log.error({ ...this.layered.fallback }, 'the recorded configuration could not be used: running an older revision');
    }
    // A revision recorded on probation (its changes waited for this start) must prove itself now.
    if (this.layered.probation !== null) this.startProbation(null, this.config.cameras.filter((c) => c.enabled).map((c) => c.id));
    this.notifier.ready(() => this.health());
    this.log.info(
      { cameras: this.config.cameras.map((c) => c.id), model: model.info.path, provider: model.info.executionProvider },
      'crad-edge running',
    );
  }

  /** The pipeline's and the publisher's counters (soak runs and diagnostics read them). */
  stats(): { pipeline: PipelineStats; publisher: PublisherStats } {
    return { pipeline: this.pipeline.stats(), publisher: this.publisher.stats() };
  }

  /** Healthy while results flow, or while idle by design (triggered cameras, no cameras). */
  health(): Health {
    const stats = this.pipeline.stats();
    const publisher = this.publisher.stats();
    // A free-run camera whose finite source has ended waits for nothing: a restart would only
    // inspect the same folder or file again.
    const ended = new Set(stats.sourcesEnded);
    const freeRunning = this.config.cameras.filter((c) => c.enabled && c.trigger === 'free' && !ended.has(c.id)).length;
    const sinceResult = performance.now() - stats.lastResultMono;
    const flowing = stats.lastResultMono > 0 && sinceResult < this.config.service.watchdogStallMs;
    const startingUp = stats.lastResultMono === 0 && performance.now() < this.config.service.watchdogStallMs + this.startedMono;
    const healthy = freeRunning === 0 || flowing || startingUp;
    const status = `${stats.fps.toFixed(1)} fps, ${stats.processed} results, broker ${publisher.connected ? 'connected' : 'disconnected'}, outbox ${publisher.outbox.pending} pending`;
    return { healthy, status };
  }

  private readonly startedMono = performance.now();

  /** The config's commands on the router: trigger-mode cameras, config/set while remote config is on. */
  private syncCommands(): void {
    this.commands.sync(deviceCommands(this.config, this.publisher.topics, {
      trigger: (cameraId, triggerId, recipe) => {
        const refused = recipe === undefined ? null : this.selectRecipe(cameraId, recipe, 'trigger', triggerId ?? null);
        if (refused === null) this.pipeline.trigger(cameraId, triggerId);
        else this.pipeline.refuseTrigger(cameraId, triggerId, refused);
      },
      selectRecipe: (request) => this.handleRecipeSet(request),
      activeRecipes: () => this.activeRecipes(),
      config: (kind, payload) => (kind === 'get' ? { status: 'ok', revision: this.revision, config: redact(this.config) } : this.handleConfigPush(payload)),
      revision: () => this.revision,
    }, this.logs.control));
  }

  // ---- recipes ------------------------------------------------------------------------------

  private loadRecipeModels(config: AppConfig): Promise<RecipeModels> {
    return RecipeModels.load(config, (file) => loadModel(file, modelOptions(config), this.logs.inference), this.logs.inference);
  }

  /** The selections of the last run, where their camera and recipe still exist and serve. */
  private restoreRecipeSelections(): void {
    this.recipeSelections = new RecipeSelectionStore(this.config.service.stateDir, this.logs.control);
    for (const [camera, recipe] of Object.entries(this.recipeSelections.load())) {
      const problem = this.pipeline.selectRecipe(camera, recipe);
      if (problem) this.log.warn({ camera, recipe, problem }, 'recipe selected before the restart not restored; the configured recipe applies');
    }
  }

  private activeRecipes(): Record<string, RecipeName> {
    return Object.fromEntries(this.config.cameras.filter((c) => c.enabled).map((c) => [c.id, this.pipeline.activeRecipe(c.id)]));
  }

  /** Switch one camera's recipe and keep the selection; returns why not, or null. */
  private selectRecipe(camera: string, recipe: RecipeName, by: 'recipe/set' | 'trigger', transaction: string | null): string | null {
    const previous = this.pipeline.activeRecipe(camera);
    const problem = this.pipeline.selectRecipe(camera, recipe);
    if (problem !== null || previous === recipe) return problem;
    this.recipeSelections.save(this.activeRecipes());
    this.log.info({ camera, recipe, previous, by }, 'recipe selected');
    this.options.onRecipeSelected?.({ camera, recipe, previous, by, transaction });
    return null;
  }

  /** A recipe/set request: all of it applies, or none (every target is checked first). */
  private handleRecipeSet(request: RecipeSetRequest): RecipeResponse {
    const targets = request.camera === undefined ? this.config.cameras.filter((c) => c.enabled).map((c) => c.id) : [request.camera];
    const error = (message: string): RecipeResponse => ({ transaction: request.transaction, status: 'error', error: message, active: this.activeRecipes() });
    if (request.camera !== undefined && !this.config.cameras.some((c) => c.id === request.camera && c.enabled)) {
      return error(`no enabled camera "${request.camera}" (cameras: ${Object.keys(this.activeRecipes()).join(', ') || 'none'})`);
    }
    if (!recipeExists(this.config, request.recipe)) {
      return error(`no recipe named "${request.recipe}" (recipes: ${Object.keys(this.config.recipes).join(', ') || 'none'})`);
    }
    const refusal = this.pipeline.recipeModels.refusal(request.recipe);
    if (refusal !== null) return error(`recipe ${request.recipe} refused: ${refusal}`);
    for (const camera of targets) {
      const problem = this.selectRecipe(camera, request.recipe, 'recipe/set', request.transaction);
      if (problem !== null) return error(problem);
    }
    return { transaction: request.transaction, status: 'ok', active: this.activeRecipes() };
  }

  /** Pushes run one at a time: each is checked against the revision the previous one left. */
  private handleConfigPush(payload: Buffer): Promise<ConfigPushResponse> {
    const applied = this.pushes.then(() => this.applyConfigPush(payload));
    this.pushes = applied.catch(() => undefined);
    return applied;
  }

  /** Validate, apply and record a remote push; a model change is loaded before anything is committed. */
  private async applyConfigPush(payload: Buffer): Promise<ConfigPushResponse> {
    const revision = this.revision;
    const fail = (transaction: string | null, error: string): ConfigPushResponse => {
      this.log.warn({ transaction, error }, 'config push rejected');
      return configPushResponse({ ok: false, error, transaction }, revision);
    };
    const outcome = applyConfigPush(this.config, revision, payload, pushOptionsFrom(this.config));
    if (!this.config.remoteConfig.enabled) return fail(outcome.transaction, 'remote configuration is disabled on this device');
    if (!outcome.ok) return fail(outcome.transaction, outcome.error);
    if (outcome.changedKeys.length === 0) return configPushResponse(outcome, revision);
    const next = outcome.config;
    const misfit = this.roiMisfitIn(next.cameras);
    if (misfit) return fail(outcome.transaction, misfit);

    let newModel: CradModel | null = null;
    let newRecipes: RecipeModels | null = null;
    if (outcome.restartRequired.includes('model')) {
      try {
        newModel = await loadModel(next.model.path, modelOptions(next), this.logs.inference);
      } catch (err) {
        return fail(outcome.transaction, `model rejected, previous model still serving: ${(err as Error).message}`);
      }
      // A pushed recipe must serve: unlike at start, the previous recipes can go on instead.
      newRecipes = await this.loadRecipeModels(next);
      const refused = Object.entries(newRecipes.status().recipes).find(([, r]) => r.state === 'refused');
      if (refused) {
        await Promise.all([newModel.release(), newRecipes.release()]);
        return fail(outcome.transaction, `recipes.${refused[0]} rejected, previous recipes still serving: ${refused[1].error}`);
      }
    }
    const layerChanges = { ...this.layerChanges };
    for (const key of outcome.changedKeys) layerChanges[key] = valueAt(next, key);
    // Anything that rebuilds a part can strand the device: it runs on probation until it proves itself.
    const onProbation = outcome.restartRequired.length > 0 && next.remoteConfig.probationMs > 0;
    try {
      this.layered.store.commit({
        revision: outcome.revision, changes: layerChanges, previous: revision, createdAt: new Date().toISOString(),
        origin: { kind: 'push', transaction: outcome.transaction },
      }, onProbation);
    } catch (err) {
      await Promise.all([newModel?.release(), newRecipes?.release()]);
      return fail(outcome.transaction, `could not record the configuration: ${(err as Error).message}`);
    }
    const previous = this.config;
    this.config = next;
    this.revision = outcome.revision;
    this.layerChanges = layerChanges;
    this.pipeline.updateLive(next);
    this.publisher.updateLive(next);
    this.syncCommands();
    if (newModel) {
      this.pipeline.replaceModel(newModel);
      this.watchModelFile();
    }
    if (newRecipes) {
      this.pipeline.replaceRecipes(newRecipes);
      this.publisher.setDeviceStatus({ recipes: newRecipes.status() });
    }
    const rebuilt = outcome.restartRequired.filter((part) => part.startsWith('camera:')).map((part) => part.slice('camera:'.length));
    for (const id of rebuilt) await this.rebuildCamera(id, previous);
    // Cameras kept running get their live fields (fps, roi, ...): the push said they apply live.
    for (const camera of next.cameras) if (!rebuilt.includes(camera.id)) this.pipeline.updateCamera(camera);
    const pending = pendingRestart(outcome.restartRequired);
    this.stopProbation();
    // Parts that wait for a restart are proven at that start (the revision stays on probation).
    if (onProbation && pending.length === 0) {
      const watched = outcome.restartRequired.includes('model') ? next.cameras.filter((c) => c.enabled).map((c) => c.id) : rebuilt;
      this.startProbation(outcome.transaction, watched);
    }
    this.publisher.setDeviceStatus({ revision: this.revision, config: this.configStatus() });
    this.log.info({ transaction: outcome.transaction, changed: outcome.changedKeys, revision: this.revision, probation: onProbation }, 'config push applied');
    return configPushResponse({ ...outcome, restartRequired: pending }, revision);
  }

  /** Why a pushed ROI cannot fit the frames its camera really delivers (known after the first frame). */
  private roiMisfitIn(cameras: CameraConfig[]): string | null {
    for (const [index, camera] of cameras.entries()) {
      const size = this.cameraHandles.get(camera.id)?.frameSize;
      if (camera.roi && size && !roiFitsFrame(camera.roi, size)) return `cameras[${index}].roi: ${roiMisfit(camera.roi, size)}`;
    }
    return null;
  }

  private addCamera(config: CameraConfig): void {
    const camera = createCamera(config, this.logs.capture);
    this.cameraHandles.set(config.id, camera);
    this.pipeline.addCamera(camera, config.trigger === 'mqtt');
  }

  private async rebuildCamera(id: string, previous: AppConfig): Promise<void> {
    if (previous.cameras.some((c) => c.id === id && c.enabled)) await this.pipeline.removeCamera(id);
    this.cameraHandles.delete(id);
    this.lastResultMono.delete(id);
    const camera = this.config.cameras.find((c) => c.id === id);
    if (camera?.enabled) this.addCamera(camera);
  }

  /** What the pipeline publishes goes to the publisher; the daemon notes what probation watches. */
  private sink(): PipelineSink {
    return {
      publishResult: (result) => {
        this.lastResultMono.set(result.frame.cameraId, performance.now());
        this.publisher.publishResult(result);
      },
      publishCameraStatus: (status) => {
        this.cameraStates.set(status.cameraId, status.state);
        this.publisher.publishCameraStatus(status);
      },
      setDeviceStatus: (info) => this.publisher.setDeviceStatus(info),
    };
  }

  // ---- probation and rollback ("commit confirmed") -----------------------------------------

  private startProbation(transaction: string | null, cameras: string[]): void {
    const window = this.config.remoteConfig.probationMs;
    const since = performance.now();
    const timer = setInterval(() => this.checkProbation(), Math.max(50, Math.min(1000, window / 20)));
    this.probation = { revision: this.revision, transaction, since, cameras, timer };
    this.log.info({ revision: this.revision, windowMs: window, cameras }, 'configuration on probation');
  }

  private stopProbation(): void {
    if (this.probation) clearInterval(this.probation.timer);
    this.probation = null;
  }

  /** What still keeps the revision on probation from being confirmed (empty: it works). */
  private probationMissing(probation: Probation): string[] {
    const missing: string[] = [];
    if (!this.publisher.stats().connected) missing.push('the broker connection is not up');
    for (const id of probation.cameras) {
      const camera = this.config.cameras.find((c) => c.id === id);
      if (!camera?.enabled) continue;
      if (camera.trigger === 'mqtt') {
        if (this.cameraStates.get(id) !== 'online') missing.push(`camera ${id} is not online (${this.cameraStates.get(id) ?? 'no status'})`);
      } else if ((this.lastResultMono.get(id) ?? 0) < probation.since) {
        missing.push(`camera ${id} has delivered no result${this.cameraStates.get(id) ? ` (${this.cameraStates.get(id)})` : ''}`);
      }
    }
    return missing;
  }

  private checkProbation(): void {
    const probation = this.probation;
    if (!probation) return;
    const missing = this.probationMissing(probation);
    if (missing.length === 0) {
      this.stopProbation();
      this.layered.store.confirm(probation.revision);
      this.publisher.setDeviceStatus({ config: this.configStatus() });
      this.log.info({ revision: probation.revision }, 'configuration confirmed: it is now the last good revision');
    } else if (performance.now() - probation.since >= this.config.remoteConfig.probationMs) {
      this.stopProbation();
      void this.rollBack(probation, `not confirmed within remoteConfig.probationMs (${this.config.remoteConfig.probationMs} ms): ${missing.join('; ')}`);
    }
  }

  /** Record the rollback, tell the senders, and have the run loop restart on the last good revision. */
  private async rollBack(probation: Probation, reason: string): Promise<void> {
    let record: LayerRevision;
    try {
      record = this.layered.store.rollBack(probation.revision, reason);
    } catch (err) {
      this.log.error({ err, reason }, 'rollback failed: the configuration stays as it is');
      return;
    }
    this.log.error({ undid: probation.revision, revision: record.revision, to: record.previous, reason }, 'configuration rolled back');
    this.rollbackInfo = { undid: probation.revision, to: record.revision, at: record.createdAt, reason };
    this.publisher.setDeviceStatus({ config: this.configStatus() });
    const answer: ConfigPushResponse = {
      transaction: probation.transaction, status: 'error', error: `rolled back to the last good configuration: ${reason}`,
      revision: record.revision, restartRequired: [], changed: [],
    };
    await this.publisher.inbound.publishJson(this.publisher.topics.configResponse, Buffer.from(JSON.stringify(answer)))
      .catch((err: Error) => this.log.warn({ err: err.message }, 'rollback answer not delivered (the status carries it)'));
    this.options.onRestart?.(`rollback of revision ${probation.revision}`);
  }

  private layerRecord(revision: number): LayerRevision | null {
    try {
      return revision > 0 ? this.layered.store.revision(revision) : null;
    } catch {
      return null; // a legacy revision kept in the file itself
    }
  }

  private configStatus(): ConfigLayerStatus {
    let state = null;
    try {
      state = this.layered.store.state();
    } catch {
      // an unreadable state file was reported at load
    }
    return { revision: this.revision, lastGood: state?.lastGood ?? this.revision, probation: state?.probation?.revision ?? null, rollback: this.rollbackInfo };
  }

  /** A model file replaced on disk is loaded beside the running one and swapped in if it is good. */
  private watchModelFile(): void {
    this.modelWatcher?.close();
    const file = this.config.model.path;
    try {
      this.modelWatcher = fs.watch(path.dirname(file), (_event, name) => {
        if (name !== path.basename(file)) return;
        if (this.swapTimer) clearTimeout(this.swapTimer);
        // Copies arrive in several writes: wait until the file has been quiet for a moment.
        this.swapTimer = setTimeout(() => void this.reloadModel(file), 500);
      });
    } catch (err) {
      this.log.warn({ err, file }, 'cannot watch the model file; replacing it on disk will not be noticed');
    }
  }

  private async reloadModel(file: string): Promise<void> {
    this.modelLoading = this.modelLoading.then(async () => {
      if (!fs.existsSync(file)) return;
      try {
        const model = await loadModel(file, modelOptions(this.config), this.logs.inference);
        if (model.info.hash === this.pipeline.currentModel.info.hash) {
          await model.release();
          return;
        }
        this.pipeline.replaceModel(model);
      } catch (err) {
        this.log.error({ err, file }, 'replaced model file rejected; previous model still serving');
        this.publisher.setDeviceStatus({ modelError: (err as Error).message });
      }
    });
    await this.modelLoading;
  }

  /** Graceful shutdown within service.shutdownTimeoutMs: capture stops, in-flight frames finish,
   * publishes flush, status goes offline. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const deadline = this.config.service.shutdownTimeoutMs;
      this.notifier.stopping();
      this.modelWatcher?.close();
      if (this.swapTimer) clearTimeout(this.swapTimer);
      const t0 = performance.now();
      this.stopProbation();
      this.router.close(); // no new commands while shutting down
      const drained = await this.pipeline.stop(Math.max(100, deadline * 0.6));
      await this.publisher.stop(Math.max(100, deadline - (performance.now() - t0)));
      this.log.info({ drained }, 'crad-edge stopped');
    })();
    return this.stopping;
  }
}
