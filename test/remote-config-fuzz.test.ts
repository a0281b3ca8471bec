// Property-based fuzzing of remote config pushes (applyConfigPush). Generators are derived from the
// schema (leaves(), leafKinds(), the format names); an independent model of the schema predicts which
// pushes must be accepted and which refused. Every run is seeded: a failure prints the seed, the
// shrunk counterexample and the payload; rerun one property with FUZZ_SEED=<seed>.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { removeOnExit, tempDir } from './helpers/cleanup.js';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { loadConfig, validateConfigObject, type AppConfig } from '../src/config/load.js';
import { applyConfigPush, configPushResponse, pushOptionsFrom, type ConfigPushOptions, type ConfigPushResult } from '../src/config/remote.js';
import type { ConfigPushRequest } from '../src/config/push-request.js';
import { canonicalJson, signConfigPush } from '../src/config/push-signing.js';
import { persistConfig } from './helpers/persist-config.js';
import { normalizeZero, remotePolicy, sameValue } from '../src/config/policy.js';
import { cameraLeaves, cameraSchema, leafKinds, leaves, topicLevelProblem, valueAt, type Leaf } from '../src/config/schema.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const RUNS = Number(process.env.FUZZ_RUNS ?? 0) || undefined; // override every property's numRuns
const REV = 3;
const DEVICE = 'line3-pc1';
console.log(`# remote-config-fuzz seed ${SEED} (FUZZ_SEED=${SEED} reproduces)`);

// Environment variables would make keys unpushable and loads differ: run without them.
const envLeaves = leaves().flatMap(([, leaf]) => (leaf.env ? [leaf.env] : []));
const savedEnv = Object.fromEntries(envLeaves.map((name) => [name, process.env[name]]));
for (const name of envLeaves) delete process.env[name];

