// The edge node where it meets a real SCADA host: one test per defect of issue 26, each written to
// fail on the code before the fix. The node runs in this process (its real code), the Python host
// (protoc-generated classes) or a raw MQTT.js client plays the host, on a real mosquitto.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import mqtt from 'mqtt';
import { tempDir } from './helpers/cleanup.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { SparkplugHost, type HostEvent } from './helpers/sparkplug-host.js';
import { LinkProxy } from './helpers/sparkplug-proxy.js';
import { EdgeNode, type EdgeNodeSettings } from '../src/sparkplug/edge-node.js';
import { edgeNodeSettings } from '../src/sparkplug/index.js';
import { History } from '../src/sparkplug/history.js';
import { validateConfigObject } from '../src/config/load.js';
import { createLogger } from '../src/shared/log.js';
import type { Result } from '../src/inference/types.js';

const GROUP = 'plant1';
const NODE = 'press7';
const HOST_ID = 'scada1';
const STATE_TOPIC = `spBv1.0/STATE/${HOST_ID}`;
const log = createLogger(process.env.SPB_TEST_LOG ?? 'silent');
const hooks = { trigger: () => 'no', nodeInfo: () => ({ outboxDepth: 0, brokerReconnects: 0, configRevision: 1 }) };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function settings(url: string, extra: Partial<EdgeNodeSettings> & { protocolVersion?: 4 | 5 } = {}): EdgeNodeSettings {
  const dir = tempDir('spb-defect');
  const { protocolVersion = 5, ...rest } = extra;
  return {
    groupId: GROUP, edgeNodeId: NODE, primaryHostId: HOST_ID, metrics: [],
    connections: [{
      url, protocolVersion, clientId: `spb-defect-${path.basename(dir)}`, username: '', password: '', keepaliveSec: 2, connectTimeoutMs: 1000,
      tls: { ca: '', cert: '', key: '', rejectUnauthorized: true }, reconnectMinMs: 100, reconnectMaxMs: 300, sessionExpirySec: 0,
    }],
    stateFile: path.join(dir, 'sparkplug-state.json'), historyFile: path.join(dir, 'sparkplug-history.sqlite'), historyMaxRows: 1000,
    replayMessagesPerSec: 200, legacyState: false, ndataIntervalMs: 60_000, cameras: ['cam1'],
    ...rest,
  };
}

function result(camera: string, n: number): Result {
  return {
    frame: { cameraId: camera, sequence: n, capturedAt: new Date().toISOString(), capturedMono: 0, roi: null, triggerId: `r${n}` },
    model: null, raw: n, normalized: null, verdict: 'OK', calibrated: false, regions: [], crops: [], overlay: null,
    latency: { queueMs: 0, preprocessMs: 0, inferenceMs: 1, postprocessMs: 0, batchSize: 1 },
  };
}

/**
 * A broker, the Python host (announcing online), a loopback proxy the node connects through (so a
 * test can cut the link or read the node's packets), a node; `body` runs, everything goes after.
 */
async function withNode(extra: Parameters<typeof settings>[1], body: (ctx: { broker: Mosquitto; host: SparkplugHost; node: EdgeNode; proxy: LinkProxy }) => Promise<void>): Promise<void> {
  const broker = await Mosquitto.start();
  const proxy = await LinkProxy.start(broker.port);
  const host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  let node: EdgeNode | undefined;
  try {
    node = new EdgeNode(settings(proxy.url, extra), hooks, log);
    await body({ broker, host, node, proxy });
  } finally {
    await node?.stop();
    await proxy.close();
    await host.stop();
    await broker.dispose();
  }
}

/** Publish STATE messages back to back on one connection (retained, QoS 1, as a host does). */
async function publishStates(port: number, states: { online: boolean; timestamp: number }[]): Promise<void> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
  try {
    await Promise.all(states.map((s) => client.publishAsync(STATE_TOPIC, JSON.stringify(s), { qos: 1, retain: true })));
  } finally {
    await client.endAsync();
  }
}

