// The running daemon: builds the stages from config, joins them with the pipeline, and owns
// everything that outlives one stage — remote configuration, model hot swap, systemd, shutdown.
import fs from 'node:fs';
import { filter, take, type Subscription } from 'rxjs';
import path from 'node:path';
import { redact, type AppConfig } from '../config/load.js';
import { loadLayered, type LayeredConfig, type LayerRevision } from '../config/layers.js';
import { pendingRestart } from '../config/policy.js';
import { applyConfigPush, configPushResponse, isAllowed, pushOptionsFrom, type ConfigPushResponse } from '../config/remote.js';
import { valueAt, type CameraConfig } from '../config/schema.js';
import { createCamera, roiFitsFrame, roiMisfit, type Camera } from '../capture/index.js';
import { Archive, archiveOptions } from '../console/archive.js';
import { archiveConsolePlugin } from '../console/archive-routes.js';
import { DatasetCapture, datasetOptions } from '../console/dataset.js';
import { ProductionCounters } from '../console/counters.js';
import type { ConsoleHost } from '../console/host.js';
import { ConsoleServer, type ConsolePlugin } from '../console/server.js';
import { recipeExists, withRecipe, type RecipeName } from '../config/recipes.js';
import { deviceCommands } from '../control/commands.js';
import { RecipeSelectionStore, type RecipeResponse, type RecipeSetRequest } from '../control/recipes.js';
import {
  checkDeliveredContract, deliveryFileName, deliveryTransaction, download, DeliveryError, fileSha256, parseDeliveryRequest, partialPath, redactUrl,
  verifyDownload, type DeliveryStage, type ModelDeliveryRequest,
} from '../control/model-delivery.js';
import { CommandGroup, CommandRouter, type Command } from '../control/router.js';
import { goldenDirFor, goldenFailureText, runGoldenSamples, type GoldenRun } from '../inference/golden.js';
import { postprocessOptions } from '../inference/postprocess.js';
import { loadModel, modelOptions, type CradModel } from '../inference/model.js';
import { RecipeModels } from '../inference/recipes.js';
import { Pipeline, type PipelineSink, type PipelineStats } from '../pipeline.js';
import type { CameraStatus } from '../capture/frame.js';
import type { ConfigLayerStatus, GoldenStatus } from '../publish/payloads.js';
import { Publisher, type PublisherStats } from '../publish/index.js';
import type { Logger } from '../shared/log.js';
import { createEdgeNode, type EdgeNode } from '../sparkplug/index.js';
import { AuditLog, auditChanges, keyFingerprint, mqttActor, type AuditActor } from './audit.js';
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
  onRestart?: (reason: string, undelivered?: ConfigPushResponse) => void;
  /** An answer the daemon before this one could not deliver (its broker was gone): sent once connected. */
  undeliveredAnswer?: ConfigPushResponse;
  /** Planes mounted on the operator console under their prefix (see ConsolePlugin). */
  consolePlugins?: ConsolePlugin[];
  log: Logger;
}

