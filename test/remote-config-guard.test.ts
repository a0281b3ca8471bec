// A remote push can never cut a device off. Against a real daemon process and a real mosquitto:
// the exact pushes an independent fuzz run found accepted (control characters in a camera id,
// 1e309 and -4 fps, an ROI outside the frame, -0 counted as a change, emoji transactions refused,
// two pushes on one baseRevision both applied) are answered correctly; a push that leaves a camera
// unable to deliver or the broker unreachable is rolled back by the daemon itself within the
// probation window; a restart on a corrupt pushed revision runs the last good one.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { loadLayered } from '../src/config/layers.js';
import { Outbox } from '../src/publish/outbox.js';
import { createLogger } from '../src/shared/log.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { writeModelVariant } from './helpers/model-variants.js';
import { Device } from './helpers/remote-device.js';
import { tempDir } from './helpers/cleanup.js';

const TOPIC_PREFIX = 'guard/plant';
const root = tempDir('remote-guard');
const modelsDir = path.join(root, 'models');
fs.mkdirSync(modelsDir);
fs.copyFileSync(demoModel, path.join(modelsDir, 'current.onnx'));
writeModelVariant(demoModel, path.join(modelsDir, 'variant.onnx'), 'crad-edge.test.copy', 'pushed');
writeModelVariant(demoModel, path.join(modelsDir, 'variant2.onnx'), 'crad-edge.test.copy', 'pushed-again');

let broker: Mosquitto;
after(async () => {
  await broker?.dispose();
});

const cam1 = { id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 4 };

function deviceConfig(id: string, extra: Record<string, unknown> = {}): string {
  return writeConfig({
    device: { id },
    model: { path: path.join(modelsDir, 'current.onnx'), modelsDir },
    cameras: [cam1],
    mqtt: { url: broker.url, topicPrefix: TOPIC_PREFIX, reconnectMinMs: 200, reconnectMaxMs: 1000 },
    crops: { enabled: false },
    ...extra,
  }, fs.mkdtempSync(path.join(root, `${id}-`)));
}