const after = (host: SparkplugHost, mark: number, type: string) => host.events.slice(mark).filter((e) => e.event === 'message' && e.type === type);

test('3: an online STATE while leaving for an offline one does not birth on the dying 3.1.1 session', { timeout: 90_000 }, async () => {
  await withNode({ protocolVersion: 4 }, async ({ broker, host, node }) => {
    node.start();
    const birth = await host.next('NBIRTH', (e) => e.type === 'NBIRTH');
    const mark = host.events.length;
    const now = Date.now();
    await publishStates(broker.port, [{ online: false, timestamp: now }, { online: true, timestamp: now + 1 }]);
    await host.next('NDEATH', (e) => e.type === 'NDEATH', mark);
    const next = await host.next('NBIRTH of the next session', (e) => e.type === 'NBIRTH', mark);
    for (const b of after(host, mark, 'NBIRTH')) assert.notEqual(b.bdSeq, birth.bdSeq, 'no NBIRTH on the session that sent its NDEATH');
    assert.notEqual(next.bdSeq, birth.bdSeq);
    assert.deepEqual(host.violations(), []);
  });
});

test('4: nothing follows the NDEATH of a 3.1.1 clean stop', { timeout: 90_000 }, async () => {
  await withNode({ protocolVersion: 4 }, async ({ host, node }) => {
    node.start();
    await host.next('DBIRTH', (e) => e.type === 'DBIRTH');
    node.onResult(result('cam1', 1));
    await host.next('live DDATA', (e) => e.type === 'DDATA');
    const mark = host.events.length;
    const stopping = node.stop();
    node.onResult(result('cam1', 2)); // a result in the middle of the stop
    await stopping;
    await host.next('NDEATH', (e) => e.type === 'NDEATH', mark);
    await sleep(500);
    const seen = host.events.slice(mark).filter((e) => e.event === 'message').map((e) => e.type);
    assert.deepEqual(seen.slice(seen.indexOf('NDEATH')), ['NDEATH'], `after stop() the host saw ${seen.join(', ')}`);
  });
});

test('5 and 6: STATE timestamps never go backwards; an offline STATE ends a connected, unborn session', { timeout: 90_000 }, async () => {
  await withNode({}, async ({ broker, host, node }) => {
    node.start();
    await host.next('NBIRTH', (e) => e.type === 'NBIRTH');
    const t = Date.now() + 10_000;
    let mark = host.events.length;
    await publishStates(broker.port, [{ online: false, timestamp: t + 500 }]);
    await host.next('NDEATH for offline', (e) => e.type === 'NDEATH', mark);
    await until('the node connected again, waiting', () => node.stats().connected && node.stats().sessions >= 2, 30_000);
    await sleep(300);
    // 5: an offline STATE older than the newest, then an online one between the two: stale
    mark = host.events.length;
    await publishStates(broker.port, [{ online: false, timestamp: t + 100 }]);
    await sleep(300);
    await publishStates(broker.port, [{ online: true, timestamp: t + 200 }]);
    await sleep(1500);
    assert.equal(after(host, mark, 'NBIRTH').length, 0, 'an online STATE older than the newest STATE is ignored');
    // 6: a newer offline STATE reaches the connected, waiting node: NDEATH and a new CONNECT
    const sessions = node.stats().sessions;
    mark = host.events.length;
    await publishStates(broker.port, [{ online: false, timestamp: t + 1000 }]);
    await host.next('NDEATH of the unborn session', (e) => e.type === 'NDEATH', mark, 20_000);
    await until('a new session', () => node.stats().sessions > sessions, 30_000);
    await sleep(1500);
    assert.equal(after(host, mark, 'NDEATH').length, 1, 'the same retained offline STATE does not end the next session too');
    assert.deepEqual(host.violations(), []);
  });
});

