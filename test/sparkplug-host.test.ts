// The Sparkplug B plane seen by a host that is not our code (test/helpers/sparkplug_host.py:
// protoc-generated classes, mosquitto_sub/pub), against a real mosquitto and the daemon as a real
// process. The host checks every message against the edge-node rules as it arrives; this test
// drives one node through its life and checks what the host saw at each step:
// primary host wait -> births -> rebirth -> DCMD trigger/reset -> garbage commands -> camera lost
// and back -> primary host offline (stale, then real) and online -> broker outage (historical DDATA)
// -> SIGKILL (Will NDEATH) -> restart (bdSeq kept) -> clean stop (NDEATH). A second, short life
// runs the node on MQTT 3.1.1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DaemonProcess, demoModel, writeConfig } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { imageFolder } from './helpers/reliability.js';
import { historicalTimes, historyRows, metricNamed, SparkplugHost, type HostEvent } from './helpers/sparkplug-host.js';

const GROUP = 'plant1';
const NODE = 'press7';
const HOST_ID = 'scada1';

const bdSeqOf = (e: HostEvent) => e.bdSeq!;

/** A node on `broker` with these cameras, under the primary host HOST_ID; `mqtt` adds to mqtt.*. */
function nodeConfig(broker: Mosquitto, cameras: Record<string, unknown>[], mqtt: Record<string, unknown> = {}): string {
  return writeConfig({
    device: { id: NODE },
    model: { path: demoModel },
    cameras,
    mqtt: { url: broker.url, topicPrefix: 'spb/json', reconnectMinMs: 200, reconnectMaxMs: 1000, keepaliveSec: 5, connectTimeoutMs: 2000, ...mqtt },
    crops: { enabled: false },
    sparkplug: { enabled: true, groupId: GROUP, primaryHostId: HOST_ID },
    service: { statusIntervalMs: 1000 },
  });
}