let revision = 0;
const push = (changes: unknown, extra: Record<string, unknown> = {}) => ({ transaction: `tx-${crypto.randomUUID()}`, baseRevision: revision, changes, ...extra });

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('the fuzz run\'s pushes are refused or counted right, and the device stays reachable', { timeout: 240_000 }, async () => {
  broker ??= await Mosquitto.start();
  const device = new Device(broker.url, TOPIC_PREFIX, 'g1', deviceConfig('g1'));
  revision = 0;
  try {
    await device.start();
    const connectsBefore = (await device.getConfig()).revision;
    assert.equal(connectsBefore, 0);

    // 1. A camera id that is no legal topic level (mosquitto would drop the connection on every result).
    for (const id of ['c\u0001', 'c\u0085', 'c\ufdd0', 'c\ud800']) {
      const answer = await device.request('set', push({ cameras: [cam1, { id, source: 'usb', device: '/dev/video63' }] }));
      assert.equal(answer.status, 'error', JSON.stringify(answer));
      assert.match(answer.error, /cameras\[1\]\.id: must be a single MQTT topic level/);
    }
    // 3 and 4. fps that is not a finite rate inside its range (1e309 is Infinity to JSON.parse).
    const raw = (fps: string) => `{"transaction":"fps-${fps}","baseRevision":${revision},"changes":{"cameras":[{"id":"cam1","source":"folder","path":${JSON.stringify(samplesDir)},"fps":${fps}}]}}`;
    for (const fps of ['1e309', '-4']) {
      const answer = await device.request('set', raw(fps));
      assert.equal(answer.status, 'error', fps);
      assert.match(answer.error, /cameras\[0\]\.fps: must be (a finite number|between 0 and 1000)/, fps);
    }
    // 5. An ROI outside any frame, and one outside the frames this camera really delivers.
    const huge = await device.request('set', push({ cameras: [{ ...cam1, roi: { x: 100000, y: 0, width: 10, height: 10 } }] }));
    assert.match(huge.error, /cameras\[0\]\.roi: x must be at most 65535/);
    const roi = await device.request('set', push({ cameras: [{ ...cam1, roi: { x: 60000, y: 0, width: 10, height: 10 } }] }));
    assert.equal(roi.status, 'error', JSON.stringify(roi));
    assert.match(roi.error, /cameras\[0\]\.roi: .*does not fit the 256x256 frame/);
    // 6. -0 where the value is 0 changes nothing, and neither does pushing 0 again.
    for (const text of [`{"transaction":"zero","baseRevision":0,"changes":{"inference.sensitivity":-0}}`, push({ 'inference.sensitivity': 0 })]) {
      const answer = await device.request('set', text);
      assert.deepEqual([answer.status, answer.revision, answer.changed], ['ok', 0, []], JSON.stringify(answer));
    }
    // 7. A transaction of 100 emoji: 100 code points (the schema's maxLength counts code points).
    const emoji = await device.request('set', push({ 'inference.sensitivity': 0.1 }, { transaction: '🙂'.repeat(100) }));
    assert.deepEqual([emoji.status, emoji.revision], ['ok', 1], JSON.stringify(emoji));
    revision = 1;
    const tooLong = await device.request('set', push({ 'inference.sensitivity': 0.2 }, { transaction: '🙂'.repeat(129) }));
    assert.match(tooLong.error, /transaction must be 1 to 128 characters long, got 129/);

    // 2. Two pushes on one baseRevision: the second is checked against the first one's result.
    const [modelPush, qualityPush] = await Promise.all([
      device.request('set', push({ 'model.path': 'variant.onnx' })),
      new Promise((resolve) => setTimeout(resolve, 50)).then(() => device.request('set', push({ 'crops.quality': 70 }))),
    ]);
    assert.deepEqual([modelPush.status, modelPush.revision], ['ok', 2], JSON.stringify(modelPush));
    assert.equal(qualityPush.status, 'error', JSON.stringify(qualityPush));
    assert.match(qualityPush.error, /stale baseRevision 1: the current revision is 2/);
    revision = 2;
    const [first, second] = await Promise.all([
      device.request('set', push({ 'model.path': 'variant2.onnx' })),
      device.request('set', push({ 'model.path': 'variant.onnx' })),
    ]);
    assert.deepEqual([first.status, first.revision, second.status], ['ok', 3, 'error'], JSON.stringify([first, second]));
    revision = 3;

    // Still connected and inspecting; the recorded config starts as it is.
    const since = Date.now();
    await device.resultsAfter(since, 2, 'results after the pushes');
    const recorded = loadLayered(device.configFile);
    assert.equal(recorded.revision, 3);
    assert.equal(recorded.config.inference.sensitivity, 0.1);
    assert.equal(recorded.config.model.path, path.join(fs.realpathSync(modelsDir), 'variant2.onnx'));
    assert.equal((await device.getConfig()).revision, 3);
    await device.stop();
  } finally {
    await device.dispose();
  }
});

test('a push that leaves a camera without results is rolled back within the probation window', { timeout: 240_000 }, async () => {
  broker ??= await Mosquitto.start();
  const configFile = deviceConfig('g2', { remoteConfig: { probationMs: 4000 } });
  const device = new Device(broker.url, TOPIC_PREFIX, 'g2', configFile);
  revision = 0;
  try {
    await device.start();
    // A USB device that does not exist: accepted (nothing can tell before it is opened), never delivers.
    const broken = push({ cameras: [{ id: 'cam1', source: 'usb', device: '/dev/video63' }] });
    const answer = await device.request('set', broken);
    assert.deepEqual([answer.status, answer.revision, answer.restartRequired], ['ok', 1, []], JSON.stringify(answer));
    // The daemon answers the push's transaction again when it rolls it back, and says why.
    await until('the rollback answer', () => device.client.messages.some((m) => m.topic.endsWith('/config/response') && m.json?.transaction === broken.transaction && m.json?.status === 'error'), 60_000);
    const rollback = device.client.messages.find((m) => m.topic.endsWith('/config/response') && m.json?.transaction === broken.transaction && m.json?.status === 'error')!.json;
    assert.match(rollback.error, /rolled back to the last good configuration: .*camera cam1 has delivered no result/);
    assert.equal(rollback.revision, 2, 'a rollback is a new revision: the undone push stays stale');
    // Reachable again, the folder camera back, and the status says what happened.
    const since = Date.now();
    await device.resultsAfter(since, 2, 'results after the rollback');
    const status = () => device.client.messages.filter((m) => m.topic === `${device.prefix}/status`).at(-1)?.json;
    await until('a status with the rollback', () => status()?.config?.rollback?.undid === 1, 30_000);
    assert.deepEqual({ ...status().config, rollback: { ...status().config.rollback, at: 'x', reason: 'x' } }, {
      revision: 2, lastGood: 2, probation: null, rollback: { undid: 1, to: 2, at: 'x', reason: 'x' },
    });
    assert.equal((await device.getConfig()).revision, 2);
    assert.equal(loadLayered(configFile).config.cameras[0]!.source, 'folder');
    await device.stop();
  } finally {
    await device.dispose();
  }
});

