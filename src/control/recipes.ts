// Recipe selection: the PLC or MES switches a camera's recipe on <prefix>/recipe/set (answered on
// <prefix>/recipe/response, schemas/recipe-set.schema.json and recipe-response.schema.json). A
// selection is fast and separate from the configuration: no revision, no probation. It is kept in
// service.stateDir, so a restarted daemon inspects the product the line was switched to.
import fs from 'node:fs';
import path from 'node:path';
import { answerCode } from '../shared/answer-codes.js';
import { writeFileAtomic } from '../shared/atomic-write.js';
import type { RecipeName } from '../config/recipes.js';
import type { Logger } from '../shared/log.js';
import type { Command, CommandSpec } from './router.js';

export interface RecipeSetRequest {
  transaction: string | null;
  /** The camera to switch; absent: every enabled camera. */
  camera?: string;
  recipe: RecipeName;
}

export interface RecipeResponse {
  transaction?: string | null;
  status: 'ok' | 'error';
  error?: string;
  /** The recipe of each camera after the request (null: the base configuration). */
  active: Record<string, RecipeName>;
}

const MAX_REQUEST_BYTES = 4096;

/** A recipe/set payload, or the error naming what is wrong with it. */
export function parseRecipeSet(payload: Buffer): { ok: true; request: RecipeSetRequest } | { ok: false; error: string } {
  if (payload.length > MAX_REQUEST_BYTES) return { ok: false, error: `recipe/set payload is larger than ${MAX_REQUEST_BYTES} bytes` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    return { ok: false, error: `recipe/set payload is not valid JSON: ${(err as Error).message}` };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { ok: false, error: 'recipe/set payload must be a JSON object' };
  const body = parsed as Record<string, unknown>;
  const extra = Object.keys(body).filter((k) => !['transaction', 'camera', 'recipe'].includes(k));
  if (extra.length > 0) return { ok: false, error: `recipe/set payload has unknown keys: ${extra.join(', ')}` };
  const { transaction, camera, recipe } = body;
  if (transaction !== undefined && typeof transaction !== 'string') return { ok: false, error: '"transaction" must be a string' };
  if (camera !== undefined && (typeof camera !== 'string' || camera === '')) return { ok: false, error: '"camera" must be a camera id' };
  if (recipe === undefined) return { ok: false, error: '"recipe" is required: a recipe name, or null for the base configuration' };
  if (recipe !== null && (typeof recipe !== 'string' || recipe === '')) return { ok: false, error: '"recipe" must be a recipe name, or null for the base configuration' };
  return { ok: true, request: { transaction: transaction ?? null, ...(camera !== undefined ? { camera } : {}), recipe } };
}

/** The recipe/set command: each request parsed, handed to `select`, answered. */
export function recipeCommand(
  responseTopic: string, select: (request: RecipeSetRequest, properties: Command['properties'], payload: Buffer) => RecipeResponse, active: () => Record<string, RecipeName>,
): CommandSpec {
  return {
    responseTopic,
    handler: ({ payload, properties, reply }) => {
      const parsed = parseRecipeSet(payload);
      reply(parsed.ok ? select(parsed.request, properties, payload) : { status: 'error', error: parsed.error, active: active(), code: answerCode('malformed-command') });
    },
    // The router echoes the request's transaction.
    errorAnswer: (error) => ({ status: 'error', error, active: active() }),
  };
}

/** The selections kept across restarts: one small JSON file, replaced whole on every change. */
export class RecipeSelectionStore {
  private readonly file: string;

  constructor(stateDir: string, private readonly log: Logger) {
    this.file = path.join(stateDir, 'recipe-selection.json');
  }

  load(): Record<string, RecipeName> {
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(this.file, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
        return Object.fromEntries(Object.entries(parsed).filter(([, v]) => v === null || typeof v === 'string')) as Record<string, RecipeName>;
      }
      this.log.warn({ file: this.file }, 'recipe selection file is not an object; configured recipes apply');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ file: this.file, err: (err as Error).message }, 'recipe selection file unreadable; configured recipes apply');
    }
    return {};
  }

  save(selection: Record<string, RecipeName>): void {
    try {
      // 0666 less the umask, as before: the selection holds no secret.
      writeFileAtomic(this.file, JSON.stringify(selection), 0o666);
    } catch (err) {
      // The switch itself works; only a restart would forget it.
      this.log.warn({ file: this.file, err: (err as Error).message }, 'recipe selection not persisted');
    }
  }
}
