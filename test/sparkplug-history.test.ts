// Historical DDATA that is never deleted before the broker has it: the issue-26 table as tests.
// One edge node in this process (its real code, fed synthetic results: exact counts and timing),
// a real mosquitto, the Python host with protoc-generated classes as the reader, and for link cuts
// a loopback proxy. Each result carries a unique Trigger Id, so what the host got, live or
// historical, is counted per result: lost must be 0; duplicates are allowed and reported.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { tempDir } from './helpers/cleanup.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { SparkplugHost, type HostEvent } from './helpers/sparkplug-host.js';
import { LinkProxy } from './helpers/sparkplug-proxy.js';
import { EdgeNode, type EdgeNodeSettings } from '../src/sparkplug/edge-node.js';
import { History } from '../src/sparkplug/history.js';
import { createLogger } from '../src/shared/log.js';
import type { Result } from '../src/inference/types.js';

const GROUP = 'plant1';
const NODE = 'press7';
const HOST_ID = 'scada1';
const log = createLogger(process.env.SPB_TEST_LOG ?? 'silent');

function settings(url: string, dir: string, extra: Partial<EdgeNodeSettings> = {}): EdgeNodeSettings {
  return {
    groupId: GROUP, edgeNodeId: NODE, primaryHostId: HOST_ID, metrics: [],
    connections: [{
      url, protocolVersion: 5, clientId: `spb-test-${path.basename(dir)}`, username: '', password: '', keepaliveSec: 2, connectTimeoutMs: 2000,
      tls: { ca: '', cert: '', key: '', rejectUnauthorized: true }, reconnectMinMs: 100, reconnectMaxMs: 500, sessionExpirySec: 0,
    }],
    stateFile: path.join(dir, 'sparkplug-state.json'), historyFile: path.join(dir, 'sparkplug-history.sqlite'), historyMaxRows: 1_000_000,
    replayMessagesPerSec: 200, legacyState: false, ndataIntervalMs: 1000, cameras: ['cam1'],
    ...extra,
  };
}

const hooks = { trigger: () => 'no', nodeInfo: () => ({ outboxDepth: 0, brokerReconnects: 0, configRevision: 1 }) };

function result(n: number, capturedAt = Date.now()): Result {
  return {
    frame: { cameraId: 'cam1', sequence: n, capturedAt: new Date(capturedAt).toISOString(), capturedMono: 0, roi: null, triggerId: `r${n}` },
    model: null, raw: n / 1000, normalized: null, verdict: n % 7 === 0 ? 'NG' : 'OK', calibrated: false, regions: [], crops: [], overlay: null,
    latency: { queueMs: 0, preprocessMs: 0, inferenceMs: 1, postprocessMs: 0, batchSize: 1 },
  };
}