test('Sparkplug edge node: births, commands, bad input, camera loss, primary host, outage with historical DDATA, SIGKILL, restart', { timeout: 300_000 }, async () => {
  const broker = await Mosquitto.start();
  const cam1Folder = imageFolder(3);
  const cam1Away = `${cam1Folder}-away`;
  const configFile = nodeConfig(broker, [
    { id: 'cam1', source: 'folder', path: cam1Folder, loop: true, fps: 2, reconnectMinMs: 200, reconnectMaxMs: 500 },
    { id: 'cam2', source: 'folder', path: imageFolder(2), loop: true, trigger: 'mqtt' },
  ]);
  const stateDir = path.dirname(configFile);
  let host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  let daemon = new DaemonProcess(configFile);
  const fail = (err: Error): never => {
    throw new Error(`${err.message}\nhost saw: ${host.summary()}\ndaemon: ${daemon.output.slice(-4000)}`);
  };
  try {
    // ---- the node waits for the primary host: the host announced before the daemon started,
    // so withdraw that first (an offline STATE newer than the online one).
    await host.send({ cmd: 'state', online: false });
    daemon.start();
    await until('the node waits for the primary host', () => daemon.output.includes('waiting for the primary host'), 90_000).catch(fail);
    assert.equal(host.messages('NBIRTH').length, 0, 'no NBIRTH while the primary host is offline');
    let mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    const birth1 = await host.next('NBIRTH after STATE online', (e) => e.type === 'NBIRTH', mark).catch(fail);
    const b0 = bdSeqOf(birth1);
    assert.equal(birth1.seq, 0);
    assert.equal(metricNamed(birth1, 'Node Control/Rebirth')?.value, false);
    for (const name of ['Node Info/Model Name', 'Node Info/Model Hash', 'Node Info/Outbox Depth', 'Node Info/Uptime Seconds', 'Node Info/Config Revision']) {
      assert.ok(metricNamed(birth1, name), `NBIRTH has ${name}`);
    }
    const dbirth2 = await host.next('DBIRTH cam2', (e) => e.type === 'DBIRTH' && e.device === 'cam2', mark).catch(fail);
    await host.next('DBIRTH cam1', (e) => e.type === 'DBIRTH' && e.device === 'cam1', mark).catch(fail);
    await host.next('live DDATA cam1', (e) => e.type === 'DDATA' && e.device === 'cam1', mark).catch(fail);

    // ---- rebirth: same bdSeq, no NDEATH, no reconnect
    mark = host.events.length;
    await host.send({ cmd: 'ncmd', metrics: [{ name: 'Node Control/Rebirth', datatype: 11, boolean_value: true }] });
    const rebirth = await host.next('NBIRTH after Rebirth', (e) => e.type === 'NBIRTH', mark).catch(fail);
    assert.equal(bdSeqOf(rebirth), b0, 'rebirth keeps bdSeq');
    await host.next('DBIRTH cam1 after Rebirth', (e) => e.type === 'DBIRTH' && e.device === 'cam1', mark).catch(fail);
    assert.equal(host.messages('NDEATH').length, 0, 'no NDEATH for a rebirth');

    // ---- DCMD by alias: trigger cam2, reset cam1's counters
    const aliasIn = (birth: HostEvent, name: string) => metricNamed(birth, name)!.alias!;
    mark = host.events.length;
    await host.send({ cmd: 'dcmd', device: 'cam2', metrics: [{ alias: aliasIn(dbirth2, 'Device Control/Trigger'), boolean_value: true }] });
    const triggered = await host.next('DDATA cam2 with a trigger id', (e) => e.type === 'DDATA' && e.device === 'cam2' && (e.metrics ?? []).some((m) => typeof m.value === 'string' && m.value.startsWith('spb-')), mark).catch(fail);
    assert.ok(triggered);
    mark = host.events.length;
    await host.send({ cmd: 'dcmd', device: 'cam1', metrics: [{ name: 'Device Control/Reset Counters', boolean_value: true }] });
    await host.next('DDATA cam1 with counters reset', (e) => e.type === 'DDATA' && e.device === 'cam1' && (e.metrics ?? []).some((m) => m.name === 'Counters/OK' && m.value === 0), mark).catch(fail);

    // ---- garbage: each is logged, counted (Rejected Commands in NDATA) and changes nothing else
    mark = host.events.length;
    const garbage: Record<string, unknown>[] = [
      { cmd: 'raw', topic: `spBv1.0/${GROUP}/NCMD/${NODE}`, hex: 'ffffffff0a0b0c' },
      { cmd: 'ncmd', metrics: [{ name: 'Node Control/Self Destruct', boolean_value: true }] },
      { cmd: 'ncmd', metrics: [{ name: 'Node Control/Rebirth', datatype: 12, string_value: 'yes' }] },
      { cmd: 'ncmd', metrics: [{ alias: 999999, boolean_value: true }] },
      { cmd: 'dcmd', device: 'cam9', metrics: [{ name: 'Device Control/Trigger', boolean_value: true }] },
      { cmd: 'dcmd', device: 'cam1', metrics: [{ name: 'Device Control/Trigger', boolean_value: true }] }, // free-run camera
      { cmd: 'raw', topic: `spBv1.0/${GROUP}/DCMD/${NODE}/cam2`, hex: '' },
    ];
    for (const command of garbage) await host.send(command);
    await host.next(`NDATA with ${garbage.length} rejected commands`, (e) => e.type === 'NDATA' && (e.metrics ?? []).some((m) => m.name === 'Node Info/Rejected Commands' && m.value === garbage.length), mark).catch(fail);
    assert.deepEqual(host.messages().slice(0).filter((e) => host.events.indexOf(e) >= mark && (e.type === 'NBIRTH' || e.type === 'NDEATH')), [], 'no birth or death for bad input');

    // ---- camera lost and back: DDEATH, then DBIRTH
    mark = host.events.length;
    fs.renameSync(cam1Folder, cam1Away);
    await host.next('DDEATH cam1', (e) => e.type === 'DDEATH' && e.device === 'cam1', mark).catch(fail);
    const lost = host.events.length;
    fs.renameSync(cam1Away, cam1Folder);
    await host.next('DBIRTH cam1 when back', (e) => e.type === 'DBIRTH' && e.device === 'cam1', lost).catch(fail);

    // ---- primary host offline: a stale offline STATE is ignored, a newer one kills the session
    const onlineAt = host.events.filter((e) => e.event === 'state-sent' && e.online).at(-1)!.timestamp!;
    mark = host.events.length;
    await host.send({ cmd: 'state', online: false, timestamp: onlineAt - 1000 });
    await host.send({ cmd: 'ncmd', metrics: [{ name: 'Node Control/Rebirth', boolean_value: true }] });
    const stillAlive = await host.next('NBIRTH (stale offline ignored)', (e) => e.type === 'NBIRTH', mark).catch(fail);
    assert.equal(bdSeqOf(stillAlive), b0);
    assert.equal(host.messages('NDEATH').length, 0, 'stale offline STATE: no NDEATH');
    mark = host.events.length;
    await host.send({ cmd: 'state', online: false });
    const death = await host.next('NDEATH after host offline', (e) => e.type === 'NDEATH', mark).catch(fail);
    assert.equal(bdSeqOf(death), b0, 'NDEATH carries the session bdSeq');
    assert.equal(death.matchesBirth, true);
    await until('the node waits for the host again', () => daemon.output.split('waiting for the primary host').length > 2, 60_000).catch(fail);
    mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    const birth2 = await host.next('NBIRTH after host online', (e) => e.type === 'NBIRTH', mark).catch(fail);
    assert.equal(bdSeqOf(birth2), (b0 + 1) % 256, 'a new session: bdSeq + 1');

    // ---- broker outage: results pile up in the history; after the next NBIRTH they arrive as
    // historical DDATA with their capture times, in order, none lost. The host is a new one,
    // subscribed before it announces itself (the only STATE online the node can get: the broker
    // keeps nothing), so it cannot miss the NBIRTH to a re-subscription racing the node.
    await broker.stop();
    assert.deepEqual(host.violations(), [], 'the first host found no rule broken');
    await host.stop();
    await until('results kept for historical DDATA', () => historyRows(stateDir).filter((r) => r.camera === 'cam1').length >= 3, 60_000).catch(fail);
    await broker.start();
    host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
    mark = 0;
    const birth3 = await host.next('NBIRTH after the outage', (e) => e.type === 'NBIRTH', mark).catch(fail);
    // bdSeq: one more per CONNECT, the ones refused during the outage included (the state file
    // holds the last CONNECT's).
    const lastConnect = (JSON.parse(fs.readFileSync(path.join(stateDir, 'sparkplug-state.json'), 'utf8')) as { lastBdSeq: number }).lastBdSeq;
    assert.equal(bdSeqOf(birth3), lastConnect);
    assert.notEqual(bdSeqOf(birth3), bdSeqOf(birth2));
    const kept = historyRows(stateDir).filter((r) => r.camera === 'cam1').map((r) => Math.round(r.captured_at));
    await until('every kept result as historical DDATA', () => {
      const seen = new Set(historicalTimes(host.events.slice(mark), 'cam1'));
      return kept.every((t) => seen.has(t));
    }, 60_000).catch(fail);
    const historical = historicalTimes(host.events.slice(mark), 'cam1');
    assert.deepEqual(historical, [...historical].sort((a, b) => a - b), 'historical DDATA in capture order');
    const birthIndex = host.events.indexOf(birth3);
    const firstHistorical = host.events.findIndex((e, i) => i > mark && e.type === 'DDATA' && (e.metrics ?? []).some((m) => m.is_historical));
    assert.ok(firstHistorical > birthIndex, 'historical DDATA after the NBIRTH');

    // ---- SIGKILL: the broker publishes the Will, with this session's bdSeq
    mark = host.events.length;
    assert.equal(await daemon.stop('SIGKILL'), null);
    const will = await host.next('Will NDEATH after SIGKILL', (e) => e.type === 'NDEATH', mark, 90_000).catch(fail);
    assert.equal(bdSeqOf(will), bdSeqOf(birth3));
    assert.equal(will.qos, 1, 'Will at QoS 1');

    // ---- restart: bdSeq continues from the state directory; a clean stop sends NDEATH
    mark = host.events.length;
    daemon = new DaemonProcess(configFile);
    daemon.start();
    const birth4 = await host.next('NBIRTH after restart', (e) => e.type === 'NBIRTH', mark, 90_000).catch(fail);
    assert.equal(bdSeqOf(birth4), (bdSeqOf(birth3) + 1) % 256, 'bdSeq kept across daemon restarts');
    mark = host.events.length;
    assert.equal(await daemon.stop('SIGTERM'), 0);
    const cleanDeath = await host.next('NDEATH on clean stop', (e) => e.type === 'NDEATH', mark).catch(fail);
    assert.equal(bdSeqOf(cleanDeath), bdSeqOf(birth4));

    assert.deepEqual(host.violations(), [], 'the host found no rule broken');
  } finally {
    await daemon.stop('SIGKILL');
    await host.stop();
    await broker.dispose();
  }
});

