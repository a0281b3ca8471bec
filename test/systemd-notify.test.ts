// systemd notifications from the daemon as a real process: NOTIFY_SOCKET points at a datagram
// socket served by a python listener, WATCHDOG_USEC is 2 s. READY=1 once running, STATUS lines with
// fps and broker state, WATCHDOG=1 while frames flow and not while the pipeline is stuck (so
// systemd restarts a hung daemon), pings on while idle by design (trigger mode, a finished folder),
// STOPPING=1 on SIGTERM.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Mosquitto } from './helpers/mosquitto.js';
import { until } from './helpers/publish-fixtures.js';
import { DaemonProcess, demoModel, writeConfig } from './helpers/daemon.js';
import { NotifySocket } from './helpers/notify-socket.js';
import { imageFolder, sleep } from './helpers/reliability.js';
import { removeOnExit } from './helpers/cleanup.js';

const WATCHDOG_MS = 2000;
/** The daemon withholds pings once no result came for this long (free-run). */
const STALL_MS = 3000;
let broker: Mosquitto;
after(async () => {
  await broker?.dispose();
});

async function startDaemon(device: string, cameras: unknown[]): Promise<{ daemon: DaemonProcess; notify: NotifySocket }> {
  broker ??= await Mosquitto.start();
  const configFile = writeConfig({
    device: { id: device },
    model: { path: demoModel },
    cameras,
    mqtt: { url: broker.url, topicPrefix: 'sd', reconnectMinMs: 200, reconnectMaxMs: 1000 },
    crops: { enabled: false },
    service: { watchdogStallMs: STALL_MS },
  });
  const notify = await NotifySocket.start();
  const daemon = new DaemonProcess(configFile, { NOTIFY_SOCKET: notify.socketPath, WATCHDOG_USEC: String(WATCHDOG_MS * 1000) });
  daemon.start();
  await until('READY=1', () => notify.count('READY=1') > 0, 90_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${daemon.output.slice(-3000)}`);
  });
  return { daemon, notify };
}

async function stopDaemon(daemon: DaemonProcess, notify: NotifySocket): Promise<void> {
  assert.equal(await daemon.stop('SIGTERM'), 0, `clean exit\n${daemon.output.slice(-2000)}`);
  await until('STOPPING=1', () => notify.count('STOPPING=1') > 0, 5000);
}

/** Wait until no WATCHDOG=1 came for `quietMs`, then make sure none comes for another while. */
async function assertPingsStop(notify: NotifySocket, daemon: DaemonProcess, what: string): Promise<void> {
  const quietMs = 2 * WATCHDOG_MS;
  await until(`${what}: pings stop`, () => Date.now() - notify.lastAt('WATCHDOG=1') > quietMs, 30_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${daemon.output.slice(-2000)}`);
  });
  const count = notify.count('WATCHDOG=1');
  await sleep(2 * WATCHDOG_MS);
  assert.equal(notify.count('WATCHDOG=1'), count, `${what}: no ping while stuck`);
  assert.ok(daemon.logs().some((l) => /withholding the systemd watchdog ping/.test(String(l.msg))), 'the daemon says why it withholds pings');
}

/** At least `n` pings in the next `ms` (pings come every WATCHDOG_MS / 2 while healthy). */
async function assertPinging(notify: NotifySocket, ms: number, n: number, what: string): Promise<void> {
  const before = notify.count('WATCHDOG=1');
  await until(`${what}: ${n} more pings`, () => notify.count('WATCHDOG=1') >= before + n, ms + 20_000);
}

test('free-run: READY, STATUS with fps and broker state, pings while frames flow, none while the camera is lost, pings again after, STOPPING', { timeout: 180_000 }, async () => {
  const folder = imageFolder(14);
  const { daemon, notify } = await startDaemon('sd1', [
    { id: 'cam1', source: 'folder', path: folder, loop: true, fps: 2, stallTimeoutMs: 1000, reconnectMinMs: 200, reconnectMaxMs: 500 },
  ]);
  try {
    await assertPinging(notify, 3 * WATCHDOG_MS, 3, 'frames flowing');
    const all = notify.lines().map((l) => l.line);
    assert.ok(all.indexOf('READY=1') < all.indexOf('WATCHDOG=1'), 'READY before the first ping');
    await until('a STATUS with results and a connected broker', () => notify.statuses().some((s) => /[1-9][\d.]* fps, \d+ results, broker connected/.test(s)), 20_000);

    // A broker outage is no reason for systemd to restart us (results wait in the outbox).
    await broker.stop();
    await until('STATUS says the broker is disconnected', () => notify.statuses().at(-1)!.includes('broker disconnected'), 20_000);
    await assertPinging(notify, 2 * WATCHDOG_MS, 2, 'broker down');
    await broker.start();
    await until('STATUS says the broker is back', () => notify.statuses().at(-1)!.includes('broker connected'), 30_000);

    // The camera loses its images: no frames, no results; pings stop so systemd would restart us.
    const moved = `${folder}-away`;
    fs.renameSync(folder, moved);
    removeOnExit(moved);
    await assertPingsStop(notify, daemon, 'camera lost');
    // Images back: the camera reopens, results flow, pings resume.
    fs.renameSync(moved, folder);
    await assertPinging(notify, 3 * WATCHDOG_MS, 2, 'camera back');

    await stopDaemon(daemon, notify);
    const lines = notify.lines().map((l) => l.line);
    assert.equal(lines.at(-1), 'STOPPING=1', 'STOPPING is the last word');
  } finally {
    await daemon.stop('SIGKILL');
    await notify.stop();
  }
});

test('trigger mode only: idle while waiting for triggers, the watchdog keeps being fed', { timeout: 120_000 }, async () => {
  const { daemon, notify } = await startDaemon('sd2', [{ id: 'cam1', source: 'folder', path: imageFolder(2), trigger: 'mqtt' }]);
  try {
    // No trigger ever comes: well past watchdogStallMs the pings go on.
    await sleep(STALL_MS + WATCHDOG_MS);
    await assertPinging(notify, 3 * WATCHDOG_MS, 4, 'idle trigger camera');
    assert.ok(notify.statuses().some((s) => /0 results, broker connected/.test(s)), `STATUS: ${notify.statuses().join(' | ')}`);
    await stopDaemon(daemon, notify);
  } finally {
    await daemon.stop('SIGKILL');
    await notify.stop();
  }
});

test('a folder camera with loop: false that has finished is idle by design: pings go on (a restart would inspect the folder again)', { timeout: 120_000 }, async () => {
  const { daemon, notify } = await startDaemon('sd3', [{ id: 'cam1', source: 'folder', path: imageFolder(3), loop: false, fps: 4 }]);
  try {
    await until('the folder camera to finish', () => daemon.logs().some((l) => l.msg === 'camera source ended'), 60_000);
    await sleep(STALL_MS + WATCHDOG_MS);
    await assertPinging(notify, 3 * WATCHDOG_MS, 4, 'finished folder');
    await stopDaemon(daemon, notify);
  } finally {
    await daemon.stop('SIGKILL');
    await notify.stop();
  }
});