test('7: every CONNECT gets the next bdSeq, timed-out ones included', { timeout: 90_000 }, async () => {
  await withNode({}, async ({ host, node, proxy }) => {
    proxy.hold();
    node.start();
    await until('two CONNECTs timed out', () => proxy.accepted >= 3, 30_000);
    proxy.reset();
    const birth = await host.next('NBIRTH', (e) => e.type === 'NBIRTH');
    assert.equal(birth.bdSeq, proxy.accepted - 1, `bdSeq of the CONNECT that made it: one per CONNECT from 0 (${proxy.accepted} CONNECTs)`);
  });
});

test('8: a broker that refuses the subscriptions is reported and retried with backoff, not an endless silent loop', { timeout: 60_000 }, async () => {
  await withNode({ protocolVersion: 4 }, async ({ node, proxy }) => {
    proxy.refuseSubscriptions = true;
    node.start();
    await until('the refusal reported', () => node.stats().subscribeRefusals >= 1, 20_000);
    assert.match(node.stats().problem, /the broker refused QoS 1 subscriptions/);
    await sleep(3000);
    const { subscribeRefusals, births } = node.stats();
    assert.equal(births, 0);
    assert.ok(subscribeRefusals <= 4, `retried with backoff (at least 1 s apart), not every 100 ms: ${subscribeRefusals} refusals in about 3 s`);
  });
});

test('10: a camera that comes online later births with a rebirth: every DBIRTH right after an NBIRTH', { timeout: 90_000 }, async () => {
  await withNode({ cameras: ['cam1', 'cam2'] }, async ({ host, node }) => {
    node.onCameraStatus({ cameraId: 'cam2', state: 'offline' } as never);
    node.start();
    await host.next('DBIRTH cam1', (e) => e.type === 'DBIRTH' && e.device === 'cam1');
    node.onResult(result('cam1', 1));
    await host.next('DDATA cam1', (e) => e.type === 'DDATA');
    node.onCameraStatus({ cameraId: 'cam2', state: 'online' } as never);
    await host.next('DBIRTH cam2', (e) => e.type === 'DBIRTH' && e.device === 'cam2');
    const messages = host.messages();
    messages.forEach((e: HostEvent, i) => {
      if (e.type !== 'DBIRTH') return;
      const before = messages.slice(0, i).reverse();
      const births = before.findIndex((m) => m.type === 'NBIRTH');
      assert.ok(births >= 0 && before.slice(0, births).every((m) => m.type === 'DBIRTH'), `DBIRTH ${e.device} after ${before.slice(0, births).map((m) => m.type).join(', ')}`);
    });
    assert.deepEqual(host.violations(), []);
  });
});

test('1 and 9: results of a camera no longer configured are replayed (DBIRTH, historical DDATA, DDEATH); the progress is in NDATA', { timeout: 90_000 }, async () => {
  const s = settings('');
  const history = new History(s.historyFile, 1000, log);
  for (let i = 1; i <= 30; i++) history.append('camOld', Date.now() - 1000 + i, { 'Inspection/Trigger Id': `old${i}`, 'Inspection/Raw Score': i });
  history.close();
  const broker = await Mosquitto.start();
  const host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  let node: EdgeNode | undefined;
  try {
    node = new EdgeNode({ ...s, connections: [{ ...s.connections[0]!, url: broker.url }] }, hooks, log);
    node.start();
    await host.next('DBIRTH camOld', (e) => e.type === 'DBIRTH' && e.device === 'camOld');
    await host.next('DDEATH camOld after its history', (e) => e.type === 'DDEATH' && e.device === 'camOld');
    const ids = host.messages('DDATA', 'camOld').flatMap((e) => (e.metrics ?? []).filter((m) => m.name === 'Inspection/Trigger Id' && m.is_historical).map((m) => m.value));
    assert.deepEqual(ids, Array.from({ length: 30 }, (_, i) => `old${i + 1}`));
    await until('history empty', () => node!.stats().historyPending === 0, 20_000);
    // item 9: the replay's progress in the node metrics (NDATA at the end of a replay)
    const progress = await host.next('NDATA with the replay confirmed', (e) => e.type === 'NDATA' && (e.metrics ?? []).some((m) => m.name === 'Node Info/History Confirmed' && m.value === 30));
    assert.equal(progress.metrics!.find((m) => m.name === 'Node Info/History Stored')?.value, 0);
    assert.equal(node.stats().historySent, 30);
    assert.deepEqual(host.violations(), []);
  } finally {
    await node?.stop();
    await host.stop();
    await broker.dispose();
  }
});