const root = fs.realpathSync(tempDir('fuzz'));
// Every accepted push is persisted: on tmpfs the fsyncs cost nothing, on a disk ~10 ms each.
// Both go when the process exits, also when a module-level check throws before after() is set.
const stateRoot = fs.realpathSync(removeOnExit(fs.mkdtempSync(path.join(isWritableDir('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'crad-fuzz-state-'))));
after(() => {
  for (const [name, value] of Object.entries(savedEnv)) if (value !== undefined) process.env[name] = value;
});
function isWritableDir(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}
const modelsDir = path.join(root, 'models');
const imagesDir = path.join(root, 'images');
const stateFile = path.join(stateRoot, 'config.json');
for (const dir of [path.join(modelsDir, 'sub'), imagesDir]) fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(modelsDir, 'current.onnx'), 'A');
fs.writeFileSync(path.join(modelsDir, 'sub', 'next.onnx'), 'B');
fs.writeFileSync(path.join(modelsDir, 'weights.bin'), 'C');
fs.symlinkSync(path.join(modelsDir, 'sub', 'next.onnx'), path.join(modelsDir, 'latest.onnx'));

const current: AppConfig = validateConfigObject({
  device: { id: DEVICE },
  cameras: [
    { id: 'cam1', source: 'folder', path: imagesDir, fps: 2 },
    { id: 'cam2', source: 'usb', device: '/dev/video0', roi: { x: 0, y: 0, width: 640, height: 480 } },
  ],
  model: { path: path.join(modelsDir, 'current.onnx'), modelsDir },
  remoteConfig: { revision: REV },
});
const snapshot = structuredClone(current);
const prototypeNames = Object.getOwnPropertyNames(Object.prototype).sort();

// Recipe maps (signed-only) are validated by their own tests; every other leaf is generated here.
const allLeaves = leaves().filter(([, leaf]) => leaf.format !== 'object');
const ALL_KEYS_ALLOW = [...new Set(allLeaves.map(([key]) => (key.includes('.') ? `${key.split('.')[0]}.` : key)))];
const DEFAULT_ALLOW = current.remoteConfig.allow;
const unsignedAll = (): ConfigPushOptions => ({ ...pushOptionsFrom(current), allow: ALL_KEYS_ALLOW, maxPayloadBytes: 1 << 20 });

const signer = crypto.generateKeyPairSync('ed25519');
const otherSigner = crypto.generateKeyPairSync('ed25519');
const publicKeyPem = signer.publicKey.export({ type: 'spki', format: 'pem' }).toString();

const ajv = new Ajv2020({ strict: false });
const requestSchema = JSON.parse(fs.readFileSync(new URL('../schemas/config-set.schema.json', import.meta.url), 'utf8')) as Record<string, unknown>;
const validateRequest = ajv.compile(requestSchema);
const validateResponse = ajv.compile({ ...(requestSchema.$defs as Record<string, object>).response, $id: 'config-response' });

// ---- raw JSON: tokens JSON.stringify cannot write (1e309, -0, 3.0) --------------------------

class Raw {
  constructor(readonly text: string) {}
  [fc.toStringMethod](): string {
    return `raw(${this.text})`;
  }
}
const raw = (text: string): Raw => new Raw(text);

function toJson(value: unknown): string {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return `[${value.map(toJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value).map((k) => `${JSON.stringify(k)}:${toJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) throw new Error('fuzz: generators must use raw() for non-finite numbers');
  return JSON.stringify(value);
}

/** An object with the given own keys, "__proto__" included. */
function obj(entries: Array<[string, unknown]>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  return out;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// ---- an independent model of the schema's formats ---------------------------------------------

type Fmt =
  | { kind: 'enum'; values: readonly unknown[] }
  | { kind: 'number' | 'integer'; min: number; max: number }
  | { kind: 'string' | 'mqtt-string' | 'boolean' | 'topic-level' | 'optional-topic-level' | 'topic-prefix' | 'qos' | 'string-list' | 'verdict-list' | 'roi' | 'nullable-number' | 'camera-list' | 'object' | 'broker-list' };

/** Read from the format's name; a format the model does not know fails the file (give it a model). */
function fmtOf(leaf: Leaf): Fmt {
  const f = leaf.format;
  if (Array.isArray(f)) return { kind: 'enum', values: f };
  if (f === String) return { kind: 'string' };
  if (f === Boolean) return { kind: 'boolean' };
  const name = String(f);
  const range = /^(number|integer) (?:>= (\S+)|(\S+?)\.\.(\S+))$/.exec(name);
  if (range) {
    const min = Number(range[2] ?? range[3]);
    const max = range[2] !== undefined ? Number.MAX_SAFE_INTEGER : Number(range[4]);
    assert.ok(Number.isFinite(min) && Number.isFinite(max), `fuzz: cannot read the range of ${name}`);
    return { kind: range[1] as 'number' | 'integer', min, max };
  }
  const known = ['mqtt-string', 'topic-level', 'optional-topic-level', 'topic-prefix', 'qos', 'string-list', 'verdict-list', 'roi', 'nullable-number', 'camera-list', 'object', 'broker-list'] as const;
  const kind = known.find((k) => k === name);
  if (!kind) throw new Error(`fuzz: no model for format ${name}; add one to test/remote-config-fuzz.test.ts`);
  return { kind };
}

const MAX_SIDE = 65535;
/** A surrogate without its partner: no UTF-8 form. */
const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** Leaves whose relative values resolve against the config file (the schema marks them). */
const PATH_LEAVES = new Set(leaves().filter(([, leaf]) => leaf.filePath).map(([key]) => key));

/** Topic-level legality without topicLevelProblem: what a broker and UTF-8 need. */
function legalLevelIndependent(level: string): boolean {
  if (level.length === 0 || Buffer.byteLength(level, 'utf8') > 64) return false;
  if (Buffer.from(level, 'utf8').toString('utf8') !== level) return false; // lone surrogates do not survive UTF-8
  for (const char of level) {
    const cp = char.codePointAt(0)!;
    if (cp <= 0x20 || (cp >= 0x7f && cp <= 0xa0) || char === '/' || char === '+' || char === '#') return false;
    if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false;
    if (/\s/u.test(char)) return false;
  }
  return true;
}

function roiValid(v: unknown): boolean {
  if (v === null) return true;
  if (!isPlainObject(v) || Object.keys(v).sort().join(',') !== 'height,width,x,y') return false;
  const { x, y, width, height } = v as Record<string, number>;
  const ints = [x, y, width, height].every((n) => Number.isInteger(n) && n! <= MAX_SIDE);
  return ints && x! >= 0 && y! >= 0 && width! >= 1 && height! >= 1 && x! + width! <= MAX_SIDE && y! + height! <= MAX_SIDE;
}

function fmtValid(fmt: Fmt, v: unknown): boolean {
  switch (fmt.kind) {
    case 'enum': return fmt.values.some((m) => m === v);
    case 'number': return typeof v === 'number' && Number.isFinite(v) && v >= fmt.min && v <= fmt.max;
    case 'integer': return typeof v === 'number' && Number.isSafeInteger(v) && v >= fmt.min && v <= fmt.max;
    case 'string': return typeof v === 'string';
    // MQTT's UTF-8 strings: no U+0000, no lone surrogate, at most 65535 bytes.
    case 'mqtt-string': return typeof v === 'string' && !v.includes('\u0000') && !LONE.test(v) && Buffer.byteLength(v, 'utf8') <= 65535;
    case 'boolean': return typeof v === 'boolean';
    case 'topic-level': return typeof v === 'string' && topicLevelProblem(v) === null;
    case 'optional-topic-level': return v === '' || (typeof v === 'string' && topicLevelProblem(v) === null);
    case 'verdict-list': return Array.isArray(v) && v.every((x) => x === 'NG' || x === 'OK' || x === 'uncalibrated');
    case 'object': throw new Error('fuzz: recipe maps are not generated (recipes are signed-only; their validation has its own tests)');
    case 'topic-prefix':
      return typeof v === 'string' && v !== '' && Buffer.byteLength(v, 'utf8') <= 256 && v.split('/').every((l) => topicLevelProblem(l) === null);
    case 'qos': return v === 0 || v === 1 || v === 2;
    case 'string-list': return Array.isArray(v) && v.every((s) => typeof s === 'string');
    case 'roi': return roiValid(v);
    case 'nullable-number': return v === null || (typeof v === 'number' && Number.isFinite(v));
    case 'camera-list': throw new Error('fuzz: camera lists are modelled by camerasProblem');
    // Broker URLs for the Sparkplug plane: parseable, an MQTT-ish scheme, no credentials in them.
    case 'broker-list': return Array.isArray(v) && v.every((u) => {
      if (typeof u !== 'string') return false;
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        return false;
      }
      return ['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'ws:', 'wss:'].includes(url.protocol) && url.username === '' && url.password === '';
    });
  }
}

const cameraFields = cameraLeaves();
const REQUIRED: Record<string, string> = { folder: 'path', file: 'path', rtsp: 'url', http: 'url', gige: 'address', gstreamer: 'pipeline' };

/** Why a pushed camera list must be refused, or null when it must be accepted. */
function camerasProblem(list: unknown, signed: boolean): string | null {
  if (!Array.isArray(list)) return 'not a list';
  const before = new Map(current.cameras.map((c) => [c.id, c]));
  const ids = new Set<unknown>();
  for (const [i, c] of list.entries()) {
    if (!isPlainObject(c)) return `cameras[${i}] not an object`;
    for (const k of Object.keys(c)) if (!Object.hasOwn(cameraSchema, k)) return `cameras[${i}].${k} unknown`;
    const eff = Object.fromEntries(cameraFields.map(([f, leaf]) => [f, Object.hasOwn(c, f) ? c[f] : leaf.default])) as Record<string, unknown>;
    for (const [f, leaf] of cameraFields) if (!fmtValid(fmtOf(leaf), eff[f])) return `cameras[${i}].${f} invalid`;
    // The fuzzed config has no recipes: a camera can name none.
    if (eff.recipe !== '') return `cameras[${i}].recipe names no recipe`;
    if (eff.path !== '' && !path.isAbsolute(eff.path as string)) return `cameras[${i}].path relative`;
    const need = REQUIRED[eff.source as string];
    if (need && !eff[need]) return `cameras[${i}].${need} required`;
    if ((eff.reconnectMinMs as number) > (eff.reconnectMaxMs as number)) return `cameras[${i}] reconnect order`;
    if (ids.has(eff.id)) return `cameras[${i}] duplicate id`;
    ids.add(eff.id);
    if (!signed) {
      for (const [f, leaf] of cameraFields) {
        if (leaf.remote !== 'signed') continue;
        const prev = before.has(eff.id as string) ? (before.get(eff.id as string) as Record<string, unknown>)[f] : leaf.default;
        if (!sameValue(eff[f], prev) && !sameValue(eff[f], leaf.default)) return `cameras[${i}].${f} needs a signature`;
      }
    }
  }
  return null;
}

const isAllowed = (key: string, allow: string[]): boolean => allow.some((e) => (e.endsWith('.') ? key.startsWith(e) : key === e));
const VALID_MODEL_PATHS = new Set([path.join(modelsDir, 'current.onnx'), 'current.onnx', './current.onnx', 'sub/next.onnx', 'sub/../current.onnx', 'latest.onnx', path.join(modelsDir, 'sub', 'next.onnx'), path.join(modelsDir, 'latest.onnx')]);
const leafByKey = new Map(allLeaves);
const resolvedLike = (key: string, v: unknown): unknown => (PATH_LEAVES.has(key) && typeof v === 'string' && v !== '' && !path.isAbsolute(v) ? path.resolve(v) : v);

// Keys that work only together: after a push both are set or both empty; else the missing one is named.
const KEY_PAIRS = [['mqtt.tls.cert', 'mqtt.tls.key'], ['http.tls.cert', 'http.tls.key']] as const;
function halfSetPairs(changes: Record<string, unknown>): string[] {
  const missing: string[] = [];
  for (const pair of KEY_PAIRS) {
    const set = pair.map((key) => (Object.hasOwn(changes, key) ? resolvedLike(key, changes[key]) : valueAt(current, key)) !== '');
    if (set[0] !== set[1]) missing.push(set[0] ? pair[1] : pair[0]);
  }
  return missing;
}

/** true: the change must be accepted; false: refused; null: the model does not know (unknown keys are false). */
function changeValid(key: string, v: unknown, ctx: { allow: string[]; signed: boolean }): boolean {
  const leaf = leafByKey.get(key);
  if (!leaf) return false;
  if (!isAllowed(key, ctx.allow) || remotePolicy(leaf) === 'never') return false;
  if (key === 'cameras') return camerasProblem(v, ctx.signed) === null;
  if (key === 'model.path') return VALID_MODEL_PATHS.has(v as string);
  if (!fmtValid(fmtOf(leaf), v)) return false;
  if (remotePolicy(leaf) === 'signed' && !ctx.signed) {
    const after = resolvedLike(key, v);
    return sameValue(after, valueAt(current, key)) || sameValue(after, leaf.default);
  }
  return true;
}

// ---- generators ------------------------------------------------------------------------------

/** The next double above (dir 1) or below (dir -1) x. */
function nextDouble(x: number, dir: 1 | -1): number {
  if (x === 0) return dir * Number.MIN_VALUE;
  const f = new Float64Array([x]);
  const b = new BigInt64Array(f.buffer);
  b[0] = b[0]! + ((x > 0) === (dir > 0) ? 1n : -1n);
  return f[0]!;
}

const NUMBER_TRICKS = ['1e309', '-1e309', '-0', '-0.0', '1e-400', '-1e-400', '9007199254740993', '1e21', '-1e21', '1.7976931348623157e308', '5e-324', '0.5', '-1', '1E2', '100.000'];
const anyNumber = (): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.constantFrom(...NUMBER_TRICKS.map(raw)),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(2 ** 53, -(2 ** 53), Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, -Number.MAX_VALUE),
  );

function numbersIn(min: number, max: number, integer: boolean): fc.Arbitrary<unknown> {
  const safeMax = Math.min(max, Number.MAX_SAFE_INTEGER);
  const edges: unknown[] = [min, max, nextDouble(min, -1), nextDouble(max, 1), min - 1, max + 1, min - 0.5, max + 0.5, (min + max) / 2];
  if (Number.isInteger(min)) edges.push(raw(`${min}.0`), raw(`${min}e0`));
  if (Number.isInteger(max)) edges.push(raw(`${max}.0`), raw(`${max / 10}e1`));
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...edges) },
    { weight: 3, arbitrary: fc.integer({ min: Math.max(Math.ceil(min), -(2 ** 31)), max: Math.min(Math.floor(safeMax), 2 ** 31 - 1) }) },
    { weight: integer ? 1 : 3, arbitrary: fc.double({ min, max: safeMax, noNaN: true }) },
    { weight: 2, arbitrary: anyNumber() },
  );
}

const wrongKinds = (): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.constantFrom(null, true, false, '', '0.3', '1', 'true', 'null', [], [1], ['a'], {}, { value: 1 }),
    fc.string({ maxLength: 6 }),
    anyNumber(),
  );

