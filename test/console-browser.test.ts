// The live-view page in a real browser (Debian's chromium driven by puppeteer-core) against a
// running daemon with a folder camera: frames update, the overlay toggles, an ROI drawn with the
// mouse is applied through the push path (config/get shows it, the revision rises), the
// sensitivity slider changes verdicts, and a bad value shows the daemon's validation error.
// It also takes the README's screenshot (docs/console.png).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { consoleUrl } from './helpers/console.js';
import { demoModel, repoRoot, samplesDir, writeConfig } from './helpers/daemon.js';
import { tempDir } from './helpers/cleanup.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Device } from './helpers/remote-device.js';

const TOPIC_PREFIX = 'console/browser';
let broker: Mosquitto;
let device: Device;
let browser: Browser;
const stateDir = tempDir('console-browser');
let page: Page;
const pageErrors: string[] = [];

before(async () => {
  broker = await Mosquitto.start();
  device = new Device(broker.url, TOPIC_PREFIX, 'line1', writeConfig({
    device: { id: 'line1' },
    model: { path: demoModel },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 5 }],
    mqtt: { url: broker.url, topicPrefix: TOPIC_PREFIX, reconnectMinMs: 200, reconnectMaxMs: 1000 },
    crops: { enabled: false },
    http: { enabled: true, host: '127.0.0.1', port: 0, liveFps: 5 },
    archive: { enabled: true },
  }, stateDir));
  await device.start();
  const base = await consoleUrl(device.process);
  browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 820 });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  await page.goto(`${base}/?camera=cam1`);
});

after(async () => {
  await browser?.close();
  await device?.dispose();
  await broker?.dispose();
});

const text = (selector: string) => page.$eval(selector, (el) => el.textContent ?? '');
const sequence = async () => Number(await text('#sequence'));

/** Wait until the page shows a result newer than `after` for which `holds` is true. */
async function newResult(after: number, holds: (verdict: string) => boolean = () => true): Promise<number> {
  await page.waitForFunction((seen: number, source: string) => {
    const shown = Number(document.getElementById('sequence')!.textContent);
    return shown > seen && new Function('verdict', `return ${source}`)(document.getElementById('verdict')!.textContent);
  }, { timeout: 30_000 }, after, `(${holds.toString()})(verdict)`);
  return sequence();
}

/** The RGBA pixels of the image the <img> shows now (drawn to a canvas in the page). */
const livePixels = () => page.$eval('#live', (img) => {
  const image = img as HTMLImageElement;
  const canvas = document.createElement('canvas');
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext('2d')!;
  ctx.drawImage(image, 0, 0);
  return { width: canvas.width, height: canvas.height, data: Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data) };
});

/** A fingerprint of the image shown now. */
async function imageFingerprint(): Promise<string> {
  const { width, height, data } = await livePixels();
  let sum = 0;
  for (let i = 0; i < data.length; i += 97) sum = (sum * 31 + data[i]!) % 1_000_000_007;
  return `${width}x${height}:${sum}`;
}

test('the page loads and live frames update from the folder camera', async () => {
  await page.waitForFunction(() => (document.getElementById('live') as HTMLImageElement).naturalWidth > 0, { timeout: 30_000 });
  const first = await newResult(0);
  const firstImage = await imageFingerprint();
  await newResult(first + 2);
  await page.waitForFunction(() => true);
  let changed = false;
  for (let i = 0; i < 50 && !changed; i++) {
    changed = (await imageFingerprint()) !== firstImage;
    if (!changed) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(changed, 'the live image changes');
  assert.match(await text('#model'), /crad/);
  assert.deepEqual(pageErrors, []);
});

test('the heatmap overlay toggles', async () => {
  await page.click('#overlay');
  await page.waitForFunction(() => (document.getElementById('live') as HTMLImageElement).src.includes('overlay=true'));
  await page.waitForFunction(() => (document.getElementById('live') as HTMLImageElement).naturalWidth > 0, { timeout: 30_000 });
  // The overlay is a JET heatmap: strongly coloured where the plain samples are not.
  const colourful = async () => {
    const { data } = await livePixels();
    let spread = 0;
    for (let i = 0; i < data.length; i += 4) spread += Math.max(data[i]!, data[i + 1]!, data[i + 2]!) - Math.min(data[i]!, data[i + 1]!, data[i + 2]!);
    return spread / (data.length / 4);
  };
  let overlaySpread = 0;
  for (let i = 0; i < 50 && overlaySpread < 40; i++) {
    overlaySpread = await colourful();
    if (overlaySpread < 40) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(overlaySpread >= 40, `overlay colour spread ${overlaySpread}`);
  await page.click('#overlay');
  await page.waitForFunction(() => !(document.getElementById('live') as HTMLImageElement).src.includes('overlay=true'));
  await page.waitForFunction(() => (document.getElementById('live') as HTMLImageElement).naturalWidth > 0, { timeout: 30_000 });
});

test('an ROI drawn with the mouse is applied and persisted through the push path', async () => {
  const before = await device.getConfig();
  assert.equal(before.config.cameras[0].roi, null);
  const box = (await (await page.$('#drawing'))!.boundingBox())!;
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.15);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 8 });
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.85, { steps: 8 });
  await page.mouse.up();
  await page.click('#apply-roi');
  await page.waitForFunction(() => /ROI applied: revision \d+/.test(document.getElementById('message')!.textContent ?? ''), { timeout: 30_000 });

  const afterPush = await device.getConfig();
  assert.equal(afterPush.revision, before.revision + 1);
  const roi = afterPush.config.cameras[0].roi;
  const state = await page.evaluate(async () => (await fetch('/api/cameras/cam1')).json());
  const frame = state.frameSize as { width: number; height: number };
  // Drawn from 10%,15% to 80%,85% of the image: the ROI covers that part of the frame.
  const near = (value: number, expected: number, side: number) => Math.abs(value - expected) <= side * 0.03;
  assert.ok(near(roi.x, frame.width * 0.1, frame.width) && near(roi.y, frame.height * 0.15, frame.height), JSON.stringify(roi));
  assert.ok(near(roi.width, frame.width * 0.7, frame.width) && near(roi.height, frame.height * 0.7, frame.height), JSON.stringify(roi));
  // Results come from the new ROI.
  await page.waitForFunction((expected: string) => {
    return fetch('/api/cameras/cam1').then((r) => r.json()).then((s) => JSON.stringify(s.last?.roi) === expected);
  }, { timeout: 30_000, polling: 300 }, JSON.stringify(roi));

  // "Whole frame" pushes the ROI away again (the demo model judges whole frames).
  await page.click('#clear-roi');
  await page.waitForFunction((revision: number) => (document.getElementById('message')!.textContent ?? '').includes(`ROI applied: revision ${revision}`), { timeout: 30_000 }, afterPush.revision + 1);
  assert.equal((await device.getConfig()).config.cameras[0].roi, null);
});