test('2 and 10: keepalive 0 and camera ids equal but for case are refused with the key named', () => {
  const base = { device: { id: 'n1' }, model: { path: '/nonexistent.onnx' }, sparkplug: { enabled: true } };
  assert.throws(() => edgeNodeSettings(validateConfigObject({ ...base, mqtt: { keepaliveSec: 0 } })), /mqtt\.keepaliveSec/);
  const cams = [{ id: 'Cam1', source: 'folder', path: '/tmp' }, { id: 'cam1', source: 'folder', path: '/tmp' }];
  assert.throws(() => edgeNodeSettings(validateConfigObject({ ...base, cameras: cams })), /case-sensitivity-sparkplug-ids/);
});

test('checklist: Will QoS 1 not retained in the CONNECT; NCMD/DCMD subscribed at QoS 1 before any publish; nothing retained (a late subscriber gets no Sparkplug message)', { timeout: 90_000 }, async () => {
  await withNode({ protocolVersion: 4 }, async ({ broker, host, node, proxy }) => {
    node.start();
    await host.next('DBIRTH', (e) => e.type === 'DBIRTH');
    node.onResult(result('cam1', 1));
    await host.next('DDATA', (e) => e.type === 'DDATA');
    // message-flow-edge-node-ncmd-subscribe, message-flow-device-dcmd-subscribe: on the wire
    const firstPublish = proxy.clientPackets.findIndex((p) => p.type === 3);
    const subscribed = Object.assign({}, ...proxy.clientPackets.slice(0, firstPublish).map((p) => p.subscriptions ?? {})) as Record<string, number>;
    assert.equal(subscribed[`spBv1.0/${GROUP}/NCMD/${NODE}`], 1, JSON.stringify(proxy.clientPackets.slice(0, firstPublish + 1)));
    assert.equal(subscribed[`spBv1.0/${GROUP}/DCMD/${NODE}/+`], 1);
    assert.equal(subscribed[STATE_TOPIC], 1);
    // message-flow-edge-node-birth-publish-will-message-*, payloads-ndeath-will-message-*: the CONNECT's Will flags
    assert.deepEqual(proxy.clientPackets.find((p) => p.type === 1)?.will, { set: true, qos: 1, retain: false });
    // *-retain: a subscriber that comes after the births gets retained messages only, and there is none
    const late = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { reconnectPeriod: 0 });
    const retained: string[] = [];
    late.on('message', (topic, _payload, packet) => {
      if (packet.retain && topic.startsWith(`spBv1.0/${GROUP}/`)) retained.push(topic);
    });
    await late.subscribeAsync(`spBv1.0/${GROUP}/#`, { qos: 1 });
    await sleep(1000);
    await late.endAsync();
    assert.deepEqual(retained, [], 'no Sparkplug message of the node is retained');
  });
});

