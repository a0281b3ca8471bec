// A SCADA host's journey with the real daemon (a folder camera inspecting with the demo model), read
// by the Python host (protoc-generated classes from the official .proto): the primary host goes
// away while the line keeps inspecting, comes back, and gets every result made meanwhile as
// historical DDATA, in capture order; then the same with the broker SIGKILLed in the middle of the
// replay, and with the node's TCP link cut silently (a proxy that stops forwarding) in the middle
// of it. Nothing lost; duplicates allowed, counted and reported.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DaemonProcess, demoModel, writeConfig } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { imageFolder } from './helpers/reliability.js';
import { historicalTimes, historyRows, SparkplugHost, type HostEvent } from './helpers/sparkplug-host.js';
import { LinkProxy } from './helpers/sparkplug-proxy.js';

const GROUP = 'plant1';
const NODE = 'line3';
const HOST_ID = 'scada1';

const firstHistorical = (e: HostEvent) => e.type === 'DDATA' && e.device === 'cam1' && (e.metrics ?? []).some((m) => m.is_historical);

test('SCADA host journey: host away, broker SIGKILLed mid-replay, link cut silently mid-replay: every result arrives', { timeout: 300_000 }, async (t: TestContext) => {
  const broker = await Mosquitto.start();
  const proxy = await LinkProxy.start(broker.port);
  const configFile = writeConfig({
    device: { id: NODE },
    model: { path: demoModel },
    cameras: [{ id: 'cam1', source: 'folder', path: imageFolder(3), loop: true, fps: 10 }],
    mqtt: { url: proxy.url, topicPrefix: 'spb/json', reconnectMinMs: 200, reconnectMaxMs: 1000, keepaliveSec: 2, connectTimeoutMs: 2000 },
    crops: { enabled: false },
    // Slow on purpose, so that the broker and the link can fail in the middle of a replay.
    sparkplug: { enabled: true, groupId: GROUP, primaryHostId: HOST_ID, replayMessagesPerSec: 1 },
    service: { statusIntervalMs: 1000 },
  });
  const stateDir = path.dirname(configFile);
  const hosts: SparkplugHost[] = [];
  const newHost = async () => {
    const host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
    hosts.push(host);
    return host;
  };
  let host = await newHost();
  const daemon = new DaemonProcess(configFile);
  const fail = (err: Error): never => {
    throw new Error(`${err.message}\nhost saw: ${host.summary().slice(-3000)}\ndaemon: ${daemon.output.slice(-4000)}`);
  };
  /** Every capture time that any host got as historical DDATA. */
  const seen = () => hosts.flatMap((h) => historicalTimes(h.events, 'cam1'));
  /** The host goes offline; once `rows` results wait, what waits is returned (the node keeps inspecting). */
  const hostAway = async (rows: number): Promise<number[]> => {
    await host.send({ cmd: 'state', online: false });
    await until(`${rows} results kept while the host is away`, () => historyRows(stateDir).length >= rows, 90_000).catch(fail);
    return historyRows(stateDir).map((r) => Math.round(r.captured_at));
  };
  const allArrive = async (what: string, kept: number[], marks: Map<SparkplugHost, number>): Promise<void> => {
    await until(`${what}: all ${kept.length} kept results as historical DDATA`, () => {
      const got = new Set(seen());
      return kept.every((ts) => got.has(ts));
    }, 120_000).catch(fail);
    // Duplicates: what this step's replay delivered more than once.
    const all = hosts.flatMap((h) => historicalTimes(h.events.slice(marks.get(h) ?? 0), 'cam1')).filter((ts) => kept.includes(ts));
    t.diagnostic(`${what}: ${kept.length} results kept, all received, ${all.length - new Set(all).size} duplicates`);
  };
  try {
    daemon.start();
    await host.next('NBIRTH', (e) => e.type === 'NBIRTH', 0, 90_000).catch(fail);

    // ---- 1. the primary host goes away, the line keeps inspecting, the host comes back
    const marks = () => new Map(hosts.map((h) => [h, h.events.length]));
    let kept = await hostAway(40);
    let stepMarks = marks();
    let mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    await host.next('NBIRTH on the host\'s return', (e) => e.type === 'NBIRTH', mark).catch(fail);
    await allArrive('host away', kept, stepMarks);
    const inOrder = historicalTimes(host.events.slice(mark), 'cam1').filter((ts) => kept.includes(ts));
    assert.deepEqual(inOrder, [...kept].sort((a, b) => a - b), 'each result once, in capture order');

    // ---- 2. the broker is SIGKILLed at the first historical DDATA; a new host (subscribed before
    // it announces itself) sees the rest after the restart
    kept = await hostAway(60);
    stepMarks = marks();
    mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    await host.next('first historical DDATA', firstHistorical, mark).catch(fail);
    await broker.stop('SIGKILL');
    await host.stop();
    await broker.start();
    host = await newHost();
    await host.next('NBIRTH after the broker restart', (e) => e.type === 'NBIRTH', 0, 90_000).catch(fail);
    await allArrive('broker SIGKILL mid-replay', kept, stepMarks);

    // ---- 3. the node's link is cut silently at the first historical DDATA, then comes back
    kept = await hostAway(60);
    stepMarks = marks();
    mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    await host.next('first historical DDATA', firstHistorical, mark).catch(fail);
    proxy.hold();
    await host.next('the broker gives up on the silent node: its Will NDEATH', (e) => e.type === 'NDEATH', mark, 60_000).catch(fail);
    mark = host.events.length;
    proxy.reset();
    await host.next('NBIRTH when the link is back', (e) => e.type === 'NBIRTH', mark, 90_000).catch(fail);
    await allArrive('link cut silently mid-replay', kept, stepMarks);

    for (const h of hosts) assert.deepEqual(h.violations(), [], 'the host found no rule broken');
  } finally {
    await daemon.stop('SIGKILL');
    for (const h of hosts) await h.stop();
    await proxy.close();
    await broker.dispose();
  }
});
