// The running daemon, assembled: what is built, in what order, and the stop order. Each job lives
// in a room of its own beside this file (config-push, model-queue, delivery, recipes, model-watch,
// probation, health, fanout, cameras, commands); this file hands each room what it needs.
import path from 'node:path';
import { filter, take, type Subscription } from 'rxjs';
import { enabledCameraIds, type AppConfig } from '../config/load.js';
import { loadLayered, type LayeredConfig } from '../config/layers.js';
import type { ConfigPushResponse } from '../config/remote.js';
import { Archive, archiveOptions } from '../console/archive.js';
import { archiveConsolePlugin } from '../console/archive-routes.js';
import { ProductionCounters } from '../console/counters.js';
import { DatasetCapture, datasetOptions } from '../console/dataset.js';
import { ConsoleServer, type ConsolePlugin } from '../console/server.js';
import { deviceCommands } from '../control/commands.js';
import { CommandGroup, CommandRouter } from '../control/router.js';
import { goldenFailureText } from '../inference/golden.js';
import { loadModel } from '../inference/model.js';
import { modelOptions } from '../inference/model-options.js';
import { Pipeline, type PipelineStats } from '../pipeline.js';
import { Publisher, type PublisherStats } from '../publish/index.js';
import type { Logger } from '../shared/log.js';
import { createEdgeNode, type EdgeNode } from '../sparkplug/index.js';
import { AuditLog } from './audit.js';
import { buildInfo } from './build-info.js';
import { Cameras } from './cameras.js';
import { consoleHost, deviceHandlers, type CommandParts } from './commands.js';
import { ConfigPushes, type LiveStage } from './config-push.js';
import { ConfigState } from './config-state.js';
import { ModelDelivery } from './delivery.js';
import { Fanout, type Plane } from './fanout.js';
import { HealthWatch } from './health.js';
import { GoldenGate, ModelQueue } from './model-queue.js';
import { ModelFileWatch } from './model-watch.js';
import { Recipes } from './recipes.js';
import { SystemdNotifier, type Health } from './systemd.js';
import { Training } from './training.js';
import { teachConsolePlugin } from '../console/teach-routes.js';

export interface DaemonOptions {
  /** The operator's config file: read, never written (pushes go to a layer in service.stateDir). */
  configFile?: string;
  /** A config object used instead of a file (demo, tests); pushes still layer over it. */
  config?: AppConfig;
  /** The configuration already loaded in layers (the run loop loads it to roll back at start-up). */
  layered?: LayeredConfig;
  /** Inspection stopped outside stop() (the batch loop ended or stalled): stop this daemon and exit non-zero. */
  onFault?: (reason: string) => void;
  /** Asked to stop this daemon and start a new one on the recorded configuration (a rollback). */
  onRestart?: (reason: string, undelivered?: ConfigPushResponse) => void;
  /** An answer the daemon before this one could not deliver (its broker was gone): sent once connected. */
  undeliveredAnswer?: ConfigPushResponse;
  /** Planes mounted on the operator console under their prefix (see ConsolePlugin). */
  consolePlugins?: ConsolePlugin[];
  log: Logger;
}

/** The keys (or sections) each live stage takes; test/config.test.ts checks every live key has one. */
export const LIVE_STAGE_KEYS = {
  audit: ['audit'],
  pipeline: ['inference', 'regions', 'crops', 'overlay', 'recipes', 'cameras', 'model', 'service'],
  mqtt: ['mqtt', 'outbox', 'crops', 'overlay', 'device', 'service'],
  archive: ['archive'],
  dataset: ['dataset'],
  commands: ['remoteConfig', 'model.delivery', 'cameras'],
  // Read from the running configuration each time they are used.
  readWhenUsed: ['training', 'model.modelsDir', 'model.goldenDir', 'model.delivery', 'remoteConfig', 'service', 'http.alarmNgStreak'],
} as const satisfies Record<string, readonly string[]>;

type Stage = 'capture' | 'inference' | 'pipeline' | 'publish' | 'control' | 'console';