// Characters that break topic levels, one class each (the brief's hostile list).
const C0 = fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c));
const C1 = fc.integer({ min: 0x7f, max: 0x9f }).map((c) => String.fromCharCode(c));
const nonCharacter = fc.oneof(
  fc.integer({ min: 0xfdd0, max: 0xfdef }).map((c) => String.fromCodePoint(c)),
  fc.integer({ min: 0, max: 16 }).chain((plane) => fc.constantFrom(plane * 0x10000 + 0xfffe, plane * 0x10000 + 0xffff)).map((c) => String.fromCodePoint(c)),
);
const loneSurrogate = fc.oneof(
  fc.integer({ min: 0xd800, max: 0xdbff }).map((c) => String.fromCharCode(c)),
  fc.integer({ min: 0xdc00, max: 0xdfff }).map((c) => String.fromCharCode(c)),
);
const separator = fc.constantFrom('/', '+', '#');
const space = fc.constantFrom(' ', '\u00a0', '\u1680', '\u2000', '\u2028', '\u2029', '\u202f', '\u3000', '\ufeff', '\t');
const validLevel = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/),
  fc.constantFrom('cam1', 'cam2', 'line-3', '相机1', 'kamera-ü', '📷', 'a.b', 'x'.repeat(64), '€'.repeat(21), '😀'.repeat(16)),
);
const hostileChar = fc.oneof(C0, C1, nonCharacter, loneSurrogate, separator, space);
/** A level no broker can take: a valid one with a hostile character, or too long, or empty. */
const hostileLevel = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(validLevel, hostileChar, fc.nat()).map(([base, bad, at]) => { const cut = at % (base.length + 1); return base.slice(0, cut) + bad + base.slice(cut); }) },
  { weight: 1, arbitrary: fc.constantFrom('', 'x'.repeat(65), '€'.repeat(22), '😀'.repeat(17), 'é'.repeat(33)) },
  { weight: 1, arbitrary: fc.tuple(validLevel, fc.integer({ min: 65, max: 90 })).map(([base, n]) => base.repeat(Math.ceil(n / base.length) + 1)).filter((s) => Buffer.byteLength(s) > 64) },
);
/** Any string at all: code points of the whole range, lone surrogates, control characters. */
const anyString = fc.string({ maxLength: 24, unit: fc.oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), loneSurrogate, C0, C1, nonCharacter, space) });

const topicPrefix = fc.oneof(
  fc.array(validLevel, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('/')),
  fc.tuple(fc.array(validLevel, { maxLength: 3 }), hostileLevel, fc.array(validLevel, { maxLength: 2 })).map(([a, h, b]) => [...a, h, ...b].join('/')),
  fc.constantFrom('/crad', 'crad/', 'a//b', 'x/'.repeat(130) + 'x'),
  anyString,
);

