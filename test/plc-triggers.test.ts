// The trigger contract from a PLC's seat: the real daemon (a process, or in this process where the
// test must break it on purpose), a real mosquitto, a folder camera in trigger mode, and the PLC's
// own MQTT client (Eclipse Paho from Debian, test/helpers/plc_client.py). Every message on a
// trigger topic gets exactly one answer, with a numeric code when it is not an inspection; the
// line keeps inspecting after triggers expire; triggers sent while the daemon reconnects after a
// broker restart are queued by the broker and answered; a batch loop that dies is reported
// everywhere a PLC, a SCADA or systemd looks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { Daemon } from '../src/service/daemon.js';
import { createLogger } from '../src/shared/log.js';
import { tempDir } from './helpers/cleanup.js';
import { capturingLogger } from './helpers/log.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { consoleUrl } from './helpers/console.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { NotifySocket } from './helpers/notify-socket.js';
import { Plc } from './helpers/plc.js';
import { assertValid, schemaValidator, Subscriber, until } from './helpers/publish-fixtures.js';

const ajv = schemaValidator();
const PREFIX = 'plant/line4/press2';
let broker: Mosquitto;

before(async () => {
  broker = await Mosquitto.start();
});
after(async () => {
  await broker.stop();
});

function lineConfig(extra: Record<string, any> = {}, dir = tempDir('plc')): string {
  return writeConfig({
    device: { id: 'press2' },
    model: { path: demoModel, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, trigger: 'mqtt', triggerDeadlineMs: 400, recipe: 'A' }],
    recipes: { A: { number: 7 } },
    mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, topicPrefix: 'plant/line4', reconnectMinMs: 200, reconnectMaxMs: 1000 },
    crops: { enabled: false },
    http: { enabled: true, host: '127.0.0.1', port: 0 },
    service: { statusIntervalMs: 1000 },
    ...extra,
  }, dir);
}

test('the line never stops: 16 triggers at once with triggerDeadlineMs 400, then every later trigger is inspected; each answered once, codes on failures, recipe number on every result', async () => {
  const daemon = new DaemonProcess(lineConfig());
  daemon.start();
  const plc = await Plc.connect(PREFIX, broker.port);
  try {
    const console = await consoleUrl(daemon);
    await until('cam1 ready', () => plc.lastStatus('cam1')?.ready === true, 60_000);
    const burst = Array.from({ length: 16 }, (_, i) => `b${i + 1}`);
    for (const id of burst) plc.trigger('cam1', { id });
    await until('the burst answered', () => burst.every((id) => plc.answersTo('cam1', id).length >= 1), 30_000);
    for (const id of burst) {
      const answers = plc.answersTo('cam1', id);
      assert.equal(answers.length, 1, `${id} answered once`);
      assertValid(ajv, 'result.schema.json', answers[0]);
      if (answers[0].verdict === 'ERROR') assert.ok([20, 21].includes(answers[0].code), `${id}: ${answers[0].code} ${answers[0].reason}`);
    }
    // The defect: after one expiry every later trigger was ERROR until a restart.
    for (let i = 1; i <= 5; i++) {
      const id = `after${i}`;
      await until(`cam1 ready before ${id}`, () => plc.lastStatus('cam1')?.ready === true, 10_000);
      plc.trigger('cam1', { id });
      await until(`${id} answered`, () => plc.answersTo('cam1', id).length === 1, 10_000);
      const [answer] = plc.answersTo('cam1', id);
      assertValid(ajv, 'result.schema.json', answer);
      assert.equal(answer.reason, undefined, `${id} inspected, not answered with: ${answer.reason}`);
      assert.deepEqual([answer.recipe, answer.recipeNumber], ['A', 7]);
    }
    const ready = await fetch(`${console}/readyz`);
    assert.equal(ready.status, 200);
    const device = plc.lastStatus();
    assertValid(ajv, 'device-status.schema.json', device);
    assert.deepEqual(device.inspection, { ready: true, reason: null });
    // Every inspection had a frame: the retained status counts them (refreshed with the device status).
    const inspected = plc.results('cam1').filter((r) => r.reason === undefined).length;
    await until('the retained status counts the frames', () => plc.lastStatus('cam1')?.framesCaptured >= inspected, 5000);
    assertValid(ajv, 'camera-status.schema.json', plc.lastStatus('cam1'));
  } finally {
    await plc.close();
    assert.equal(await daemon.stop(), 0, daemon.output.slice(-2000));
  }
});

