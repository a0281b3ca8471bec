// Remote configuration over real MQTT against a running daemon process: every bad push is answered
// on <prefix>/config/response with an error naming its problem (schema-valid answer) and changes
// nothing — not config/get, not the file on disk, not the results; a good push applies live and is
// persisted; a signing key makes unsigned pushes fail and signed ones pass; a model push or a model
// file replaced on disk swaps the model between batches without losing a frame, and a bad model is
// refused while the old one keeps serving.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadLayered } from '../src/config/layers.js';
import type { ConfigPushRequest } from '../src/config/push-request.js';
import { signConfigPush } from '../src/config/push-signing.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { Device } from './helpers/remote-device.js';
import { writeCorruptModel, writeModelVariant } from './helpers/model-variants.js';
import type { ResultSeen } from './helpers/reliability.js';
import { tempDir } from './helpers/cleanup.js';

const TOPIC_PREFIX = 'rc/plant';
const root = tempDir('remote-mqtt');
const modelsDir = path.join(root, 'models');
const outsideDir = path.join(root, 'outside');
const otherImages = path.join(root, 'other-images');
for (const dir of [modelsDir, outsideDir, otherImages]) fs.mkdirSync(dir);
fs.copyFileSync(demoModel, path.join(modelsDir, 'current.onnx'));
writeCorruptModel(demoModel, path.join(modelsDir, 'corrupt.onnx'));
writeModelVariant(demoModel, path.join(modelsDir, 'variant.onnx'), 'crad-edge.test.copy', 'pushed');
fs.writeFileSync(path.join(modelsDir, 'notes.txt'), 'not a model');
fs.copyFileSync(demoModel, path.join(outsideDir, 'evil.onnx'));
fs.symlinkSync(path.join(outsideDir, 'evil.onnx'), path.join(modelsDir, 'escape.onnx'));
for (const f of fs.readdirSync(samplesDir).filter((f) => f.endsWith('.png'))) fs.symlinkSync(path.join(samplesDir, f), path.join(otherImages, f));

let broker: Mosquitto;
after(async () => {
  await broker?.dispose();
});

function deviceConfig(id: string, extra: Record<string, unknown> = {}): string {
  const configFile = writeConfig({
    device: { id },
    model: { path: path.join(modelsDir, 'current.onnx'), modelsDir },
    // 2 fps: well below the model's rate, so a swap between batches must not cost a frame.
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 2 }],
    mqtt: { url: broker.url, topicPrefix: TOPIC_PREFIX, reconnectMinMs: 200, reconnectMaxMs: 1000 },
    crops: { enabled: false },
    ...extra,
  }, fs.mkdtempSync(path.join(root, `${id}-`)));
  return configFile;
}

const push = (changes: unknown, extra: Record<string, unknown> = {}) => ({ transaction: `tx-${crypto.randomUUID()}`, baseRevision: 0, changes, ...extra });
const cam1 = { id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 2 };

interface BadPush {
  name: string;
  payload: Buffer | string | Record<string, unknown>;
  error: RegExp;
  /** Refused before a usable transaction was read: the answer's transaction is null. */
  noTransaction?: true;
}

