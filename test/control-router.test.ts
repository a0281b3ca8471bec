// The command router against a real mosquitto: registering subscribes and unregistering
// unsubscribes at the broker, failing handlers are answered (transaction and MQTT 5 correlation
// data echoed), retained commands are ignored, and subscriptions come back after a broker restart.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CommandRouter, type Command } from '../src/control/router.js';
import { Publisher } from '../src/publish/index.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { tempDir } from './helpers/cleanup.js';
import { capturingLogger, type Logger } from './helpers/log.js';
import { PREFIX, Subscriber, assertValid, commandsOn, schemaValidator, testConfig, until } from './helpers/publish-fixtures.js';

const dir = tempDir('publish');
let broker: Mosquitto;
let fileNo = 0;
const outboxFile = () => path.join(dir, `outbox-${++fileNo}.sqlite`);

before(async () => {
  broker = await Mosquitto.start();
});
after(async () => {
  await broker.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A logger whose warnings and errors the test can read (the router reports through it). */
function recordingLogger(): { log: Logger; messages: () => string[] } {
  const { log, lines } = capturingLogger('warn');
  return { log, messages: () => lines().map((line) => line.msg as string) };
}

/** A publisher on `url` with a router on its connection (not started). */
function routed(url: string, log: Logger): { publisher: Publisher; router: CommandRouter } {
  const publisher = new Publisher(testConfig(url, outboxFile()), log);
  return { publisher, router: new CommandRouter(publisher.inbound, log) };
}

test('registering a command subscribes at the broker, unregistering unsubscribes', async () => {
  const { log, messages } = recordingLogger();
  const { publisher, router } = routed(broker.url, log);
  const received: Record<string, string[]> = { early: [], late: [] };
  const record = (name: string) => ({ payload }: Command) => void received[name]!.push(payload.toString());
  // Registered before the connection exists: subscribed when it comes.
  const unregisterEarly = router.register(`${PREFIX}/cmd/early`, record('early'));
  const sender = await Subscriber.connect(broker.url, 5, `${PREFIX}/none`);
  try {
    await publisher.start();
    router.register(`${PREFIX}/cmd/late`, record('late'));
    await router.settled();
    await sender.client.publishAsync(`${PREFIX}/cmd/early`, 'one', { qos: 1 });
    await sender.client.publishAsync(`${PREFIX}/cmd/late`, 'two', { qos: 1 });
    await until('both commands handled', () => received.early!.length === 1 && received.late!.length === 1);

    unregisterEarly();
    await router.settled();
    await sender.client.publishAsync(`${PREFIX}/cmd/early`, 'after unregister', { qos: 1 });
    // Same sender, same QoS: the broker delivers in order, so once "marker" arrives the other
    // would have too, had the subscription stayed.
    await sender.client.publishAsync(`${PREFIX}/cmd/late`, 'marker', { qos: 1 });
    await until('the marker', () => received.late!.includes('marker'));
    assert.deepEqual(received, { early: ['one'], late: ['two', 'marker'] });
    assert.ok(!messages().includes('message on an unexpected topic ignored'), 'the broker still sent the unregistered topic');
    assert.throws(() => router.register(`${PREFIX}/cmd/late`, record('late')), /already has a handler/);
  } finally {
    await publisher.stop();
    await sender.close();
  }
});

test('a handler that throws or rejects is answered with an error carrying the request transaction and correlation data', async () => {
  const { log, messages } = recordingLogger();
  const { publisher, router } = routed(broker.url, log);
  const responseTopic = `${PREFIX}/cmd/response`;
  router.register(`${PREFIX}/cmd/throws`, () => {
    throw new Error('boom');
  }, { responseTopic });
  router.register(`${PREFIX}/cmd/rejects`, async () => {
    await new Promise((r) => setImmediate(r));
    throw new Error('later');
  }, { responseTopic });
  router.register(`${PREFIX}/cmd/works`, ({ reply }) => reply({ status: 'ok' }), { responseTopic });
  const client = await Subscriber.connect(broker.url, 5, responseTopic);
  try {
    await publisher.start();
    await router.settled();
    const send = (command: string, transaction: string) =>
      client.client.publishAsync(`${PREFIX}/cmd/${command}`, JSON.stringify({ transaction }), { qos: 1, properties: { correlationData: Buffer.from(`corr-${transaction}`) } });
    await send('throws', 't1');
    await send('rejects', 't2');
    await send('works', 't3'); // the router (and the daemon) carried on
    await client.waitFor('three answers', (m) => m.length === 3);
    const answers = Object.fromEntries(client.messages.map((m) => [m.packet.properties?.correlationData?.toString(), m.json]));
    assert.deepEqual(answers, {
      'corr-t1': { status: 'error', error: 'internal error: boom', transaction: 't1', code: 99 },
      'corr-t2': { status: 'error', error: 'internal error: later', transaction: 't2', code: 99 },
      'corr-t3': { status: 'ok', transaction: 't3', code: 0 },
    });
    assert.equal(messages().filter((m) => m === 'command handler failed').length, 2);
  } finally {
    await publisher.stop();
    await client.close();
  }
});

test('a failing config handler gets a schema-valid error answer with the request transaction', async () => {
  const { log } = recordingLogger();
  const config = testConfig(broker.url, outboxFile());
  const publisher = new Publisher(config, log);
  const { router } = commandsOn(publisher, config, {
    config: () => {
      throw new Error('disk on fire');
    },
    revision: () => 7,
  }, log);
  const ajv = schemaValidator();
  const client = await Subscriber.connect(broker.url, 5, `${PREFIX}/config/response`);
  try {
    await publisher.start();
    await router.settled();
    await client.client.publishAsync(`${PREFIX}/config/set`, JSON.stringify({ transaction: 's9', baseRevision: 7, changes: {} }), {
      qos: 1, properties: { correlationData: Buffer.from('corr-s9') },
    });
    await client.client.publishAsync(`${PREFIX}/config/get`, JSON.stringify({ transaction: 'g9' }), { qos: 1 });
    await client.waitFor('two answers', (m) => m.length === 2);
    const [set, get] = client.messages;
    for (const answer of [set!, get!]) assertValid(ajv, 'config-response.schema.json', answer.json);
    assert.deepEqual(set!.json, { status: 'error', error: 'internal error: disk on fire', revision: 7, restartRequired: [], changed: [], transaction: 's9', code: 99 });
    assert.equal(set!.packet.properties?.correlationData?.toString(), 'corr-s9');
    assert.deepEqual(get!.json, { status: 'error', error: 'internal error: disk on fire', revision: 7, transaction: 'g9', code: 99 });
  } finally {
    await publisher.stop();
    await client.close();
  }
});

test('retained command messages are ignored', async () => {
  const { log, messages } = recordingLogger();
  const { publisher, router } = routed(broker.url, log);
  const topic = `${PREFIX}/cmd/retained`;
  const sender = await Subscriber.connect(broker.url, 5, `${PREFIX}/none`);
  // Left retained on the broker, it would run again on every (re)subscribe.
  await sender.client.publishAsync(topic, 'stale', { qos: 1, retain: true });
  const received: string[] = [];
  router.register(topic, ({ payload }) => void received.push(payload.toString()));
  try {
    await publisher.start();
    await router.settled();
    await sender.client.publishAsync(topic, 'fresh', { qos: 1 });
    await until('the fresh command', () => received.includes('fresh'));
    await until('the retained one refused', () => messages().includes('ignoring a retained message on a command topic (publish commands without retain)'));
    assert.deepEqual(received, ['fresh']);
  } finally {
    await sender.client.publishAsync(topic, '', { qos: 1, retain: true }); // clear the retained one
    await publisher.stop();
    await sender.close();
  }
});

test('subscriptions are restored after a broker restart, including ones registered during the outage', async () => {
  const own = await Mosquitto.start();
  const { log } = recordingLogger();
  const { publisher, router } = routed(own.url, log);
  const received: string[] = [];
  const record = ({ topic, payload }: Command) => void received.push(`${topic.slice(PREFIX.length + 1)} ${payload.toString()}`);
  router.register(`${PREFIX}/cmd/kept`, record);
  try {
    await publisher.start();
    await router.settled();
    const connects = publisher.stats().connects;
    await own.stop();
    await until('the publisher noticed the outage', () => !publisher.stats().connected);
    router.register(`${PREFIX}/cmd/new`, record);
    await own.start();
    await until('reconnected', () => publisher.stats().connects === connects + 1);
    await router.settled();
    const sender = await Subscriber.connect(own.url, 4, `${PREFIX}/none`);
    try {
      await sender.client.publishAsync(`${PREFIX}/cmd/kept`, 'a', { qos: 1 });
      await sender.client.publishAsync(`${PREFIX}/cmd/new`, 'b', { qos: 1 });
      await until('both commands after the restart', () => received.length === 2);
      assert.deepEqual(received, ['cmd/kept a', 'cmd/new b']);
    } finally {
      await sender.close();
    }
  } finally {
    await publisher.stop();
    await own.dispose();
  }
});
