// Remote config pushes: every bad push is rejected naming its problem with the running config (and
// Object.prototype) untouched; good pushes report what changed and what must restart.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { loadConfig, redact, validateConfigObject, type AppConfig } from '../src/config/load.js';
import { applyConfigPush, configPushResponse, pushOptionsFrom, type ConfigPushOptions } from '../src/config/remote.js';
import type { ConfigPushRequest } from '../src/config/push-request.js';
import { canonicalJson, configPushSigningBytes, signConfigPush } from '../src/config/push-signing.js';
import { persistConfig } from './helpers/persist-config.js';
import { tempDir } from './helpers/cleanup.js';

const REVISION = 3;
const DEVICE = 'line3-pc1';

// Set up at load time: the case table below is built while tests are registered.
const root = tempDir('remote');
const modelsDir = path.join(root, 'models');
const outsideDir = path.join(root, 'outside');
const imagesDir = path.join(root, 'images');
const prototypeNames = Object.getOwnPropertyNames(Object.prototype).sort();

const signer = crypto.generateKeyPairSync('ed25519');
const otherSigner = crypto.generateKeyPairSync('ed25519');
const publicKeyPem = signer.publicKey.export({ type: 'spki', format: 'pem' }).toString();

for (const dir of [modelsDir, path.join(modelsDir, 'sub'), outsideDir, imagesDir]) fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(modelsDir, 'current.onnx'), 'model A');
fs.writeFileSync(path.join(modelsDir, 'sub', 'next.onnx'), 'model B');
fs.writeFileSync(path.join(modelsDir, 'weights.bin'), 'not a model');
fs.writeFileSync(path.join(outsideDir, 'evil.onnx'), 'outside');
fs.symlinkSync(path.join(outsideDir, 'evil.onnx'), path.join(modelsDir, 'escape.onnx'));
fs.symlinkSync(path.join(modelsDir, 'weights.bin'), path.join(modelsDir, 'alias.onnx'));
fs.symlinkSync(path.join(modelsDir, 'sub', 'next.onnx'), path.join(modelsDir, 'latest.onnx'));
fs.symlinkSync(outsideDir, path.join(modelsDir, 'linkdir'));
fs.mkdirSync(path.join(modelsDir, 'dir.onnx'));

const current: AppConfig = validateConfigObject({
  device: { id: DEVICE },
  cameras: [
    { id: 'cam1', source: 'folder', path: imagesDir, fps: 2 },
    { id: 'cam2', source: 'usb', device: '/dev/video0', roi: { x: 0, y: 0, width: 640, height: 480 } },
  ],
  model: { path: path.join(modelsDir, 'current.onnx'), modelsDir },
  remoteConfig: { revision: REVISION },
});
const snapshot = structuredClone(current);


function options(overrides: Partial<ConfigPushOptions> = {}): ConfigPushOptions {
  return { ...pushOptionsFrom(current), ...overrides };
}

function bytes(request: unknown): Buffer {
  return Buffer.isBuffer(request) ? request : Buffer.from(typeof request === 'string' ? request : JSON.stringify(request));
}

function req(changes: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { transaction: 'tx-1', baseRevision: REVISION, changes, ...extra };
}

function signed(request: Record<string, unknown>, key = signer.privateKey, device = DEVICE): ConfigPushRequest {
  return signConfigPush(request as Omit<ConfigPushRequest, 'signature'>, key, device);
}

function assertUntouched(): void {
  assert.deepEqual(current, snapshot, 'running config must not change');
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeNames, 'Object.prototype gained properties');
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype polluted');
}

type BadPush = { name: string; payload: unknown; error: RegExp; options?: Partial<ConfigPushOptions>; transaction?: string | null; env?: Record<string, string> };

const deep = (levels: number): string => `${'['.repeat(levels)}1${']'.repeat(levels)}`;