export class Daemon {
  private readonly state: ConfigState;
  /** Every change of configuration or model and every golden-sample run. */
  readonly audit: AuditLog;
  private readonly logs: Record<Stage, Logger>;
  private readonly notifier: SystemdNotifier;
  private readonly queue: ModelQueue;
  private readonly gate: GoldenGate;
  private readonly cameras: Cameras;
  private readonly counters: ProductionCounters;
  private readonly recipes: Recipes;
  private readonly watch: HealthWatch;
  private readonly pushes: ConfigPushes;
  private readonly delivery: ModelDelivery;
  private readonly modelWatch: ModelFileWatch;
  private readonly fanout: Fanout;
  private readonly training: Training;
  private readonly subscriptions: Subscription[] = [];
  // Built by start(), in this order.
  private console: ConsoleServer | null = null;
  /** Where the console listens once started (http.port 0 picks a free port), else null. */
  consoleAddress: string | null = null;
  private publisher!: Publisher;
  private router!: CommandRouter;
  private commands!: CommandGroup;
  private sparkplug: EdgeNode | null = null;
  private archive: Archive | null = null;
  private dataset!: DatasetCapture;
  private pipeline!: Pipeline;
  private stopping: Promise<void> | null = null;

  constructor(private readonly options: DaemonOptions) {
    const log = options.log;
    this.state = new ConfigState(options.layered ?? loadLayered(options.configFile, options.config));
    this.audit = AuditLog.forConfig(this.state.config);
    this.notifier = new SystemdNotifier(log);
    const stage = (name: Stage) => log.child({ stage: name });
    this.logs = { capture: stage('capture'), inference: stage('inference'), pipeline: stage('pipeline'), publish: stage('publish'), control: stage('control'), console: stage('console') };
    const pipeline = () => this.pipeline;
    const publisher = () => this.publisher;
    this.queue = new ModelQueue(this.logs.inference);
    this.gate = new GoldenGate(this.audit, { changed: (golden) => this.publisher?.setDeviceStatus({ golden }), revision: () => this.state.revision }, this.logs.inference);
    this.cameras = new Cameras(pipeline, this.logs.capture);
    this.counters = new ProductionCounters((id) => this.cameras.handle(id)?.stats().triggerTimeouts ?? 0);
    this.recipes = new Recipes(this.state, pipeline, this.gate, this.audit, this.logs.control);
    this.watch = new HealthWatch({
      config: () => this.state.config, pipeline, publisher: () => this.publisher.stats(), goldenReady: () => this.gate.status.ready,
      camerasStarted: () => this.cameras.started, inspectionChanged: (inspection) => this.publisher.setDeviceStatus({ inspection }), onFault: options.onFault,
    }, log);
    this.pushes = new ConfigPushes({
      state: this.state, queue: this.queue, gate: this.gate, audit: this.audit, recipes: this.recipes, cameras: this.cameras, pipeline, publisher,
      stages: () => this.liveStages(),
      modelServing: () => {
        this.modelWatch.watch();
        this.goldenPassed();
      },
      onRestart: options.onRestart,
    }, this.logs.control);
    this.delivery = new ModelDelivery(this.state, (payload, source) => this.pushes.handle(payload, source), this.audit, this.logs.control);
    this.modelWatch = new ModelFileWatch(this.state, pipeline, this.queue, this.gate, this.audit, {
      swapped: () => this.goldenPassed(),
      rejected: (modelError) => this.publisher.setDeviceStatus({ modelError }),
    }, this.logs.inference);
    this.training = new Training({
      state: this.state, audit: this.audit, dataset: () => this.dataset, pipeline,
      push: (payload, actor, ownKeys) => this.pushes.handle(payload, { actor, publicKey: '', ownKeys }),
      publish: (run) => this.publisher?.publishRetainedState(this.publisher.topics.trainProgress, run),
    }, this.logs.control.child({ room: 'training' }));
    this.fanout = new Fanout(log, { sendPending: () => this.publisher.sendPending(), pipelineFault: (reason) => this.watch.inspectionStopped(reason) });
  }

  get log(): Logger {
    return this.options.log;
  }

