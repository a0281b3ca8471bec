// The service layer's seams, with the real daemon (in this process), a real mosquitto and a
// loopback model server: every model change, whoever asked (a config push, a model delivery, an
// on-demand golden run, the model file replaced on disk), runs through one queue, one at a time in
// arrival order, and each is answered; a plane that throws on every result leaves the results,
// the outbox and the other planes untouched, its failures counted under its own name.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { signConfigPush } from '../src/config/push-signing.js';
import { signDelivery } from '../src/control/model-delivery.js';
import { Daemon } from '../src/service/daemon.js';
import { Fanout, type Plane } from '../src/service/fanout.js';
import { EdgeNode, edgeNodeSettings } from '../src/sparkplug/index.js';
import { tempDir } from './helpers/cleanup.js';
import { capturingLogger } from './helpers/log.js';
import { demoModel, samplesDir } from './helpers/daemon.js';
import { ModelServer } from './helpers/model-server.js';
import { writeModelVariant } from './helpers/model-variants.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Subscriber, until, type Received } from './helpers/publish-fixtures.js';

let broker: Mosquitto;
before(async () => {
  broker = await Mosquitto.start();
});
after(async () => {
  await broker.stop();
});

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('a push, a delivery, a golden run and a file-watch reload started at once run one at a time in arrival order, each answered', async () => {
  const dir = tempDir('rooms-queue');
  const modelsDir = path.join(dir, 'models');
  fs.mkdirSync(modelsDir);
  const current = path.join(modelsDir, 'current.onnx');
  fs.copyFileSync(demoModel, current);
  const pushed = path.join(modelsDir, 'pushed.onnx');
  writeModelVariant(demoModel, pushed, 'crad-edge.test.copy', 'pushed');
  const delivered = path.join(dir, 'delivered.onnx');
  writeModelVariant(demoModel, delivered, 'crad-edge.test.copy', 'delivered');
  const replaced = path.join(dir, 'replaced.onnx');
  writeModelVariant(demoModel, replaced, 'crad-edge.test.copy', 'replaced');
  const server = await ModelServer.start();
  const signer = crypto.generateKeyPairSync('ed25519');
  const config = loadConfig(undefined, {
    device: { id: 'rooms1' },
    model: { path: current, modelsDir, goldenDir: samplesDir, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 2 }],
    remoteConfig: { enabled: true, probationMs: 0, publicKey: signer.publicKey.export({ type: 'spki', format: 'pem' }).toString() },
    mqtt: { url: broker.url, topicPrefix: 'rooms' },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    crops: { enabled: false },
    service: { stateDir: dir, shutdownTimeoutMs: 5000 },
  });
  const { log, lines } = capturingLogger('debug');
  const daemon = new Daemon({ config, log });
  const ops = await Subscriber.connect(broker.url, 5, 'rooms/rooms1/+/response');
  const prefix = 'rooms/rooms1';
  const answersTo = (topic: string, correlation: string) => ops.messages.filter((m: Received) => m.topic === `${prefix}/${topic}` && m.packet.properties?.correlationData?.toString() === correlation).map((m) => m.json);
  const send = (topic: string, correlation: string, body: object) => ops.client.publishAsync(`${prefix}/${topic}`, Buffer.from(JSON.stringify(body)), { qos: 1, properties: { correlationData: Buffer.from(correlation) } });
  try {
    await daemon.start();
    await until('results flow', () => daemon.stats().pipeline.processed >= 1, 30_000);
    const unsignedPush = { transaction: 'push-1', baseRevision: 0, changes: { 'model.path': pushed } };
    // All four at once: the file replaced on disk, a push, a delivery and a golden run.
    fs.copyFileSync(replaced, current);
    await Promise.all([
      send('config/set', 'c-push', signConfigPush(unsignedPush, signer.privateKey, 'rooms1')),
      send('model/deliver', 'c-deliver', signDelivery({
        transaction: 'deliver-1', baseRevision: 0, url: server.serve('/delivered.onnx', fs.readFileSync(delivered)), sha256: sha(delivered),
        size: fs.statSync(delivered).size, name: 'delivered.onnx',
      }, signer.privateKey, 'rooms1')),
      send('golden/run', 'c-golden', { transaction: 'golden-1' }),
    ]);
    await until('the push answered', () => answersTo('config/response', 'c-push').length === 1, 60_000);
    await until('the delivery answered', () => answersTo('model/response', 'c-deliver').some((a) => a.status !== 'progress'), 60_000);
    await until('the golden run answered', () => answersTo('golden/response', 'c-golden').length === 1, 60_000);
    await until('the file reload done', () => lines().some((l) => l.msg === 'model change finished' && /^model file /.test(l.label)), 60_000);

    const changes = lines().filter((l) => l.msg === 'model change started' || l.msg === 'model change finished');
    // One at a time: every start is followed by its own finish before the next start.
    for (let i = 0; i < changes.length; i += 2) {
      assert.equal(changes[i]!.msg, 'model change started', JSON.stringify(changes));
      assert.deepEqual([changes[i + 1]!.msg, changes[i + 1]!.turn], ['model change finished', changes[i]!.turn], JSON.stringify(changes));
    }
    // In arrival order: turns run in the order they were asked for.
    const turns = changes.filter((l) => l.msg === 'model change started').map((l) => l.turn as number);
    assert.deepEqual(turns, [...turns].sort((a, b) => a - b));
    const labels = changes.filter((l) => l.msg === 'model change started').map((l) => l.label as string);
    assert.ok(labels.includes('golden run') && labels.filter((l) => l === 'config push').length === 2 && labels.some((l) => l.startsWith('model file ')), labels.join(', '));

    // Each answered; the revision guard holds across the queue (whichever push ran second was stale).
    const push = answersTo('config/response', 'c-push')[0];
    const delivery = answersTo('model/response', 'c-deliver').at(-1);
    assert.equal([push.status, delivery.status].filter((s) => s === 'ok').length, 1, JSON.stringify({ push, delivery }));
    assert.match(push.status === 'ok' ? delivery.error : push.error, /stale baseRevision 0: the current revision is 1/);
    assert.equal(answersTo('golden/response', 'c-golden')[0].status, 'ok', JSON.stringify(answersTo('golden/response', 'c-golden')[0]).slice(0, 1500));
    const audit = daemon.audit.read({ limit: 100 }).entries;
    assert.ok(audit.some((e) => e.kind === 'model' && e.actor.kind === 'file'), 'the file reload was audited');
  } finally {
    await daemon.stop();
    await ops.close();
    await server.close();
  }
});