const badPushes = (): BadPush[] => [
  // bytes and JSON
  { name: 'malformed JSON', payload: '{"transaction": "tx-1", "baseRevision": 3,', error: /payload is not valid JSON/, transaction: null },
  { name: 'a JSON string, not an object', payload: '"set everything"', error: /must be a JSON object, got string/, transaction: null },
  { name: 'a JSON array', payload: '[{"transaction": "tx-1"}]', error: /must be a JSON object, got array/, transaction: null },
  { name: 'JSON null', payload: 'null', error: /must be a JSON object, got null/, transaction: null },
  { name: 'empty payload', payload: Buffer.alloc(0), error: /payload is empty/, transaction: null },
  {
    name: 'payload over maxPayloadBytes (rejected before parsing: it is not even JSON)',
    payload: `{"transaction": "tx-1", "pad": "${'x'.repeat(2000)}"`,
    options: { maxPayloadBytes: 1024 },
    error: /payload is 20\d\d bytes; the limit is 1024 \(remoteConfig.maxPayloadBytes\)/,
    transaction: null,
  },
  { name: 'UTF-8 byte-order mark', payload: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes(req({ 'inference.sensitivity': 0.1 }))]), error: /byte-order mark/, transaction: null },
  {
    name: 'invalid UTF-8 inside a string',
    payload: Buffer.concat([Buffer.from('{"transaction": "tx-'), Buffer.from([0xff, 0xfe]), Buffer.from('", "baseRevision": 3, "changes": {}}')]),
    error: /not valid UTF-8/,
    transaction: null,
  },
  { name: 'nesting deeper than 32 levels', payload: `{"transaction": "tx-1", "baseRevision": 3, "changes": {"cameras": ${deep(40)}}}`, error: /nested deeper than 32 levels/, transaction: null },
  // prototype keys, anywhere
  {
    name: '__proto__ at the top level',
    payload: '{"__proto__": {"polluted": true}, "transaction": "tx-1", "baseRevision": 3, "changes": {"inference.sensitivity": 0.1}}',
    error: /forbidden key "__proto__" at the top level/,
    transaction: null,
  },
  {
    name: '__proto__ as a changes key',
    payload: '{"transaction": "tx-1", "baseRevision": 3, "changes": {"__proto__": {"polluted": true}}}',
    error: /forbidden key "__proto__" at changes/,
    transaction: null,
  },
  {
    name: '__proto__ nested in a camera object',
    payload: `{"transaction": "tx-1", "baseRevision": 3, "changes": {"cameras": [{"id": "cam1", "source": "folder", "path": ${JSON.stringify(os.tmpdir())}, "__proto__": {"polluted": true}}]}}`,
    error: /forbidden key "__proto__" at changes\.cameras\[0\]/,
    transaction: null,
  },
  { name: '"constructor.prototype" dotted key', payload: req({ 'constructor.prototype': { polluted: true } }), error: /forbidden key "constructor.prototype"/, transaction: null },
  { name: '"prototype" key', payload: req({ prototype: { polluted: true } }), error: /forbidden key "prototype"/, transaction: null },
  { name: '"inference.constructor" dotted segment', payload: req({ 'inference.constructor': 1 }), error: /forbidden key "inference.constructor"/, transaction: null },
  {
    name: 'constructor inside a camera roi',
    payload: req({ cameras: [{ id: 'cam1', source: 'usb', roi: { x: 0, y: 0, width: 1, height: 1, constructor: { prototype: { polluted: true } } } }] }),
    error: /forbidden key "constructor" at changes\.cameras\[0\]\.roi/,
    transaction: null,
  },
  // envelope
  { name: 'missing transaction', payload: { baseRevision: REVISION, changes: { 'inference.sensitivity': 0.1 } }, error: /transaction is missing/, transaction: null },
  { name: 'non-string transaction', payload: req({ 'inference.sensitivity': 0.1 }, { transaction: 42 }), error: /transaction must be a string, got number/, transaction: null },
  { name: 'empty transaction', payload: req({ 'inference.sensitivity': 0.1 }, { transaction: '' }), error: /transaction must be 1 to 128 characters long, got 0/, transaction: null },
  { name: 'overlong transaction', payload: req({ 'inference.sensitivity': 0.1 }, { transaction: 't'.repeat(129) }), error: /1 to 128 characters long, got 129/, transaction: null },
  { name: 'transaction with a newline', payload: req({ 'inference.sensitivity': 0.1 }, { transaction: 'tx\nfake log line' }), error: /control characters/, transaction: null },
  { name: 'unknown top-level field', payload: req({ 'inference.sensitivity': 0.1 }, { dryRun: true }), error: /unknown field "dryRun"/ },
  { name: 'missing baseRevision', payload: { transaction: 'tx-1', changes: { 'inference.sensitivity': 0.1 } }, error: /baseRevision is missing/ },
  { name: 'stale baseRevision', payload: req({ 'inference.sensitivity': 0.1 }, { baseRevision: REVISION - 1 }), error: /stale baseRevision 2: the current revision is 3/ },
  { name: 'future baseRevision', payload: req({ 'inference.sensitivity': 0.1 }, { baseRevision: REVISION + 1 }), error: /stale baseRevision 4/ },
  { name: 'fractional baseRevision', payload: req({ 'inference.sensitivity': 0.1 }, { baseRevision: 3.5 }), error: /baseRevision must be a non-negative integer, got 3.5/ },
  { name: 'string baseRevision', payload: req({ 'inference.sensitivity': 0.1 }, { baseRevision: '3' }), error: /baseRevision must be a non-negative integer, got "3"/ },
  { name: 'missing changes', payload: { transaction: 'tx-1', baseRevision: REVISION }, error: /changes is missing/ },
  { name: 'null changes', payload: req(null), error: /changes must be an object .* got null/ },
  { name: 'changes as an array', payload: req([['inference.sensitivity', 0.1]]), error: /changes must be an object .* got array/ },
  { name: 'empty changes', payload: req({}), error: /changes is empty: nothing to apply/ },
  // keys
  { name: 'unknown key', payload: req({ 'inference.foo': 1 }), error: /unknown configuration key "inference.foo"/ },
  { name: 'unknown top-level section', payload: req({ bogus: 1 }), error: /unknown configuration key "bogus"/ },
  { name: 'key nested below a setting', payload: req({ 'inference.sensitivity.max': 1 }), error: /unknown configuration key "inference.sensitivity.max": "inference.sensitivity" is a single setting/ },
  { name: 'group instead of a setting', payload: req({ 'mqtt.qos': { result: 2 } }), error: /"mqtt.qos" is a group of settings/ },
  { name: 'badly formed dotted key', payload: req({ 'inference..sensitivity': 0.1 }), error: /"inference..sensitivity" is not a dotted configuration key/ },
  { name: 'unknown field in a camera', payload: req({ cameras: [{ id: 'cam1', source: 'folder', path: imagesDir, exposure: 10 }] }), error: /cameras\[0\]\.exposure: unknown camera field/ },
  { name: 'allow-list: service.stateDir', payload: req({ 'service.stateDir': '/tmp' }), error: /"service.stateDir" is not in the remote allow-list/ },
  { name: 'allow-list: mqtt.url with the default list', payload: req({ 'mqtt.url': 'mqtt://evil:1883' }), error: /"mqtt.url" is not in the remote allow-list/ },
  { name: 'allow-list: exact entry does not cover children', payload: req({ 'regions.topK': 3 }), options: { allow: ['regions'] }, error: /"regions.topK" is not in the remote allow-list/ },
  { name: 'allow-list: a prefix needs its dot', payload: req({ 'inference.sensitivity': 0.1 }), options: { allow: ['inference.sens'] }, error: /not in the remote allow-list/ },
  { name: 'remoteConfig.allow, even when allowed', payload: req({ 'remoteConfig.allow': ['service.'] }), options: { allow: ['remoteConfig.', 'remoteConfig.allow'] }, error: /"remoteConfig.allow" can never be changed remotely/ },
  { name: 'remoteConfig.publicKey, even when allowed', payload: req({ 'remoteConfig.publicKey': '' }), options: { allow: ['remoteConfig.'] }, error: /"remoteConfig.publicKey" can never be changed remotely/ },
  { name: 'remoteConfig.revision', payload: req({ 'remoteConfig.revision': 99 }), options: { allow: ['remoteConfig.'] }, error: /"remoteConfig.revision" can never be changed remotely/ },
  { name: 'model.modelsDir, even with model. allowed', payload: req({ 'model.modelsDir': '/' }), options: { allow: ['model.'] }, error: /"model.modelsDir" can never be changed remotely/ },
  { name: 'key fixed by the environment', payload: req({ 'model.path': 'sub/next.onnx' }), env: { CRAD_MODEL: '/opt/model.onnx' }, error: /"model.path" is set by the environment variable CRAD_MODEL/ },
  // types and ranges
  { name: 'string for a number', payload: req({ 'inference.sensitivity': '0.3' }), error: /"inference.sensitivity" must be a number, got a string/ },
  { name: 'string for a boolean', payload: req({ 'crops.enabled': 'yes' }), error: /"crops.enabled" must be a boolean, got a string/ },
  { name: 'null for a number', payload: req({ 'crops.quality': null }), error: /"crops.quality" must be a number, got null/ },
  { name: 'object for a nullable number', payload: req({ 'inference.imageThreshold': { value: 1 } }), error: /"inference.imageThreshold" must be a number or null, got an object/ },
  { name: 'string for a camera fps', payload: req({ cameras: [{ id: 'cam1', source: 'folder', path: imagesDir, fps: '3' }] }), error: /"cameras\[0\]\.fps" must be a number, got a string/ },
  { name: 'sensitivity out of range', payload: req({ 'inference.sensitivity': 2 }), error: /inference.sensitivity: must be between -0.5 and 0.5/ },
  { name: 'negative natural number', payload: req({ 'regions.minArea': -1 }), error: /regions.minArea: must be a positive integer/ },
  { name: 'JPEG quality 0', payload: req({ 'crops.quality': 0 }), error: /crops.quality: must be between 1 and 100/ },
  { name: 'QoS 3', payload: req({ 'mqtt.qos.result': 3 }), error: /mqtt.qos.result: must be 0, 1 or 2/ },
  { name: 'bad enum value', payload: req({ 'model.graphOptimization': 'max' }), options: { allow: ['model.'] }, error: /model.graphOptimization: must be one of the possible values/ },
  { name: 'invalid topic level in the prefix', payload: req({ 'mqtt.topicPrefix': 'acme/+/line3' }), options: { allow: ['mqtt.'] }, error: /mqtt.topicPrefix: level "\+" is not a valid MQTT topic level/ },
  // cameras
  {
    name: 'duplicate camera ids',
    payload: req({ cameras: [{ id: 'cam1', source: 'folder', path: imagesDir }, { id: 'cam1', source: 'usb' }] }),
    error: /cameras\[1\]\.id: duplicate camera id "cam1"/,
  },
  { name: 'invalid camera source', payload: req({ cameras: [{ id: 'cam1', source: 'ftp' }] }), error: /cameras\[0\]\.source: must be one of the possible values/ },
  { name: 'invalid ROI', payload: req({ cameras: [{ id: 'cam1', source: 'usb', roi: { x: 0, y: 0, width: 0, height: 10 } }] }), error: /cameras\[0\]\.roi: width must be an integer >= 1/ },
  { name: 'ROI with a missing key', payload: req({ cameras: [{ id: 'cam1', source: 'usb', roi: { x: 0, y: 0, width: 5 } }] }), error: /cameras\[0\]\.roi: must have exactly the keys x, y, width, height/ },
  { name: 'camera id that is not a topic level', payload: req({ cameras: [{ id: 'cam/1', source: 'usb' }] }), error: /cameras\[0\]\.id: must be a single MQTT topic level/ },
  { name: 'camera entry that is not an object', payload: req({ cameras: [{ id: 'cam1', source: 'usb' }, 'cam2'] }), error: /cameras\[1\] must be an object, got string/ },
  { name: 'camera without the path its source needs', payload: req({ cameras: [{ id: 'cam1', source: 'folder' }] }), error: /cameras\[0\]\.path: required for source "folder"/ },
  { name: 'relative camera path', payload: req({ cameras: [{ id: 'cam1', source: 'folder', path: 'images' }] }), error: /cameras\[0\]\.path: must be an absolute path in a remote push/ },
  { name: 'cameras as an object', payload: req({ cameras: { cam1: { source: 'usb' } } }), error: /"cameras" must be an array, got an object/ },
  // model path
  { name: 'model.path traversal', payload: req({ 'model.path': '../../etc/passwd.onnx' }), error: /model.path "..\/..\/etc\/passwd.onnx" is outside the models directory/ },
  { name: 'model.path absolute outside the directory', payload: req({ 'model.path': path.join(outsideDir, 'evil.onnx') }), error: /is outside the models directory/ },
  { name: 'model.path symlink escape', payload: req({ 'model.path': 'escape.onnx' }), error: /model.path "escape.onnx" leads through a symbolic link to .*evil.onnx, outside the models directory/ },
  { name: 'model.path through a linked directory', payload: req({ 'model.path': 'linkdir/evil.onnx' }), error: /leads through a symbolic link .* outside the models directory/ },
  { name: 'model.path not .onnx', payload: req({ 'model.path': 'weights.bin' }), error: /model.path "weights.bin" must name an .onnx file/ },
  { name: 'model.path .onnx link to a non-onnx file', payload: req({ 'model.path': 'alias.onnx' }), error: /links to .*weights.bin, which is not an .onnx file/ },
  { name: 'model.path missing file', payload: req({ 'model.path': 'missing.onnx' }), error: /model.path "missing.onnx": no such file in the models directory/ },
  { name: 'model.path that is a directory', payload: req({ 'model.path': 'dir.onnx' }), error: /"dir.onnx" is not a regular file/ },
  { name: 'model.path as a number', payload: req({ 'model.path': 5 }), error: /"model.path" must be a string, got a number/ },
  // signatures
  { name: 'missing signature when a key is set', payload: req({ 'inference.sensitivity': 0.1 }), options: { publicKey: publicKeyPem }, error: /signature is missing: this device accepts only signed pushes/ },
  { name: 'signature that is not base64 of 64 bytes', payload: req({ 'inference.sensitivity': 0.1 }, { signature: 'c2lnbmF0dXJl' }), options: { publicKey: publicKeyPem }, error: /signature must be the base64 of a 64-byte Ed25519 signature/ },
  { name: 'signature of the wrong JSON type', payload: req({ 'inference.sensitivity': 0.1 }, { signature: 12345 }), options: { publicKey: publicKeyPem }, error: /signature must be the base64/ },
  { name: 'garbage signature', payload: req({ 'inference.sensitivity': 0.1 }, { signature: Buffer.alloc(64, 7).toString('base64') }), options: { publicKey: publicKeyPem }, error: /signature does not verify/ },
  { name: 'signature by another key', payload: () => signed(req({ 'inference.sensitivity': 0.1 }), otherSigner.privateKey), options: { publicKey: publicKeyPem }, error: /signature does not verify/ },
  {
    name: 'payload tampered after signing',
    payload: () => ({ ...signed(req({ 'inference.sensitivity': 0.1 })), changes: { 'inference.sensitivity': -0.5 } }),
    options: { publicKey: publicKeyPem },
    error: /signature does not verify/,
  },
  { name: 'signature made for another device', payload: () => signed(req({ 'inference.sensitivity': 0.1 }), signer.privateKey, 'line3-pc2'), options: { publicKey: publicKeyPem }, error: /signature does not verify/ },
  {
    name: 'signed push replayed at a later revision',
    payload: () => signed(req({ 'inference.sensitivity': 0.1 }, { baseRevision: REVISION - 1 })),
    options: { publicKey: publicKeyPem },
    error: /stale baseRevision 2/,
  },
  { name: 'device key is not Ed25519', payload: req({ 'inference.sensitivity': 0.1 }), options: { publicKey: crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString() }, error: /remoteConfig.publicKey on this device is not a usable Ed25519 public key/ },
  // all or nothing
  { name: 'one good and one bad change', payload: req({ 'inference.sensitivity': 0.1, 'regions.topK': 'many' }), error: /"regions.topK" must be a number, got a string/ },
];