  async start(): Promise<void> {
    const { state } = this;
    const parts = this.commandParts();
    // First, so that a console that must not run (no credentials beyond loopback) stops the start.
    if (state.config.http.enabled) this.console = new ConsoleServer(consoleHost(parts), this.logs.console, [
      archiveConsolePlugin(() => ({ archive: this.archive, dataset: this.dataset })),
      teachConsolePlugin(() => (this.pipeline ? this.training : null)),
      ...(this.options.consolePlugins ?? []),
    ]);
    const model = await loadModel(state.config.model.path, modelOptions(state.config), this.logs.inference);
    this.publisher = new Publisher(state.config, this.logs.publish);
    this.publisher.setDeviceStatus({
      ...buildInfo(), model: model.info, inspection: { ready: true, reason: null }, revision: state.revision, config: state.status(),
      counters: () => this.counters.snapshot(enabledCameraIds(state.config)), planeFailures: () => this.fanout.failureCounts(),
    });
    this.router = new CommandRouter(this.publisher.inbound, this.logs.control);
    this.commands = new CommandGroup(this.router);
    this.syncCommands();
    this.sparkplug = this.sparkplugPlane();
    this.sparkplug?.setModel(model.info);
    if (state.config.archive.enabled) this.archive = new Archive(archiveOptions(state.config), this.log.child({ stage: 'archive' }));
    this.dataset = new DatasetCapture(datasetOptions(state.config), this.log.child({ stage: 'dataset' }));
    const recipeModels = await this.recipes.loadModels(state.config);
    this.publisher.setDeviceStatus({ recipes: recipeModels.status() });
    this.pipeline = new Pipeline(state.config, model, this.fanout, this.logs.pipeline, recipeModels);
    // Every plane opens its files and connections here, in the order planes() lists them.
    this.fanout.add(...this.planes());
    await this.fanout.start();
    this.sendUndeliveredAnswer();
    this.recipes.restoreSelections();
    // The model must meet its golden samples before any camera feeds it.
    const run = await this.gate.run(model, state.config, { kind: 'daemon' }, 'start-up');
    if (run && !run.passed) {
      this.gate.hold(`${goldenFailureText(run)}; cameras not started until a model passes (push or deliver one, or fix the set and send golden/run)`);
      this.log.error({ reason: this.gate.status.reason }, 'not ready: the model failed its golden samples');
    } else {
      this.cameras.startAll(state.config);
    }
    this.pipeline.start();
    this.modelWatch.watch();
    const fallback = state.layered.fallback;
    if (fallback) {
      this.log.error({ ...fallback }, 'the recorded configuration could not be used: running an older revision');
      this.audit.tryRecord({ kind: 'rollback', outcome: 'fallback', actor: { kind: 'daemon' }, revisionAfter: state.revision, error: fallback.reason }, this.log);
    }
    this.pushes.proveAtStart();
    this.notifier.ready(() => this.watch.health());
    this.log.info({ cameras: state.config.cameras.map((c) => c.id), model: model.info.path, provider: model.info.executionProvider }, 'crad-edge running');
  }

  /**
   * The pipeline's output, in this order, to: the cameras' bookkeeping, MQTT (the outbox), counters,
   * archive, dataset, Sparkplug, console. They start in this order and stop in the reverse one.
   */
  private planes(): Plane[] {
    const { publisher, counters, archive, dataset, sparkplug, console, state } = this;
    const planes: Plane[] = [this.cameras.plane(), {
      name: 'mqtt',
      start: () => publisher.start(),
      stop: (timeoutMs) => publisher.stop(timeoutMs),
      result: (result) => publisher.publishResult(result),
      answer: (result) => publisher.publishResult(result),
      cameraStatus: (status) => publisher.publishCameraStatus(status),
      model: (model) => publisher.setDeviceStatus({ model }),
    }, {
      name: 'counters',
      start: () => counters.persistTo(path.join(state.config.service.stateDir, 'counters.json'), this.logs.console),
      stop: () => counters.close(),
      result: (result, _inspected, cycleMs) => counters.countResult(result, cycleMs),
      answer: (result) => counters.countError(result.frame.cameraId),
      frameFailed: (cameraId) => counters.countError(cameraId),
    }];
    // Both take a copy of the frame only when they keep it, and write it off the pipeline.
    if (archive) planes.push({ name: 'archive', start: () => archive.open(), stop: () => archive.close(), result: (result, inspected) => archive.offer(result, inspected.frame.image) });
    planes.push({ name: 'dataset', stop: () => dataset.close(), result: (result, inspected) => dataset.offer(result, inspected.frame.image) });
    // Reads its run back and publishes it at start; takes a copy of a share of the frames while a shadow check runs.
    planes.push(this.training.plane());
    if (sparkplug) {
      planes.push({
        name: 'sparkplug', start: () => sparkplug.start(), stop: (timeoutMs) => sparkplug.stop(Math.min(2000, timeoutMs / 3)),
        result: (result) => sparkplug.onResult(result), answer: (result) => sparkplug.onResult(result),
        cameraStatus: (status) => sparkplug.onCameraStatus(status), model: (model) => sparkplug.setModel(model),
      });
    }
    if (console) {
      planes.push({
        name: 'console', start: async () => void (this.consoleAddress = await console.start()), stop: () => console.stop(),
        result: (result, inspected, cycleMs) => console.observeResult(result, inspected, cycleMs),
        answer: (result) => console.observeFailure(result.frame.cameraId), frameFailed: (cameraId) => console.observeFailure(cameraId),
      });
    }
    return planes;
  }