/** Who sent a config push and how it was checked (a delivery's own push was verified as a delivery). */
interface PushSource {
  actor: AuditActor;
  /** Replaces remoteConfig.publicKey for this push ('' = the push carries no signature to check). */
  publicKey?: string;
  /** Told the golden-sample run of a pushed model before it is swapped in. */
  onGolden?: (run: GoldenRun) => void;
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
  private readonly subscriptions: Subscription[] = [];
  private rollbackInfo: ConfigLayerStatus['rollback'] = null;
  private readonly cameraHandles = new Map<string, Camera>();
  private readonly lastResultMono = new Map<string, number>();
  private readonly cameraStatuses = new Map<string, CameraStatus>();
  private readonly counters = new ProductionCounters((id) => this.cameraHandles.get(id)?.stats().triggerTimeouts ?? 0);
  /** The operator console, when http.enabled. */
  private console: ConsoleServer | null = null;
  /** Where the console listens once started (http.port 0 picks a free port), else null. */
  consoleAddress: string | null = null;
  private publisher!: Publisher;
  private router!: CommandRouter;
  private commands!: CommandGroup;
  private pipeline!: Pipeline;
  /** The console's archive (null when archive.enabled is false) and dataset capture. */
  private archive: Archive | null = null;
  private dataset!: DatasetCapture;
  /** The Sparkplug B plane, when sparkplug.enabled. */
  private sparkplug: EdgeNode | null = null;
  private readonly notifier: SystemdNotifier;
  private modelWatcher: fs.FSWatcher | null = null;
  private swapTimer: NodeJS.Timeout | null = null;
  private modelLoading: Promise<unknown> = Promise.resolve();
  private recipeSelections!: RecipeSelectionStore;
  private stopping: Promise<void> | null = null;
  /** Every change of configuration or model and every golden-sample run (other parts call audit.record). */
  readonly audit: AuditLog;
  private golden: GoldenStatus = { ready: true, reason: null, lastRun: null };
  /** Cameras wait while the model at start-up has failed its golden samples. */
  private camerasStarted = false;
  /** The transaction of the model delivery in progress: one at a time. */
  private delivering: string | null = null;
  /** One child logger per stage, so every line says where it came from. */
  private readonly logs: Record<'capture' | 'inference' | 'pipeline' | 'publish' | 'control' | 'console', Logger>;

  constructor(private readonly options: DaemonOptions) {
    this.layered = options.layered ?? loadLayered(options.configFile, options.config);
    this.config = this.layered.config;
    this.revision = this.layered.revision;
    this.layerChanges = this.layerRecord(this.revision)?.changes ?? {};
    const origin = this.layerRecord(this.revision)?.origin;
    if (origin?.kind === 'rollback') {
      this.rollbackInfo = { undid: origin.undid, to: this.revision, at: this.layerRecord(this.revision)!.createdAt, reason: origin.reason };
    }
    this.audit = AuditLog.forConfig(this.config);
    this.notifier = new SystemdNotifier(options.log);
    const stage = (name: keyof Daemon['logs']) => options.log.child({ stage: name });
    this.logs = { capture: stage('capture'), inference: stage('inference'), pipeline: stage('pipeline'), publish: stage('publish'), control: stage('control'), console: stage('console') };
  }

  get log(): Logger {
    return this.options.log;
  }

  async start(): Promise<void> {
    // First, so that a console that must not run (no credentials beyond loopback) stops the start.
    if (this.config.http.enabled) this.console = new ConsoleServer(this.consoleHost(), this.logs.console, [
      archiveConsolePlugin(() => ({ archive: this.archive, dataset: this.dataset })),
      ...(this.options.consolePlugins ?? []),
    ]);
    const model = await loadModel(this.config.model.path, modelOptions(this.config), this.logs.inference);
    this.counters.persistTo(path.join(this.config.service.stateDir, 'counters.json'), this.logs.console);
    this.publisher = new Publisher(this.config, this.logs.publish);
    this.publisher.setDeviceStatus({
      ...buildInfo(), model: model.info, revision: this.revision, config: this.configStatus(),
      counters: () => this.counters.snapshot(this.enabledCameraIds()),
    });
    this.router = new CommandRouter(this.publisher.inbound, this.logs.control);
    this.commands = new CommandGroup(this.router);
    this.syncCommands();
    await this.publisher.start();
    this.sendUndeliveredAnswer();
    this.startSparkplug(model.info);

    if (this.config.archive.enabled) {
      this.archive = new Archive(archiveOptions(this.config), this.log.child({ stage: 'archive' }));
      await this.archive.open();
    }
    this.dataset = new DatasetCapture(datasetOptions(this.config), this.log.child({ stage: 'dataset' }));
    const recipes = await this.loadRecipeModels(this.config);
    this.publisher.setDeviceStatus({ recipes: recipes.status() });
    this.pipeline = new Pipeline(this.config, model, this.sink(), this.logs.pipeline, recipes);
    this.restoreRecipeSelections();
    // The model must meet its golden samples before any camera feeds it.
    const run = await this.runGolden(model, this.config, { kind: 'daemon' }, 'start-up');
    if (run && !run.passed) {
      this.golden = { ...this.golden, ready: false, reason: `${goldenFailureText(run)}; cameras not started until a model passes (push or deliver one, or fix the set and send golden/run)` };
      this.log.error({ reason: this.golden.reason }, 'not ready: the model failed its golden samples');
      this.publisher.setDeviceStatus({ golden: this.golden });
    } else {
      this.startCameras();
    }
    this.pipeline.start();
    this.watchModelFile();
    this.consoleAddress = (await this.console?.start()) ?? null;
    if (this.layered.fallback) {
      this.log.error({ ...this.layered.fallback }, 'the recorded configuration could not be used: running an older revision');
      this.recordAudit({ kind: 'rollback', outcome: 'fallback', actor: { kind: 'daemon' }, revisionAfter: this.revision, error: this.layered.fallback.reason });
    }
    // A revision recorded on probation (its changes waited for this start) must prove itself now.
    if (this.layered.probation !== null) {
      const origin = this.layerRecord(this.layered.probation)?.origin;
      this.startProbation(origin?.kind === 'push' ? origin.transaction : null, this.config.cameras.filter((c) => c.enabled).map((c) => c.id));
    }
    this.notifier.ready(() => this.health());
    this.log.info(
      { cameras: this.config.cameras.map((c) => c.id), model: model.info.path, provider: model.info.executionProvider },
      'crad-edge running',
    );
  }