describe('bad pushes are rejected, naming the problem, and change nothing', () => {
  const cases = badPushes();
  test('there are at least 30 distinct bad pushes', () => assert.ok(cases.length >= 30 && new Set(cases.map((c) => c.name)).size === cases.length));
  for (const bad of cases) {
    test(bad.name, () => {
      const saved: Record<string, string | undefined> = {};
      for (const [name, value] of Object.entries(bad.env ?? {})) {
        saved[name] = process.env[name];
        process.env[name] = value;
      }
      try {
        const payload = typeof bad.payload === 'function' ? (bad.payload as () => unknown)() : bad.payload;
        const result = applyConfigPush(current, REVISION, bytes(payload), options(bad.options));
        assert.equal(result.ok, false, `accepted: ${JSON.stringify(result)}`);
        if (result.ok) return;
        assert.match(result.error, bad.error);
        assert.equal(result.transaction, bad.transaction === undefined ? 'tx-1' : bad.transaction);
        const response = configPushResponse(result, REVISION);
        assert.deepEqual(response, { transaction: result.transaction, status: 'error', error: result.error, revision: REVISION, restartRequired: [], changed: [] });
        assert.ok(validateResponse(response), JSON.stringify(validateResponse.errors));
      } finally {
        for (const [name, value] of Object.entries(saved)) {
          if (value === undefined) delete process.env[name];
          else process.env[name] = value;
        }
      }
      assertUntouched();
    });
  }
});

