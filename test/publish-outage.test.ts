// Store and forward: a broker outage, a publisher process killed with SIGKILL, and the outbox
// limits, each checked by what a real subscriber receives afterwards.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { MqttClient, Packet } from 'mqtt';
import { Outbox } from '../src/publish/outbox.js';
import { Publisher } from '../src/publish/index.js';
import { createLogger } from '../src/shared/log.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { PREFIX, Subscriber, assertValid, makeResult, schemaValidator, testConfig, until, type Received } from './helpers/publish-fixtures.js';
import { killOnExit, tempDir } from './helpers/cleanup.js';

const log = createLogger('silent');
const ajv = schemaValidator();
const dir = tempDir('publish');

const results = (messages: Received[]) => messages.filter((m) => m.topic === `${PREFIX}/cam1/result`).map((m) => m.json);

test('broker stopped and restarted: every result published meanwhile arrives after reconnect, in order, replayed, paced by the inflight window', async () => {
  const broker = await Mosquitto.start({ persistence: true });
  // A persistent session, so the broker keeps what arrives for the subscriber while it reconnects.
  const sub = await Subscriber.connect(broker.url, 5, `${PREFIX}/cam1/#`, 'scada-outage-test');
  const window = 3;
  const publisher = new Publisher(
    testConfig(broker.url, path.join(dir, 'outage.sqlite'), { outbox: { inflight: window, includeImages: true }, mqtt: { qos: { image: 1 } } }),
    log,
  );
  let outstanding = 0;
  let maxOutstanding = 0;
  const watch = publisher.connected$.subscribe((connected) => {
    if (!connected) return;
    outstanding = 0;
    const client = (publisher as unknown as { connection: { client: MqttClient } }).connection.client;
    client.on('packetsend', (p: Packet) => {
      if (p.cmd === 'publish' && p.qos > 0 && !p.topic.endsWith('/status')) maxOutstanding = Math.max(maxOutstanding, ++outstanding);
    });
    client.on('packetreceive', (p: Packet) => {
      if (p.cmd === 'puback' && outstanding > 0) outstanding -= 1;
    });
  });
  try {
    await publisher.start();
    for (let s = 1; s <= 3; s++) publisher.publishResult(makeResult('cam1', s, { crops: 1 }));
    await sub.waitFor('the three live results', (m) => results(m).length === 3);
    // Their crops acknowledged too: one still in flight when the broker stops is resent (at least once).
    await until('the live messages acknowledged', () => publisher.stats().outbox.pending === 0);

    await broker.stop();
    await until('publisher notices the outage', () => !publisher.stats().connected);
    for (let s = 4; s <= 15; s++) publisher.publishResult(makeResult('cam1', s, { crops: 1 }));
    await until('twelve results in the outbox', () => publisher.stats().outbox.pendingResults === 12);
    await new Promise((r) => setTimeout(r, 500)); // a few failed reconnect attempts
    assert.equal(publisher.stats().outbox.pending, 24, 'results and their crops wait on disk');

    await broker.start();
    await sub.waitFor('all results after the outage', (m) => results(m).length >= 15, 15_000).catch((err: Error) => {
      const seen = results(sub.messages).map((r) => `${r.sequence}${r.replayed ? 'r' : ''}`).join(' ');
      throw new Error(`${err.message.split('\n')[0]}\nsequences seen: ${seen}\npublisher: ${JSON.stringify(publisher.stats())}`);
    });
    publisher.publishResult(makeResult('cam1', 16));
    await sub.waitFor('a live result after the replay', (m) => results(m).some((r) => r.sequence === 16));
    await until('outbox drained', () => publisher.stats().outbox.pending === 0);

    // At least once to a subscriber too: a result the broker had not seen acknowledged by the
    // subscriber before it stopped comes again (as consumers are told, deduplicate on messageId).
    const seen = new Set<string>();
    const got = results(sub.messages).filter((r) => !seen.has(r.messageId) && seen.add(r.messageId));
    for (const r of got) assertValid(ajv, 'result.schema.json', r);
    assert.deepEqual(got.map((r) => r.sequence), Array.from({ length: 16 }, (_, i) => i + 1), 'every result once, in capture order');
    assert.deepEqual(got.map((r) => r.replayed), got.map((r) => r.sequence >= 4 && r.sequence <= 15));
    assert.equal(new Set(got.map((r) => r.messageId)).size, 16);
    // Each replayed crop still carries its result's id.
    const cropIds = new Set<string | undefined>();
    const crops = sub.messages.filter((m) => m.topic === `${PREFIX}/cam1/crop/0`)
      .filter((c) => !cropIds.has(c.packet.properties?.correlationData?.toString()) && cropIds.add(c.packet.properties?.correlationData?.toString()));
    assert.equal(crops.length, 15);
    assert.deepEqual(crops.map((c) => c.packet.properties?.correlationData?.toString()), got.slice(0, 15).map((r) => r.messageId));
    assert.ok(maxOutstanding <= window, `at most ${window} unacknowledged messages at a time (saw ${maxOutstanding})`);
    assert.ok(maxOutstanding > 1, 'the window is used');
    assert.equal(publisher.stats().connects, 2);
    assert.equal(publisher.stats().replayedResults, 12);
  } finally {
    watch.unsubscribe();
    await publisher.stop();
    await sub.close();
    await broker.dispose();
  }
});