// Each is wrong in one way; each must be refused naming that way.
const badPushes: BadPush[] = [
  { name: 'malformed JSON', payload: '{"transaction": "t", "baseRevision": 0,', error: /not valid JSON/ },
  { name: 'a JSON array', payload: '[1, 2, 3]', error: /must be a JSON object, got array/ },
  { name: 'a JSON string', payload: '"inference.sensitivity=0.1"', error: /must be a JSON object, got string/ },
  { name: 'empty payload', payload: Buffer.alloc(0), error: /payload is empty/ },
  { name: 'UTF-8 byte-order mark', payload: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(push({ 'inference.sensitivity': 0.1 })))]), error: /byte-order mark/ },
  { name: 'invalid UTF-8', payload: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), error: /not valid UTF-8/ },
  { name: 'oversize payload', payload: push({ 'inference.sensitivity': 0.1 }, { padding: 'x'.repeat(70_000) }), error: /bytes; the limit is 65536/, noTransaction: true },
  { name: 'nested too deep', payload: push({ 'inference.sensitivity': JSON.parse('['.repeat(40) + ']'.repeat(40)) }), error: /nested deeper than 32/, noTransaction: true },
  { name: '__proto__ at the top level', payload: '{"transaction":"p1","baseRevision":0,"changes":{"inference.sensitivity":0.1},"__proto__":{"polluted":1}}', error: /forbidden key "__proto__"/ },
  { name: '__proto__ as a changes key', payload: '{"transaction":"p2","baseRevision":0,"changes":{"__proto__":{"polluted":1}}}', error: /forbidden key "__proto__"/ },
  { name: 'constructor.prototype as a dotted key', payload: push({ 'constructor.prototype.polluted': 1 }), error: /forbidden key "constructor\.prototype\.polluted"/, noTransaction: true },
  { name: 'prototype inside a camera', payload: push({ cameras: [{ ...cam1, prototype: { polluted: 1 } }] }), error: /forbidden key "prototype"/, noTransaction: true },
  { name: 'constructor deep inside a value', payload: push({ 'inference.sensitivity': { a: [{ constructor: { prototype: 1 } }] } }), error: /forbidden key "constructor"/, noTransaction: true },
  { name: 'transaction missing', payload: { baseRevision: 0, changes: { 'inference.sensitivity': 0.1 } }, error: /transaction is missing/ },
  { name: 'transaction not a string', payload: { transaction: 42, baseRevision: 0, changes: { 'inference.sensitivity': 0.1 } }, error: /transaction must be a string, got number/, noTransaction: true },
  { name: 'transaction too long', payload: { transaction: 't'.repeat(129), baseRevision: 0, changes: { 'inference.sensitivity': 0.1 } }, error: /1 to 128 characters long, got 129/, noTransaction: true },
  { name: 'transaction with a control character', payload: { transaction: 'a\nb', baseRevision: 0, changes: { 'inference.sensitivity': 0.1 } }, error: /control characters/, noTransaction: true },
  { name: 'unknown request field', payload: push({ 'inference.sensitivity': 0.1 }, { apply: 'now' }), error: /unknown field "apply" in the request/ },
  { name: 'baseRevision missing', payload: { transaction: 'no-base', changes: { 'inference.sensitivity': 0.1 } }, error: /baseRevision is missing/ },
  { name: 'stale baseRevision', payload: push({ 'inference.sensitivity': 0.1 }, { baseRevision: 7 }), error: /stale baseRevision 7: the current revision is 0/ },
  { name: 'negative baseRevision', payload: push({ 'inference.sensitivity': 0.1 }, { baseRevision: -1 }), error: /baseRevision must be a non-negative integer, got -1/ },
  { name: 'changes missing', payload: { transaction: 'no-changes', baseRevision: 0 }, error: /changes is missing/ },
  { name: 'changes empty', payload: push({}), error: /changes is empty/ },
  { name: 'changes an array', payload: push([['inference.sensitivity', 0.1]]), error: /changes must be an object .* got array/ },
  { name: 'too many changes', payload: push(Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`inference.k${i}`, 1]))), error: /changes has 257 keys; at most 256/ },
  { name: 'unknown key', payload: push({ 'inference.bogus': 1 }), error: /unknown configuration key "inference\.bogus"/ },
  { name: 'a group instead of a setting', payload: push({ inference: { sensitivity: 0.1 } }), error: /"inference" is a group of settings/ },
  { name: 'not a dotted key', payload: push({ 'inference..sensitivity': 0.1 }), error: /"inference\.\.sensitivity" is not a dotted configuration key/ },
  { name: 'number as a string', payload: push({ 'inference.sensitivity': '0.3' }), error: /"inference\.sensitivity" must be a number, got a string/ },
  { name: 'boolean as a string', payload: push({ 'crops.enabled': 'yes' }), error: /"crops\.enabled" must be a boolean, got a string/ },
  { name: 'sensitivity out of range', payload: push({ 'inference.sensitivity': 0.9 }), error: /inference\.sensitivity: must be between -0\.5 and 0\.5/ },
  { name: 'JPEG quality out of range', payload: push({ 'crops.quality': 101 }), error: /crops\.quality: must be between 1 and 100/ },
  { name: 'negative batch size', payload: push({ 'inference.maxBatch': -1 }), error: /inference\.maxBatch/ },
  { name: 'QoS 3', payload: push({ 'mqtt.qos.result': 3 }), error: /mqtt\.qos\.result.*must be 0, 1 or 2/ },
  { name: 'broker URL (outside the allow-list)', payload: push({ 'mqtt.url': 'mqtt://evil.example:1883' }), error: /"mqtt\.url" is not in the remote allow-list/ },
  { name: 'device id (outside the allow-list)', payload: push({ 'device.id': 'other' }), error: /"device\.id" is not in the remote allow-list/ },
  { name: 'outbox path (outside the allow-list)', payload: push({ 'outbox.path': '/tmp/elsewhere.sqlite' }), error: /"outbox\.path" is not in the remote allow-list/ },
  { name: 'remoteConfig.allow', payload: push({ 'remoteConfig.allow': ['mqtt.'] }), error: /"remoteConfig\.allow" can never be changed remotely/ },
  { name: 'remoteConfig.publicKey', payload: push({ 'remoteConfig.publicKey': 'AAAA' }), error: /"remoteConfig\.publicKey" can never be changed remotely/ },
  { name: 'remoteConfig.enabled', payload: push({ 'remoteConfig.enabled': false }), error: /"remoteConfig\.enabled" can never be changed remotely/ },
  { name: 'remoteConfig.revision', payload: push({ 'remoteConfig.revision': 99 }), error: /"remoteConfig\.revision" can never be changed remotely/ },
  { name: 'model.modelsDir', payload: push({ 'model.modelsDir': '/' }), error: /"model\.modelsDir" can never be changed remotely/ },
  { name: 'model.path traversal', payload: push({ 'model.path': '../outside/evil.onnx' }), error: /outside the models directory/ },
  { name: 'model.path absolute outside', payload: push({ 'model.path': path.join(outsideDir, 'evil.onnx') }), error: /outside the models directory/ },
  { name: 'model.path through a symlink out', payload: push({ 'model.path': 'escape.onnx' }), error: /symbolic link .* outside the models directory/ },
  { name: 'model.path not .onnx', payload: push({ 'model.path': 'notes.txt' }), error: /must name an \.onnx file/ },
  { name: 'model.path that does not exist', payload: push({ 'model.path': 'missing.onnx' }), error: /no such file in the models directory/ },
  { name: 'model.path with NUL', payload: push({ 'model.path': 'current.onnx\u0000.onnx' }), error: /NUL/ },
  { name: 'unsigned GStreamer camera', payload: push({ cameras: [cam1, { id: 'gst', source: 'gstreamer', pipeline: 'videotestsrc ! videoconvert ! appsink' }] }), error: /gstreamer source \(camera "gst"\) only when signed/ },
  { name: 'unsigned folder path change', payload: push({ cameras: [{ ...cam1, path: otherImages }] }), error: /folder source \(camera "cam1"\) only when signed/ },
  { name: 'unknown camera field', payload: push({ cameras: [{ ...cam1, exposure: 10 }] }), error: /cameras\[0\]\.exposure: unknown camera field/ },
  { name: 'relative camera path', payload: push({ cameras: [{ ...cam1, path: 'images' }] }), error: /cameras\[0\]\.path: must be an absolute path/ },
  { name: 'duplicate camera ids', payload: push({ cameras: [cam1, cam1] }), error: /duplicate camera id "cam1"/ },
  { name: 'camera fps of the wrong type', payload: push({ cameras: [{ ...cam1, fps: '2' }] }), error: /cameras\[0\]\.fps.* must be a number, got a string/ },
];