test('every message on a trigger topic is answered once, malformed ones too: the id as far as it can be read, code 50; a trigger older than its deadline code 22', async () => {
  const daemon = new DaemonProcess(lineConfig({ cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, trigger: 'mqtt', triggerDeadlineMs: 5000 }] }));
  daemon.start();
  const plc = await Plc.connect(PREFIX, broker.port, `plc-malformed-${process.pid}`);
  try {
    await until('cam1 ready', () => plc.lastStatus('cam1')?.ready === true, 60_000);
    const long = 'L'.repeat(300);
    plc.trigger('cam1', '{"id": 17}');
    await until('the first answer', () => plc.results('cam1').length === 1, 10_000);
    plc.trigger('cam1', { id: long });
    await until('the second answer', () => plc.results('cam1').length === 2, 10_000);
    plc.trigger('cam1', '{"id": "broken", ');
    await until('the third answer', () => plc.results('cam1').length === 3, 10_000);
    plc.trigger('cam1', { id: 'u1', colour: 'red' });
    plc.trigger('cam1', { id: 'stale', sentAt: new Date(Date.now() - 60_000).toISOString() });
    plc.trigger('cam1', { id: 'fresh', sentAt: new Date().toISOString() });
    await until('six answers', () => plc.results('cam1').length >= 6, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const results = plc.results('cam1');
    assert.equal(results.length, 6, 'one answer each, no more');
    for (const result of results) assertValid(ajv, 'result.schema.json', result);
    const [numeric, tooLong, broken] = results;
    assert.deepEqual([numeric.triggerId, numeric.verdict, numeric.code], ['17', 'ERROR', 50]);
    assert.match(numeric.reason, /"id" must be a string, got number/);
    assert.equal(tooLong.triggerId, 'L'.repeat(200));
    assert.equal(tooLong.code, 50);
    assert.match(tooLong.reason, /1\.\.200 characters \(got 300\); the answer's triggerId is its first 200 characters/);
    assert.deepEqual([broken.triggerId, broken.code], [null, 50]);
    assert.match(broken.reason, /not valid JSON/);
    const unknownField = plc.answersTo('cam1', 'u1')[0];
    assert.deepEqual([unknownField.code, unknownField.verdict], [50, 'ERROR']);
    assert.match(unknownField.reason, /unknown keys: colour/);
    const stale = plc.answersTo('cam1', 'stale')[0];
    assert.equal(stale.code, 22);
    assert.match(stale.reason, /expired while the broker was away/);
    const fresh = plc.answersTo('cam1', 'fresh')[0];
    assert.equal(fresh.reason, undefined, `a trigger within its deadline is inspected (${fresh.reason})`);
    for (const answer of [numeric, tooLong, broken, unknownField, stale]) assert.ok(Date.parse(answer.receivedAt) > 0);
  } finally {
    await plc.close();
    await daemon.stop();
  }
});

