// Remote configuration pushes (<prefix>/config/set). A push is checked completely — size, encoding,
// shape, forbidden keys, revision, signature, allow-list, types, the model path, then the whole
// candidate config against the convict schema — before anything changes; any failure leaves the
// running config untouched. Request and answer are documented in schemas/config-set.schema.json.
import crypto, { type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { cameraSchema, hasLoneSurrogate, jsonKind, leafKinds, lookup, valueAt, type JsonKind, type Leaf, type SchemaTree } from './schema.js';
import { ConfigError, validateConfigObject, type AppConfig } from './load.js';
import { normalizeZero, partsToRebuild, remotePolicy, sameValue, signedOnlyChange } from './policy.js';

export type ConfigPushOptions = {
  /** remoteConfig.allow: keys, or prefixes ending in ".", a push may change. */
  allow: string[];
  /** remoteConfig.publicKey: Ed25519 public key (PEM or base64 SPKI DER); empty = pushes are not signed. */
  publicKey: string;
  /** remoteConfig.maxPayloadBytes. */
  maxPayloadBytes: number;
  /** model.modelsDir: a pushed model.path must resolve inside it. */
  modelsDir: string;
};

/** The request published on <prefix>/config/set. */
export type ConfigPushRequest = {
  transaction: string;
  baseRevision: number;
  /** Dotted schema keys ("inference.sensitivity", "cameras") mapped to their new values. */
  changes: Record<string, unknown>;
  /** Base64 Ed25519 signature over configPushSigningBytes(request, deviceId). */
  signature?: string;
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

/** Keys that must never reach an object as own keys: they reach prototypes in careless merges. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const REQUEST_FIELDS = new Set(['transaction', 'baseRevision', 'changes', 'signature']);
const MAX_DEPTH = 32;
/** In Unicode code points, as JSON Schema's maxLength counts (schemas/config-set.schema.json). */
export const MAX_TRANSACTION_LENGTH = 128;
const MAX_CHANGES = 256;
const MAX_ERROR_LENGTH = 1000;
const DOTTED_KEY = /^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$/;
/** An Ed25519 signature is 64 bytes: 86 base64 characters and "==" padding. */
const SIGNATURE_BASE64 = /^[A-Za-z0-9+/]{86}==$/;
/** Signed bytes start with this, so a signature made for something else never verifies here. */
export const SIGNING_CONTEXT = 'crad-edge/config-set/v1';

class PushRejected extends Error {}

function reject(message: string): never {
  throw new PushRejected(message);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

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
      const leaf = checkKey(key, options.allow);
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
      const unsigned = signedOnlyChange(current, next);
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

// ---- parsing ---------------------------------------------------------------------------------

function parsePayload(payload: Buffer, maxPayloadBytes: number): Record<string, unknown> {
  if (!Buffer.isBuffer(payload)) reject('payload must be bytes');
  if (payload.length > maxPayloadBytes) {
    reject(`payload is ${payload.length} bytes; the limit is ${maxPayloadBytes} (remoteConfig.maxPayloadBytes)`);
  }
  if (payload.length === 0) reject('payload is empty; expected a JSON object');
  if (payload[0] === 0xef && payload[1] === 0xbb && payload[2] === 0xbf) {
    reject('payload starts with a UTF-8 byte-order mark; send the JSON without one');
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(payload);
  } catch {
    reject('payload is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    reject(`payload is not valid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(parsed)) reject(`payload must be a JSON object, got ${jsonKind(parsed)}`);
  checkKeysAndDepth(parsed);
  return parsed;
}

/**
 * Walk every key at every depth (iteratively: nesting is attacker-controlled). JSON.parse keeps
 * "__proto__" as an own key, so Object.keys sees it; dotted keys are checked segment by segment.
 */
function checkKeysAndDepth(root: Record<string, unknown>): void {
  const stack: Array<{ value: unknown; where: string; depth: number }> = [{ value: root, where: '', depth: 0 }];
  while (stack.length > 0) {
    const { value, where, depth } = stack.pop()!;
    if (depth > MAX_DEPTH) reject(`payload is nested deeper than ${MAX_DEPTH} levels at ${where}`);
    if (Array.isArray(value)) {
      value.forEach((item, i) => stack.push({ value: item, where: `${where}[${i}]`, depth: depth + 1 }));
    } else if (isPlainObject(value)) {
      for (const key of Object.keys(value)) {
        const keyPath = where ? `${where}.${key}` : key;
        if (FORBIDDEN_KEYS.has(key) || key.split('.').some((segment) => FORBIDDEN_KEYS.has(segment))) {
          reject(`forbidden key ${quote(key)} at ${where || 'the top level'}: __proto__, constructor and prototype are never accepted`);
        }
        stack.push({ value: value[key], where: keyPath, depth: depth + 1 });
      }
    }
  }
}

/** JSON.parse reads 1e309 as Infinity: no config value can be one, and nothing could sign it. */
function checkFiniteNumbers(changes: unknown): void {
  const stack: Array<{ value: unknown; where: string }> = [{ value: changes, where: 'changes' }];
  while (stack.length > 0) {
    const { value, where } = stack.pop()!;
    if (typeof value === 'number' && !Number.isFinite(value)) reject(`${unprefixed(where)}: must be a finite number (the JSON number is out of range)`);
    if (Array.isArray(value)) value.forEach((item, i) => stack.push({ value: item, where: `${where}[${i}]` }));
    else if (isPlainObject(value)) for (const [key, item] of Object.entries(value)) stack.push({ value: item, where: `${where}.${key}` });
  }
}

/** A payload path as the sender names keys: "changes.cameras[0].fps" -> "cameras[0].fps". */
function unprefixed(where: string): string {
  return where.startsWith('changes.') ? where.slice('changes.'.length) : where;
}

function checkTransaction(request: Record<string, unknown>): string {
  if (!Object.hasOwn(request, 'transaction')) reject('transaction is missing');
  const transaction = request.transaction;
  if (typeof transaction !== 'string') reject(`transaction must be a string, got ${jsonKind(transaction)}`);
  const codePoints = [...transaction].length;
  if (codePoints === 0 || codePoints > MAX_TRANSACTION_LENGTH) {
    reject(`transaction must be 1 to ${MAX_TRANSACTION_LENGTH} characters long, got ${codePoints}`);
  }
  // It is echoed into responses and logs: no control characters, nothing UTF-8 cannot carry.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(transaction)) reject('transaction must not contain control characters');
  if (hasLoneSurrogate(transaction)) reject('transaction must be well-formed Unicode (no lone surrogates)');
  return transaction;
}

function checkBaseRevision(request: Record<string, unknown>, currentRevision: number): void {
  if (!Object.hasOwn(request, 'baseRevision')) reject('baseRevision is missing');
  const base = request.baseRevision;
  if (typeof base !== 'number' || !Number.isSafeInteger(base) || base < 0) {
    reject(`baseRevision must be a non-negative integer, got ${JSON.stringify(base)}`);
  }
  if (base !== currentRevision) {
    reject(`stale baseRevision ${base}: the current revision is ${currentRevision}; read config/get and push again`);
  }
}

function checkChanges(request: Record<string, unknown>): Record<string, unknown> {
  if (!Object.hasOwn(request, 'changes')) reject('changes is missing');
  const changes = request.changes;
  if (!isPlainObject(changes)) reject(`changes must be an object of "dotted.key": value, got ${jsonKind(changes)}`);
  const count = Object.keys(changes).length;
  if (count === 0) reject('changes is empty: nothing to apply');
  if (count > MAX_CHANGES) reject(`changes has ${count} keys; at most ${MAX_CHANGES} are accepted in one push`);
  return changes;
}

// ---- keys and values -------------------------------------------------------------------------

/** The schema leaf a dotted key names, or a rejection saying why it names none. */
function findLeaf(key: string): Leaf {
  const found = lookup(key);
  if (found.kind === 'none') {
    reject(found.leafPrefix
      ? `unknown configuration key ${quote(key)}: ${quote(found.leafPrefix)} is a single setting`
      : `unknown configuration key ${quote(key)}`);
  }
  if (found.kind === 'group') {
    const example = Object.keys(found.group)[0];
    reject(`${quote(key)} is a group of settings, not one setting; name each setting, e.g. ${quote(`${key}.${example}`)}`);
  }
  return found.leaf;
}

/** Whether remoteConfig.allow lets a push change `key`. */
export function isAllowed(key: string, allow: string[]): boolean {
  return allow.some((entry) => (entry.endsWith('.') ? key.startsWith(entry) : key === entry));
}

function checkKey(key: string, allow: string[]): Leaf {
  if (!DOTTED_KEY.test(key)) reject(`changes key ${quote(key)} is not a dotted configuration key like "inference.sensitivity"`);
  const leaf = findLeaf(key);
  if (remotePolicy(leaf) === 'never') reject(`${quote(key)} can never be changed remotely`);
  if (!isAllowed(key, allow)) reject(`${quote(key)} is not in the remote allow-list (remoteConfig.allow)`);
  // convict lets the environment override loaded values: such a push would silently not apply.
  if (leaf.env && process.env[leaf.env] !== undefined) {
    reject(`${quote(key)} is set by the environment variable ${leaf.env} on this device; a push cannot change it`);
  }
  return leaf;
}

function checkValueKind(key: string, value: unknown, leaf: Leaf): void {
  const kinds = leafKinds(leaf);
  const kind = jsonKind(value);
  if (!kinds.includes(kind)) reject(`${quote(key)} must be ${kinds.map(article).join(' or ')}, got ${article(kind)}`);
}

function article(kind: JsonKind): string {
  return kind === 'null' ? 'null' : `${/^[aeiou]/.test(kind) ? 'an' : 'a'} ${kind}`;
}

/** Camera entries get the same exact-kind check per field; convict then validates the values. */
function checkPushedCameras(cameras: unknown[]): void {
  const fields = cameraSchema as unknown as SchemaTree;
  cameras.forEach((camera, i) => {
    if (!isPlainObject(camera)) reject(`cameras[${i}] must be an object, got ${jsonKind(camera)}`);
    for (const [field, value] of Object.entries(camera)) {
      const found = lookup(field, fields);
      if (found.kind !== 'leaf') reject(`cameras[${i}].${field}: unknown camera field`);
      checkValueKind(`cameras[${i}].${field}`, value, found.leaf);
    }
    // A relative path would resolve against the daemon's working directory, not anything the
    // sender can see.
    if (typeof camera.path === 'string' && camera.path !== '' && !path.isAbsolute(camera.path)) {
      reject(`cameras[${i}].path: must be an absolute path in a remote push, got ${quote(camera.path)}`);
    }
  });
}

function isInside(dir: string, file: string): boolean {
  const rel = path.relative(dir, file);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}

/**
 * A pushed model path (relative to the models directory, or absolute) must name an existing .onnx
 * file inside model.modelsDir, also after every symbolic link is followed. Returns the real path,
 * so the config names the very file that was checked.
 */
function resolvePushedModelPath(value: string, modelsDir: string): string {
  if (!modelsDir) reject('model.path cannot be pushed: model.modelsDir is not set');
  let realDir: string;
  try {
    realDir = fs.realpathSync(modelsDir);
  } catch {
    reject(`model.path cannot be pushed: the models directory ${modelsDir} does not exist`);
  }
  if (value.includes('\0')) reject('model.path must not contain NUL characters');
  if (!value.endsWith('.onnx')) reject(`model.path ${quote(value)} must name an .onnx file`);
  const dir = path.resolve(modelsDir);
  const lexical = path.resolve(dir, value);
  if (!isInside(dir, lexical) && !isInside(realDir, lexical)) {
    reject(`model.path ${quote(value)} is outside the models directory ${modelsDir}`);
  }
  let real: string;
  try {
    real = fs.realpathSync(lexical);
  } catch {
    reject(`model.path ${quote(value)}: no such file in the models directory ${modelsDir}`);
  }
  if (!isInside(realDir, real)) {
    reject(`model.path ${quote(value)} leads through a symbolic link to ${real}, outside the models directory ${modelsDir}`);
  }
  if (!real.endsWith('.onnx')) reject(`model.path ${quote(value)} links to ${real}, which is not an .onnx file`);
  if (!fs.statSync(real).isFile()) reject(`model.path ${quote(value)} is not a regular file`);
  return real;
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

// ---- signing ---------------------------------------------------------------------------------

/**
 * Canonical JSON (RFC 8785 JCS for JSON-parsed values): object keys sorted by UTF-16 code units,
 * no whitespace, strings and numbers exactly as JSON.stringify writes them.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error('canonical JSON has no form for a non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isPlainObject(value)) {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  throw new Error(`canonical JSON has no form for a ${typeof value}`);
}

/**
 * The bytes an Ed25519 push signature covers: UTF-8 of
 *   "crad-edge/config-set/v1\n" + <device.id> + "\n" + canonicalJson(request without "signature").
 * The device id binds a signed push to one device (revisions repeat across devices); the
 * baseRevision makes it single-use on that device.
 */
export function configPushSigningBytes(request: Record<string, unknown>, deviceId: string): Buffer {
  const unsigned = Object.fromEntries(Object.entries(request).filter(([key]) => key !== 'signature'));
  return Buffer.from(`${SIGNING_CONTEXT}\n${deviceId}\n${canonicalJson(unsigned)}`, 'utf8');
}

/** Sign a push for one device with an Ed25519 private key (KeyObject or PEM); returns the request with its signature. */
export function signConfigPush(
  request: Omit<ConfigPushRequest, 'signature'>,
  privateKey: KeyObject | string,
  deviceId: string,
): ConfigPushRequest {
  const key = typeof privateKey === 'string' ? crypto.createPrivateKey(privateKey) : privateKey;
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`config pushes are signed with Ed25519 keys, got ${key.asymmetricKeyType}`);
  const unsigned = { ...request } as Record<string, unknown>;
  delete unsigned.signature;
  const signature = crypto.sign(null, configPushSigningBytes(unsigned, deviceId), key).toString('base64');
  return { ...(unsigned as Omit<ConfigPushRequest, 'signature'>), signature };
}

/** remoteConfig.publicKey as a KeyObject: PEM, or base64 of the SPKI DER. */
export function parsePublicKey(text: string): KeyObject {
  const trimmed = text.trim();
  const key = trimmed.startsWith('-----BEGIN')
    ? crypto.createPublicKey(trimmed)
    : crypto.createPublicKey({ key: Buffer.from(trimmed, 'base64'), format: 'der', type: 'spki' });
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}

/** A signature, where one is sent, has the form the published schema gives it (also on a device that does not verify). */
function checkSignatureForm(signature: unknown): asserts signature is string {
  if (typeof signature !== 'string' || !SIGNATURE_BASE64.test(signature)) {
    reject('signature must be the base64 of a 64-byte Ed25519 signature');
  }
}

function checkSignature(request: Record<string, unknown>, publicKey: string, deviceId: string): void {
  let key: KeyObject;
  try {
    key = parsePublicKey(publicKey);
  } catch (err) {
    reject(`remoteConfig.publicKey on this device is not a usable Ed25519 public key (${(err as Error).message}); no push can be verified`);
  }
  if (!Object.hasOwn(request, 'signature')) reject('signature is missing: this device accepts only signed pushes (remoteConfig.publicKey is set)');
  const signature = request.signature;
  checkSignatureForm(signature);
  if (!crypto.verify(null, configPushSigningBytes(request, deviceId), key, Buffer.from(signature, 'base64'))) {
    reject('signature does not verify against remoteConfig.publicKey for this device and request');
  }
}