/** The transaction a push names, if it is a readable string (the answer must echo it). */
function transactionOf(payload: BadPush['payload']): string | null {
  if (typeof payload === 'object' && !Buffer.isBuffer(payload)) return typeof payload.transaction === 'string' ? payload.transaction : null;
  return null;
}

test(`${badPushes.length} bad pushes over MQTT are refused naming the problem and change nothing; a good push applies live and persists; model pushes and file swaps`, { timeout: 300_000 }, async () => {
  broker = await Mosquitto.start();
  const configFile = deviceConfig('rc1');
  const device = new Device(broker.url, TOPIC_PREFIX, 'rc1', configFile);
  try {
    await device.start();
    const before = await device.getConfig();
    assert.equal(before.revision, 0);
    const fileBefore = fs.readFileSync(configFile);
    const oldHash = device.results()[0]!.json.model.hash;

    const distinct = new Set(badPushes.map((b) => b.name));
    assert.equal(distinct.size, badPushes.length);
    assert.ok(badPushes.length >= 30);
    for (const bad of badPushes) {
      const answer = await device.request('set', bad.payload);
      assert.equal(answer.status, 'error', `${bad.name}: refused (${JSON.stringify(answer)})`);
      assert.match(answer.error, bad.error, `${bad.name}: the error names the problem`);
      assert.equal(answer.revision, 0, `${bad.name}: revision unchanged`);
      assert.deepEqual([answer.changed, answer.restartRequired], [[], []]);
      // The answer echoes the transaction, or null when the push was refused before it was read.
      assert.equal(answer.transaction, bad.noTransaction ? null : transactionOf(bad.payload), `${bad.name}: transaction of the answer`);
    }
    assert.equal(Object.prototype.hasOwnProperty.call({}, 'polluted'), false);

    // Nothing changed: the running config, the file, the results (same model, same verdict rule).
    const afterBad = await device.getConfig();
    assert.deepEqual(afterBad, before, 'config/get answers the same config and revision');
    assert.deepEqual(fs.readFileSync(configFile), fileBefore, 'the config file is byte-identical');
    const sinceBad = Date.now();
    const stillFlowing = await device.resultsAfter(sinceBad, 4, 'results after the bad pushes');
    assert.ok(stillFlowing.every((r) => r.json.model.hash === oldHash), 'same model');
    assert.ok(stillFlowing.every((r) => r.json.verdict === (r.json.normalized >= 0.5 ? 'NG' : 'OK')), 'same verdict rule (sensitivity 0)');

    // A good push: live (every later verdict follows the new sensitivity) and persisted.
    const good = push({ 'inference.sensitivity': -0.5 });
    const accepted = await device.request('set', good);
    assert.deepEqual(
      { status: accepted.status, revision: accepted.revision, changed: accepted.changed, restartRequired: accepted.restartRequired, transaction: accepted.transaction },
      { status: 'ok', revision: 1, changed: ['inference.sensitivity'], restartRequired: [], transaction: good.transaction },
    );
    const appliedAt = Date.now();
    const strict = await device.resultsAfter(appliedAt + 1000, 4, 'results under the new sensitivity');
    assert.ok(strict.every((r) => r.json.verdict === 'NG'), `sensitivity -0.5 makes every verdict NG: ${strict.map((r) => r.json.verdict).join(' ')}`);
    const live = await device.getConfig();
    assert.equal(live.revision, 1);
    assert.equal(live.config.inference.sensitivity, -0.5);
    // Pushes are kept as a layer in the state directory; the operator's file stays as written.
    assert.deepEqual(fs.readFileSync(configFile), fileBefore, 'the config file is left as the operator wrote it');
    const persisted = loadLayered(configFile).config;
    assert.equal(persisted.inference.sensitivity, -0.5, 'persisted to the config file');
    assert.equal(persisted.remoteConfig.revision, 1, 'with the new revision');
    const stale = await device.request('set', push({ 'inference.sensitivity': 0 }));
    assert.match(stale.error, /stale baseRevision 0: the current revision is 1/, 'the old revision is now stale');

    // A corrupt model inside modelsDir: refused after trying to load it; the old model serves on.
    const badModel = await device.request('set', push({ 'model.path': 'corrupt.onnx' }, { baseRevision: 1 }));
    assert.equal(badModel.status, 'error');
    assert.match(badModel.error, /model rejected, previous model still serving: .*corrupt\.onnx/);
    assert.equal(badModel.revision, 1);
    const afterBadModel = await device.resultsAfter(Date.now(), 3, 'results after the refused model');
    assert.ok(afterBadModel.every((r) => r.json.model.hash === oldHash), 'still the old model');
    assert.equal(loadLayered(configFile).config.model.path, path.join(modelsDir, 'current.onnx'), 'the recorded config still names the old model');

    // A good model push: swapped between batches, no frame lost around the swap.
    const variantPath = path.join(modelsDir, 'variant.onnx');
    const pushedModel = await device.request('set', push({ 'model.path': 'variant.onnx' }, { baseRevision: 1 }));
    assert.deepEqual([pushedModel.status, pushedModel.revision, pushedModel.changed], ['ok', 2, ['model.path']], JSON.stringify(pushedModel));
    const newHash = await waitForNewHash(device, [oldHash]);
    assert.equal(loadLayered(configFile).config.model.path, variantPath, 'the pushed model is persisted');
    assertSwapWithoutGap(device.results(), oldHash, newHash);

    // The running model's file replaced on disk: noticed, loaded beside the running one, swapped.
    const replacement = path.join(root, 'replacement.onnx');
    writeModelVariant(demoModel, replacement, 'crad-edge.test.copy', 'replaced on disk');
    fs.copyFileSync(replacement, variantPath);
    const replacedHash = await waitForNewHash(device, [oldHash, newHash]);
    assertSwapWithoutGap(device.results(), newHash, replacedHash);
    assert.equal((await device.getConfig()).revision, 2, 'a file swap is no config change');

    // A camera field Camera.update applies live (fps) reaches the running camera without a
    // restart: at 0.25 fps a 12 s window holds at most 4 results (2 fps gave ~24). Only an upper
    // bound, so a slow machine cannot fail it.
    const slower = await device.request('set', push({ cameras: [{ ...cam1, fps: 0.25 }] }, { baseRevision: 2 }));
    assert.deepEqual([slower.status, slower.revision, slower.changed, slower.restartRequired], ['ok', 3, ['cameras'], []], JSON.stringify(slower));
    const slowFrom = Date.now();
    await new Promise((r) => setTimeout(r, 12_000));
    const inWindow = device.results().filter((r) => r.capturedAt > slowFrom && r.capturedAt <= slowFrom + 12_000);
    assert.ok(inWindow.length <= 4, `fps 0.25 applied to the running camera: ${inWindow.length} results in 12 s`);
    await device.stop();
  } finally {
    await device.dispose();
  }
});