function accept(request: unknown, overrides: Partial<ConfigPushOptions> = {}) {
  const result = applyConfigPush(current, REVISION, bytes(request), options(overrides));
  if (!result.ok) assert.fail(`rejected: ${result.error}`);
  assertUntouched();
  assert.ok(validateResponse(configPushResponse(result, REVISION)), JSON.stringify(validateResponse.errors));
  return result;
}

describe('good pushes', () => {
  test('live keys: ok, changed listed and sorted, nothing to restart, revision +1', () => {
    const result = accept(req({ 'inference.sensitivity': -0.1, 'crops.onlyNG': false, 'mqtt.qos.result': 2 }));
    assert.equal(result.transaction, 'tx-1');
    assert.deepEqual(result.changedKeys, ['crops.onlyNG', 'inference.sensitivity', 'mqtt.qos.result']);
    assert.deepEqual(result.restartRequired, []);
    assert.equal(result.revision, REVISION + 1);
    assert.equal(result.config.remoteConfig.revision, REVISION + 1);
    assert.equal(result.config.inference.sensitivity, -0.1);
    assert.equal(result.config.crops.onlyNG, false);
    assert.equal(result.config.mqtt.qos.result, 2);
    assert.deepEqual(configPushResponse(result, REVISION), {
      transaction: 'tx-1', status: 'ok', revision: REVISION + 1, restartRequired: [], changed: ['crops.onlyNG', 'inference.sensitivity', 'mqtt.qos.result'],
    });
    // Everything else is carried over untouched.
    assert.deepEqual({ ...result.config, inference: current.inference, crops: current.crops, mqtt: current.mqtt, remoteConfig: current.remoteConfig }, current);
  });

  test('camera source change restarts that camera only', () => {
    const cameras = structuredClone(current.cameras);
    cameras[0] = { ...cameras[0]!, source: 'usb', device: '/dev/video2', path: '' };
    const result = accept(req({ cameras }));
    assert.deepEqual(result.changedKeys, ['cameras']);
    assert.deepEqual(result.restartRequired, ['camera:cam1']);
    assert.equal(result.config.cameras[0]!.source, 'usb');
    assert.deepEqual(result.config.cameras[1], current.cameras[1]);
  });

  test('camera fps, roi, stall timeout and reconnect delays apply live', () => {
    const cameras = structuredClone(current.cameras);
    cameras[0]!.fps = 10;
    cameras[0]!.reconnectMaxMs = 10000;
    cameras[1]!.roi = { x: 10, y: 10, width: 100, height: 100 };
    cameras[1]!.stallTimeoutMs = 9000;
    const result = accept(req({ cameras }));
    assert.deepEqual(result.changedKeys, ['cameras']);
    assert.deepEqual(result.restartRequired, []);
    assert.equal(result.config.cameras[0]!.fps, 10);
  });

  test('camera trigger mode or enabled flag changes restart that camera', () => {
    const cameras = structuredClone(current.cameras);
    cameras[0]!.trigger = 'mqtt';
    cameras[1]!.enabled = false;
    assert.deepEqual(accept(req({ cameras })).restartRequired, ['camera:cam1', 'camera:cam2']);
  });

  test('cameras added and removed are restarted; partial camera objects get schema defaults', () => {
    const result = accept(req({ cameras: [current.cameras[0], { id: 'cam3', source: 'gige', address: '192.168.10.20' }] }));
    assert.deepEqual(result.restartRequired, ['camera:cam2', 'camera:cam3']);
    const cam3 = result.config.cameras[1]!;
    assert.equal(cam3.trigger, 'free');
    assert.equal(cam3.stallTimeoutMs, 5000);
  });

  test('model.path relative to modelsDir: stored as the real path, model restarts', () => {
    const result = accept(req({ 'model.path': 'sub/next.onnx' }));
    assert.equal(result.config.model.path, fs.realpathSync(path.join(modelsDir, 'sub', 'next.onnx')));
    assert.deepEqual(result.restartRequired, ['model']);
  });

  test('model.path through a symlink that stays inside modelsDir pins its target', () => {
    const result = accept(req({ 'model.path': path.join(modelsDir, 'latest.onnx') }));
    assert.equal(result.config.model.path, fs.realpathSync(path.join(modelsDir, 'sub', 'next.onnx')));
  });

  test('broker settings name mqtt; other sections name their part', () => {
    const result = accept(req({ 'mqtt.url': 'mqtts://broker:8883', 'outbox.maxAgeHours': 24, 'log.level': 'debug' }), { allow: ['mqtt.', 'outbox.', 'log.'] });
    assert.deepEqual(result.restartRequired, ['daemon', 'mqtt', 'outbox']);
  });

  test('a push that changes no effective value is ok with the revision unchanged', () => {
    const result = accept(req({ 'inference.sensitivity': current.inference.sensitivity, cameras: current.cameras }));
    assert.deepEqual(result.changedKeys, []);
    assert.deepEqual(result.restartRequired, []);
    assert.equal(result.revision, REVISION);
  });

  test('signed push verifies with a PEM key and with a base64 SPKI DER key', () => {
    const request = signed(req({ 'inference.sensitivity': 0.2 }));
    assert.match(request.signature!, /^[A-Za-z0-9+/]{86}==$/);
    accept(request, { publicKey: publicKeyPem });
    const der = signer.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const result = accept(request, { publicKey: der });
    assert.deepEqual(result.changedKeys, ['inference.sensitivity']);
  });

  test('the signature covers the canonical form, not the bytes: key order and whitespace do not matter', () => {
    const request = signed(req({ 'inference.sensitivity': 0.2, 'crops.quality': 90 }));
    const reordered = `{ "signature": ${JSON.stringify(request.signature)},\n  "changes": {"crops.quality": 90, "inference.sensitivity": 0.2},\n  "baseRevision": 3, "transaction": "tx-1" }`;
    accept(reordered, { publicKey: publicKeyPem });
  });

  test('a signature is not required while no key is set', () => {
    accept(signed(req({ 'inference.sensitivity': 0.2 }), otherSigner.privateKey));
  });

  test('config/get answer redacts secrets', () => {
    const withSecrets = validateConfigObject({ ...structuredClone(current), mqtt: { ...current.mqtt, password: 'hunter2', url: 'mqtt://u:p@broker:1883' } } as unknown as Record<string, unknown>);
    const text = JSON.stringify(redact(withSecrets));
    assert.doesNotMatch(text, /hunter2|u:p@/);
    assert.match(text, /"revision":3/);
  });
});

