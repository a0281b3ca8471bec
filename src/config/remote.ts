// Remote configuration pushes (<prefix>/config/set). A push is checked completely — size, encoding,
// shape, forbidden keys, revision, signature, allow-list, types, the model path, then the whole
// candidate config against the convict schema — before anything changes; any failure leaves the
// running config untouched. Request and answer are documented in schemas/config-set.schema.json.
//
// The request's checks are in push-request.ts, its signature in push-signing.ts.
import { valueAt } from './schema.js';
import { ConfigError, validateConfigObject, type AppConfig } from './load.js';
import { normalizeZero, partsToRebuild, sameValue, signedOnlyChange } from './policy.js';
import {
  checkBaseRevision, checkChanges, checkFiniteNumbers, checkKey, checkPushedCameras, checkTransaction, checkValueKind, isPlainObject, parsePayload,
  PushRejected, quote, reject, resolvePushedModelPath,
} from './push-request.js';
import { checkSignature, checkSignatureForm } from './push-signing.js';

export type ConfigPushOptions = {
  /** remoteConfig.allow: keys, or prefixes ending in ".", a push may change. */
  allow: string[];
  /** remoteConfig.publicKey: Ed25519 public key (PEM or base64 SPKI DER); empty = pushes are not signed. */
  publicKey: string;
  /** remoteConfig.maxPayloadBytes. */
  maxPayloadBytes: number;
  /** model.modelsDir: a pushed model.path must resolve inside it. */
  modelsDir: string;
  /**
   * Keys the daemon itself changes on an audited, authorised action (a trained model promoted into
   * its recipe): outside remoteConfig.allow and without a signature. Never set for a received push.
   */
  ownKeys?: string[];
};

export type ConfigPushResult =
  | {
      ok: true;
      /** The complete new config (validated; remoteConfig.revision set to `revision`). */
      config: AppConfig;
      /** Pushed keys whose effective value differs from the running config, sorted. */
      changedKeys: string[];
      /** Parts that must be rebuilt: "camera:<id>", "model", "mqtt", "outbox", "daemon". Empty = all live. */
      restartRequired: string[];
      /** currentRevision + 1, or currentRevision when nothing changed. */
      revision: number;
      transaction: string;
    }
  | { ok: false; error: string; transaction: string | null };

/** The answer published on <prefix>/config/response. */
export type ConfigPushResponse = {
  transaction: string | null;
  status: 'ok' | 'error';
  error?: string;
  revision: number;
  restartRequired: string[];
  changed: string[];
};

const REQUEST_FIELDS = new Set(['transaction', 'baseRevision', 'changes', 'signature']);
const MAX_ERROR_LENGTH = 1000;

/**
 * Check one config push and build the config it asks for. Never throws and never mutates `current`:
 * a rejected push returns {ok: false, error} naming the problem, with the transaction when it was
 * readable. The caller applies `config`, rebuilds the parts in `restartRequired`, and persists.
 */
export function applyConfigPush(
  current: AppConfig,
  currentRevision: number,
  payload: Buffer,
  options: ConfigPushOptions,
): ConfigPushResult {
  let transaction: string | null = null;
  try {
    const request = parsePayload(payload, options.maxPayloadBytes);
    transaction = checkTransaction(request);
    for (const field of Object.keys(request)) {
      if (!REQUEST_FIELDS.has(field)) {
        reject(`unknown field ${quote(field)} in the request (expected transaction, baseRevision, changes, signature)`);
      }
    }
    checkBaseRevision(request, currentRevision);
    checkFiniteNumbers(request.changes);
    if (options.publicKey.trim() !== '') checkSignature(request, options.publicKey, current.device.id);
    else if (Object.hasOwn(request, 'signature')) checkSignatureForm(request.signature);
    // -0 and 0 are one value to every reader of the config (and JSON writes both as 0).
    const changes = normalizeZero(checkChanges(request));

    const updates = new Map<string, unknown>();
    for (const [key, value] of Object.entries(changes)) {
      const leaf = checkKey(key, [...options.allow, ...(options.ownKeys ?? [])]);
      checkValueKind(key, value, leaf);
      if (key === 'cameras') checkPushedCameras(value as unknown[]);
      updates.set(key, key === 'model.path' ? resolvePushedModelPath(value as string, options.modelsDir) : value);
    }

    // The candidate is a copy of the running config with plain assignments along already-checked
    // schema paths; convict only ever sees this copy, never the raw request.
    const candidate = structuredClone(current) as unknown as Record<string, unknown>;
    for (const [key, value] of updates) setAt(candidate, key.split('.'), structuredClone(value));
    let next: AppConfig;
    try {
      next = validateConfigObject(candidate);
    } catch (err) {
      if (err instanceof ConfigError) reject(cleanConvictMessage(err.message));
      throw err;
    }

    if (options.publicKey.trim() === '') {
      const unsigned = signedOnlyChange(current, next, options.ownKeys);
      if (unsigned) reject(unsigned);
    }
    const changedKeys = [...updates.keys()].filter((key) => !sameValue(valueAt(next, key), valueAt(current, key))).sort();
    const revision = changedKeys.length > 0 ? currentRevision + 1 : currentRevision;
    next.remoteConfig.revision = revision;
    return { ok: true, config: next, changedKeys, restartRequired: partsToRebuild(current, next, changedKeys), revision, transaction };
  } catch (err) {
    const message = err instanceof PushRejected ? err.message : `internal error while checking the push: ${(err as Error).message}`;
    return { ok: false, error: message.slice(0, MAX_ERROR_LENGTH), transaction };
  }
}

/** The push options a running config implies. */
export function pushOptionsFrom(config: AppConfig): ConfigPushOptions {
  return {
    allow: config.remoteConfig.allow,
    publicKey: config.remoteConfig.publicKey,
    maxPayloadBytes: config.remoteConfig.maxPayloadBytes,
    modelsDir: config.model.modelsDir,
  };
}

/** The <prefix>/config/response answer for a push result (errors report the unchanged revision). */
export function configPushResponse(result: ConfigPushResult, currentRevision: number): ConfigPushResponse {
  if (!result.ok) {
    return { transaction: result.transaction, status: 'error', error: result.error, revision: currentRevision, restartRequired: [], changed: [] };
  }
  return {
    transaction: result.transaction,
    status: 'ok',
    revision: result.revision,
    restartRequired: result.restartRequired,
    changed: result.changedKeys,
  };
}

// ---- candidate -------------------------------------------------------------------------------

function setAt(target: Record<string, unknown>, segments: string[], value: unknown): void {
  let node = target;
  for (const segment of segments.slice(0, -1)) {
    const next = Object.hasOwn(node, segment) ? node[segment] : undefined;
    if (!isPlainObject(next)) throw new Error(`config has no group ${segment}`);
    node = next;
  }
  node[segments[segments.length - 1]!] = value;
}

/** convict's messages: drop our loader's header and the echo of the whole camera list. */
function cleanConvictMessage(message: string): string {
  let text = message.replace(/^invalid configuration:\n/, '');
  if (text.startsWith('cameras: cameras[')) text = text.slice('cameras: '.length).replace(/: value was \[[\s\S]*\]$/, '');
  return text.replace(/\n/g, '; ');
}