test('with remoteConfig.publicKey set: unsigned and wrongly signed pushes are refused, signed ones applied', { timeout: 180_000 }, async () => {
  broker ??= await Mosquitto.start();
  const signer = crypto.generateKeyPairSync('ed25519');
  const stranger = crypto.generateKeyPairSync('ed25519');
  const publicKey = signer.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const configFile = deviceConfig('rc2', { remoteConfig: { publicKey } });
  const device = new Device(broker.url, TOPIC_PREFIX, 'rc2', configFile);
  const sign = (request: Record<string, unknown>, key = signer.privateKey, deviceId = 'rc2') =>
    signConfigPush(request as Omit<ConfigPushRequest, 'signature'>, key, deviceId);
  try {
    await device.start();
    const fileBefore = fs.readFileSync(configFile);

    const unsigned = await device.request('set', push({ 'inference.sensitivity': 0.2 }));
    assert.match(unsigned.error, /signature is missing: this device accepts only signed pushes/);
    const wrongKey = await device.request('set', sign(push({ 'inference.sensitivity': 0.2 }), stranger.privateKey));
    assert.match(wrongKey.error, /signature does not verify/);
    const otherDevice = await device.request('set', sign(push({ 'inference.sensitivity': 0.2 }), signer.privateKey, 'rc1'));
    assert.match(otherDevice.error, /signature does not verify/, 'a push signed for another device does not verify here');
    const tampered = { ...sign(push({ 'inference.sensitivity': 0.2 })), changes: { 'inference.sensitivity': -0.2 } };
    assert.match((await device.request('set', tampered)).error, /signature does not verify/, 'changes altered after signing');
    assert.deepEqual(fs.readFileSync(configFile), fileBefore, 'refused pushes leave the file alone');
    assert.equal((await device.getConfig()).revision, 0);

    const signedPush = sign(push({ 'inference.sensitivity': 0.2 }));
    const signed = await device.request('set', signedPush);
    assert.deepEqual([signed.status, signed.revision, signed.changed], ['ok', 1, ['inference.sensitivity']], JSON.stringify(signed));
    assert.equal(loadLayered(configFile).config.inference.sensitivity, 0.2);
    // The same signed push again is stale (single use); a signed source change is allowed.
    assert.match((await device.request('set', signedPush)).error, /stale baseRevision 0/);
    const moved = await device.request('set', sign(push({ cameras: [{ ...cam1, path: otherImages }] }, { baseRevision: 1 })));
    assert.deepEqual([moved.status, moved.revision, moved.changed], ['ok', 2, ['cameras']], JSON.stringify(moved));
    assert.equal(loadLayered(configFile).config.cameras[0]!.path, otherImages);
    await device.resultsAfter(Date.now(), 2, 'results from the camera reopened on the new folder');
    await device.stop();
  } finally {
    await device.dispose();
  }
});