describe('signing form', () => {
  test('canonical JSON sorts keys at every depth and drops whitespace', () => {
    assert.equal(canonicalJson({ b: [3, { z: 1, a: 'x' }], a: null, c: 1.5e-7, d: 'é"' }), '{"a":null,"b":[3,{"a":"x","z":1}],"c":1.5e-7,"d":"é\\""}');
  });

  test('signed bytes are context, device id and canonical request without the signature', () => {
    const request = { transaction: 't', baseRevision: 0, changes: { 'inference.sensitivity': 0.1 }, signature: 'ignored' };
    assert.equal(configPushSigningBytes(request, 'dev1').toString('utf8'), 'crad-edge/config-set/v1\ndev1\n{"baseRevision":0,"changes":{"inference.sensitivity":0.1},"transaction":"t"}');
  });

  test('signConfigPush refuses a key that is not Ed25519', () => {
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    assert.throws(() => signConfigPush({ transaction: 't', baseRevision: 0, changes: {} }, ec.privateKey, 'dev1'), /Ed25519/);
  });
});

// The JSON Schema is documentation; these checks keep it in step with what the code accepts.
const ajv = new Ajv2020({ strict: false });
const requestSchema = JSON.parse(fs.readFileSync(new URL('../schemas/config-set.schema.json', import.meta.url), 'utf8')) as Record<string, unknown>;
const validateRequest = ajv.compile(requestSchema);
const validateResponse = ajv.compile({ ...(requestSchema.$defs as Record<string, object>).response, $id: 'config-response' });