test('a broker restart while a PLC keeps triggering: triggers sent before the daemon is back are queued by the broker and every one is answered once', async () => {
  const restartable = await Mosquitto.start({ persistence: true });
  const dir = tempDir('plc-restart');
  const daemon = new DaemonProcess(lineConfig({
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, trigger: 'mqtt', triggerDeadlineMs: 15_000 }],
    // The daemon comes back a while after the PLC: the window in which triggers were lost.
    mqtt: { url: `mqtt://127.0.0.1:${restartable.port}`, topicPrefix: 'plant/line4', reconnectMinMs: 2500, reconnectMaxMs: 2500, sessionExpirySec: 120 },
    http: { enabled: false },
  }, dir));
  daemon.start();
  const plc = await Plc.connect(PREFIX, restartable.port, `plc-restart-${process.pid}`);
  try {
    await until('cam1 ready', () => plc.lastStatus('cam1')?.ready === true, 60_000);
    plc.trigger('cam1', { id: 'before' });
    await until('the trigger before the restart answered', () => plc.answersTo('cam1', 'before').length === 1, 15_000);
    await restartable.stop();
    await restartable.start();
    await until('the PLC reconnected', () => plc.connects() >= 2, 30_000);
    const sent: Array<{ id: string; at: number }> = [];
    const daemonBack = () => plc.events.find((e, i) => i > 0 && e.event === 'message' && e.topic === `${PREFIX}/status` && e.json?.state === 'online'
      && e.at >= plc.events.filter((x) => x.event === 'connected')[1]!.at)?.at;
    for (let i = 0; i < 30; i++) {
      const id = `r${i}`;
      plc.trigger('cam1', { id });
      sent.push({ id, at: Date.now() });
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await until('every trigger after the restart answered', () => sent.every(({ id }) => plc.answersTo('cam1', id).length >= 1), 60_000).catch((err: Error) => {
      const missing = sent.filter(({ id }) => plc.answersTo('cam1', id).length === 0).map(({ id }) => id);
      throw new Error(`${err.message}: unanswered ${missing.join(', ')}\n${daemon.output.slice(-3000)}`);
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const { id } of sent) {
      const answers = plc.answersTo('cam1', id);
      assert.equal(answers.length, 1, `${id} answered once`);
      assertValid(ajv, 'result.schema.json', answers[0]);
    }
    const back = daemonBack();
    assert.ok(back !== undefined, 'the daemon said online again');
    const early = sent.filter(({ at }) => at < back!).length;
    assert.ok(early >= 1, `some triggers were sent before the daemon was back (${early}): the test covers the window`);
  } finally {
    await plc.close();
    await daemon.stop();
    await restartable.stop();
  }
});

