// The commands a device's configuration asks for: config/get and recipe/set always, config/set
// while remoteConfig.enabled, and a trigger per enabled trigger-mode camera. The daemon recomputes this
// table after every config change and a CommandGroup keeps the router in step with it.
import type { AppConfig } from '../config/load.js';
import { parseTrigger, type ConfigResponse } from '../publish/payloads.js';
import type { Topics } from '../publish/topics.js';
import type { Logger } from '../shared/log.js';
import type { RecipeName } from '../config/recipes.js';
import { recipeCommand, type RecipeResponse, type RecipeSetRequest } from './recipes.js';
import type { CommandSpec } from './router.js';

export interface DeviceCommandHandlers {
  /** Capture the next frame of a trigger-mode camera (triggerId undefined when none was named),
   * under `recipe` when the trigger names one. */
  trigger(cameraId: string, triggerId: string | undefined, recipe?: string): void;
  /** Switch recipes (a recipe/set request). */
  selectRecipe(request: RecipeSetRequest): RecipeResponse;
  /** The recipe of each camera now. */
  activeRecipes(): Record<string, RecipeName>;
  /** Answer a config/get or config/set request (schemas/config-response.schema.json). */
  config(kind: 'get' | 'set', payload: Buffer): ConfigResponse | Promise<ConfigResponse>;
  /** The running configuration revision (an error answer carries it). */
  revision(): number;
}

export function deviceCommands(config: AppConfig, topics: Topics, handlers: DeviceCommandHandlers, log: Logger): Map<string, CommandSpec> {
  const table = new Map<string, CommandSpec>();
  table.set(topics.configGet, configCommand('get', topics, handlers));
  if (config.remoteConfig.enabled) table.set(topics.configSet, configCommand('set', topics, handlers));
  table.set(topics.recipeSet, recipeCommand(topics.recipeResponse, (request) => handlers.selectRecipe(request), () => handlers.activeRecipes()));
  for (const camera of config.cameras) {
    if (camera.enabled && camera.trigger === 'mqtt') table.set(topics.trigger(camera.id), triggerCommand(camera.id, handlers, log));
  }
  return table;
}

function configCommand(kind: 'get' | 'set', topics: Topics, handlers: DeviceCommandHandlers): CommandSpec {
  return {
    responseTopic: topics.configResponse,
    handler: async ({ payload, reply }) => reply(await handlers.config(kind, payload)),
    // The transaction is left out: the router echoes the request's.
    errorAnswer: (error) => (kind === 'set'
      ? { status: 'error', error, revision: handlers.revision(), restartRequired: [], changed: [] }
      : { status: 'error', error, revision: handlers.revision() }),
  };
}

function triggerCommand(cameraId: string, handlers: DeviceCommandHandlers, log: Logger): CommandSpec {
  return {
    handler: ({ topic, payload }) => {
      const parsed = parseTrigger(payload);
      if (!parsed.ok) {
        log.warn({ topic, error: parsed.error }, 'bad trigger payload ignored');
        return;
      }
      handlers.trigger(cameraId, parsed.triggerId, parsed.recipe);
    },
  };
}