test('the sensitivity slider changes verdicts', async () => {
  // Strictest: NG when normalised >= 0, so every part is NG.
  await page.focus('#sensitivity');
  await page.keyboard.press('Home');
  await page.waitForFunction(() => /Sensitivity applied/.test(document.getElementById('message')!.textContent ?? ''), { timeout: 30_000 });
  assert.equal((await device.getConfig()).config.inference.sensitivity, -0.5);
  let seen = await newResult(await sequence(), (v) => v === 'NG');
  for (let i = 0; i < 3; i++) seen = await newResult(seen, (v) => v === 'NG');
  // Most lenient: NG only at the top of the scale, so good parts come out OK again.
  await page.click('body');
  await page.focus('#sensitivity');
  await page.keyboard.press('End');
  await page.waitForFunction(() => (document.getElementById('message')!.textContent ?? '').includes('Sensitivity applied'), { timeout: 30_000 });
  await page.waitForFunction(async () => (await (await fetch('/api/config')).json()).config.inference.sensitivity === 0.5, { timeout: 30_000, polling: 300 });
  await newResult(seen, (v) => v === 'OK');
});

test('a bad value shows the daemon\'s validation error and changes nothing', async () => {
  const before = await device.getConfig();
  await page.click('#sensitivity-value', { count: 3 });
  await page.keyboard.type('0.9');
  await page.keyboard.press('Tab');
  await page.waitForFunction(() => (document.getElementById('error')!.textContent ?? '') !== '', { timeout: 30_000 });
  assert.match(await text('#error'), /inference\.sensitivity: .*between -0\.5 and 0\.5/);
  assert.equal((await device.getConfig()).revision, before.revision);
  assert.deepEqual(pageErrors, []);
});

test('the archive lists NG images; one marked good joins the dataset', async () => {
  const archive = await browser.newPage();
  try {
    archive.on('pageerror', (err) => pageErrors.push(String(err)));
    // The console links to the archive page; follow the link in a second tab.
    await archive.goto(await page.$eval('#archive-link', (a) => (a as HTMLAnchorElement).href));
    await archive.waitForFunction(() => document.querySelectorAll('.card').length > 0, { timeout: 60_000, polling: 500 });
    const verdicts = await archive.$$eval('.card span', (spans) => spans.map((s) => s.textContent));
    assert.ok(verdicts.length > 0 && verdicts.every((v) => v === 'NG'), `archived verdicts: ${verdicts.join(',')}`);
    await archive.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('.card img')].some((img) => img.complete && img.naturalWidth > 0), { timeout: 30_000 });
    await archive.click('.card button');
    await archive.waitForFunction(() => document.querySelector('.card button')!.textContent === 'marked good', { timeout: 30_000 });
    const goodDir = path.join(stateDir, 'dataset', 'cam1', 'train', 'good');
    assert.ok(fs.readdirSync(goodDir).some((f) => f.endsWith('.jpg')), 'the marked frame is in the dataset folder');
  } finally {
    await archive.close();
  }
  assert.deepEqual(pageErrors, []);
});

test('screenshot of the console for the README', async () => {
  await page.click('#sensitivity-value', { count: 3 });
  await page.keyboard.type('0');
  await page.keyboard.press('Tab');
  await page.waitForFunction(() => (document.getElementById('error')!.textContent ?? '') === '', { timeout: 30_000 });
  await newResult(await sequence(), (v) => v === 'NG');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(repoRoot, 'docs/console.png') });
});