test('a batch loop that dies is a fault everyone sees: statuses not ready with the reason, /readyz 503, no watchdog pings, triggers answered code 42, and the daemon asks to exit', async () => {
  const notify = await NotifySocket.start();
  const saved = { socket: process.env.NOTIFY_SOCKET, usec: process.env.WATCHDOG_USEC };
  process.env.NOTIFY_SOCKET = notify.socketPath;
  process.env.WATCHDOG_USEC = '1000000';
  const dir = tempDir('plc-fault');
  const config = loadConfig(undefined, {
    device: { id: 'press2' },
    model: { path: demoModel, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, trigger: 'mqtt', triggerDeadlineMs: 2000 }],
    mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, topicPrefix: 'plant/line4' },
    http: { enabled: true, host: '127.0.0.1', port: 0 },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    service: { stateDir: dir, statusIntervalMs: 1000, faultExitDelayMs: 1500 },
  });
  const faults: Array<{ reason: string; at: number }> = [];
  const { log, lines } = capturingLogger('info');
  const daemon = new Daemon({ config, log, onFault: (reason) => faults.push({ reason, at: Date.now() }) });
  const plc = await Plc.connect(PREFIX, broker.port, `plc-fault-${process.pid}`);
  try {
    await daemon.start();
    const address = () => lines().find((l) => l.msg === 'operator console listening')?.address as string | undefined;
    await until('the console listens', () => address() !== undefined, 30_000);
    await until('cam1 ready', () => plc.lastStatus('cam1')?.ready === true, 30_000);
    plc.trigger('cam1', { id: 'ok1' });
    await until('ok1 inspected', () => plc.answersTo('cam1', 'ok1').length === 1, 15_000);
    await until('watchdog pings while healthy', () => notify.count('WATCHDOG=1') >= 2, 15_000);

    // Kill the loop on purpose: its next take throws.
    const pipeline = (daemon as any).pipeline;
    pipeline.batcher.take = async () => {
      throw new Error('killed on purpose');
    };
    plc.trigger('cam1', { id: 'last-frame' }); // the loop takes it, then dies on the next take
    await until('the camera status says not ready', () => plc.lastStatus('cam1')?.ready === false, 15_000);
    const camera = plc.lastStatus('cam1');
    assertValid(ajv, 'camera-status.schema.json', camera);
    assert.match(camera.notReady, /inspection stopped: the batch loop failed: killed on purpose/);
    await until('the device status says not ready', () => plc.lastStatus()?.inspection?.ready === false, 15_000);
    assertValid(ajv, 'device-status.schema.json', plc.lastStatus());
    assert.match(plc.lastStatus().inspection.reason, /killed on purpose/);
    const ready = await fetch(`${address()}/readyz`);
    assert.equal(ready.status, 503);
    assert.ok(((await ready.json()) as { reasons: string[] }).reasons.some((r) => /inspection stopped: .*killed on purpose/.test(r)));
    plc.trigger('cam1', { id: 'after-fault' });
    await until('after-fault answered', () => plc.answersTo('cam1', 'after-fault').length === 1, 10_000);
    const answer = plc.answersTo('cam1', 'after-fault')[0];
    assert.deepEqual([answer.verdict, answer.code], ['ERROR', 42]);
    const quietSince = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.ok(notify.lastAt('WATCHDOG=1') < quietSince, 'no watchdog ping after the fault');
    assert.ok(notify.notifications.some((n) => n.lines.some((l) => l.startsWith('STATUS=NOT READY (the batch loop failed: killed on purpose)'))));
    assert.equal(faults.length, 1, 'asked once to exit (cli run then exits 1 for systemd to restart it)');
  } finally {
    await daemon.stop();
    await plc.close();
    await notify.stop();
    if (saved.socket === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved.socket;
    if (saved.usec === undefined) delete process.env.WATCHDOG_USEC;
    else process.env.WATCHDOG_USEC = saved.usec;
  }
});

test('a loop that stalls (a model run that never ends) is a fault too, after service.watchdogStallMs', async () => {
  const dir = tempDir('plc-stall');
  const config = loadConfig(undefined, {
    device: { id: 'press3' },
    model: { path: demoModel, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, trigger: 'mqtt', triggerDeadlineMs: 10_000 }],
    mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, topicPrefix: 'plant/line4' },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    service: { stateDir: dir, watchdogStallMs: 1000, faultExitDelayMs: 60_000, shutdownTimeoutMs: 2000 },
  });
  const status = await Subscriber.connect(broker.url, 5, 'plant/line4/press3/#');
  const daemon = new Daemon({ config, log: createLogger('silent') });
  try {
    await daemon.start();
    await until('cam1 ready', () => status.on('plant/line4/press3/cam1/status').at(-1)?.json?.ready === true, 30_000);
    // A model run that never ends: frames wait, no batch is taken or finished.
    const pipeline = (daemon as any).pipeline;
    pipeline.currentModel.run = () => new Promise(() => undefined);
    await status.client.publishAsync('plant/line4/press3/cam1/trigger', 'hung', { qos: 1 });
    await until('not ready: stalled', () => /stalled/.test(status.on('plant/line4/press3/status').at(-1)?.json?.inspection?.reason ?? ''), 20_000);
    assert.equal(daemon.health().healthy, false);
    assert.equal(status.on('plant/line4/press3/cam1/status').at(-1)?.json?.ready, false);
  } finally {
    await daemon.stop();
    await status.close();
  }
});
