// A config push request (<prefix>/config/set, schemas/config-set.schema.json) taken apart field by
// field: size, encoding, shape, forbidden keys, transaction, revision, keys against the schema and
// the allow-list, value kinds, cameras, the model path. Each check rejects with a message naming
// the problem; remote.ts runs them in order and turns a rejection into the answer.
import fs from 'node:fs';
import path from 'node:path';
import { cameraSchema, hasLoneSurrogate, jsonKind, leafKinds, lookup, type JsonKind, type Leaf, type SchemaTree } from './schema.js';
import { remotePolicy } from './policy.js';

/** The request published on <prefix>/config/set. */
export type ConfigPushRequest = {
  transaction: string;
  baseRevision: number;
  /** Dotted schema keys ("inference.sensitivity", "cameras") mapped to their new values. */
  changes: Record<string, unknown>;
  /** Base64 Ed25519 signature over configPushSigningBytes(request, deviceId). */
  signature?: string;
};

/** Keys that must never reach an object as own keys: they reach prototypes in careless merges. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const MAX_DEPTH = 32;
/** In Unicode code points, as JSON Schema's maxLength counts (schemas/config-set.schema.json). */
export const MAX_TRANSACTION_LENGTH = 128;
const MAX_CHANGES = 256;
const DOTTED_KEY = /^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$/;

export class PushRejected extends Error {}

export function reject(message: string): never {
  throw new PushRejected(message);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

// ---- the payload and the request's fields ----------------------------------------------------

export function parsePayload(payload: Buffer, maxPayloadBytes: number): Record<string, unknown> {
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
export function checkFiniteNumbers(changes: unknown): void {
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

export function checkTransaction(request: Record<string, unknown>): string {
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

export function checkBaseRevision(request: Record<string, unknown>, currentRevision: number): void {
  if (!Object.hasOwn(request, 'baseRevision')) reject('baseRevision is missing');
  const base = request.baseRevision;
  if (typeof base !== 'number' || !Number.isSafeInteger(base) || base < 0) {
    reject(`baseRevision must be a non-negative integer, got ${JSON.stringify(base)}`);
  }
  if (base !== currentRevision) {
    reject(`stale baseRevision ${base}: the current revision is ${currentRevision}; read config/get and push again`);
  }
}

export function checkChanges(request: Record<string, unknown>): Record<string, unknown> {
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

export function checkKey(key: string, allow: string[]): Leaf {
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

export function checkValueKind(key: string, value: unknown, leaf: Leaf): void {
  const kinds = leafKinds(leaf);
  const kind = jsonKind(value);
  if (!kinds.includes(kind)) reject(`${quote(key)} must be ${kinds.map(article).join(' or ')}, got ${article(kind)}`);
}

function article(kind: JsonKind): string {
  return kind === 'null' ? 'null' : `${/^[aeiou]/.test(kind) ? 'an' : 'a'} ${kind}`;
}

/** Camera entries get the same exact-kind check per field; convict then validates the values. */
export function checkPushedCameras(cameras: unknown[]): void {
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
export function resolvePushedModelPath(value: string, modelsDir: string): string {
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