  /** Every part that takes changed keys live (LIVE_STAGE_KEYS says which): a push hands each the new config. */
  private liveStages(): LiveStage[] {
    const apply: Record<keyof typeof LIVE_STAGE_KEYS, (config: AppConfig) => void> = {
      audit: (config) => this.audit.setLimits(config.audit),
      pipeline: (config) => this.pipeline.updateLive(config),
      mqtt: (config) => this.publisher.updateLive(config),
      archive: (config) => this.archive?.updateLive(archiveOptions(config)),
      dataset: (config) => this.dataset.updateLive(datasetOptions(config)),
      commands: () => this.syncCommands(),
      readWhenUsed: () => undefined,
    };
    return Object.entries(LIVE_STAGE_KEYS).map(([name, keys]) => ({ name, keys, apply: apply[name as keyof typeof LIVE_STAGE_KEYS] }));
  }

  private sparkplugPlane(): EdgeNode | null {
    return createEdgeNode(this.state.config, {
      trigger: (cameraId, triggerId) => {
        const camera = this.state.config.cameras.find((c) => c.id === cameraId && c.enabled);
        if (camera?.trigger !== 'mqtt') return camera ? 'the camera is not in trigger mode (trigger: mqtt)' : 'no such enabled camera';
        this.pipeline.trigger(cameraId, triggerId);
        return null;
      },
      nodeInfo: () => {
        const publisher = this.publisher.stats();
        return { outboxDepth: publisher.outbox.pending, brokerReconnects: Math.max(0, publisher.connects - 1), configRevision: this.state.revision };
      },
    }, this.logs.publish.child({ plane: 'sparkplug' }));
  }

  private commandParts(): CommandParts {
    return {
      state: this.state, pipeline: () => this.pipeline, publisher: () => this.publisher, recipes: this.recipes, pushes: this.pushes, delivery: this.delivery,
      queue: this.queue, gate: this.gate, audit: this.audit, cameras: this.cameras, counters: this.counters, health: this.watch,
      goldenPassed: () => this.goldenPassed(), log: this.log, training: this.training,
    };
  }

  /** The config's commands on the router: trigger-mode cameras, config/set while remote config is on, ... */
  private syncCommands(): void {
    this.commands.sync(deviceCommands(this.state.config, this.publisher.topics, deviceHandlers(this.commandParts()), this.logs.control));
  }

  /** A model passed its golden samples: a device held not-ready starts its cameras. */
  private goldenPassed(): void {
    if (!this.gate.release() || this.cameras.started) return;
    this.log.info('ready: a model passed its golden samples, starting the cameras');
    this.cameras.startAll(this.state.config);
  }

  /** The answer a rolled-back daemon could not deliver, sent on this daemon's first connection. */
  private sendUndeliveredAnswer(): void {
    const answer = this.options.undeliveredAnswer;
    if (!answer) return;
    this.subscriptions.push(this.publisher.connected$.pipe(filter(Boolean), take(1)).subscribe(() => {
      void this.publisher.inbound.publishJson(this.publisher.topics.configResponse, Buffer.from(JSON.stringify(answer)))
        .catch((err: Error) => this.log.warn({ err: err.message }, 'rollback answer not delivered (the status carries it)'));
    }));
  }

  /** Healthy while results flow, or while idle by design (triggered cameras, no cameras). */
  health(): Health {
    return this.watch.health();
  }

  /** The pipeline's and the publisher's counters, and each plane's failures (soak runs and diagnostics read them). */
  stats(): { pipeline: PipelineStats; publisher: PublisherStats; planeFailures: Record<string, number> } {
    return { pipeline: this.pipeline.stats(), publisher: this.publisher.stats(), planeFailures: this.fanout.failureCounts() };
  }

  /** Graceful shutdown within service.shutdownTimeoutMs: capture stops, in-flight frames finish,
   * publishes flush, status goes offline. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const deadline = this.state.config.service.shutdownTimeoutMs;
      this.notifier.stopping();
      this.modelWatch.stop();
      this.watch.stop();
      const t0 = performance.now();
      this.pushes.probation.stop();
      for (const subscription of this.subscriptions) subscription.unsubscribe();
      this.router?.close(); // no new commands while shutting down
      const drained = await this.pipeline?.stop(Math.max(100, deadline * 0.6));
      // The planes, console first and the JSON plane (the outbox) last, in what time is left.
      await this.fanout.stop(Math.max(100, deadline - (performance.now() - t0)));
      // Built but never started when the start failed early: its outbox is open all the same.
      await this.publisher?.stop(100);
      this.log.info({ drained }, 'crad-edge stopped');
    })();
    return this.stopping;
  }
}