test('a plane that throws on every result: results, the outbox and the other planes go on; its failures counted under its name', async () => {
  const dir = tempDir('rooms-plane');
  const config = loadConfig(undefined, {
    device: { id: 'rooms2' },
    model: { path: demoModel, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 5 }],
    mqtt: { url: broker.url, topicPrefix: 'rooms' },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    crops: { enabled: false },
    service: { stateDir: dir, shutdownTimeoutMs: 5000, statusIntervalMs: 1000 },
  });
  const { log, lines } = capturingLogger('info');
  const daemon = new Daemon({ config, log });
  const scada = await Subscriber.connect(broker.url, 5, 'rooms/rooms2/#');
  try {
    await daemon.start();
    // A plane that fails on everything, added where the assembly adds its own (after the others).
    let seen = 0;
    (daemon as any).fanout.add({
      name: 'broken-plane',
      result: () => {
        seen++;
        throw new Error('this plane always fails');
      },
      cameraStatus: () => {
        throw new Error('this plane always fails');
      },
    });
    const before = daemon.stats().pipeline.processed;
    await until('ten more results', () => daemon.stats().pipeline.processed >= before + 10, 30_000);
    await until('the results reach the broker', () => scada.on('rooms/rooms2/cam1/result').length >= 10, 30_000);
    const stats = daemon.stats();
    assert.ok(stats.planeFailures['broken-plane']! >= 10, JSON.stringify(stats.planeFailures));
    assert.deepEqual(Object.keys(stats.planeFailures), ['broken-plane'], 'no other plane failed');
    assert.equal(stats.pipeline.failedBatches, 0);
    assert.ok(seen >= 10);
    assert.ok(lines().every((l) => l.msg !== 'post-processing failed; frame skipped'), 'a plane\'s failure is not a frame\'s');
    assert.equal(lines().filter((l) => l.plane === 'broken-plane').length >= 1, true, 'logged under its name');
    await until('the outbox is empty', () => daemon.stats().publisher.outbox.pending === 0, 10_000);
    const counters = (daemon as any).counters.snapshot(['cam1']).cam1;
    assert.ok(counters.ok + counters.ng >= 10, `the counters plane still counts (${JSON.stringify(counters)})`);
    await until('the device status reports it', () => (scada.on('rooms/rooms2/status').at(-1)?.json?.planeFailures?.['broken-plane'] ?? 0) >= 1, 10_000);
  } finally {
    await daemon.stop();
    await scada.close();
  }
});