/** Values for one leaf: mostly of its own kind (in and out of range), sometimes of another kind. */
function valuesFor(key: string, leaf: Leaf): fc.Arbitrary<unknown> {
  const fmt = fmtOf(leaf);
  const same = fc.constantFrom(...[valueAt(current, key), leaf.default].filter((v) => v !== undefined));
  let right: fc.Arbitrary<unknown>;
  switch (fmt.kind) {
    case 'enum': {
      const members = fmt.values as Array<string | number>;
      const non = typeof members[0] === 'number' ? [3, 6, 4.5, -4, raw('4.0'), raw('5e0'), raw('-0'), '4'] : [String(members[0]).toUpperCase(), ` ${String(members[0])}`, '', 'max'];
      right = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...members) }, { weight: 2, arbitrary: fc.constantFrom(...non) });
      break;
    }
    case 'number': case 'integer': right = numbersIn(fmt.min, fmt.max, fmt.kind === 'integer'); break;
    case 'string':
      right = key === 'model.path'
        ? fc.oneof(fc.constantFrom(...VALID_MODEL_PATHS), fc.constantFrom('missing.onnx', '../current.onnx', 'weights.bin', '/etc/passwd.onnx', '', 'sub', 'current.onnx\u0000'), anyString)
        : fc.oneof(fc.constantFrom('', 'rel/dir', '/abs/dir', 'mqtts://broker:8883'), anyString);
      break;
    case 'boolean': right = fc.boolean(); break;
    case 'mqtt-string': right = fc.oneof(fc.constantFrom('', 'line3-pc1', 'a\u0000b', 'x\ud800', 'ok\u00e9'), anyString); break;
    case 'topic-level': right = fc.oneof(validLevel, hostileLevel); break;
    case 'optional-topic-level': right = fc.oneof(fc.constant(''), validLevel, hostileLevel); break;
    case 'verdict-list': right = fc.constantFrom<unknown>(['NG'], ['NG', 'OK'], [], ['uncalibrated'], ['ERROR'], ['ng'], 'NG', [1]); break;
    case 'object': throw new Error('fuzz: recipe maps are not generated');
    case 'topic-prefix': right = topicPrefix; break;
    case 'qos': right = fc.constantFrom(0, 1, 2, 3, -1, 1.5, raw('-0'), raw('2.0'), raw('1e309')); break;
    case 'string-list': right = fc.oneof(fc.array(anyString, { maxLength: 3 }), fc.constantFrom(['cpu'], ['tensorrt', 'cuda', 'cpu'], [1], ['cpu', null], [['cpu']])); break;
    case 'nullable-number': right = fc.oneof(fc.constant(null), anyNumber()); break;
    case 'roi': right = roiValues; break;
    case 'camera-list': right = cameraLists(false).map((c) => c.cameras); break;
    case 'broker-list': right = fc.oneof(fc.array(anyString, { maxLength: 2 }), fc.constantFrom<unknown>(
      [], ['mqtt://127.0.0.1:1883'], ['mqtts://spb.plant:8883', 'mqtt://backup:1883'], ['mqtt://user:pw@host:1883'], ['http://host'], ['not a url'], [1], 'mqtt://x',
    )); break;
  }
  return fc.oneof({ weight: 1, arbitrary: same }, { weight: 5, arbitrary: right }, { weight: 2, arbitrary: wrongKinds() });
}

const roiValues: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.record({ x: fc.nat(MAX_SIDE - 1), y: fc.nat(MAX_SIDE - 1) }).chain(({ x, y }) =>
    fc.record({ x: fc.constant(x), y: fc.constant(y), width: fc.integer({ min: 1, max: MAX_SIDE - x }), height: fc.integer({ min: 1, max: MAX_SIDE - y }) })),
  fc.record({ x: numbersIn(0, MAX_SIDE, true), y: fc.constant(0), width: numbersIn(1, MAX_SIDE, true), height: fc.constant(10) }),
  fc.constantFrom({ x: 0, y: 0, width: 5 }, { x: 0, y: 0, width: 5, height: 5, z: 1 }, { x: 65535, y: 0, width: 1, height: 1 }, { x: 0.5, y: 0, width: 1, height: 1 }, [0, 0, 1, 1], obj([['x', 0], ['y', 0], ['width', 1], ['height', 1], ['__proto__', { polluted: true }]])),
);

type CameraCase = { cameras: unknown[]; mutation: string };
const optionalCameraFields = fc.record({
  enabled: fc.boolean(),
  loop: fc.boolean(),
  width: fc.integer({ min: 0, max: MAX_SIDE }),
  height: fc.integer({ min: 0, max: MAX_SIDE }),
  fourcc: fc.constantFrom('', 'MJPG', 'YUYV'),
  pixelFormat: fc.constantFrom('', 'Mono8', 'BayerRG8'),
  fps: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.double({ min: 0, max: 1000, noNaN: true })),
  roi: roiValues.filter(roiValid),
  trigger: fc.constantFrom('free', 'mqtt'),
  stallTimeoutMs: fc.integer({ min: 100, max: 3_600_000 }),
}, { requiredKeys: [] });
const reconnect = fc.option(fc.tuple(fc.integer({ min: 10, max: 3_600_000 }), fc.integer({ min: 10, max: 3_600_000 })).map(([a, b]) => ({ reconnectMinMs: Math.min(a, b), reconnectMaxMs: Math.max(a, b) })), { nil: undefined });

/** A camera valid in an unsigned push (folder only as the existing cam1 with its path). */
const validCamera = (id: string, signed: boolean): fc.Arbitrary<Record<string, unknown>> => {
  const sources: Array<fc.Arbitrary<Record<string, unknown>>> = [
    fc.record({ source: fc.constant('usb'), device: fc.constantFrom('0', '/dev/video0') }, { requiredKeys: ['source'] }),
    fc.record({ source: fc.constantFrom('rtsp', 'http'), url: fc.constantFrom('rtsp://cam/stream', 'http://u:p@cam/mjpg') }),
    fc.record({ source: fc.constant('gige'), address: fc.constantFrom('192.168.10.20', 'Basler-1234') }),
  ];
  if (id === 'cam1') sources.push(fc.constant({ source: 'folder', path: imagesDir }));
  if (signed) sources.push(fc.record({ source: fc.constantFrom('folder', 'file'), path: fc.constantFrom(imagesDir, '/srv/video.mp4') }), fc.constant({ source: 'gstreamer', pipeline: 'videotestsrc ! appsink' }));
  return fc.tuple(fc.oneof(...sources), optionalCameraFields, reconnect).map(([src, opt, rc]) => ({ id, ...src, ...opt, ...(rc ?? {}) }));
};