/** Results made by a line: n, n+1, ... every `everyMs`, until stopped. */
class Line {
  made = 0;
  private timer: NodeJS.Timeout | null = null;
  constructor(private readonly node: EdgeNode, private readonly everyMs: number) {}
  start(): void {
    this.timer = setInterval(() => this.node.onResult(result(++this.made)), this.everyMs);
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** Trigger ids the host received for cam1, live or historical, in arrival order. */
function received(host: SparkplugHost, historicalOnly = false): string[] {
  return host.messages('DDATA', 'cam1').flatMap((e: HostEvent) => (e.metrics ?? [])
    .filter((m) => m.name === 'Inspection/Trigger Id' && typeof m.value === 'string' && (!historicalOnly || m.is_historical))
    .map((m) => m.value as string));
}

const firstHistorical = (e: HostEvent) => e.type === 'DDATA' && (e.metrics ?? []).some((m) => m.is_historical);

/** Every one of `made` results arrived (r1..rN); duplicates counted and reported. */
async function accountFor(t: TestContext, host: SparkplugHost, node: EdgeNode, made: number, what: string): Promise<void> {
  const missing = () => {
    const got = new Set(received(host));
    const out: number[] = [];
    for (let i = 1; i <= made; i++) if (!got.has(`r${i}`)) out.push(i);
    return out;
  };
  await until(`${what}: all ${made} results at the host`, () => missing().length === 0, 120_000).catch((err: Error) => {
    const m = missing();
    throw new Error(`${err.message}: ${m.length} lost (first ${m.slice(0, 10).join(', ')}); node ${JSON.stringify(node.stats())}\nhost saw: ${host.summary().slice(-3000)}`);
  });
  const all = received(host);
  t.diagnostic(`${what}: made ${made}, received ${all.length} (unique ${new Set(all).size}), lost 0, duplicates ${all.length - new Set(all).size}`);
  await until(`${what}: history confirmed and empty`, () => node.stats().historyPending === 0, 60_000);
  assert.deepEqual(host.violations(), [], 'the host found no rule broken');
}

/**
 * A line making a result every 20 ms; the primary host goes away until 150 results wait, comes
 * back, and at the first historical DDATA `cut` breaks the link or the broker; once the node is
 * born again after what `cut` returns (the repair), every result must reach the host.
 */
async function replayCut(t: TestContext, what: string, viaProxy: boolean, cut: (broker: Mosquitto, proxy: LinkProxy | null) => Promise<() => Promise<void>>): Promise<void> {
  const broker = await Mosquitto.start();
  const proxy = viaProxy ? await LinkProxy.start(broker.port) : null;
  const host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  let node: EdgeNode | undefined;
  let line: Line | undefined;
  try {
    node = new EdgeNode(settings(proxy?.url ?? broker.url, tempDir('spb-hist'), { replayMessagesPerSec: 4 }), hooks, log);
    line = new Line(node, 20);
    node.start();
    await host.next('NBIRTH', (e) => e.type === 'NBIRTH');
    line.start();
    await host.send({ cmd: 'state', online: false });
    await until('results stored while the host is away', () => node!.stats().historyPending >= 150, 60_000);
    let mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    await host.next('first historical DDATA', firstHistorical, mark);
    const repair = await cut(broker, proxy);
    mark = host.events.length;
    await repair();
    await host.next('NBIRTH after the repair', (e) => e.type === 'NBIRTH', mark);
    await new Promise((r) => setTimeout(r, 1000));
    line.stop();
    await accountFor(t, host, node, line.made, what);
  } finally {
    line?.stop();
    await node?.stop();
    await proxy?.close();
    await host.stop();
    await broker.dispose();
  }
}

test('broker SIGKILLed at the first historical DDATA: nothing lost', { timeout: 180_000 }, async (t) => {
  await replayCut(t, 'broker SIGKILL', false, async (broker) => {
    await broker.stop('SIGKILL');
    return () => broker.start();
  });
});

test('link held 10 s after the first historical DDATA, then reset: nothing lost, live or historical', { timeout: 180_000 }, async (t) => {
  await replayCut(t, 'link held 10 s', true, async (_broker, proxy) => {
    proxy!.hold();
    await new Promise((r) => setTimeout(r, 10_000));
    return async () => proxy!.reset();
  });
});

test('link reset 0.5 s into a replay of 30,000 stored rows: the replay resumes, nothing lost', { timeout: 240_000 }, async (t) => {
  const ROWS = 30_000;
  const broker = await Mosquitto.start();
  const proxy = await LinkProxy.start(broker.port);
  const dir = tempDir('spb-hist');
  const s = settings(proxy.url, dir);
  // The rows as the node stores them (its own History makes the table), written in one transaction.
  new History(s.historyFile, s.historyMaxRows, log).close();
  const db = new Database(s.historyFile);
  const insert = db.prepare('INSERT INTO history (camera, captured_at, "values") VALUES (?, ?, ?)');
  const t0 = Date.now() - ROWS * 10;
  db.transaction(() => {
    for (let i = 1; i <= ROWS; i++) {
      insert.run('cam1', t0 + i * 10, JSON.stringify({ 'Inspection/Raw Score': i / 1000, 'Inspection/Normalized Score': null, 'Inspection/Verdict': 'OK', 'Inspection/Region Count': 0, 'Inspection/Latency Ms': 1, 'Inspection/Trigger Id': `r${i}`, 'Counters/OK': i, 'Counters/NG': 0 }));
    }
  })();
  db.close();
  const tableBytes = fs.statSync(s.historyFile).size;
  const host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  let node: EdgeNode | undefined;
  try {
    node = new EdgeNode(s, hooks, log);
    node.start();
    await host.next('first historical DDATA', firstHistorical, 0, 60_000);
    const replayStart = performance.now();
    await new Promise((r) => setTimeout(r, 500));
    const mark = host.events.length;
    proxy.reset();
    await host.next('NBIRTH after the reset', (e) => e.type === 'NBIRTH', mark);
    await until('every row confirmed and deleted', () => node!.stats().historyPending === 0, 120_000);
    t.diagnostic(`replay of ${ROWS} rows with one reset: ${((performance.now() - replayStart) / 1000).toFixed(1)} s from the first historical DDATA until the node had all confirmed; table file ${tableBytes} bytes for ${ROWS} rows`);
    await accountFor(t, host, node, ROWS, 'link reset in a 30,000-row replay');
    const stats = node.stats();
    assert.ok(stats.historySent >= ROWS && stats.historyConfirmed === ROWS, JSON.stringify(stats));
  } finally {
    await node?.stop();
    await proxy.close();
    await host.stop();
    await broker.dispose();
  }
});