  private startSparkplug(model: CradModel['info']): void {
    this.sparkplug = createEdgeNode(this.config, {
      trigger: (cameraId, triggerId) => {
        const camera = this.config.cameras.find((c) => c.id === cameraId && c.enabled);
        if (camera?.trigger !== 'mqtt') return camera ? 'the camera is not in trigger mode (trigger: mqtt)' : 'no such enabled camera';
        this.pipeline.trigger(cameraId, triggerId);
        return null;
      },
      nodeInfo: () => {
        const publisher = this.publisher.stats();
        return { outboxDepth: publisher.outbox.pending, brokerReconnects: Math.max(0, publisher.connects - 1), configRevision: this.revision };
      },
    }, this.logs.publish.child({ plane: 'sparkplug' }));
    this.sparkplug?.setModel(model);
    this.sparkplug?.start();
  }

  private startCameras(): void {
    this.camerasStarted = true;
    for (const camera of this.config.cameras.filter((c) => c.enabled)) this.addCamera(camera);
  }

  /** A model passed its golden samples: a device held not-ready starts its cameras. */
  private becomeReady(): void {
    this.golden = { ...this.golden, ready: true, reason: null };
    this.publisher.setDeviceStatus({ golden: this.golden });
    if (this.camerasStarted) return;
    this.log.info('ready: a model passed its golden samples, starting the cameras');
    this.startCameras();
  }

  /**
   * Run the golden samples of `config` on `model`; null when the model has no golden set.
   * The run goes to the audit log and the status topic.
   */
  private async runGolden(model: CradModel, config: AppConfig, actor: AuditActor, why: string, transaction: string | null = null): Promise<GoldenRun | null> {
    const dir = goldenDirFor(config, model.info.path);
    if (!dir) return null;
    const run = await runGoldenSamples(model, dir, postprocessOptions(config), config.inference.maxBatch);
    this.golden = { ...this.golden, lastRun: run };
    this.publisher.setDeviceStatus({ golden: this.golden });
    this.recordAudit({ kind: 'golden', outcome: run.passed ? 'passed' : 'failed', actor, transaction, revisionBefore: this.revision, revisionAfter: this.revision, details: { why, run } });
    if (!run.passed) this.log.warn({ why, reason: goldenFailureText(run) }, 'golden samples failed');
    return run;
  }

  /** The audit log must not take the daemon down: a full disk is logged, the change still happens. */
  private recordAudit(entry: Parameters<AuditLog['record']>[0]): void {
    try {
      this.audit.record(entry);
    } catch (err) {
      this.log.error({ err: (err as Error).message, entry: entry.kind }, 'audit entry not written');
    }
  }

  /** The pipeline's and the publisher's counters (soak runs and diagnostics read them). */
  stats(): { pipeline: PipelineStats; publisher: PublisherStats } {
    return { pipeline: this.pipeline.stats(), publisher: this.publisher.stats() };
  }

