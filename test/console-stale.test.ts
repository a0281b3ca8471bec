// Never show stale as live: the console page in a real browser (Debian's chromium) while what
// it shows goes away and comes back — the MQTT broker stopped, the camera's folder gone, the
// daemon killed (SIGKILL) and started again on the same port. Each time the page says so in its
// banner, greys the picture and gives the last frame's age, and goes back to LIVE by itself.
// How long the page took is printed (a figure, not an assertion: the machine may be loaded).
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { consoleUrl } from './helpers/console.js';
import { demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { tempDir } from './helpers/cleanup.js';
import { freePort, Mosquitto } from './helpers/mosquitto.js';
import { Device } from './helpers/remote-device.js';

const TOPIC_PREFIX = 'console/stale';
let broker: Mosquitto;
let device: Device;
let browser: Browser;
let page: Page;
const shots = tempDir('console-stale-shots');
const work = tempDir('console-stale');
const folder = path.join(work, 'camera');
const pageErrors: string[] = [];

before(async () => {
  fs.mkdirSync(folder);
  for (const name of fs.readdirSync(samplesDir).filter((n) => n.endsWith('.png')).slice(0, 4)) fs.copyFileSync(path.join(samplesDir, name), path.join(folder, name));
  broker = await Mosquitto.start();
  // A fixed port, so that the daemon started again is where the page looks for it.
  const port = await freePort();
  device = new Device(broker.url, TOPIC_PREFIX, 'line1', writeConfig({
    device: { id: 'line1' },
    model: { path: demoModel },
    cameras: [{ id: 'cam1', source: 'folder', path: folder, loop: true, fps: 5, reconnectMinMs: 100, reconnectMaxMs: 500 }],
    mqtt: { url: broker.url, topicPrefix: TOPIC_PREFIX, reconnectMinMs: 100, reconnectMaxMs: 500 },
    crops: { enabled: false },
    http: { enabled: true, host: '127.0.0.1', port },
  }, tempDir('console-stale-state')));
  await device.start();
  const base = await consoleUrl(device.process);
  browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  page = await browser.newPage();
  await page.setViewport({ width: 1024, height: 768 });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  await page.goto(`${base}/?camera=cam1`);
  await live();
});

after(async () => {
  await browser?.close();
  await device?.dispose();
  await broker?.dispose();
});

const banner = () => page.$eval('#live-status', (el) => el.textContent ?? '');

/** The page says LIVE, shows frames again and nothing is greyed. */
async function live(): Promise<void> {
  await page.waitForFunction(() => /^LIVE — last frame \d+/.test(document.getElementById('live-status')!.textContent ?? '') && !document.body.classList.contains('stale'), { timeout: 90_000, polling: 100 });
  const seen = Number(await page.$eval('#sequence', (el) => el.textContent));
  await page.waitForFunction((s: number) => Number(document.getElementById('sequence')!.textContent) !== s, { timeout: 30_000, polling: 100 }, seen);
}

/** Do `what`, then wait for the page to say it is not live with `reason`; the time it took. */
async function notLive(t: TestContext, name: string, what: () => Promise<void>, reason: RegExp): Promise<number> {
  const start = Date.now();
  await what();
  await page.waitForFunction((source: string) => {
    const text = document.getElementById('live-status')!.textContent ?? '';
    return new RegExp(source).test(text) && document.body.classList.contains('stale');
  }, { timeout: 60_000, polling: 50 }, `^NOT LIVE: .*${reason.source}`);
  const took = Date.now() - start;
  t.diagnostic(`${name}: the page said so after ${took} ms: ${await banner()}`);
  assert.match(await banner(), /last frame \d+ at .* \(\d+ s ago\)/, 'it gives the last frame and its age');
  const grey = await page.$eval('#stage', (el) => getComputedStyle(el).filter);
  assert.match(grey, /grayscale/, 'the picture is greyed');
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
  return took;
}

test('broker stopped: the page says so and recovers when it is back', async (t) => {
  await notLive(t, 'broker-stopped', () => broker.stop(), /MQTT broker disconnected/);
  assert.match(await page.$eval('#badge-broker', (el) => el.textContent ?? ''), /broker DISCONNECTED/);
  await broker.start();
  await live();
});

test('camera lost: the page says so and recovers when it is back', async (t) => {
  const gone = `${folder}-gone`;
  await notLive(t, 'camera-lost', async () => fs.renameSync(folder, gone), /camera cam1 is (offline|error)/);
  // A dead camera raises the alarm too.
  await page.waitForFunction(() => /^ALARM: camera cam1 is (offline|error)/.test(document.getElementById('alarm-text')!.textContent ?? ''), { timeout: 30_000 });
  fs.renameSync(gone, folder);
  await live();
  await page.waitForFunction(() => (document.getElementById('alarm') as HTMLElement).hidden, { timeout: 30_000 });
});

const counters = async () => (await (await fetch(`${await consoleUrl(device.process)}/api/counters`)).json()).cam1 as { ok: number; ng: number; since: string };

test('daemon killed: the page says so at once and recovers when it is started again', async (t) => {
  const before = await counters();
  await notLive(t, 'daemon-killed', async () => void (await device.process.stop('SIGKILL')), /no connection to the daemon/);
  assert.match(await page.$eval('#badge-connection', (el) => el.textContent ?? ''), /OFFLINE/);
  device.process.start();
  await live();
  // The counters are kept in the state dir: not zeroed by the restart.
  assert.equal((await counters()).since, before.since);
  assert.deepEqual(pageErrors, []);
});

test('counters survive a clean restart: counted on from where they were', async () => {
  const before = await counters();
  assert.equal(await device.process.stop('SIGTERM'), 0);
  device.process.start();
  await live();
  const after = await counters();
  assert.equal(after.since, before.since);
  assert.ok(after.ok + after.ng >= before.ok + before.ng, `${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
});