const cameraIds = fc.uniqueArray(fc.oneof(fc.constantFrom('cam1', 'cam2', 'cam3'), validLevel), { maxLength: 4 });
const validCameraList = (signed: boolean): fc.Arbitrary<Array<Record<string, unknown>>> =>
  fc.oneof(
    { weight: 1, arbitrary: fc.constant(structuredClone(current.cameras) as unknown as Array<Record<string, unknown>>) },
    { weight: 4, arbitrary: cameraIds.chain((ids): fc.Arbitrary<Array<Record<string, unknown>>> => (ids.length === 0 ? fc.constant([]) : fc.tuple(...ids.map((id) => validCamera(id, signed))))) },
  );

const cameraFieldValues = cameraFields
  .filter(([f]) => !['id', 'source', 'path', 'pipeline'].includes(f))
  .map(([f, leaf]) => fc.tuple(fc.constant(f as string), f === 'roi' ? roiValues : valuesFor(`cameras.${f}`, leaf)));

/** A camera list: valid, or a valid one with one mutation (which may or may not break it). */
function cameraLists(signed: boolean): fc.Arbitrary<CameraCase> {
  const mutation = fc.oneof(
    fc.tuple(fc.constant('id'), hostileLevel),
    fc.tuple(fc.constant('id'), anyString),
    fc.oneof(...cameraFieldValues),
    fc.tuple(fc.constant('source'), fc.oneof(fc.constantFrom('folder', 'file', 'usb', 'gige', 'rtsp', 'http', 'gstreamer', 'ftp', 'USB', ''), wrongKinds())),
    fc.tuple(fc.constant('path'), fc.constantFrom('images', './x', '/srv/other', imagesDir, '')),
    fc.tuple(fc.constant('pipeline'), fc.constantFrom('filesrc location=/etc/shadow ! appsink', '')),
    fc.tuple(fc.constant('exposure'), fc.constant(10)),
    fc.tuple(fc.constantFrom('__proto__', 'constructor'), fc.constant({ polluted: true })),
    fc.constant(['duplicate', null] as [string, unknown]),
    fc.tuple(fc.constant('entry'), fc.constantFrom(null, 'cam9', 7, [], [{ id: 'x' }])),
  );
  return fc.oneof(
    { weight: 2, arbitrary: validCameraList(signed).map((cameras) => ({ cameras, mutation: 'none' })) },
    {
      weight: 3,
      arbitrary: fc.tuple(validCameraList(signed).filter((l) => l.length > 0), fc.nat(), mutation).map(([list, at, [field, value]]) => {
        const cameras: unknown[] = list.map((c) => ({ ...c }));
        const i = at % cameras.length;
        if (field === 'duplicate') cameras.push({ ...(cameras[i] as object), source: 'usb', path: '', device: '1' });
        else if (field === 'entry') cameras[i] = value;
        else cameras[i] = obj([...Object.entries(cameras[i] as object).filter(([k]) => k !== field), [field, value]]);
        return { cameras, mutation: `${field}=${toJson(value)}` };
      }),
    },
  );
}

// ---- the push envelope -----------------------------------------------------------------------

type Envelope = { transaction?: unknown; baseRevision?: unknown; extra?: [string, unknown]; signature?: unknown; dropChanges?: boolean };
const validTransaction = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9-]{1,40}$/),
  fc.string({ minLength: 1, maxLength: 128, unit: 'grapheme' }),
  fc.constantFrom('😀'.repeat(100), '😀'.repeat(128), 'é'.repeat(128), 't'.repeat(128), '\u0085 NEL', '\u00a0'),
);
const transactions = fc.oneof(
  { weight: 6, arbitrary: validTransaction },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.tuple(validTransaction, fc.oneof(C0, fc.constant('\u007f')), fc.nat()).map(([t, c, at]) => { const cut = at % (t.length + 1); return t.slice(0, cut) + c + t.slice(cut); }),
      fc.constantFrom('', 't'.repeat(129), '😀'.repeat(129), 42, null, ['tx'], { id: 'tx' }, true),
    ),
  },
);
const baseRevisions = fc.oneof(
  { weight: 6, arbitrary: fc.constant(REV) },
  { weight: 1, arbitrary: fc.constantFrom(raw('3.0'), raw('3e0'), raw('0.3e1')) },
  { weight: 2, arbitrary: fc.constantFrom(REV - 1, REV + 1, 3.5, -3, '3', null, [3], { rev: 3 }, raw('1e309'), raw('-0'), raw('3.0000000000000001'), 2 ** 53, true) },
);
/** undefined in most runs, a value of `arb` in the rest. */
const sometimes = <T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: oneIn - 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
const envelopes: fc.Arbitrary<Envelope> = fc.record({
  transaction: sometimes(transactions, 2),
  baseRevision: sometimes(baseRevisions, 2),
  extra: sometimes(fc.tuple(fc.constantFrom('dryRun', 'changes2', 'Transaction', 'revision', '', 'constructor', '__proto__', 'prototype'), fc.constantFrom<unknown>(true, 1, {})), 6),
  signature: sometimes(fc.constantFrom<unknown>('c2ln', 12345, null, Buffer.alloc(64, 7).toString('base64'), ''), 5),
  dropChanges: sometimes(fc.constant(true), 25),
}).map((e) => ({ transaction: 'tx-1', baseRevision: REV, ...Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) }));
/** transaction or baseRevision is missing in some runs. */
const envelopeWithMissing = fc.tuple(envelopes, sometimes(fc.constantFrom('transaction' as const, 'baseRevision' as const), 15)).map(([e, missing]) => {
  const copy: Envelope = { ...e };
  if (missing) delete copy[missing];
  return copy;
});

// ---- changes ---------------------------------------------------------------------------------

const UNKNOWN_KEYS = ['inference.foo', 'bogus', 'inference.sensitivity.max', 'mqtt.qos', 'inference', 'a..b', '.x', 'cameras.0', 'Inference.sensitivity', 'inference.constructor', 'x.prototype.y', '__proto__', 'regions.topK '];
type Change = [key: string, value: unknown];
const changeFor = (leafList: Array<[string, Leaf]>, signed: boolean): fc.Arbitrary<Change> =>
  fc.oneof(
    { weight: 12, arbitrary: fc.constantFrom(...leafList).chain(([key, leaf]) => (key === 'cameras' ? cameraLists(signed).map((c) => c.cameras) : valuesFor(key, leaf)).map((v): Change => [key, v])) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...UNKNOWN_KEYS), fc.constantFrom(1, 'x', null)) },
  );
const changeSets = (signed: boolean, maxLength = 4): fc.Arbitrary<Change[]> =>
  fc.uniqueArray(changeFor(allLeaves, signed), { minLength: 1, maxLength, selector: ([k]) => k });

type Push = { envelope: Envelope; changes: Change[] };