// MQTT 3.1.1 (Sparkplug B 3.0 allows it) has no DISCONNECT reason code: where MQTT 5 has the
// broker publish the Will (DISCONNECT 0x04), the node publishes NDEATH itself before a normal
// DISCONNECT (which makes the broker drop the Will). One node, one life: births, rebirth, death
// for an offline primary host, a new session, SIGKILL.
test('Sparkplug edge node over MQTT 3.1.1: births decode, NCMD rebirth, NDEATH for host offline, Will NDEATH on SIGKILL', { timeout: 180_000 }, async () => {
  const broker = await Mosquitto.start({ logConnections: true });
  const configFile = nodeConfig(broker, [{ id: 'cam1', source: 'folder', path: imageFolder(2), loop: true, fps: 2 }], { protocolVersion: 4 });
  const host = await SparkplugHost.start({ port: broker.port, group: GROUP, node: NODE, hostId: HOST_ID, announce: true });
  const daemon = new DaemonProcess(configFile);
  const fail = (err: Error): never => {
    throw new Error(`${err.message}\nhost saw: ${host.summary()}\ndaemon: ${daemon.output.slice(-4000)}`);
  };
  try {
    daemon.start();
    const birth = await host.next('NBIRTH', (e) => e.type === 'NBIRTH', 0, 90_000).catch(fail);
    // The broker's word for it: mosquitto logs the protocol of each client ("p2": MQTT 3.1.1).
    assert.match(broker.log, new RegExp(`as crad-edge-${NODE}-spb \\(p2,`), broker.log);
    const b0 = bdSeqOf(birth);
    assert.equal(birth.seq, 0);
    assert.equal(metricNamed(birth, 'Node Control/Rebirth')?.value, false);
    assert.match(String(metricNamed(birth, 'Node Info/Model Hash')?.value), /^[0-9a-f]{64}$/);
    const dbirth = await host.next('DBIRTH cam1', (e) => e.type === 'DBIRTH' && e.device === 'cam1').catch(fail);
    assert.equal(metricNamed(dbirth, 'Camera/State')?.value, 'online');
    await host.next('live DDATA cam1', (e) => e.type === 'DDATA' && e.device === 'cam1' && metricNamed(e, 'Inspection/Raw Score') !== undefined).catch(fail);

    // ---- NCMD rebirth: the same session (bdSeq), births again, no death
    let mark = host.events.length;
    await host.send({ cmd: 'ncmd', metrics: [{ name: 'Node Control/Rebirth', datatype: 11, boolean_value: true }] });
    const rebirth = await host.next('NBIRTH after Rebirth', (e) => e.type === 'NBIRTH', mark).catch(fail);
    assert.equal(bdSeqOf(rebirth), b0, 'rebirth keeps bdSeq');
    assert.equal(rebirth.seq, 0);
    await host.next('DBIRTH cam1 after Rebirth', (e) => e.type === 'DBIRTH' && e.device === 'cam1', mark).catch(fail);
    assert.equal(host.messages('NDEATH').length, 0, 'no NDEATH for a rebirth');

    // ---- primary host offline: the node publishes NDEATH itself (3.1.1), once, then a new session
    mark = host.events.length;
    await host.send({ cmd: 'state', online: false });
    const death = await host.next('NDEATH after host offline', (e) => e.type === 'NDEATH', mark).catch(fail);
    assert.equal(bdSeqOf(death), b0);
    assert.equal(death.matchesBirth, true);
    assert.equal(death.qos, 1);
    mark = host.events.length;
    await host.send({ cmd: 'state', online: true });
    const birth2 = await host.next('NBIRTH after host online', (e) => e.type === 'NBIRTH', mark).catch(fail);
    assert.equal(bdSeqOf(birth2), (b0 + 1) % 256, 'a new session: bdSeq + 1');
    assert.equal(host.messages('NDEATH').length, 1, 'one NDEATH: the normal DISCONNECT dropped the Will');

    // ---- SIGKILL: the broker publishes the Will, with this session's bdSeq
    mark = host.events.length;
    assert.equal(await daemon.stop('SIGKILL'), null);
    const will = await host.next('Will NDEATH after SIGKILL', (e) => e.type === 'NDEATH', mark, 90_000).catch(fail);
    assert.equal(bdSeqOf(will), bdSeqOf(birth2));
    assert.equal(will.matchesBirth, true);
    assert.equal(will.qos, 1, 'Will at QoS 1');

    assert.deepEqual(host.violations(), [], 'the host found no rule broken');
  } finally {
    await daemon.stop('SIGKILL');
    await host.stop();
    await broker.dispose();
  }
});
