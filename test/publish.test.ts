// The publisher against a real mosquitto: what MQTT 5 and 3.1.1 subscribers receive, and that it
// matches schemas/; statuses, the Last Will, and inbound triggers and config requests through the
// control router as the daemon wires it.
import { answerCode } from '../src/shared/answer-codes.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Aedes } from 'aedes';
import type { MqttClient } from 'mqtt';
import { Publisher } from '../src/publish/index.js';
import { createLogger } from '../src/shared/log.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { tempDir } from './helpers/cleanup.js';
import {
  DEVICE, MODEL, PREFIX, Subscriber, assertValid, commandsOn, jpeg, makeResult, schemaValidator, testConfig, until,
} from './helpers/publish-fixtures.js';

const log = createLogger('silent');
const ajv = schemaValidator();
const dir = tempDir('publish');
let broker: Mosquitto;
let fileNo = 0;
const outboxFile = () => path.join(dir, `outbox-${++fileNo}.sqlite`);

before(async () => {
  broker = await Mosquitto.start();
});
after(async () => {
  await broker.dispose();
});

/** The publisher's live MQTT client (to cut its socket like a pulled cable would). */
function clientOf(publisher: Publisher): MqttClient {
  const client = (publisher as unknown as { connection: { client: MqttClient | null } }).connection.client;
  assert.ok(client, 'publisher is not connected');
  return client;
}

test('every schema in schemas/ compiles under ajv strict mode', () => {
  for (const name of Object.keys(ajv.schemas).filter((n) => n.endsWith('.schema.json'))) {
    assert.ok(ajv.getSchema(name), `schema ${name} did not compile`);
  }
});

test('results, crops and overlays reach MQTT 5 and 3.1.1 subscribers and match the schemas', async () => {
  const sub5 = await Subscriber.connect(broker.url, 5);
  const sub4 = await Subscriber.connect(broker.url, 4);
  const publisher = new Publisher(testConfig(broker.url, outboxFile()), log);
  try {
    publisher.setDeviceStatus({ version: '0.1.0', model: MODEL, revision: 3, modelError: 'crad-new.onnx: input "image" has 4 channels, expected 3' });
    await publisher.start();
    publisher.publishCameraStatus({ cameraId: 'cam1', state: 'online', since: new Date().toISOString(), framesCaptured: 5, reconnects: 0 });
    publisher.publishResult(makeResult('cam1', 1, { crops: 2, overlay: true, triggerId: 'lot42-part7' }));
    publisher.publishResult(makeResult('cam2', 1));

    const resultTopic = `${PREFIX}/cam1/result`;
    for (const sub of [sub5, sub4]) {
      await sub.waitFor('two results, two crops, an overlay and a device status with the camera', (m) =>
        m.filter((x) => x.topic.endsWith('/result')).length === 2 &&
        m.filter((x) => x.topic.includes('/crop/')).length === 2 &&
        m.some((x) => x.topic === `${PREFIX}/cam1/overlay`) &&
        m.some((x) => x.topic === `${PREFIX}/status` && x.json?.cameras?.cam1?.state === 'online'));
      for (const m of sub.messages.filter((x) => x.topic.endsWith('/result'))) assertValid(ajv, 'result.schema.json', m.json);
      for (const m of sub.on(`${PREFIX}/status`)) assertValid(ajv, 'device-status.schema.json', m.json);
      for (const m of sub.on(`${PREFIX}/cam1/status`)) assertValid(ajv, 'camera-status.schema.json', m.json);
    }

    const result = sub5.on(resultTopic)[0]!.json;
    assert.equal(result.device, DEVICE);
    assert.equal(result.camera, 'cam1');
    assert.equal(result.sequence, 1);
    assert.equal(result.triggerId, 'lot42-part7');
    assert.equal(result.verdict, 'NG');
    assert.equal(result.crops, 2);
    assert.equal(result.overlay, true);
    assert.equal(result.replayed, false);
    assert.equal(result.model.hash, MODEL.hash);
    assert.deepEqual(result.regions[1], { x: 60, y: 20, width: 40, height: 30, area: 900, peak: 3.5, peakNormalized: 0.8 });
    assert.ok(result.latencyMs.total >= 0 && result.latencyMs.total < 5000);
    assert.deepEqual(sub4.on(resultTopic)[0]!.json.messageId, result.messageId, 'both subscribers see the same message');
    assert.equal(sub5.on(resultTopic)[0]!.packet.properties?.contentType, 'application/json');

    // MQTT 5: the JPEG bytes themselves, with content type and the result's id as correlation data,
    // right after the result.
    const order = sub5.messages.filter((m) => m.topic.startsWith(`${PREFIX}/cam1/`) && !m.topic.endsWith('/status')).map((m) => m.topic);
    assert.deepEqual(order, [resultTopic, `${PREFIX}/cam1/crop/0`, `${PREFIX}/cam1/crop/1`, `${PREFIX}/cam1/overlay`]);
    const crop1 = sub5.on(`${PREFIX}/cam1/crop/1`)[0]!;
    assert.deepEqual(crop1.payload, jpeg('cam1-1-crop1'));
    assert.equal(crop1.packet.properties?.contentType, 'image/jpeg');
    assert.equal(crop1.packet.properties?.correlationData?.toString(), result.messageId);
    assert.equal((crop1.packet.properties?.userProperties as Record<string, string>).index, '1');
    assert.deepEqual(sub5.on(`${PREFIX}/cam1/overlay`)[0]!.payload, jpeg('cam1-1-overlay'));

    const status = sub5.on(`${PREFIX}/status`).at(-1)!.json;
    assert.equal(status.state, 'online');
    assert.equal(status.version, '0.1.0');
    assert.equal(status.model.hash, MODEL.hash);
    assert.equal(status.model.calibrated, true);
    assert.equal(status.configRevision, 3);
    assert.match(status.modelError, /4 channels/);
    assert.equal(status.broker.protocolVersion, 5);
    await until('outbox drained', () => publisher.stats().outbox.pending === 0);
    assert.equal(publisher.stats().publishedResults, 2);
    assert.equal(publisher.stats().publishedImages, 3);
  } finally {
    await publisher.stop();
    await sub5.close();
    await sub4.close();
  }
});

