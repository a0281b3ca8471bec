// The commands a device's configuration asks for: config/get, recipe/set and counters/reset always,
// config/set while remoteConfig.enabled, a trigger per enabled trigger-mode camera; golden/run and
// audit/get when the daemon handles them, model/deliver while remote config and model delivery are on. The daemon recomputes this
// table after every config change and a CommandGroup keeps the router in step with it.
import type { AppConfig } from '../config/load.js';
import { parseTrigger, type ConfigResponse } from '../publish/payloads.js';
import type { Topics } from '../publish/topics.js';
import type { Logger } from '../shared/log.js';
import type { RecipeName } from '../config/recipes.js';
import { Received } from '../capture/trigger-ledger.js';
import { answerCode, failure, type Failure } from '../shared/answer-codes.js';
import { mqttActor, type AuditActor } from './actor.js';
import { recipeCommand, type RecipeResponse, type RecipeSetRequest } from './recipes.js';
import type { Command, CommandSpec } from './router.js';

export interface DeviceCommandHandlers {
  /** Capture the next frame of a trigger-mode camera (triggerId undefined when none was named),
   * under `recipe` when the trigger names one. */
  trigger(cameraId: string, request: TriggerRequest): void;
  /** Answer a trigger that cannot be taken (its payload could not be read) with a failure result. */
  refuseTrigger(cameraId: string, triggerId: string | undefined, why: Failure, received: Received): void;
  /** Switch recipes (a recipe/set request; its MQTT 5 properties and payload say who sent it). */
  selectRecipe(request: RecipeSetRequest, properties: Command['properties'], payload: Buffer): RecipeResponse;
  /** The recipe of each camera now. */
  activeRecipes(): Record<string, RecipeName>;
  /** Answer a config/get or config/set request (schemas/config-response.schema.json). */
  config(kind: 'get' | 'set', payload: Buffer, properties?: Command['properties']): ConfigResponse | Promise<ConfigResponse>;
  /** The running configuration revision (an error answer carries it). */
  revision(): number;
  /** Reset the production counters of one camera (or all when undefined); returns the cameras reset, or an error. */
  resetCounters(cameraId: string | undefined): { cameras: string[] } | { error: string };
  /** Run the golden samples on the running model (golden/run). */
  golden?(payload: Buffer, properties: Command['properties']): Promise<object>;
  /** A page of the audit log (audit/get). */
  audit?(payload: Buffer): object;
  /** Deliver a model (model/deliver): `progress` answers each stage, the result is the last answer. */
  deliver?(payload: Buffer, properties: Command['properties'], progress: (answer: object) => void): Promise<object>;
  /** On-device training: train/start, train/cancel, train/promote, train/rollback (answered on train/response). */
  train?(command: TrainCommand, payload: Buffer, properties: Command['properties']): Promise<object>;
}

export const TRAIN_COMMANDS = ['start', 'cancel', 'promote', 'rollback'] as const;
export type TrainCommand = (typeof TRAIN_COMMANDS)[number];

/** A trigger as read from its payload. */
export interface TriggerRequest {
  triggerId: string | undefined;
  recipe?: string;
  /** When the PLC sent it (the payload's sentAt): a trigger older than its deadline is not inspected. */
  sentAt?: Date;
  received: Received;
  /** Its sender as far as it says (a trigger that selects a recipe is audited). */
  actor: AuditActor;
}