test('multiple servers: the node walks to the next on primary host offline and on a dead server (the -walk statement)', { timeout: 120_000 }, async () => {
  const a = await Mosquitto.start();
  const b = await Mosquitto.start();
  const hostA = await SparkplugHost.start({ port: a.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  const hostB = await SparkplugHost.start({ port: b.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  let node: EdgeNode | undefined;
  try {
    const s = settings(a.url);
    node = new EdgeNode({ ...s, connections: [s.connections[0]!, { ...s.connections[0]!, url: b.url }] }, hooks, log);
    node.start();
    const onA = await hostA.next('NBIRTH on server A', (e) => e.type === 'NBIRTH');
    // the primary host goes offline on A: NDEATH there, and the node moves on to B, where it is online
    let markA = hostA.events.length;
    await hostA.send({ cmd: 'state', online: false });
    await hostA.next('NDEATH on A', (e) => e.type === 'NDEATH', markA);
    const onB = await hostB.next('NBIRTH on server B', (e) => e.type === 'NBIRTH');
    assert.notEqual(onB.bdSeq, onA.bdSeq);
    // B dies: after two failed CONNECTs the node goes back to A, where it waits for the host
    await b.stop('SIGKILL');
    markA = hostA.events.length;
    await until('the node back on A, waiting', () => node!.stats().connected && node!.stats().sessions >= 3, 60_000);
    assert.equal(hostA.events.slice(markA).filter((e) => e.type === 'NBIRTH').length, 0, 'no birth while the host is offline on A');
    await hostA.send({ cmd: 'state', online: true });
    await hostA.next('NBIRTH on A again', (e) => e.type === 'NBIRTH', markA);
    assert.deepEqual([...hostA.violations(), ...hostB.violations()], []);
  } finally {
    await node?.stop();
    await hostA.stop();
    await hostB.stop();
    await a.dispose();
    await b.dispose();
  }
});

test('sparkplug.brokers: its own servers and credentials, the JSON plane\'s by default, no credentials in URLs', () => {
  const base = { device: { id: 'n1' }, model: { path: '/nonexistent.onnx' }, mqtt: { url: 'mqtt://127.0.0.1:1883', username: 'json', password: 'pw' } };
  const own = edgeNodeSettings(validateConfigObject({ ...base, sparkplug: { enabled: true, brokers: ['mqtt://127.0.0.2:1883', 'mqtts://127.0.0.3:8883'], username: 'spb' } }));
  assert.deepEqual(own.connections.map((c) => [c.url, c.username, c.password]), [['mqtt://127.0.0.2:1883', 'spb', ''], ['mqtts://127.0.0.3:8883', 'spb', '']]);
  const fallback = edgeNodeSettings(validateConfigObject({ ...base, sparkplug: { enabled: true } }));
  assert.deepEqual(fallback.connections.map((c) => [c.url, c.username, c.password]), [['mqtt://127.0.0.1:1883', 'json', 'pw']]);
  assert.throws(() => validateConfigObject({ ...base, sparkplug: { brokers: ['mqtt://u:p@127.0.0.2:1883'] } }), /sparkplug\.brokers.*no credentials in the URLs/s);
});

test('a Sparkplug 2.2 host (STATE/<id> ONLINE): reported as an error without sparkplug.legacyState, followed with it', { timeout: 90_000 }, async () => {
  const broker = await Mosquitto.start();
  const nodes: EdgeNode[] = [];
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { reconnectPeriod: 0 });
  const births: string[] = [];
  try {
    await client.subscribeAsync(`spBv1.0/${GROUP}/NBIRTH/+`, { qos: 1 });
    client.on('message', (topic) => births.push(topic));
    await client.publishAsync(`STATE/${HOST_ID}`, 'ONLINE', { qos: 1, retain: true });
    const strict = new EdgeNode({ ...settings(broker.url), edgeNodeId: 'strict' }, hooks, log);
    nodes.push(strict);
    strict.start();
    await until('the 2.2 host reported', () => /speaks Sparkplug 2\.2.*sparkplug\.legacyState/.test(strict.stats().problem), 20_000);
    const legacy = new EdgeNode({ ...settings(broker.url), edgeNodeId: 'legacy', legacyState: true }, hooks, log);
    nodes.push(legacy);
    legacy.start();
    await until('the node under legacyState born', () => births.includes(`spBv1.0/${GROUP}/NBIRTH/legacy`), 20_000);
    assert.ok(!births.includes(`spBv1.0/${GROUP}/NBIRTH/strict`), 'no birth without the option');
  } finally {
    for (const n of nodes) await n.stop();
    await client.endAsync();
    await broker.dispose();
  }
});