test('an MQTT 3.1.1 publisher sends crops and overlays as base64 JSON envelopes matching the schema', async () => {
  const sub = await Subscriber.connect(broker.url, 4);
  const publisher = new Publisher(testConfig(broker.url, outboxFile(), { mqtt: { protocolVersion: 4 }, outbox: { includeImages: true } }), log);
  try {
    await publisher.start();
    publisher.publishResult(makeResult('cam2', 9, { crops: 1, overlay: true }));
    await sub.waitFor('result, crop and overlay', (m) => m.some((x) => x.topic.endsWith('/overlay')) && m.some((x) => x.topic.endsWith('/crop/0')));
    const result = sub.on(`${PREFIX}/cam2/result`)[0]!.json;
    assertValid(ajv, 'result.schema.json', result);
    const crop = sub.on(`${PREFIX}/cam2/crop/0`)[0]!.json;
    const overlay = sub.on(`${PREFIX}/cam2/overlay`)[0]!.json;
    for (const envelope of [crop, overlay]) assertValid(ajv, 'image-envelope.schema.json', envelope);
    assert.equal(crop.messageId, result.messageId);
    assert.equal(crop.index, 0);
    assert.equal(overlay.index, null);
    assert.deepEqual(Buffer.from(crop.data, 'base64'), jpeg('cam2-9-crop0'));
    assert.deepEqual(Buffer.from(overlay.data, 'base64'), jpeg('cam2-9-overlay'));
    const status = sub.on(`${PREFIX}/status`).at(-1)!.json;
    assert.equal(status.broker.protocolVersion, 4);
  } finally {
    await publisher.stop();
    await sub.close();
  }
});

