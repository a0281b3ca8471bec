// Applying a validated config push, in turn with every other model change: load and gate a new
// model (and recipes) beside the serving ones, commit the revision, hand each stage the keys it
// declared, rebuild changed cameras, and run the revision on probation until it proves itself
// (else roll back, tell the sender, and have the run loop restart on the last good revision).
import type { AppConfig } from '../config/load.js';
import { enabledCameraIds } from '../config/load.js';
import { pendingRestart } from '../config/policy.js';
import { applyConfigPush, configPushResponse, pushOptionsFrom, type ConfigPushResponse } from '../config/remote.js';
import { valueAt } from '../config/schema.js';
import type { AuditActor } from '../control/actor.js';
import type { GoldenRun } from '../inference/golden.js';
import type { CradModel } from '../inference/model.js';
import type { RecipeModels } from '../inference/recipes.js';
import type { Pipeline } from '../pipeline.js';
import type { Publisher } from '../publish/index.js';
import type { Logger } from '../shared/log.js';
import { auditChanges, keyFingerprint, type AuditLog } from './audit.js';
import type { Cameras } from './cameras.js';
import type { ConfigState } from './config-state.js';
import type { GoldenGate, ModelQueue } from './model-queue.js';
import { Probation, type ProbationWindow } from './probation.js';
import type { Recipes } from './recipes.js';

/** Who sent a push and how it was checked (a delivery's own push was verified as a delivery). */
export interface PushSource {
  actor: AuditActor;
  /** Replaces remoteConfig.publicKey for this push ('' = the push carries no signature to check). */
  publicKey?: string;
  /** The daemon's own change (ConfigPushOptions.ownKeys): these keys need neither the allow-list nor a signature. */
  ownKeys?: string[];
  /** Told the golden-sample run of a pushed model before it is swapped in. */
  onGolden?: (run: GoldenRun) => void;
}

/**
 * A part of the daemon that takes changed keys live. `keys` are schema keys or sections ('inference',
 * 'cameras', 'service.watchdogStallMs'); the stage is handed the new config when a push changes one.
 * test/config.test.ts checks that every key whose change applies live has a stage.
 */
export interface LiveStage {
  name: string;
  keys: readonly string[];
  apply(config: AppConfig): void;
}

export function stageTakes(stage: LiveStage, key: string): boolean {
  return stage.keys.some((k) => key === k || key.startsWith(`${k}.`) || key.startsWith(`${k}[`));
}

export interface ConfigPushParts {
  state: ConfigState;
  queue: ModelQueue;
  gate: GoldenGate;
  audit: AuditLog;
  recipes: Recipes;
  cameras: Cameras;
  pipeline(): Pipeline;
  publisher(): Publisher;
  stages(): LiveStage[];
  /** A pushed model now serves: watch its file, and start cameras held back by the golden gate. */
  modelServing(): void;
  /** Stop this daemon and start a new one on the recorded configuration (a rollback). */
  onRestart?(reason: string, undelivered?: ConfigPushResponse): void;
}

export class ConfigPushes {
  readonly probation: Probation;

  constructor(private readonly parts: ConfigPushParts, private readonly log: Logger) {
    this.probation = new Probation({
      now: () => performance.now(),
      windowMs: () => parts.state.config.remoteConfig.probationMs,
      missing: (window) => this.missing(window),
      confirm: (window) => this.confirm(window),
      rollBack: (window, reason) => void this.rollBack(window, reason),
    });
  }

  /** Pushes take turns with every other model change, each checked against what the last one left. */
  handle(payload: Buffer, source: PushSource): Promise<ConfigPushResponse> {
    return this.parts.queue.run('config push', () => this.apply(payload, source));
  }

  /** A revision recorded on probation (its changes waited for this start) must prove itself now. */
  proveAtStart(): void {
    const { state } = this.parts;
    if (state.layered.probation === null) return;
    const origin = state.layerRecord(state.layered.probation)?.origin;
    this.probation.start(state.revision, origin?.kind === 'push' ? origin.transaction : null, enabledCameraIds(state.config));
    this.log.info({ revision: state.revision, windowMs: state.config.remoteConfig.probationMs }, 'configuration on probation');
  }