test('planes start in the order they were added and stop in reverse; one that fails to stop is counted, the others still stop', async () => {
  const { log, lines } = capturingLogger('info');
  const calls: string[] = [];
  const plane = (name: string, failStop = false, failStart = false): Plane => ({
    name,
    start: async () => {
      calls.push(`start ${name}`);
      if (failStart) throw new Error(`${name} cannot start`);
    },
    stop: async (timeoutMs) => {
      calls.push(`stop ${name}`);
      assert.ok(timeoutMs >= 100, `each stop gets time (${timeoutMs})`);
      if (failStop) throw new Error(`${name} cannot stop`);
    },
  });
  const fanout = new Fanout(log);
  fanout.add(plane('mqtt'), null, plane('archive', true), plane('console'));
  await fanout.start();
  await fanout.stop(1000);
  assert.deepEqual(calls, ['start mqtt', 'start archive', 'start console', 'stop console', 'stop archive', 'stop mqtt']);
  assert.deepEqual(fanout.failureCounts(), { archive: 1 });
  assert.ok(lines().some((l) => l.plane === 'archive' && /did not stop cleanly/.test(l.msg)));

  // A plane that cannot start ends the start; stop() stops only those that started.
  calls.length = 0;
  const failing = new Fanout(log);
  failing.add(plane('mqtt'), plane('sparkplug', false, true), plane('console'));
  await assert.rejects(failing.start(), /sparkplug cannot start/);
  await failing.stop(1000);
  assert.deepEqual(calls, ['start mqtt', 'start sparkplug', 'stop mqtt']);
});

test('building the daemon and its planes touches no file; start opens them and stop closes them', async () => {
  const dir = tempDir('rooms-lifecycle');
  const stateDir = path.join(dir, 'state');
  const config = loadConfig(undefined, {
    device: { id: 'rooms3' },
    model: { path: demoModel, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 5 }],
    mqtt: { url: broker.url, topicPrefix: 'rooms' },
    outbox: { path: path.join(stateDir, 'outbox.sqlite') },
    archive: { enabled: true, dir: path.join(stateDir, 'archive') },
    sparkplug: { enabled: true, groupId: 'rooms', brokers: [broker.url], tls: { ca: path.join(dir, 'no-such-ca.pem') } },
    crops: { enabled: false },
    service: { stateDir, shutdownTimeoutMs: 5000, statusIntervalMs: 1000 },
  });
  const settings = edgeNodeSettings(config);
  // An edge node whose TLS file is missing: built without complaint, refused (naming the key) when started.
  const node = new EdgeNode(settings, { trigger: () => 'no', nodeInfo: () => ({ outboxDepth: 0, brokerReconnects: 0, configRevision: 0 }) }, capturingLogger('silent').log);
  try {
    assert.equal(fs.existsSync(stateDir), false, 'the edge node\'s constructor wrote nothing');
    assert.throws(() => node.start(), /tls\.ca: cannot read/);
  } finally {
    await node.stop(200);
  }

  fs.rmSync(stateDir, { recursive: true, force: true });
  const { log } = capturingLogger('silent');
  const working = { ...config, sparkplug: { ...config.sparkplug, tls: { ...config.sparkplug.tls, ca: '' } } };
  const daemon = new Daemon({ config: working, log });
  assert.equal(fs.existsSync(stateDir), false, 'the daemon\'s constructor wrote nothing: no outbox, history, state file or archive');
  try {
    await daemon.start();
    for (const file of ['sparkplug-history.sqlite', 'sparkplug-state.json', 'outbox.sqlite']) {
      assert.ok(fs.existsSync(path.join(stateDir, file)), `${file} opened by start()`);
    }
    await until('results flow', () => daemon.stats().pipeline.processed >= 3, 30_000);
  } finally {
    await daemon.stop();
  }
  assert.deepEqual(daemon.stats().planeFailures, {}, 'every plane stopped cleanly');
  assert.ok(fs.existsSync(path.join(stateDir, 'counters.json')), 'the counters plane saved at stop');
});