test('a broker that refuses MQTT 5 gets MQTT 3.1.1 instead, and crops go as envelopes', async () => {
  // aedes speaks MQTT 3.1.1 only and answers a v5 CONNECT with "unacceptable protocol version".
  const aedes = await Aedes.createBroker();
  const server = net.createServer(aedes.handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const sub = await Subscriber.connect(url, 4);
  const publisher = new Publisher(testConfig(url, outboxFile(), { mqtt: { protocolVersion: 5 } }), log);
  try {
    await publisher.start();
    await until('connected after the fallback', () => publisher.stats().connected);
    assert.equal(publisher.stats().protocolVersion, 4);
    publisher.publishResult(makeResult('cam1', 3, { crops: 1 }));
    // Not ordered against each other here: aedes stores QoS 1 messages before forwarding them.
    await sub.waitFor('result and crop envelope', (m) => m.some((x) => x.topic.endsWith('/crop/0')) && m.some((x) => x.topic.endsWith('/result')));
    assertValid(ajv, 'image-envelope.schema.json', sub.on(`${PREFIX}/cam1/crop/0`)[0]!.json);
    assertValid(ajv, 'result.schema.json', sub.on(`${PREFIX}/cam1/result`)[0]!.json);
  } finally {
    await publisher.stop();
    await sub.close();
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    server.close();
  }
});

test('retained statuses reach late subscribers; a cut socket brings the offline Will, a reconnect restores online and subscriptions', async () => {
  const config = testConfig(broker.url, outboxFile());
  const publisher = new Publisher(config, log);
  const triggers: Array<string | undefined> = [];
  commandsOn(publisher, config, { trigger: (_camera, { triggerId }) => triggers.push(triggerId) }, log);
  try {
    publisher.setDeviceStatus({ version: '0.1.0' });
    await publisher.start();
    publisher.publishCameraStatus({ cameraId: 'cam2', state: 'offline', error: 'no frame for 5000 ms', since: new Date().toISOString(), framesCaptured: 12, reconnects: 2 });
    await new Promise((r) => setTimeout(r, 300));

    const late = await Subscriber.connect(broker.url, 5);
    await late.waitFor('retained device and camera status', (m) =>
      m.some((x) => x.topic === `${PREFIX}/status` && x.packet.retain) && m.some((x) => x.topic === `${PREFIX}/cam2/status` && x.packet.retain));
    const camera = late.on(`${PREFIX}/cam2/status`)[0]!.json;
    assertValid(ajv, 'camera-status.schema.json', camera);
    assert.equal(camera.state, 'offline');
    assert.equal(camera.error, 'no frame for 5000 ms');
    assert.equal(late.on(`${PREFIX}/status`)[0]!.json.state, 'online');

    // Pull the cable: the broker sees the connection die without DISCONNECT and publishes the Will.
    const before = publisher.stats().connects;
    clientOf(publisher).stream.destroy();
    await late.waitFor('the offline Will', (m) => m.some((x) => x.topic === `${PREFIX}/status` && x.json?.state === 'offline'));
    const will = late.on(`${PREFIX}/status`).find((x) => x.json?.state === 'offline')!.json;
    assertValid(ajv, 'device-status.schema.json', will);
    assert.equal(will.reason, 'connection-lost');
    assert.equal(will.version, '0.1.0');

    // Our own reconnect loop brings it back and the retained status says online again.
    await late.waitFor('online again after the reconnect', (m) => {
      const statuses = m.filter((x) => x.topic === `${PREFIX}/status`);
      return statuses.at(-1)?.json?.state === 'online' && statuses.some((x) => x.json?.state === 'offline');
    });
    assert.equal(publisher.stats().connects, before + 1);
    const fresh = await Subscriber.connect(broker.url, 4);
    await fresh.waitFor('retained statuses after the reconnect', (m) =>
      m.some((x) => x.topic === `${PREFIX}/status` && x.json?.state === 'online') && m.some((x) => x.topic === `${PREFIX}/cam2/status`));
    // The trigger subscription came back with the new connection.
    await late.client.publishAsync(`${PREFIX}/cam1/trigger`, 'after-reconnect', { qos: 1 });
    await until('the trigger after the reconnect', () => triggers.includes('after-reconnect'));
    await fresh.close();
    await late.close();
  } finally {
    await publisher.stop();
  }
  const after = await Subscriber.connect(broker.url, 5);
  await after.waitFor('the retained shutdown status', (m) => m.some((x) => x.topic === `${PREFIX}/status`));
  const final = after.on(`${PREFIX}/status`)[0]!.json;
  assertValid(ajv, 'device-status.schema.json', final);
  assert.equal(final.state, 'offline');
  assert.equal(final.reason, 'shutdown');
  await after.close();
});

test('triggers reach the handler for trigger-mode cameras only, malformed ones its refusal; retained commands are ignored', async () => {
  const config = testConfig(broker.url, outboxFile());
  const publisher = new Publisher(config, log);
  const triggers: Array<[string, string | undefined]> = [];
  const refused: Array<[string, string | undefined, number, string]> = [];
  commandsOn(publisher, config, {
    trigger: (camera, { triggerId }) => triggers.push([camera, triggerId]),
    refuseTrigger: (camera, triggerId, why) => refused.push([camera, triggerId, answerCode(why.code), why.reason]),
  }, log);
  const sender = await Subscriber.connect(broker.url, 5, `${PREFIX}/none`);
  // A trigger left retained on the broker would fire on every (re)subscribe: it must be ignored.
  await sender.client.publishAsync(`${PREFIX}/cam1/trigger`, 'stale retained trigger', { qos: 1, retain: true });
  try {
    await publisher.start();
    await new Promise((r) => setTimeout(r, 200)); // subscriptions settle
    const trigger = (camera: string, payload: string, retain = false) => sender.client.publishAsync(`${PREFIX}/${camera}/trigger`, payload, { qos: 1, retain });
    await trigger('cam1', JSON.stringify({ id: 'lot42-part8' }));
    await trigger('cam1', 'plain-text-id');
    await trigger('cam1', '');
    await trigger('cam1', '{"id": 7}'); // not a string: refused, its answer names "7"
    await trigger('cam2', 'free-run camera: not subscribed');
    await until('three triggers and one refusal', () => triggers.length >= 3 && refused.length >= 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(triggers, [['cam1', 'lot42-part8'], ['cam1', 'plain-text-id'], ['cam1', undefined]]);
    assert.equal(refused.length, 1);
    assert.deepEqual(refused[0]!.slice(0, 3), ['cam1', '7', 50]);
    assert.match(refused[0]![3], /malformed trigger: trigger payload "id" must be a string, got number/);
    // The JSON form agrees with the schema.
    assertValid(ajv, 'trigger.schema.json', { id: 'lot42-part8' });
    assert.throws(() => assertValid(ajv, 'trigger.schema.json', { id: 7 }));
    await sender.client.publishAsync(`${PREFIX}/cam1/trigger`, '', { qos: 1, retain: true }); // clear the retained one
  } finally {
    await publisher.stop();
    await sender.close();
  }
});

test('config get and set requests reach the handler and answers carry correlation data and match the schema', async () => {
  const config = testConfig(broker.url, outboxFile());
  const publisher = new Publisher(config, log);
  const requests: Array<[string, string]> = [];
  commandsOn(publisher, config, {
    config: (kind, payload) => {
      requests.push([kind, payload.toString()]);
      if (kind === 'get') return { status: 'ok', revision: 4, config: { inference: { sensitivity: 0 } } }; // transaction echoed by the router
      return { transaction: 's1', status: 'error', error: 'stale baseRevision 3: the current revision is 4', revision: 4, restartRequired: [], changed: [] };
    },
  }, log);
  const client = await Subscriber.connect(broker.url, 5, `${PREFIX}/config/response`);
  try {
    await publisher.start();
    await new Promise((r) => setTimeout(r, 200));
    await client.client.publishAsync(`${PREFIX}/config/get`, JSON.stringify({ transaction: 'g1' }), { qos: 1, properties: { correlationData: Buffer.from('corr-g1') } });
    await client.client.publishAsync(`${PREFIX}/config/set`, JSON.stringify({ transaction: 's1', baseRevision: 3, changes: { 'inference.sensitivity': 0.1 } }), { qos: 1 });
    await client.waitFor('two answers', (m) => m.length === 2);
    const [get, set] = client.messages;
    assertValid(ajv, 'config-get.schema.json', JSON.parse(requests[0]![1]));
    assertValid(ajv, 'config-set.schema.json', JSON.parse(requests[1]![1]));
    assertValid(ajv, 'config-response.schema.json', get!.json);
    assertValid(ajv, 'config-response.schema.json', set!.json);
    assert.equal(get!.json.transaction, 'g1');
    assert.equal(get!.packet.properties?.correlationData?.toString(), 'corr-g1');
    assert.equal(set!.json.status, 'error');
    assert.deepEqual(requests.map((r) => r[0]), ['get', 'set']);
  } finally {
    await publisher.stop();
    await client.close();
  }
});

test('updateLive applies QoS, limits and trigger subscriptions live and asks for a restart for connection settings', async () => {
  const config = testConfig(broker.url, outboxFile());
  const publisher = new Publisher(config, log);
  const triggers: string[] = [];
  const commands = commandsOn(publisher, config, { trigger: (camera) => triggers.push(camera) }, log);
  const sender = await Subscriber.connect(broker.url, 5, `${PREFIX}/none`);
  try {
    await publisher.start();
    const cameras = config.cameras.map((c) => (c.id === 'cam2' ? { ...c, trigger: 'mqtt' as const } : c));
    const next = { ...config, cameras, outbox: { ...config.outbox, maxBytes: 1_000_000 } };
    assert.equal(publisher.updateLive(next), 'live');
    commands.follow(next);
    await new Promise((r) => setTimeout(r, 200));
    await sender.client.publishAsync(`${PREFIX}/cam2/trigger`, 'now', { qos: 1 });
    await until('the cam2 trigger', () => triggers.includes('cam2'));
    assert.equal(publisher.updateLive({ ...config, mqtt: { ...config.mqtt, url: 'mqtt://127.0.0.1:1' } }), 'restart');
    assert.equal(publisher.updateLive({ ...config, outbox: { ...config.outbox, path: outboxFile() } }), 'restart');
  } finally {
    await publisher.stop();
    await sender.close();
  }
});

test('a result reaches the broker only after the fsync of its outbox commit has finished', async () => {
  const sub = await Subscriber.connect(broker.url, 5);
  const publisher = new Publisher(testConfig(broker.url, outboxFile()), log);
  // The real outbox and its real fsync; the test only holds back the moment it starts.
  const outbox = (publisher as unknown as { outbox: { sync: () => Promise<void>; durableId: number } }).outbox;
  const sync = outbox.sync.bind(outbox);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let syncs = 0;
  outbox.sync = async () => {
    syncs += 1;
    await held;
    await sync();
  };
  try {
    await publisher.start();
    publisher.publishResult(makeResult('cam1', 1));
    await until('the result committed, its fsync asked for', () => syncs > 0 && publisher.stats().outbox.pendingResults === 1);
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(sub.on(`${PREFIX}/cam1/result`), [], 'nothing sent while the commit is not known to be on disk');
    release();
    await sub.waitFor('the result, once its commit is durable', (m) => m.some((x) => x.topic === `${PREFIX}/cam1/result`));
  } finally {
    release();
    await publisher.stop();
    await sub.close();
  }
});

test('the constructor opens no outbox: start opens it (a file in use is refused there), a result handed over before start is kept, a stop without start writes nothing', async () => {
  const unused = outboxFile();
  await new Publisher(testConfig(broker.url, unused), log).stop();
  assert.equal(fs.existsSync(unused), false, 'built and stopped without a start: no file');

  const file = outboxFile();
  const first = new Publisher(testConfig(broker.url, file), log);
  const second = new Publisher(testConfig(broker.url, file), log);
  assert.equal(fs.existsSync(file), false, 'two publishers built on one file: neither opened it');
  const sub = await Subscriber.connect(broker.url, 5);
  try {
    first.publishResult(makeResult('cam1', 1));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(first.stats().outbox.pendingResults, 1, 'a result handed over before start is on disk');
    await assert.rejects(second.start(), (err: Error) => err.message.includes(file) && /in use/.test(err.message));
    await first.start();
    await sub.waitFor('the result queued before start', (m) => m.some((x) => x.topic === `${PREFIX}/cam1/result`));
  } finally {
    await second.stop();
    await first.stop();
    await sub.close();
  }
});

test('publishResult only queues: the results handed over together go to disk in one transaction, before the event loop runs anything else', async () => {
  const stopped = await Mosquitto.start();
  await stopped.stop();
  const publisher = new Publisher(testConfig(stopped.url, outboxFile()), log);
  const outbox = (publisher as unknown as { outbox: { commit: (...args: unknown[]) => unknown } }).outbox;
  const commit = outbox.commit.bind(outbox);
  let commits = 0;
  outbox.commit = (...args: unknown[]) => {
    commits += 1;
    return commit(...args);
  };
  try {
    await publisher.start();
    // Queued before the results: the event loop's next turn, which (as the next batch's
    // preprocessing or a socket read would) ran first when the commit waited for the tick's end.
    let storedAtNextTurn = -1;
    setImmediate(() => (storedAtNextTurn = publisher.stats().outbox.pendingResults));
    for (let s = 1; s <= 50; s++) publisher.publishResult(makeResult('cam1', s, { crops: 2 }));
    assert.equal(publisher.stats().outbox.pending, 0, 'nothing written synchronously by publishResult');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(storedAtNextTurn, 50, 'the results are committed before anything the event loop runs next');
    assert.equal(commits, 1);
    assert.equal(publisher.stats().outbox.imagesDiscarded, 100, 'crops not kept in the outbox are discarded while offline, and counted');
  } finally {
    await publisher.stop();
    await stopped.dispose();
  }
});

test('sendPending commits at once and waits for the fsync and the send, but never longer than outbox.sendBeforeRunMs', async () => {
  const sub = await Subscriber.connect(broker.url, 5);
  const config = testConfig(broker.url, outboxFile(), { outbox: { sendBeforeRunMs: 300 } });
  const publisher = new Publisher(config, log);
  const outbox = (publisher as unknown as { outbox: { sync: () => Promise<void> } }).outbox;
  const sync = outbox.sync.bind(outbox);
  let release!: () => void;
  let held: Promise<void> | null = new Promise<void>((resolve) => (release = resolve));
  outbox.sync = async () => {
    await held;
    await sync();
  };
  const sent = () => publisher.stats().publishedResults + publisher.stats().outbox.inflight;
  try {
    await publisher.start();
    await until('connected', () => publisher.stats().connected);
    // What a session.run on the main thread would otherwise hold back: the fsync's callback and the send.
    publisher.publishResult(makeResult('cam1', 1));
    await publisher.sendPending();
    assert.equal(publisher.stats().outbox.pendingResults, 1, 'committed by sendPending itself');
    assert.equal(sent(), 0, 'an fsync that does not finish is waited for only up to the bound, and nothing is sent before it');
    release();
    held = null;
    await sub.waitFor('the first result, once its fsync finished', (m) => m.some((x) => x.topic === `${PREFIX}/cam1/result`));

    // A bound no fsync here comes near: the wait ends with the send, not the timer.
    assert.equal(publisher.updateLive(testConfig(broker.url, config.outbox.path, { outbox: { sendBeforeRunMs: 1000 } })), 'live');
    publisher.publishResult(makeResult('cam1', 2));
    await publisher.sendPending();
    assert.equal(sent(), 2, 'when sendPending resolves, the second result is on the disk and handed to the connection');
    await sub.waitFor('the second result', (m) => m.filter((x) => x.topic === `${PREFIX}/cam1/result`).length === 2);
  } finally {
    release();
    await publisher.stop();
    await sub.close();
  }
});
