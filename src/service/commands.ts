// What the command router and the operator console may ask of the running daemon, each answered by
// the room that owns it: triggers and recipes, config get/set, counters, golden runs, the audit
// trail, model delivery. Nothing here keeps state of its own.
import { enabledCameraIds, redact } from '../config/load.js';
import type { ConsoleHost } from '../console/host.js';
import type { ProductionCounters } from '../console/counters.js';
import { mqttActor } from '../control/actor.js';
import { parseAuditRequest } from '../control/audit-request.js';
import type { DeviceCommandHandlers, TrainCommand } from '../control/commands.js';
import type { Command } from '../control/router.js';
import type { Pipeline } from '../pipeline.js';
import type { Publisher } from '../publish/index.js';
import { answerCode, failure } from '../shared/answer-codes.js';
import { requestTransaction } from '../shared/request-transaction.js';
import type { Logger } from '../shared/log.js';
import type { AuditLog } from './audit.js';
import type { Cameras } from './cameras.js';
import type { ConfigPushes } from './config-push.js';
import type { ConfigState } from './config-state.js';
import type { ModelDelivery } from './delivery.js';
import type { HealthWatch } from './health.js';
import type { GoldenGate, ModelQueue } from './model-queue.js';
import { frameScorer } from './frame-scorer.js';
import type { Recipes } from './recipes.js';
import { TeachRefused } from '../shared/teach-status.js';
import type { Training } from './training.js';

export interface CommandParts {
  state: ConfigState;
  pipeline(): Pipeline;
  publisher(): Publisher;
  recipes: Recipes;
  pushes: ConfigPushes;
  delivery: ModelDelivery;
  queue: ModelQueue;
  gate: GoldenGate;
  audit: AuditLog;
  cameras: Cameras;
  counters: ProductionCounters;
  health: HealthWatch;
  training: Training;
  /** A model passed its golden samples: a device held not-ready starts its cameras. */
  goldenPassed(): void;
  log: Logger;
}

export function deviceHandlers(parts: CommandParts): DeviceCommandHandlers {
  const { state, recipes, pushes } = parts;
  return {
    trigger: (cameraId, { triggerId, recipe, received, sentAt, actor }) => {
      const refused = recipe === undefined ? null : recipes.select(cameraId, recipe, 'trigger', triggerId ?? null, actor);
      if (refused === null) parts.pipeline().trigger(cameraId, triggerId, received, sentAt);
      else parts.pipeline().refuseTrigger(cameraId, triggerId, failure('recipe-refused', refused), received);
    },
    refuseTrigger: (cameraId, triggerId, why, received) => parts.pipeline().refuseTrigger(cameraId, triggerId, why, received),
    selectRecipe: (request, properties, payload) => recipes.handleSet(request, mqttActor(properties, payload, null)),
    activeRecipes: () => recipes.active(),
    config: (kind, payload, properties) => (kind === 'get'
      ? { status: 'ok', revision: state.revision, config: redact(state.config) }
      : pushes.handle(payload, { actor: mqttActor(properties, payload, null) })),
    revision: () => state.revision,
    resetCounters: (cameraId) => {
      const known = enabledCameraIds(state.config);
      if (cameraId !== undefined && !known.includes(cameraId)) return { error: `no running camera ${JSON.stringify(cameraId)}` };
      const cameras = cameraId === undefined ? known : [cameraId];
      resetCounters(parts, cameras);
      return { cameras };
    },
    golden: (payload, properties) => goldenOnDemand(parts, payload, properties),
    audit: (payload) => {
      const request = parseAuditRequest(payload, requestTransaction(payload));
      if (!request.ok) return { transaction: request.transaction, status: 'error', error: request.error };
      return { transaction: request.transaction, status: 'ok', ...parts.audit.read({ limit: request.limit, before: request.before }) };
    },
    deliver: (payload, properties, progress) => parts.delivery.deliver(payload, properties, progress),
    train: (command, payload, properties) => trainCommand(parts.training, command, payload, properties),
  };
}

/** train/<command>: the payload is empty or a JSON object ({cameraId, recipe?} for start); the answer is the TeachStatus. */
async function trainCommand(training: Training, command: TrainCommand, payload: Buffer, properties: Command['properties']): Promise<object> {
  const transaction = requestTransaction(payload);
  const text = payload.toString('utf8').trim();
  let request: Record<string, unknown> = {};
  try {
    if (text !== '') request = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { transaction, status: 'error', error: 'the payload must be empty or a JSON object', code: answerCode('malformed-command') };
  }
  if (typeof request !== 'object' || request === null || Array.isArray(request)) return { transaction, status: 'error', error: 'the payload must be empty or a JSON object', code: answerCode('malformed-command') };
  const actor = mqttActor(properties, payload, null);
  try {
    const status = command === 'start' ? training.start({ cameraId: request.cameraId, recipe: request.recipe }, actor)
      : command === 'cancel' ? training.cancel(actor)
        : command === 'promote' ? await training.promote(actor) : await training.rollback(actor);
    return { transaction, status: 'ok', command, ...status };
  } catch (err) {
    // The router adds the code: 60 refused (the error says why), as every command answer has it.
    if (err instanceof TeachRefused) return { transaction, status: 'error', command, error: err.message };
    return { transaction, status: 'error', command, error: (err as Error).message, code: answerCode('internal-error') };
  }
}

/** golden/run: the running model against its golden samples, in turn with other model changes. */
function goldenOnDemand(parts: CommandParts, payload: Buffer, properties: Command['properties']): Promise<object> {
  const transaction = requestTransaction(payload);
  return parts.queue.run('golden run', async () => {
    // The model handed over last, not one a swap is about to release under the run.
    const run = await parts.gate.run(parts.pipeline().latestModel, parts.state.config, mqttActor(properties, payload, null), 'on demand', transaction);
    if (!run) return { transaction, status: 'error', error: 'this model has no golden samples (model.goldenDir is empty and there is no <model>.golden folder)' };
    if (run.passed) parts.goldenPassed();
    return { transaction, status: run.passed ? 'ok' : 'failed', run };
  });
}

function resetCounters(parts: CommandParts, cameraIds: string[]): void {
  parts.counters.reset(cameraIds);
  parts.publisher().setDeviceStatus({}); // republish with the zeroed counters
  parts.log.info({ cameras: cameraIds }, 'production counters reset');
}

/** The daemon as the operator console sees it. */
export function consoleHost(parts: CommandParts): ConsoleHost {
  const { state, cameras, counters } = parts;
  return {
    config: () => state.config,
    revision: () => state.revision,
    configPush: (payload) => parts.pushes.handle(payload, { actor: { kind: 'console' } }),
    model: () => parts.pipeline().currentModel.info,
    pipelineStats: () => parts.pipeline().stats(),
    publisherStats: () => parts.publisher().stats(),
    cameras: () => enabledCameraIds(state.config).map((id) => {
      const handle = cameras.handle(id);
      return { id, status: cameras.status(id) ?? null, stats: handle?.stats() ?? null, frameSize: handle?.frameSize ?? null };
    }),
    counters: () => counters.snapshot(enabledCameraIds(state.config)),
    resetCounters: (ids) => resetCounters(parts, ids),
    inspection: () => parts.health.inspection(),
    recipes: () => ({ names: Object.keys(state.config.recipes), active: parts.recipes.active() }),
    // The same path as recipe/set (checked, kept, audited), the console as the actor.
    selectRecipe: (request) => parts.recipes.handleSet(request, { kind: 'console' }),
    scoreFrames: frameScorer(parts.pipeline, () => state.config),
  };
}