test('a push that cuts the broker off is rolled back at the restart that applies it; nothing in the outbox is lost', { timeout: 300_000 }, async () => {
  broker ??= await Mosquitto.start();
  const configFile = deviceConfig('g3', { remoteConfig: { probationMs: 5000, allow: ['mqtt.url', 'inference.'] } });
  const device = new Device(broker.url, TOPIC_PREFIX, 'g3', configFile);
  revision = 0;
  try {
    await device.start();
    const dead = `mqtt://127.0.0.1:${await freePort()}`;
    const brokenUrl = push({ 'mqtt.url': dead });
    const answer = await device.request('set', brokenUrl);
    assert.deepEqual([answer.status, answer.revision, answer.restartRequired], ['ok', 1, ['mqtt']], JSON.stringify(answer));
    await device.stop();
    const stoppedAt = Date.now();
    // The restart applies the new URL on probation: no broker there, so it rolls back by itself and
    // comes back on the old one, sending what it inspected meanwhile from its outbox.
    device.process.start();
    await until('the rollback', () => device.process.output.includes('configuration rolled back'), 90_000);
    const results = await device.resultsAfter(stoppedAt, 3, 'results after the rollback');
    assert.ok(results.length >= 3);
    const revisionNow = (await device.getConfig()).revision;
    assert.equal(revisionNow, 2);
    const recorded = loadLayered(configFile);
    assert.equal(recorded.config.mqtt.url, broker.url);
    // The results inspected on the broker-less probation run waited in the outbox and went out after
    // the rollback; the rollback is answered to the push's transaction.
    assert.ok(results.some((r) => r.replayed), 'results made while the broker was unreachable were replayed from the outbox');
    await until('the rollback answer', () => device.client.messages.some((m) => m.topic.endsWith('/config/response') && m.json?.transaction === brokenUrl.transaction && /rolled back/.test(m.json?.error ?? '')), 30_000);
    await device.stop();
    // Nothing is left unacknowledged: every result made, on either run, reached the broker.
    const outbox = new Outbox(recorded.config.outbox.path, { maxBytes: 1e9, maxAgeMs: 3_600_000 }, createLogger('silent'));
    try {
      assert.equal(outbox.counts().pending, 0, 'the outbox is empty after the stop');
    } finally {
      outbox.close();
    }
  } finally {
    await device.dispose();
  }
});

test('a restart on a corrupt pushed revision runs the last good one and says so', { timeout: 240_000 }, async () => {
  broker ??= await Mosquitto.start();
  const configFile = deviceConfig('g4');
  const device = new Device(broker.url, TOPIC_PREFIX, 'g4', configFile);
  revision = 0;
  try {
    await device.start();
    assert.equal((await device.request('set', push({ 'inference.sensitivity': 0.2 }))).revision, 1);
    revision = 1;
    assert.equal((await device.request('set', push({ 'inference.sensitivity': 0.3 }))).revision, 2);
    await device.stop();
    const store = loadLayered(configFile).store;
    fs.writeFileSync(path.join(store.dir, 'revision-000002.json'), '{"revision": 2, "chan');
    const output = device.process.output.length;
    device.process.start();
    await until('results again', () => device.results().length > 0 && device.process.output.length > output && device.process.output.slice(output).includes('crad-edge running'), 90_000);
    assert.match(device.process.output.slice(output), /the recorded configuration could not be used: running an older revision/);
    const running = await device.getConfig();
    assert.equal(running.config.inference.sensitivity, 0.2, 'the newest good revision that can be read (1) runs');
    assert.equal(running.revision, 3, 'as a new revision: numbers only rise');
    await device.stop();
  } finally {
    await device.dispose();
  }
});