  private async apply(payload: Buffer, source: PushSource): Promise<ConfigPushResponse> {
    const { state, gate, audit, publisher } = this.parts;
    const revision = state.revision;
    const fail = (transaction: string | null, error: string): ConfigPushResponse => {
      this.log.warn({ transaction, error }, 'config push rejected');
      audit.tryRecord({ kind: 'config', outcome: 'rejected', actor: source.actor, transaction, revisionBefore: revision, revisionAfter: revision, error }, this.log);
      return configPushResponse({ ok: false, error, transaction }, revision);
    };
    const options = {
      ...pushOptionsFrom(state.config),
      ...(source.publicKey !== undefined ? { publicKey: source.publicKey } : {}),
      ...(source.ownKeys ? { ownKeys: source.ownKeys } : {}),
    };
    const outcome = applyConfigPush(state.config, revision, payload, options);
    if (!state.config.remoteConfig.enabled) return fail(outcome.transaction, 'remote configuration is disabled on this device');
    if (!outcome.ok) return fail(outcome.transaction, outcome.error);
    if (outcome.changedKeys.length === 0) return configPushResponse(outcome, revision);
    const next = outcome.config;
    const misfit = this.parts.cameras.roiMisfitIn(next.cameras);
    if (misfit) return fail(outcome.transaction, misfit);

    let newModel: CradModel | null = null;
    let newRecipes: RecipeModels | null = null;
    if (outcome.restartRequired.includes('model')) {
      try {
        newModel = await gate.load(next.model.path, next, source.actor, 'pushed model', outcome.transaction, source.onGolden);
      } catch (err) {
        return fail(outcome.transaction, `model rejected, previous model still serving: ${(err as Error).message}`);
      }
      // A pushed recipe must serve: unlike at start, the previous recipes can go on instead.
      newRecipes = await this.parts.recipes.loadModels(next);
      const refused = Object.entries(newRecipes.status().recipes).find(([, r]) => r.state === 'refused');
      if (refused) {
        await Promise.all([newModel.release(), newRecipes.release()]);
        return fail(outcome.transaction, `recipes.${refused[0]} rejected, previous recipes still serving: ${refused[1].error}`);
      }
    }
    const layerChanges = { ...state.layerChanges };
    for (const key of outcome.changedKeys) layerChanges[key] = valueAt(next, key);
    // Anything that rebuilds a part can strand the device: it runs on probation until it proves itself.
    const onProbation = outcome.restartRequired.length > 0 && next.remoteConfig.probationMs > 0;
    try {
      state.layered.store.commit({
        revision: outcome.revision, changes: layerChanges, previous: revision, createdAt: new Date().toISOString(),
        origin: { kind: 'push', transaction: outcome.transaction },
      }, onProbation);
    } catch (err) {
      await Promise.all([newModel?.release(), newRecipes?.release()]);
      return fail(outcome.transaction, `could not record the configuration: ${(err as Error).message}`);
    }
    const previous = state.config;
    state.config = next;
    state.revision = outcome.revision;
    state.layerChanges = layerChanges;
    const signedWith = options.publicKey.trim() !== '' ? keyFingerprint(options.publicKey) : null;
    audit.tryRecord({
      kind: 'config', outcome: 'applied', actor: signedWith ? { ...source.actor, keyFingerprint: signedWith } : source.actor,
      transaction: outcome.transaction, revisionBefore: revision, revisionAfter: outcome.revision,
      changes: auditChanges(previous, next, outcome.changedKeys), details: { probation: onProbation, restartRequired: outcome.restartRequired },
    }, this.log);
    for (const stage of this.parts.stages()) {
      if (outcome.changedKeys.some((key) => stageTakes(stage, key))) stage.apply(next);
    }
    if (newModel) this.parts.pipeline().replaceModel(newModel);
    if (newRecipes) {
      this.parts.pipeline().replaceRecipes(newRecipes);
      publisher().setDeviceStatus({ recipes: newRecipes.status() });
    }
    const rebuilt = outcome.restartRequired.filter((part) => part.startsWith('camera:')).map((part) => part.slice('camera:'.length));
    if (this.parts.cameras.started) {
      for (const id of rebuilt) await this.parts.cameras.rebuild(id, previous, next);
      // Cameras kept running get their live fields (fps, roi, ...): the push said they apply live.
      for (const camera of next.cameras) if (!rebuilt.includes(camera.id)) this.parts.pipeline().updateCamera(camera);
    }
    // A pushed model that passed its golden samples (or has none) may serve.
    if (newModel) this.parts.modelServing();
    const pending = pendingRestart(outcome.restartRequired);
    this.probation.stop();
    // Parts that wait for a restart are proven at that start (the revision stays on probation).
    if (onProbation && pending.length === 0) {
      this.probation.start(state.revision, outcome.transaction, outcome.restartRequired.includes('model') ? enabledCameraIds(next) : rebuilt);
      this.log.info({ revision: state.revision, windowMs: next.remoteConfig.probationMs }, 'configuration on probation');
    }
    publisher().setDeviceStatus({ revision: state.revision, config: state.status() });
    this.log.info({ transaction: outcome.transaction, changed: outcome.changedKeys, revision: state.revision, probation: onProbation }, 'config push applied');
    return configPushResponse({ ...outcome, restartRequired: pending }, revision);
  }