  /** What the console's archive routes serve (archiveRoutes' options, less readOnly). */
  capture(): { archive: Archive | null; dataset: DatasetCapture } {
    return { archive: this.archive, dataset: this.dataset };
  }

  /** Healthy while results flow, or while idle by design (triggered cameras, no cameras). */
  health(): Health {
    const stats = this.pipeline.stats();
    const publisher = this.publisher.stats();
    // A free-run camera whose finite source has ended waits for nothing: a restart would only
    // inspect the same folder or file again.
    const ended = new Set(stats.sourcesEnded);
    // Cameras held back by failed golden samples wait for an operator, not for a restart.
    const freeRunning = this.camerasStarted ? this.config.cameras.filter((c) => c.enabled && c.trigger === 'free' && !ended.has(c.id)).length : 0;
    const sinceResult = performance.now() - stats.lastResultMono;
    const flowing = stats.lastResultMono > 0 && sinceResult < this.config.service.watchdogStallMs;
    const startingUp = stats.lastResultMono === 0 && performance.now() < this.config.service.watchdogStallMs + this.startedMono;
    const healthy = freeRunning === 0 || flowing || startingUp;
    const status = `${this.golden.ready ? '' : 'NOT READY (golden samples failed), '}${stats.fps.toFixed(1)} fps, ${stats.processed} results, broker ${publisher.connected ? 'connected' : 'disconnected'}, outbox ${publisher.outbox.pending} pending`;
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
      config: (kind, payload, properties) => (kind === 'get'
        ? { status: 'ok', revision: this.revision, config: redact(this.config) }
        : this.handleConfigPush(payload, { actor: mqttActor(properties, payload, null) })),
      revision: () => this.revision,
      resetCounters: (cameraId) => {
        const known = this.enabledCameraIds();
        if (cameraId !== undefined && !known.includes(cameraId)) return { error: `no running camera ${JSON.stringify(cameraId)}` };
        const cameras = cameraId === undefined ? known : [cameraId];
        this.resetCounters(cameras);
        return { cameras };
      },
      golden: (payload, properties) => this.goldenOnDemand(payload, properties),
      audit: (payload) => this.auditPage(payload),
      deliver: (payload, properties, progress) => this.deliverModel(payload, properties, progress),
    }, this.logs.control));
  }

  private enabledCameraIds(): string[] {
    return this.config.cameras.filter((c) => c.enabled).map((c) => c.id);
  }

  private resetCounters(cameraIds: string[]): void {
    this.counters.reset(cameraIds);
    this.publisher.setDeviceStatus({}); // republish with the zeroed counters
    this.log.info({ cameras: cameraIds }, 'production counters reset');
  }

  /** The daemon as the operator console sees it. */
  private consoleHost(): ConsoleHost {
    return {
      config: () => this.config,
      revision: () => this.revision,
      configPush: (payload) => this.handleConfigPush(payload, { actor: { kind: 'console' } }),
      model: () => this.pipeline.currentModel.info,
      pipelineStats: () => this.pipeline.stats(),
      publisherStats: () => this.publisher.stats(),
      cameras: () => this.enabledCameraIds().map((id) => {
        const handle = this.cameraHandles.get(id);
        return { id, status: this.cameraStatuses.get(id) ?? null, stats: handle?.stats() ?? null, frameSize: handle?.frameSize ?? null };
      }),
      counters: () => this.counters.snapshot(this.enabledCameraIds()),
      resetCounters: (cameraIds) => this.resetCounters(cameraIds),
      recipes: () => ({ names: Object.keys(this.config.recipes), active: this.activeRecipes() }),
      // The same path as recipe/set (checked, kept, audited), the console as the actor.
      selectRecipe: (request) => this.handleRecipeSet(request, { kind: 'console' }),
    };
  }

  // ---- recipes ------------------------------------------------------------------------------

  /**
   * Every recipe's model, each held to its golden samples (the recipe's model.goldenDir, else the
   * set beside its model file) before it may serve: a model that fails them refuses its recipes.
   */
  private loadRecipeModels(config: AppConfig): Promise<RecipeModels> {
    const recipeOf = new Map(Object.keys(config.recipes).map((name) => {
      const own = withRecipe(config, name);
      // Without a golden set of its own, a recipe's model is held to the set beside its file.
      if (own.model.goldenDir === config.model.goldenDir) own.model.goldenDir = '';
      return [own.model.path, own] as const;
    }));
    return RecipeModels.load(config, async (file) => {
      const model = await loadModel(file, modelOptions(config), this.logs.inference);
      const recipeConfig = recipeOf.get(file) ?? config;
      const run = await this.runGolden(model, recipeConfig, { kind: 'daemon' }, `recipe model ${file}`);
      if (run && !run.passed) {
        await model.release();
        throw new Error(goldenFailureText(run));
      }
      return model;
    }, this.logs.inference);
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
  private selectRecipe(camera: string, recipe: RecipeName, by: 'recipe/set' | 'trigger', transaction: string | null, actor: AuditActor = { kind: 'mqtt' }): string | null {
    const previous = this.pipeline.activeRecipe(camera);
    const problem = this.pipeline.selectRecipe(camera, recipe);
    if (problem !== null || previous === recipe) return problem;
    this.recipeSelections.save(this.activeRecipes());
    this.log.info({ camera, recipe, previous, by }, 'recipe selected');
    this.recordAudit({
      kind: 'recipe', outcome: 'applied', actor, transaction, revisionBefore: this.revision, revisionAfter: this.revision,
      changes: [{ key: `cameras.${camera}.recipe`, old: previous, new: recipe }], details: { by },
    });
    return null;
  }

  /** A recipe/set request: all of it applies, or none (every target is checked first). */
  private handleRecipeSet(request: RecipeSetRequest, actor: AuditActor = { kind: 'mqtt' }): RecipeResponse {
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
      const problem = this.selectRecipe(camera, request.recipe, 'recipe/set', request.transaction, actor);
      if (problem !== null) return error(problem);
    }
    return { transaction: request.transaction, status: 'ok', active: this.activeRecipes() };
  }

  /** Pushes run one at a time: each is checked against the revision the previous one left. */
  private handleConfigPush(payload: Buffer, source: PushSource): Promise<ConfigPushResponse> {
    return this.serialized(() => this.applyConfigPush(payload, source));
  }

  /** Pushes, deliveries' swaps and on-demand golden runs take turns on the running model. */
  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const done = this.pushes.then(work);
    this.pushes = done.catch(() => undefined);
    return done;
  }

  /** Validate, apply and record a remote push; a model change is loaded before anything is committed. */
  private async applyConfigPush(payload: Buffer, source: PushSource): Promise<ConfigPushResponse> {
    const revision = this.revision;
    const fail = (transaction: string | null, error: string): ConfigPushResponse => {
      this.log.warn({ transaction, error }, 'config push rejected');
      this.recordAudit({ kind: 'config', outcome: 'rejected', actor: source.actor, transaction, revisionBefore: revision, revisionAfter: revision, error });
      return configPushResponse({ ok: false, error, transaction }, revision);
    };
    const options = { ...pushOptionsFrom(this.config), ...(source.publicKey !== undefined ? { publicKey: source.publicKey } : {}) };
    const outcome = applyConfigPush(this.config, revision, payload, options);
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
      const run = await this.runGolden(newModel, next, source.actor, 'pushed model', outcome.transaction);
      if (run) source.onGolden?.(run);
      if (run && !run.passed) {
        await newModel.release();
        return fail(outcome.transaction, `model rejected, previous model still serving: ${goldenFailureText(run)}`);
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
    const signedWith = options.publicKey.trim() !== '' ? keyFingerprint(options.publicKey) : null;
    const actor = signedWith ? { ...source.actor, keyFingerprint: signedWith } : source.actor;
    this.recordAudit({
      kind: 'config', outcome: 'applied', actor, transaction: outcome.transaction, revisionBefore: revision, revisionAfter: outcome.revision,
      changes: auditChanges(previous, next, outcome.changedKeys), details: { probation: onProbation, restartRequired: outcome.restartRequired },
    });
    this.audit.setLimits(next.audit);
    this.pipeline.updateLive(next);
    this.publisher.updateLive(next);
    this.archive?.updateLive(archiveOptions(next));
    this.dataset.updateLive(datasetOptions(next));
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
    if (this.camerasStarted) {
      for (const id of rebuilt) await this.rebuildCamera(id, previous);
      // Cameras kept running get their live fields (fps, roi, ...): the push said they apply live.
      for (const camera of next.cameras) if (!rebuilt.includes(camera.id)) this.pipeline.updateCamera(camera);
    }
    // A pushed model that passed its golden samples (or has none) may serve.
    if (newModel && !this.golden.ready) this.becomeReady();
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
      publishResult: (result, inspected) => {
        const now = performance.now();
        // Probation asks for a frame captured after the change, not one still in flight from before it.
        this.lastResultMono.set(result.frame.cameraId, result.frame.capturedMono);
        this.publisher.publishResult(result);
        const cycleMs = now - result.frame.capturedMono;
        this.counters.countResult(result, cycleMs);
        // Both take a copy of the frame only when they keep it, and write it off the pipeline.
        this.archive?.offer(result, inspected.frame.image);
        this.dataset.offer(result, inspected.frame.image);
        this.sparkplug?.onResult(result);
        try {
          this.console?.observeResult(result, inspected, cycleMs);
        } catch (err) {
          this.logs.console.warn({ err, camera: result.frame.cameraId }, 'live view skipped a result');
        }
      },
      publishAnswer: (result) => {
        // A trigger answered without an inspection: published like a result, counted as an error.
        this.publisher.publishResult(result);
        this.counters.countError(result.frame.cameraId);
        this.sparkplug?.onResult(result);
        this.console?.observeFailure(result.frame.cameraId);
      },
      sendPending: () => this.publisher.sendPending(),
      frameFailed: (cameraId) => {
        this.counters.countError(cameraId);
        this.console?.observeFailure(cameraId);
      },
      publishCameraStatus: (status) => {
        this.cameraStatuses.set(status.cameraId, { ...status });
        this.publisher.publishCameraStatus(status);
        this.sparkplug?.onCameraStatus(status);
      },
      setDeviceStatus: (info) => {
        this.publisher.setDeviceStatus(info);
        this.sparkplug?.setModel(info.model);
      },
    };
  }

  // ---- golden samples, audit and model delivery over MQTT ----------------------------------

  /** golden/run: the running model against its golden samples; a pass makes a not-ready device ready. */
  private goldenOnDemand(payload: Buffer, properties: Command['properties']): Promise<object> {
    const transaction = deliveryTransaction(payload);
    return this.serialized(async () => {
      const run = await this.runGolden(this.pipeline.currentModel, this.config, mqttActor(properties, payload, null), 'on demand', transaction);
      if (!run) return { transaction, status: 'error', error: 'this model has no golden samples (model.goldenDir is empty and there is no <model>.golden folder)' };
      if (run.passed && !this.golden.ready) this.becomeReady();
      return { transaction, status: run.passed ? 'ok' : 'failed', run };
    });
  }

  /** audit/get: {limit?, before?} -> a page of entries, newest first. */
  private auditPage(payload: Buffer): object {
    const transaction = deliveryTransaction(payload);
    let request: { limit?: unknown; before?: unknown } = {};
    try {
      if (payload.length > 0) request = JSON.parse(payload.toString('utf8')) as typeof request;
    } catch {
      return { transaction, status: 'error', error: 'request must be JSON: {"limit"?: 1..100, "before"?: seq}' };
    }
    const isCount = (v: unknown) => v === undefined || v === null || (Number.isSafeInteger(v) && (v as number) >= 1);
    if (!isCount(request.limit) || !isCount(request.before)) return { transaction, status: 'error', error: 'limit and before must be positive integers' };
    return { transaction, status: 'ok', ...this.audit.read({ limit: request.limit as number | undefined, before: request.before as number | undefined }) };
  }

  /** model/deliver: one at a time; each stage is answered through `progress`, the result is the last answer. */
  private async deliverModel(payload: Buffer, properties: Command['properties'], progress: (answer: object) => void): Promise<object> {
    const transaction = deliveryTransaction(payload);
    const actor = mqttActor(properties, payload, null);
    if (this.delivering !== null) {
      const error = `a model delivery is already running (transaction ${this.delivering}); one at a time`;
      this.recordAudit({ kind: 'delivery', outcome: 'failed', actor, transaction, revisionBefore: this.revision, revisionAfter: this.revision, error, details: { stage: 'accepted' } });
      return { transaction, status: 'error', stage: 'accepted', error };
    }
    this.delivering = transaction ?? '(none)';
    let request: ModelDeliveryRequest | null = null;
    try {
      request = parseDeliveryRequest(payload, {
        revision: this.revision, publicKey: this.config.remoteConfig.publicKey, deviceId: this.config.device.id, maxBytes: this.config.model.delivery.maxBytes,
      });
      if (!isAllowed('model.path', this.config.remoteConfig.allow)) throw new DeliveryError('accepted', '"model.path" is not in the remote allow-list (remoteConfig.allow)');
      const signedWith = this.config.remoteConfig.publicKey.trim() !== '' ? keyFingerprint(this.config.remoteConfig.publicKey) : null;
      const answer = await this.runDelivery(request, signedWith ? { ...actor, keyFingerprint: signedWith } : actor, progress);
      this.recordAudit({ kind: 'delivery', outcome: 'applied', actor, transaction, revisionBefore: request.baseRevision, revisionAfter: this.revision, details: deliveryDetails(request) });
      return answer;
    } catch (err) {
      const stage: DeliveryStage = err instanceof DeliveryError ? err.stage : 'applied';
      const error = (err as Error).message;
      this.log.warn({ transaction, stage, error }, 'model delivery failed; the running model is untouched');
      this.recordAudit({ kind: 'delivery', outcome: 'failed', actor, transaction, revisionBefore: this.revision, revisionAfter: this.revision, error, details: { stage, ...(request ? deliveryDetails(request) : {}) } });
      return { transaction, status: 'error', stage, error };
    } finally {
      this.delivering = null;
    }
  }

  private async runDelivery(request: ModelDeliveryRequest, actor: AuditActor, progress: (answer: object) => void): Promise<object> {
    const { transaction } = request;
    const stage = (name: DeliveryStage, extra: object = {}) => progress({ transaction, status: 'progress', stage: name, ...extra });
    stage('accepted');
    const modelsDir = this.config.model.modelsDir;
    const target = path.join(modelsDir, deliveryFileName(request));
    let created = false;
    if (fs.existsSync(target)) {
      // Never overwrite a model file: it may be the one serving, or another revision's.
      if ((await fileSha256(target)) !== request.sha256) throw new DeliveryError('accepted', `${path.basename(target)} already exists in ${modelsDir} with other content; name the delivery differently`);
      stage('verified', { file: target });
    } else {
      const partial = partialPath(modelsDir, request.sha256);
      await download(request.url, partial, request.size, { ...this.config.model.delivery }, ({ resumedFrom }) => stage('downloading', { resumedFrom }));
      stage('downloaded');
      await verifyDownload(partial, request);
      stage('verified');
      await checkDeliveredContract(partial);
      stage('contract');
      // Only a complete, checked file gets a name a push can use.
      fs.renameSync(partial, target);
      created = true;
    }
    let golden: GoldenRun | null = null;
    const push = Buffer.from(JSON.stringify({ transaction, baseRevision: request.baseRevision, changes: { 'model.path': target } }));
    const answer = await this.handleConfigPush(push, { actor, publicKey: '', onGolden: (run) => (golden = run) });
    if (answer.status !== 'ok') {
      if (created) fs.rmSync(target, { force: true });
      throw new DeliveryError(golden && !(golden as GoldenRun).passed ? 'golden' : 'applied', answer.error ?? 'the model push failed');
    }
    if (golden) stage('golden', { golden });
    return { transaction, status: 'ok', stage: 'applied', file: target, revision: answer.revision, golden };
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
        if (this.cameraStatuses.get(id)?.state !== 'online') missing.push(`camera ${id} is not online (${this.cameraStatuses.get(id)?.state ?? 'no status'})`);
      } else if ((this.lastResultMono.get(id) ?? 0) < probation.since) {
        missing.push(`camera ${id} has delivered no result${this.cameraStatuses.get(id)?.state ? ` (${this.cameraStatuses.get(id)?.state})` : ''}`);
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
    this.recordAudit({
      kind: 'rollback', outcome: 'rolled-back', actor: { kind: 'daemon' }, transaction: probation.transaction,
      revisionBefore: probation.revision, revisionAfter: record.revision, error: reason,
    });
    this.rollbackInfo = { undid: probation.revision, to: record.revision, at: record.createdAt, reason };
    this.publisher.setDeviceStatus({ config: this.configStatus() });
    const answer: ConfigPushResponse = {
      transaction: probation.transaction, status: 'error', error: `rolled back to the last good configuration: ${reason}`,
      revision: record.revision, restartRequired: [], changed: [],
    };
    const delivered = await this.publisher.inbound.publishJson(this.publisher.topics.configResponse, Buffer.from(JSON.stringify(answer)))
      .then(() => true, (err: Error) => {
        this.log.warn({ err: err.message }, 'rollback answer not delivered now: the restarted daemon sends it');
        return false;
      });
    this.options.onRestart?.(`rollback of revision ${probation.revision}`, delivered ? undefined : answer);
  }

  /** The answer a rolled-back daemon could not deliver, sent on this daemon's first connection. */
  private sendUndeliveredAnswer(): void {
    const answer = this.options.undeliveredAnswer;
    if (!answer) return;
    const subscription = this.publisher.connected$.pipe(filter(Boolean), take(1)).subscribe(() => {
      void this.publisher.inbound.publishJson(this.publisher.topics.configResponse, Buffer.from(JSON.stringify(answer)))
        .catch((err: Error) => this.log.warn({ err: err.message }, 'rollback answer not delivered (the status carries it)'));
    });
    this.subscriptions.push(subscription);
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
        const before = this.pipeline.currentModel.info.hash;
        if (model.info.hash === before) {
          await model.release();
          return;
        }
        const actor: AuditActor = { kind: 'file', file };
        const run = await this.runGolden(model, this.config, actor, 'model file replaced on disk');
        if (run && !run.passed) {
          await model.release();
          throw new Error(goldenFailureText(run));
        }
        this.pipeline.replaceModel(model);
        this.recordAudit({ kind: 'model', outcome: 'applied', actor, revisionBefore: this.revision, revisionAfter: this.revision, changes: [{ key: 'model.hash', old: before, new: model.info.hash }] });
        if (!this.golden.ready) this.becomeReady();
      } catch (err) {
        this.log.error({ err, file }, 'replaced model file rejected; previous model still serving');
        this.publisher.setDeviceStatus({ modelError: (err as Error).message });
        this.recordAudit({ kind: 'model', outcome: 'rejected', actor: { kind: 'file', file }, revisionBefore: this.revision, revisionAfter: this.revision, error: (err as Error).message });
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
      for (const subscription of this.subscriptions) subscription.unsubscribe();
      await this.console?.stop().catch((err: Error) => this.logs.console.warn({ err: err.message }, 'console did not close cleanly'));
      this.router.close(); // no new commands while shutting down
      const drained = await this.pipeline.stop(Math.max(100, deadline * 0.6));
      await this.sparkplug?.stop(Math.max(100, Math.min(2000, (deadline - (performance.now() - t0)) / 3)));
      await this.publisher.stop(Math.max(100, deadline - (performance.now() - t0)));
      await Promise.all([this.archive?.close(), this.dataset?.close()]);
      this.counters.close();
      this.log.info({ drained }, 'crad-edge stopped');
    })();
    return this.stopping;
  }
}

/** What the audit log keeps of a delivery request (the URL without credentials or query). */
function deliveryDetails(request: ModelDeliveryRequest): Record<string, unknown> {
  return { url: redactUrl(request.url), sha256: request.sha256, size: request.size, name: request.name ?? null };
}