/** Wait for 4 results from a model none of the `known` hashes names; returns its hash. */
async function waitForNewHash(device: Device, known: string[]): Promise<string> {
  let hash = '';
  await until('results from a new model', () => {
    const newer = device.results().filter((r) => !known.includes(r.json.model.hash));
    if (newer.length < 4) return false;
    hash = newer[0]!.json.model.hash;
    return true;
  }, 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${device.process.output.slice(-3000)}`);
  });
  return hash;
}

/** Around the swap the sequence numbers run on without a gap, and the hash changes exactly once. */
function assertSwapWithoutGap(results: ResultSeen[], from: string, to: string): void {
  const firstNew = results.findIndex((r) => r.json.model.hash === to);
  // Up to 6 results before the swap, but none from before the previous one (swaps can come close).
  const firstOld = results.findIndex((r) => r.json.model.hash === from);
  const window = results.slice(Math.max(0, firstOld, firstNew - 6), firstNew + 4);
  const sequences = window.map((r) => r.sequence);
  const hashes = window.map((r) => (r.json.model.hash === from ? 'old' : r.json.model.hash === to ? 'new' : 'other'));
  const describe = window.map((r, i) => `${r.sequence}:${hashes[i]}`).join(' ');
  assert.deepEqual(sequences, sequences.map((_, i) => sequences[0]! + i), `no frame lost around the swap: ${describe}`);
  assert.deepEqual(hashes, [...hashes.filter((h) => h === 'old'), ...hashes.filter((h) => h === 'new')], `old results, then new ones: ${describe}`);
  assert.ok(hashes.includes('old') && hashes.includes('new'), describe);
}