describe('JSON Schema of the request and the answer', () => {
  test('valid requests (signed and unsigned) match the schema', () => {
    assert.ok(validateRequest(req({ 'inference.sensitivity': 0.1 })), JSON.stringify(validateRequest.errors));
    assert.ok(validateRequest(signed(req({ cameras: [] }))), JSON.stringify(validateRequest.errors));
    for (const example of requestSchema.examples as unknown[]) assert.ok(validateRequest(example));
  });

  test('the schema rejects envelopes the code rejects', () => {
    for (const bad of [
      req({}),
      req(null),
      req({ 'constructor.prototype': 1 }),
      req({ prototype: 1 }),
      req({ 'mqtt.prototype.x': 1 }),
      req({ 'inference..sensitivity': 1 }),
      req({ 'inference.sensitivity': 0.1 }, { baseRevision: 1.5 }),
      req({ 'inference.sensitivity': 0.1 }, { transaction: '' }),
      req({ 'inference.sensitivity': 0.1 }, { dryRun: true }),
      req({ 'inference.sensitivity': 0.1 }, { signature: 'c2ln' }),
      { baseRevision: 1, changes: { 'inference.sensitivity': 0.1 } },
    ]) {
      assert.equal(validateRequest(bad), false, JSON.stringify(bad));
    }
  });
});