function buildRequest(push: Push): Record<string, unknown> {
  const e = push.envelope;
  const entries: Array<[string, unknown]> = [];
  if ('transaction' in e) entries.push(['transaction', e.transaction]);
  if ('baseRevision' in e) entries.push(['baseRevision', e.baseRevision]);
  if (!e.dropChanges) entries.push(['changes', obj(push.changes)]);
  if ('signature' in e) entries.push(['signature', e.signature]);
  if (e.extra) entries.push(e.extra);
  return obj(entries);
}

// ---- the oracle and the invariants -------------------------------------------------------------

const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype']);
/** Every forbidden key at any depth (the device may name any one of them). */
function forbiddenKeysIn(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) forbiddenKeysIn(v, out);
  else if (isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      if (FORBIDDEN.has(k) || k.split('.').some((seg) => FORBIDDEN.has(seg))) out.push(k);
      forbiddenKeysIn(v, out);
    }
  }
  return out;
}

type Expectation = { valid: boolean; offenders: string[]; transaction: string | null };
const DOTTED = /^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$/;

/** What the push must do, from the parsed request alone. */
function expect(request: Record<string, unknown>, ctx: { allow: string[]; signed: boolean; signatureValid?: boolean }): Expectation {
  const offenders: string[] = [];
  const forbidden = forbiddenKeysIn(request);
  if (forbidden.length > 0) return { valid: false, offenders: forbidden, transaction: null };
  const tx = request.transaction;
  const txValid = typeof tx === 'string' && [...tx].length >= 1 && [...tx].length <= 128 && !/[\u0000-\u001f\u007f-\u009f]/.test(tx) && !LONE.test(tx);
  if (!txValid) return { valid: false, offenders: ['transaction'], transaction: null };
  for (const field of Object.keys(request)) if (!['transaction', 'baseRevision', 'changes', 'signature'].includes(field)) offenders.push(field === '' ? '""' : field);
  const base = request.baseRevision;
  if (!(typeof base === 'number' && Number.isSafeInteger(base) && base >= 0 && base === REV)) offenders.push('baseRevision');
  if (ctx.signed && !ctx.signatureValid) offenders.push('signature');
  // Where one is sent, a signature has the published form, also on a device that does not verify.
  if (!ctx.signed && 'signature' in request && !/^[A-Za-z0-9+/]{86}==$/.test(String(request.signature)) ) offenders.push('signature');
  const changes = request.changes;
  if (!isPlainObject(changes) || Object.keys(changes).length === 0) offenders.push('changes');
  else {
    for (const [key, value] of Object.entries(changes)) {
      if (!changeValid(key, normalizeZero(value), ctx)) offenders.push(DOTTED.test(key) ? key : JSON.stringify(key).slice(1, -1));
    }
    if (offenders.length === 0) offenders.push(...halfSetPairs(changes));
  }
  return { valid: offenders.length === 0, offenders, transaction: tx };
}

function assertUntouched(): void {
  assert.ok(isDeepStrictEqual(current, snapshot), 'the running config was mutated');
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeNames, 'Object.prototype gained properties');
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype polluted');
}

function walkNumbers(value: unknown, at: string, visit: (n: number, at: string) => void): void {
  if (typeof value === 'number') visit(value, at);
  else if (Array.isArray(value)) value.forEach((v, i) => walkNumbers(v, `${at}[${i}]`, visit));
  else if (isPlainObject(value)) for (const [k, v] of Object.entries(value)) walkNumbers(v, at ? `${at}.${k}` : k, visit);
}

const withoutRevision = (c: AppConfig): unknown => ({ ...c, remoteConfig: { ...c.remoteConfig, revision: 0 } });

type Ctx = { options: ConfigPushOptions; allow: string[]; signed: boolean };

/** Invariants 2, 3, 4 and 5 for an accepted push. */
function checkAccepted(result: Extract<ConfigPushResult, { ok: true }>, request: Record<string, unknown>, ctx: Ctx): void {
  const config = result.config;
  const changes = request.changes as Record<string, unknown>;
  const pushed = Object.keys(changes);
  // 3: the revision rises exactly when the effective config changes.
  const differs = !sameValue(withoutRevision(config), withoutRevision(current));
  assert.equal(result.revision, result.changedKeys.length > 0 ? REV + 1 : REV, 'revision vs changedKeys');
  assert.equal(result.changedKeys.length > 0, differs, `changedKeys ${JSON.stringify(result.changedKeys)} but the config ${differs ? 'differs' : 'is the same'}`);
  assert.equal(config.remoteConfig.revision, result.revision);
  assert.deepEqual(result.changedKeys, [...result.changedKeys].sort());
  for (const key of pushed) {
    const changed = !sameValue(valueAt(config, key), valueAt(current, key));
    assert.equal(result.changedKeys.includes(key), changed, `${key} changed=${changed} but changedKeys=${JSON.stringify(result.changedKeys)}`);
  }
  for (const key of result.changedKeys) assert.ok(pushed.includes(key), `${key} reported changed but not pushed`);
  if (result.changedKeys.length === 0) assert.deepEqual(result.restartRequired, []);
  // The pushed values are what the config now holds.
  for (const key of pushed) {
    const got = valueAt(config, key);
    if (key === 'model.path') assert.equal(got, fs.realpathSync(path.resolve(modelsDir, changes[key] as string)));
    else if (key === 'cameras') {
      (changes[key] as Array<Record<string, unknown>>).forEach((cam, i) => {
        for (const [f, v] of Object.entries(cam)) assert.ok(sameValue((config.cameras[i] as Record<string, unknown>)[f], v), `cameras[${i}].${f} not applied`);
      });
      assert.equal(config.cameras.length, (changes[key] as unknown[]).length);
    } else assert.ok(sameValue(got, resolvedLike(key, changes[key])), `${key}: pushed ${toJson(changes[key])}, config holds ${JSON.stringify(got)}`);
  }
  // 5: finite, no -0, every leaf inside its format; re-validation gives the same config.
  walkNumbers(config, '', (n, at) => {
    assert.ok(Number.isFinite(n), `${at} is ${n}`);
    assert.ok(!Object.is(n, -0), `${at} is -0`);
  });
  for (const [key, leaf] of allLeaves) {
    if (key === 'cameras') assert.equal(camerasProblem(config.cameras, true), null, 'accepted cameras break the model');
    else assert.ok(fmtValid(fmtOf(leaf), valueAt(config, key)), `${key} = ${JSON.stringify(valueAt(config, key))} is outside its format`);
  }
  assert.deepStrictEqual(validateConfigObject(structuredClone(config) as unknown as Record<string, unknown>), config, 'validateConfigObject changes the accepted config');
  // 4: every topic level is legal.
  for (const level of [...config.cameras.map((c) => c.id), ...config.mqtt.topicPrefix.split('/'), config.device.id]) {
    assert.equal(topicLevelProblem(level), null, `topic level ${JSON.stringify(level)}`);
    assert.ok(legalLevelIndependent(level), `topic level ${JSON.stringify(level)} is not legal`);
  }
  // 2: what `config check` does with the persisted file.
  persistConfig(stateFile, config, result.revision);
  const loaded = loadConfig(stateFile);
  assert.deepStrictEqual(loaded, config, 'the persisted config does not load back the same');
  // 3: the same changes again change nothing and keep the revision.
  let again: Record<string, unknown> = { transaction: 'tx-again', baseRevision: result.revision, changes: JSON.parse(JSON.stringify(changes)) };
  if (ctx.signed) again = signWith(again, signer.privateKey, config.device.id);
  const second = applyConfigPush(config, result.revision, Buffer.from(JSON.stringify(again)), ctx.options);
  assert.ok(second.ok, `the same push again was refused: ${second.ok ? '' : second.error}`);
  assert.deepEqual(second.changedKeys, []);
  assert.equal(second.revision, result.revision);
  assert.deepStrictEqual(second.config, config);
}