export function deviceCommands(config: AppConfig, topics: Topics, handlers: DeviceCommandHandlers, log: Logger): Map<string, CommandSpec> {
  const table = new Map<string, CommandSpec>();
  table.set(topics.configGet, configCommand('get', topics, handlers));
  if (config.remoteConfig.enabled) table.set(topics.configSet, configCommand('set', topics, handlers));
  table.set(topics.countersReset, countersResetCommand(topics, handlers));
  const { golden, audit, deliver, train } = handlers;
  if (train) {
    for (const command of TRAIN_COMMANDS) {
      table.set(topics.train(command), { responseTopic: topics.trainResponse, handler: async ({ payload, properties, reply }) => reply(await train(command, payload, properties)) });
    }
  }
  if (golden) table.set(topics.goldenRun, { responseTopic: topics.goldenResponse, handler: async ({ payload, properties, reply }) => reply(await golden(payload, properties)) });
  if (audit) table.set(topics.auditGet, { responseTopic: topics.auditResponse, handler: ({ payload, reply }) => reply(audit(payload)) });
  if (deliver && config.remoteConfig.enabled && config.model.delivery.enabled) {
    table.set(topics.modelDeliver, {
      responseTopic: topics.modelResponse,
      handler: async ({ payload, properties, reply, progress }) => reply(await deliver(payload, properties, progress)),
      errorAnswer: (error) => ({ status: 'error', stage: 'accepted', error }),
    });
  }
  table.set(topics.recipeSet, recipeCommand(topics.recipeResponse, (request, properties, payload) => handlers.selectRecipe(request, properties, payload), () => handlers.activeRecipes()));
  for (const camera of config.cameras) {
    if (camera.enabled && camera.trigger === 'mqtt') table.set(topics.trigger(camera.id), triggerCommand(camera.id, handlers, log));
  }
  return table;
}

function configCommand(kind: 'get' | 'set', topics: Topics, handlers: DeviceCommandHandlers): CommandSpec {
  return {
    responseTopic: topics.configResponse,
    handler: async ({ payload, properties, reply }) => reply(await handlers.config(kind, payload, properties)),
    // The transaction is left out: the router echoes the request's.
    errorAnswer: (error) => (kind === 'set'
      ? { status: 'error', error, revision: handlers.revision(), restartRequired: [], changed: [] }
      : { status: 'error', error, revision: handlers.revision() }),
  };
}

/** Payload: empty (all cameras) or JSON {"transaction"?: string, "camera"?: id}; answered on counters/response. */
function countersResetCommand(topics: Topics, handlers: DeviceCommandHandlers): CommandSpec {
  return {
    responseTopic: topics.countersResponse,
    handler: ({ payload, reply }) => {
      const request = parseCountersReset(payload);
      if ('error' in request) return reply({ status: 'error', error: request.error, code: answerCode('malformed-command') });
      const outcome = handlers.resetCounters(request.camera);
      reply('error' in outcome ? { status: 'error', error: outcome.error } : { status: 'ok', cameras: outcome.cameras });
    },
  };
}

function parseCountersReset(payload: Buffer): { camera: string | undefined } | { error: string } {
  const text = payload.toString('utf8').trim();
  if (text === '') return { camera: undefined };
  let request: unknown;
  try {
    request = JSON.parse(text);
  } catch {
    return { error: 'the payload must be empty or a JSON object' };
  }
  if (typeof request !== 'object' || request === null || Array.isArray(request)) return { error: 'the payload must be empty or a JSON object' };
  const { camera, transaction, ...rest } = request as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) return { error: `unknown field ${JSON.stringify(unknown[0])} (allowed: camera, transaction)` };
  if (transaction !== undefined && typeof transaction !== 'string') return { error: 'transaction must be a string' };
  if (camera !== undefined && typeof camera !== 'string') return { error: 'camera must be a string' };
  return { camera };
}

function triggerCommand(cameraId: string, handlers: DeviceCommandHandlers, log: Logger): CommandSpec {
  return {
    handler: ({ topic, payload, properties }) => {
      const received = Received.now();
      const parsed = parseTrigger(payload);
      if (!parsed.ok) {
        // The PLC waits for an answer: it gets one, with the id as far as it could be read.
        log.warn({ topic, error: parsed.error }, 'malformed trigger answered with an error');
        handlers.refuseTrigger(cameraId, parsed.triggerId ?? undefined, failure('malformed-trigger', `malformed trigger: ${parsed.error}`), received);
        return;
      }
      const { triggerId, recipe, sentAt } = parsed;
      handlers.trigger(cameraId, { triggerId, received, actor: mqttActor(properties, payload, null), ...(recipe !== undefined ? { recipe } : {}), ...(sentAt ? { sentAt } : {}) });
    },
  };
}