describe('persist and reload', () => {
  test('an applied push persists atomically and reloads with loadConfig to the same config', () => {
    const file = path.join(root, 'state', 'config.json');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const result = accept(req({ 'inference.sensitivity': 0.25, 'model.path': 'sub/next.onnx', cameras: [current.cameras[1]] }));
    persistConfig(file, result.config, result.revision);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['config.json'], 'temp file left behind');
    const reloaded = loadConfig(file);
    assert.deepEqual(reloaded, result.config);
    assert.equal(loadConfig(file).remoteConfig.revision, REVISION + 1);

    // The next push builds on the reloaded config and its revision.
    const second = applyConfigPush(reloaded, reloaded.remoteConfig.revision, bytes({ transaction: 'tx-2', baseRevision: REVISION + 1, changes: { 'regions.topK': 2 } }), pushOptionsFrom(reloaded));
    assert.ok(second.ok, second.ok ? '' : second.error);
    assert.equal(second.revision, REVISION + 2);
    const replay = applyConfigPush(second.config, second.revision, bytes({ transaction: 'tx-2', baseRevision: REVISION + 1, changes: { 'regions.topK': 2 } }), pushOptionsFrom(reloaded));
    assert.equal(replay.ok, false);
  });
});

test('ownKeys: the daemon\'s own change of a key outside the allow-list and signed-only (a model promoted into its recipe) goes through; the same push received is refused', () => {
  const recipes = { tiles: { model: { path: path.join(modelsDir, 'current.onnx') } } };
  const received = applyConfigPush(current, REVISION, bytes(req({ recipes })), options());
  assert.equal(received.ok, false);
  assert.match((received as { error: string }).error, /recipes/);
  const withAllow = applyConfigPush(current, REVISION, bytes(req({ recipes })), options({ allow: [...current.remoteConfig.allow, 'recipes'] }));
  assert.equal(withAllow.ok, false);
  assert.match((withAllow as { error: string }).error, /recipes: a push may change it only when signed/);
  const own = accept(req({ recipes }), { ownKeys: ['recipes'] });
  assert.deepEqual(own.changedKeys, ['recipes']);
  assert.deepEqual(own.config.recipes, recipes);
  // Only the keys named: another key in the same push is checked as any push's.
  const more = applyConfigPush(current, REVISION, bytes(req({ recipes, 'service.stateDir': '/tmp/elsewhere' })), options({ ownKeys: ['recipes'] }));
  assert.equal(more.ok, false);
});