test('publisher process killed with SIGKILL: a new Publisher on the same outbox delivers what it had stored', async () => {
  const broker = await Mosquitto.start();
  await broker.stop(); // the port stays ours; nothing listens on it yet
  const file = path.join(dir, 'restart.sqlite');
  const childScript = fileURLToPath(new URL('./helpers/publisher-child.ts', import.meta.url));
  const child = killOnExit(spawn(process.execPath, ['--import', 'tsx', childScript, broker.url, file, '5'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  try {
    await until('the child to store its results', () => output.includes('stored 5') || child.exitCode !== null, 30_000);
    assert.ok(output.includes('stored 5'), `child failed:\n${output}`);
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }

  // What the killed process left on disk.
  const peek = new Outbox(file, { maxBytes: 1e9, maxAgeMs: 3_600_000 }, log);
  const stored = peek.next(0, 100).filter((r) => r.kind === 'result').map((r) => r.messageId);
  peek.close();
  assert.equal(stored.length, 5);

  await broker.start();
  const sub = await Subscriber.connect(broker.url, 4);
  const publisher = new Publisher(testConfig(broker.url, file), log);
  try {
    await publisher.start();
    await sub.waitFor('the five stored results', (m) => results(m).length === 5);
    // At least once to a subscriber too: a result the broker had not seen acknowledged by the
    // subscriber before it stopped comes again (as consumers are told, deduplicate on messageId).
    const seen = new Set<string>();
    const got = results(sub.messages).filter((r) => !seen.has(r.messageId) && seen.add(r.messageId));
    for (const r of got) assertValid(ajv, 'result.schema.json', r);
    assert.deepEqual(got.map((r) => r.messageId), stored, 'same ids, in the order they were stored');
    assert.deepEqual(got.map((r) => r.sequence), [1, 2, 3, 4, 5]);
    assert.ok(got.every((r) => r.replayed === true));
    assert.ok(got.every((r) => r.latencyMs.total > 0), 'capture-to-publish measured across processes');
    await until('outbox drained', () => publisher.stats().outbox.pending === 0);
  } finally {
    await publisher.stop();
    await sub.close();
    await broker.dispose();
  }
});

test('byte and age limits drop the oldest results while the broker is away and the device status counts them', async () => {
  const broker = await Mosquitto.start();
  await broker.stop();
  const config = testConfig(broker.url, path.join(dir, 'limits.sqlite'), { outbox: { maxBytes: 4000, maxAgeHours: 1 } });
  const publisher = new Publisher(config, log);
  try {
    await publisher.start();
    publisher.publishResult(makeResult('cam1', 1, { ageMs: 2 * 3_600_000 })); // captured two hours ago: over the age limit
    for (let s = 2; s <= 12; s++) publisher.publishResult(makeResult('cam1', s));
    await until('results stored', () => publisher.stats().accepted === 12 && publisher.stats().outbox.pendingResults > 0);
    await new Promise((r) => setTimeout(r, 100));
    const { outbox } = publisher.stats();
    assert.ok(outbox.pendingBytes <= 4000, `pendingBytes ${outbox.pendingBytes} over outbox.maxBytes`);
    assert.equal(outbox.droppedResults + outbox.pendingResults, 12);
    assert.ok(outbox.droppedResults >= 2, 'the old result and at least one by bytes');
    const kept = outbox.pendingResults;

    await broker.start();
    const sub = await Subscriber.connect(broker.url, 5);
    await sub.waitFor('kept results', (m) => results(m).length === kept, 15_000);
    assert.deepEqual(results(sub.messages).map((r) => r.sequence), Array.from({ length: kept }, (_, i) => 12 - kept + 1 + i), 'the newest survive, in order');
    publisher.publishCameraStatus({ cameraId: 'cam1', state: 'online', since: new Date().toISOString(), framesCaptured: 12, reconnects: 0 });
    await sub.waitFor('a device status after the replay', (m) => m.some((x) => x.topic === `${PREFIX}/status` && x.json?.outbox?.pending === 0));
    const status = sub.on(`${PREFIX}/status`).at(-1)!.json;
    assertValid(ajv, 'device-status.schema.json', status);
    assert.equal(status.outbox.droppedResults, 12 - kept);
    await sub.close();
  } finally {
    await publisher.stop();
    await broker.dispose();
  }
});
