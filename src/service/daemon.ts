// The running daemon: builds the stages from config, joins them with the pipeline, and owns
// everything that outlives one stage — remote configuration, model hot swap, systemd, shutdown.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, redact, type AppConfig } from '../config/load.js';
import { applyConfigPush, configPushResponse, pushOptionsFrom, type ConfigPushResponse } from '../config/remote.js';
import { persistConfig } from '../config/persist.js';
import { createCamera } from '../capture/index.js';
import { deviceCommands } from '../control/commands.js';
import { CommandGroup, CommandRouter } from '../control/router.js';
import { loadModel, modelOptions, type CradModel } from '../inference/model.js';
import { Pipeline, type PipelineStats } from '../pipeline.js';
import { Publisher, type PublisherStats } from '../publish/index.js';
import type { Logger } from '../shared/log.js';
import { buildInfo } from './build-info.js';
import { SystemdNotifier, type Health } from './systemd.js';

export interface DaemonOptions {
  /** Config file: read at start, rewritten (atomically) by accepted remote pushes. */
  configFile?: string;
  /** A config object used instead of a file (demo, tests). Pushes are then persisted to stateDir. */
  config?: AppConfig;
  log: Logger;
}

export class Daemon {
  private config: AppConfig;
  private revision = 0;
  private readonly configFile: string;
  private publisher!: Publisher;
  private router!: CommandRouter;
  private commands!: CommandGroup;
  private pipeline!: Pipeline;
  private readonly notifier: SystemdNotifier;
  private modelWatcher: fs.FSWatcher | null = null;
  private swapTimer: NodeJS.Timeout | null = null;
  private modelLoading: Promise<unknown> = Promise.resolve();
  private stopping: Promise<void> | null = null;
  /** One child logger per stage, so every line says where it came from. */
  private readonly logs: Record<'capture' | 'inference' | 'pipeline' | 'publish' | 'control', Logger>;

  constructor(private readonly options: DaemonOptions) {
    this.config = options.config ?? loadConfig(options.configFile);
    this.configFile = options.configFile ?? path.join(this.config.service.stateDir, 'config.json');
    this.revision = this.config.remoteConfig.revision;
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
    this.publisher.setDeviceStatus({ ...buildInfo(), model: model.info, revision: this.revision });
    this.router = new CommandRouter(this.publisher.inbound, this.logs.control);
    this.commands = new CommandGroup(this.router);
    this.syncCommands();
    await this.publisher.start();

    this.pipeline = new Pipeline(this.config, model, this.publisher, this.logs.pipeline);
    for (const camera of this.config.cameras.filter((c) => c.enabled)) {
      this.pipeline.addCamera(createCamera(camera, this.logs.capture), camera.trigger === 'mqtt');
    }
    this.pipeline.start();
    this.watchModelFile();
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
      trigger: (cameraId, triggerId) => this.pipeline.trigger(cameraId, triggerId),
      config: (kind, payload) => (kind === 'get' ? { status: 'ok', revision: this.revision, config: redact(this.config) } : this.handleConfigPush(payload)),
      revision: () => this.revision,
    }, this.logs.control));
  }

  /** Validate, apply and persist a remote push; a model change is loaded before anything is committed. */
  private async handleConfigPush(payload: Buffer): Promise<ConfigPushResponse> {
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
    let newModel: CradModel | null = null;
    if (outcome.restartRequired.includes('model')) {
      try {
        newModel = await loadModel(next.model.path, modelOptions(next), this.logs.inference);
      } catch (err) {
        return fail(outcome.transaction, `model rejected, previous model still serving: ${(err as Error).message}`);
      }
    }
    try {
      persistConfig(this.configFile, next, outcome.revision);
    } catch (err) {
      await newModel?.release();
      return fail(outcome.transaction, `could not persist the configuration: ${(err as Error).message}`);
    }
    const previous = this.config;
    this.config = next;
    this.revision = outcome.revision;
    this.pipeline.updateLive(next);
    this.publisher.updateLive(next);
    this.syncCommands();
    if (newModel) {
      this.pipeline.replaceModel(newModel);
      this.watchModelFile();
    }
    // Parts that only a daemon restart applies (the broker connection, the outbox file, ...).
    const pending = new Set<string>();
    const rebuilt = new Set<string>();
    for (const part of outcome.restartRequired) {
      if (part.startsWith('camera:')) {
        rebuilt.add(part.slice('camera:'.length));
        await this.restartCamera(part.slice('camera:'.length), previous);
      } else if (part !== 'model') pending.add(part);
    }
    // Cameras kept running get their live fields (fps, roi, ...): the push said they apply live.
    for (const camera of next.cameras) if (!rebuilt.has(camera.id)) this.pipeline.updateCamera(camera);
    this.publisher.setDeviceStatus({ revision: this.revision });
    this.log.info({ transaction: outcome.transaction, changed: outcome.changedKeys, revision: this.revision }, 'config push applied');
    return configPushResponse({ ...outcome, restartRequired: [...pending].sort() }, revision);
  }

  private async restartCamera(id: string, previous: AppConfig): Promise<void> {
    const wasThere = previous.cameras.some((c) => c.id === id && c.enabled);
    if (wasThere) await this.pipeline.removeCamera(id);
    const camera = this.config.cameras.find((c) => c.id === id);
    if (camera?.enabled) this.pipeline.addCamera(createCamera(camera, this.logs.capture), camera.trigger === 'mqtt');
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
      this.router.close(); // no new commands while shutting down
      const drained = await this.pipeline.stop(Math.max(100, deadline * 0.6));
      await this.publisher.stop(Math.max(100, deadline - (performance.now() - t0)));
      this.log.info({ drained }, 'crad-edge stopped');
    })();
    return this.stopping;
  }
}