function signWith(request: Record<string, unknown>, key: crypto.KeyObject, device: string): Record<string, unknown> {
  return signConfigPush(request as Omit<ConfigPushRequest, 'signature'>, key, device) as unknown as Record<string, unknown>;
}

/** Run one push and check invariants 1-5; returns the result for property-specific checks. */
function runPush(text: string | Buffer, ctx: Ctx, signatureValid?: boolean): { result: ConfigPushResult; request: Record<string, unknown>; expectation: Expectation } {
  try {
    return runPushUnlabelled(text, ctx, signatureValid);
  } catch (err) {
    if (err instanceof Error) err.message += `\n    payload: ${String(text)}`;
    throw err;
  }
}

function runPushUnlabelled(text: string | Buffer, ctx: Ctx, signatureValid?: boolean): { result: ConfigPushResult; request: Record<string, unknown>; expectation: Expectation } {
  const payload = Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8');
  const request = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  const expectation = expect(request, { allow: ctx.allow, signed: ctx.signed, signatureValid });
  const result = applyConfigPush(current, REV, payload, ctx.options);
  if (process.env.FUZZ_STATS) stats.set(`${result.ok ? (result.changedKeys.length ? 'ok+changed' : 'ok-same') : 'refused'}`, (stats.get(`${result.ok ? (result.changedKeys.length ? 'ok+changed' : 'ok-same') : 'refused'}`) ?? 0) + 1);
  assertUntouched();
  assert.ok(validateResponse(configPushResponse(result, REV)), `response breaks the published schema: ${JSON.stringify(validateResponse.errors)}`);
  if (result.ok) {
    assert.ok(expectation.valid, `accepted, but the model says refuse (offending: ${expectation.offenders.join(', ')})`);
    assert.equal(result.transaction, request.transaction);
    // What the device accepts, the published request schema accepts too.
    assert.ok(validateRequest(request), `accepted a request the published schema refuses: ${JSON.stringify(validateRequest.errors)}`);
    checkAccepted(result, request, ctx);
  } else {
    assert.ok(!expectation.valid, `refused a push the model accepts: ${result.error}`);
    // 1: a refusal names what is wrong and changes nothing.
    assert.equal(typeof result.error, 'string');
    assert.ok(result.error.length > 0);
    assert.ok(expectation.offenders.some((o) => result.error.includes(o.length > 80 ? o.slice(0, 80) : o)), `error ${JSON.stringify(result.error)} names none of ${JSON.stringify(expectation.offenders)}`);
    assert.equal(result.transaction, expectation.transaction);
  }
  return { result, request, expectation };
}

const stats = new Map<string, number>();
function property<T>(name: string, arb: fc.Arbitrary<T>, numRuns: number, body: (value: T) => void): void {
  test(name, (t) => {
    t.diagnostic(`seed ${SEED}, ${RUNS ?? numRuns} runs`);
    // Shrinking stays on (no endOnFailure): the failure message holds the minimal counterexample.
    stats.clear();
    fc.assert(fc.property(arb, body), { seed: SEED, numRuns: RUNS ?? numRuns, includeErrorInReport: true });
    if (process.env.FUZZ_STATS) t.diagnostic(JSON.stringify([...stats]));
  });
}

// ---- properties ------------------------------------------------------------------------------