  /** What still keeps the revision on probation from being confirmed (empty: it works). */
  private missing(window: ProbationWindow): string[] {
    const { state, cameras } = this.parts;
    const missing: string[] = [];
    if (!this.parts.publisher().stats().connected) missing.push('the broker connection is not up');
    for (const id of window.cameras) {
      const camera = state.config.cameras.find((c) => c.id === id);
      if (!camera?.enabled) continue;
      const status = cameras.status(id)?.state;
      if (camera.trigger === 'mqtt') {
        if (status !== 'online') missing.push(`camera ${id} is not online (${status ?? 'no status'})`);
      } else if (cameras.lastResultAt(id) < window.since) {
        missing.push(`camera ${id} has delivered no result${status ? ` (${status})` : ''}`);
      }
    }
    return missing;
  }

  private confirm(window: ProbationWindow): void {
    this.parts.state.layered.store.confirm(window.revision);
    this.parts.publisher().setDeviceStatus({ config: this.parts.state.status() });
    this.log.info({ revision: window.revision }, 'configuration confirmed: it is now the last good revision');
  }

  /** Record the rollback, tell the senders, and have the run loop restart on the last good revision. */
  private async rollBack(window: ProbationWindow, reason: string): Promise<void> {
    const { state, publisher } = this.parts;
    let record;
    try {
      record = state.layered.store.rollBack(window.revision, reason);
    } catch (err) {
      this.log.error({ err, reason }, 'rollback failed: the configuration stays as it is');
      return;
    }
    this.log.error({ undid: window.revision, revision: record.revision, to: record.previous, reason }, 'configuration rolled back');
    this.parts.audit.tryRecord({
      kind: 'rollback', outcome: 'rolled-back', actor: { kind: 'daemon' }, transaction: window.transaction,
      revisionBefore: window.revision, revisionAfter: record.revision, error: reason,
    }, this.log);
    state.rollbackInfo = { undid: window.revision, to: record.revision, at: record.createdAt, reason };
    publisher().setDeviceStatus({ config: state.status() });
    const answer: ConfigPushResponse = {
      transaction: window.transaction, status: 'error', error: `rolled back to the last good configuration: ${reason}`,
      revision: record.revision, restartRequired: [], changed: [],
    };
    const delivered = await publisher().inbound.publishJson(publisher().topics.configResponse, Buffer.from(JSON.stringify(answer)))
      .then(() => true, (err: Error) => {
        this.log.warn({ err: err.message }, 'rollback answer not delivered now: the restarted daemon sends it');
        return false;
      });
    this.parts.onRestart?.(`rollback of revision ${window.revision}`, delivered ? undefined : answer);
  }
}