describe('remote config pushes, fuzzed', () => {
  test('the model knows every format of the schema', () => {
    for (const [key, leaf] of [...allLeaves, ...cameraFields.map(([f, l]) => [`cameras.${f}`, l] as [string, Leaf])]) {
      const fmt = fmtOf(leaf);
      // The exact-kind check of pushes and the model agree on the kinds a leaf takes.
      assert.ok(leafKinds(leaf).length > 0, key);
      if (fmt.kind !== 'camera-list') assert.ok(fmtValid(fmt, leaf.default), `${key}: its default breaks the model`);
    }
    // The hostile generator is hostile (and the legality check agrees with topicLevelProblem on it).
    fc.assert(fc.property(hostileLevel, (level) => {
      assert.notEqual(topicLevelProblem(level), null, JSON.stringify(level));
      assert.equal(legalLevelIndependent(level), false, JSON.stringify(level));
    }), { seed: SEED, numRuns: 300, includeErrorInReport: true });
  });

  property('every key allowed, unsigned: generated pushes (invariants 1-5)', fc.record({ envelope: fc.oneof({ weight: 4, arbitrary: fc.constant<Envelope>({ transaction: 'tx-1', baseRevision: REV }) }, { weight: 1, arbitrary: envelopeWithMissing }), changes: changeSets(false) }), 300, (push) => {
    runPush(toJson(buildRequest(push)), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
  });

  // Most generated pushes are refused somewhere; this one keeps only changes the model accepts, so
  // multi-key accepted pushes (persist, reload, revision, replay) are exercised in bulk.
  const validChange = changeFor(allLeaves, false).filter(([key, value]) => changeValid(key, normalizeZero(JSON.parse(toJson(value))), { allow: ALL_KEYS_ALLOW, signed: false }));
  property('every key allowed, unsigned: valid pushes are accepted (invariants 2, 3, 5)', fc.uniqueArray(validChange, { minLength: 1, maxLength: 6, selector: ([k]) => k }), 200, (changes) => {
    const { result } = runPush(toJson(buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes })), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
    assert.ok(result.ok);
  });

  property('default allow-list: keys outside it are refused, naming the key', changeSets(false, 3), 200, (changes) => {
    const { result, request } = runPush(toJson(buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes })), { options: pushOptionsFrom(current), allow: DEFAULT_ALLOW, signed: false });
    if (result.ok) for (const key of Object.keys(request.changes as object)) assert.ok(isAllowed(key, DEFAULT_ALLOW), key);
  });

  property('envelope: transaction, baseRevision, unknown fields, signature junk', fc.record({ envelope: envelopeWithMissing, changes: fc.constantFrom<Change[]>([['inference.sensitivity', 0.25]], [['regions.topK', 2], ['crops.onlyNG', false]], [['inference.sensitivity', 0]]) }), 300, (push) => {
    runPush(toJson(buildRequest(push)), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
  });

  property('topic levels: hostile camera ids and prefix levels are always refused', fc.tuple(hostileLevel, fc.nat(), fc.boolean()), 300, ([level, at, asPrefix]) => {
    fc.pre(!(asPrefix && level.includes('/'))); // in a prefix '/' separates levels: "c/am1" is two legal ones
    const changes: Change[] = asPrefix
      ? [['mqtt.topicPrefix', ['acme', level, 'line3'].slice(at % 2).join('/')]]
      : [['cameras', [{ id: 'cam2', source: 'usb' }, { id: level, source: 'rtsp', url: 'rtsp://cam/s' }].slice(at % 2)]];
    const { result } = runPush(toJson(buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes })), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
    assert.equal(result.ok, false, `accepted the hostile level ${JSON.stringify(level)}`);
  });

  property('topic levels: any string as a camera id is accepted exactly when it is a legal level', fc.oneof(anyString, validLevel, hostileLevel), 300, (id) => {
    const { result } = runPush(toJson(buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes: [['cameras', [{ id, source: 'gige', address: '10.0.0.9' }]]] })), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
    assert.equal(result.ok, topicLevelProblem(id) === null, `id ${JSON.stringify(id)}`);
    if (result.ok) assert.ok(legalLevelIndependent(id), `accepted the illegal id ${JSON.stringify(id)}`);
  });

  const numericLeaves = [
    ...allLeaves.filter(([, leaf]) => leafKinds(leaf).includes('number')).map(([key, leaf]) => ({ key, leaf, camera: false })),
    ...cameraFields.filter(([, leaf]) => leafKinds(leaf).includes('number')).map(([key, leaf]) => ({ key: key as string, leaf, camera: true })),
  ];
  property('numbers: every numeric leaf, with JSON tricks, stays finite and in range', fc.constantFrom(...numericLeaves).chain((n) => {
    const fmt = fmtOf(n.leaf);
    const values = fmt.kind === 'number' || fmt.kind === 'integer' ? numbersIn(fmt.min, fmt.max, fmt.kind === 'integer') : valuesFor(n.key, n.leaf);
    return fc.tuple(fc.constant(n), fc.oneof(values, anyNumber()));
  }), 400, ([n, value]) => {
    const change: Change = n.camera ? ['cameras', [{ id: 'cam2', source: 'usb', [n.key]: value }]] : [n.key, value];
    const { result } = runPush(toJson(buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes: [change] })), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
    if (result.ok) {
      const got = n.camera ? (result.config.cameras[0] as Record<string, unknown>)[n.key] : valueAt(result.config, n.key);
      assert.ok(fmtValid(fmtOf(n.leaf), got), `${n.key} = ${String(got)} accepted from ${toJson(value)}`);
    }
  });

  // Random runs reach a given leaf with a given trick rarely: every numeric leaf meets every trick once.
  test('numbers: every numeric leaf x every JSON number trick (exhaustive)', () => {
    const tricks = [...NUMBER_TRICKS, '-0.5', '1.5', '65536', '3600001', '4294836226', '9007199254740991', '1e3', '1000.0000000000001'];
    let accepted = 0;
    for (const n of numericLeaves) {
      for (const trick of tricks) {
        const change: Change = n.camera ? ['cameras', [{ id: 'cam2', source: 'usb', [n.key]: raw(trick) }]] : [n.key, raw(trick)];
        const { result } = runPush(toJson(buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes: [change] })), { options: unsignedAll(), allow: ALL_KEYS_ALLOW, signed: false });
        if (result.ok) accepted++;
      }
    }
    assert.ok(accepted > 0 && numericLeaves.length > 30, `${accepted} accepted over ${numericLeaves.length} leaves`);
  });

  const signatureKinds = fc.constantFrom('valid', 'valid', 'valid', 'valid', 'valid', 'valid', 'otherKey', 'otherDevice', 'junk', 'number', 'missing', 'tampered');
  property('signed device: signed-only keys open up, bad signatures are refused', fc.tuple(fc.uniqueArray(changeFor(allLeaves, true), { minLength: 1, maxLength: 2, selector: ([k]) => k }), signatureKinds), 200, ([changes, kind]) => {
    const unsigned = buildRequest({ envelope: { transaction: 'tx-1', baseRevision: REV }, changes });
    const text = toJson(unsigned);
    const parsed = JSON.parse(text) as Record<string, unknown>;
    let signature: unknown = Buffer.alloc(64, 7).toString('base64');
    let signable = true;
    try {
      canonicalJson(parsed);
    } catch {
      signable = false; // a non-finite number (1e309) has no canonical form: nobody can sign it
    }
    // Unsignable pushes are covered by the 1e309 test below.
    fc.pre(signable || kind === 'missing' || kind === 'number');
    if (signable) {
      if (kind === 'valid' || kind === 'tampered') signature = signWith(parsed, signer.privateKey, DEVICE).signature;
      if (kind === 'otherKey') signature = signWith(parsed, otherSigner.privateKey, DEVICE).signature;
      if (kind === 'otherDevice') signature = signWith(parsed, signer.privateKey, 'line3-pc2').signature;
    }
    if (kind === 'number') signature = 12345;
    let payload = kind === 'missing' ? text : `${text.slice(0, -1)},"signature":${JSON.stringify(signature)}}`;
    if (kind === 'tampered') payload = payload.replace('"tx-1"', '"tx-2"');
    const valid = kind === 'valid' && signable;
    const ctx: Ctx = { options: { ...unsignedAll(), publicKey: publicKeyPem }, allow: ALL_KEYS_ALLOW, signed: true };
    runPush(payload, ctx, valid);
  });

  // Found by this file: the signed bytes could not be built for the Infinity JSON's 1e309 parses
  // to, and the push was refused as an internal error naming no key.
  test('signed device: 1e309 with a well-formed signature is refused naming the key, not as an internal error', () => {
    const payload = `{"transaction":"tx-1","baseRevision":${REV},"changes":{"inference.sensitivity":1e309},"signature":${JSON.stringify(Buffer.alloc(64, 7).toString('base64'))}}`;
    const result = applyConfigPush(current, REV, Buffer.from(payload), { ...unsignedAll(), publicKey: publicKeyPem });
    assertUntouched();
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.doesNotMatch(result.error, /internal error/);
    assert.match(result.error, /inference\.sensitivity|signature does not verify/);
  });
});
