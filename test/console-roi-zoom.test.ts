// The console's ROI check and zoom in a real browser (Debian's chromium driven by puppeteer-core)
// against a running daemon whose folder camera plays numbered frames: the whole frame (which
// takes in the number band the model has never seen) turns every part NG, and the page says so
// before applying it, with the NG share of the recent frames; cancelled, nothing changes; an ROI
// that keeps the part is checked and applied. A click on the pinned NG, a region or the live
// image opens that result's full frame from the archive, at full size with its boxes.
// Screenshots go to the test's temp dir.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { launchChromium, openPage } from './helpers/browser.js';
import { call, consoleUrl, numberedFrames, numberedFramesConfig } from './helpers/console.js';
import { tempDir } from './helpers/cleanup.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Device } from './helpers/remote-device.js';

const TOPIC_PREFIX = 'console/roi-zoom';
const TOKEN = 'roi-zoom-token';
const FRAMES = 48;
let broker: Mosquitto;
let device: Device;
let browser: Browser;
let base: string;
let page: Page;
const stateDir = tempDir('console-roi-zoom');
const shots = tempDir('console-roi-zoom-shots');
const frames = numberedFrames(FRAMES);
const pageErrors: string[] = [];

before(async () => {
  broker = await Mosquitto.start();
  // Overlays of NG results go to the archive too: the zoom shows them beside the frame.
  device = new Device(broker.url, TOPIC_PREFIX, 'line1', numberedFramesConfig(stateDir, { url: broker.url, topicPrefix: TOPIC_PREFIX }, frames, TOKEN, 4, {
    overlay: { enabled: true, maxSize: 0 },
  }));
  await device.start();
  base = await consoleUrl(device.process);
  browser = await launchChromium();
  page = await openPage(browser, `${base}/?camera=cam1`, { token: TOKEN, errors: pageErrors });
  await page.waitForFunction(() => Number(document.getElementById('sequence')!.textContent) > 0, { timeout: 60_000 });
});

after(async () => {
  await browser?.close();
  await device?.dispose();
  await broker?.dispose();
});

const text = (selector: string) => page.$eval(selector, (el) => el.textContent ?? '');
const shot = (name: string) => page.screenshot({ path: path.join(shots, `${name}.png`) });
const hidden = (selector: string) => page.$eval(selector, (el) => (el as HTMLElement).hidden);
/** Recent frames are copied once a second: the check has its full count after this many. */
const RECENT = 8;

test('an ROI that turns every part NG is shown as a warning with the NG share before it is applied; cancel changes nothing', async () => {
  // Let the daemon keep its recent frames (one a second), and wait until at least two of them were
  // OK as inspected: the samples alternate good and defective, and a camera running at an even
  // number of frames a second on a loaded machine keeps only defective ones, where "every part
  // would be rejected" is no news (the page rightly does not warn then). Asking is side-effect free.
  await new Promise((r) => setTimeout(r, (RECENT + 1) * 1000));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const check = await call(`${base}/api/cameras/cam1/roi/check`, { token: TOKEN, body: { roi: null } });
    assert.equal(check.status, 200, check.text);
    const { frames: kept, ngNow } = JSON.parse(check.text) as { frames: number; ngNow: number };
    if (kept === RECENT && ngNow <= kept - 2) break;
    assert.ok(Date.now() < deadline, `the recent frames never held two OK ones (${ngNow} of ${kept} NG as inspected)`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const before = await device.getConfig();
  await page.click('#clear-roi');
  await page.waitForFunction(() => /would be NG/.test(document.getElementById('roi-check-text')!.textContent ?? ''), { timeout: 60_000 });
  const warning = await text('#roi-check-text');
  assert.match(warning, /^WARNING: with the whole frame, (\d+) of the last \1 frames would be NG \(100 %\); \d+ of them were NG as inspected\. Every part would be rejected\.$/);
  assert.equal(await page.$eval('#roi-check', (el) => el.className), 'dialog warn');
  assert.equal(await page.$$eval('#roi-check-results .cell.NG', (els) => els.length), Number(/of the last (\d+)/.exec(warning)![1]));
  await shot('roi-check-warning');
  await page.click('#roi-cancel');
  assert.equal(await hidden('#roi-check'), true);
  assert.match(await text('#message'), /ROI not applied/);
  const afterCancel = await device.getConfig();
  assert.equal(afterCancel.revision, before.revision, 'cancelled: no push');
  assert.deepEqual(afterCancel.config.cameras[0].roi, frames.roi);

  // An ROI drawn over the whole part (from just below the band to past the bottom-right corner)
  // is checked: verdicts much as inspected, no warning; applied.
  const box = (await (await page.$('#drawing'))!.boundingBox())!;
  const scale = box.height / (frames.roi.y + frames.roi.height);
  await page.mouse.move(box.x + 1, box.y + (frames.roi.y + 1.5) * scale);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 6 });
  await page.mouse.move(box.x + box.width + 20, box.y + box.height + 20, { steps: 6 });
  await page.mouse.up();
  await page.click('#apply-roi');
  await page.waitForFunction(() => /would be NG/.test(document.getElementById('roi-check-text')!.textContent ?? ''), { timeout: 60_000 });
  assert.match(await text('#roi-check-text'), /^with ROI \d+x\d+ at \d+,\d+, \d+ of the last \d+ frames would be NG \(\d+ %\); \d+ of them were NG as inspected\.$/);
  assert.ok(Number(await page.$eval('#roi-check', (el) => (el as HTMLElement).dataset.ngShare)) < 1);
  await shot('roi-check-ok');
  await page.click('#roi-confirm');
  await page.waitForFunction(() => /ROI applied: revision \d+/.test(document.getElementById('message')!.textContent ?? ''), { timeout: 30_000 });
  const applied = await device.getConfig();
  assert.equal(applied.revision, before.revision + 1);
  assert.notDeepEqual(applied.config.cameras[0].roi, frames.roi);
  const restored = await call(`${base}/api/cameras/cam1/roi`, { token: TOKEN, body: { baseRevision: applied.revision, roi: frames.roi } });
  assert.equal(restored.status, 200, restored.text);
  assert.deepEqual(pageErrors, []);
});

test('the ROI check refuses what it cannot check, and needs change rights', async () => {
  const misfit = await call(`${base}/api/cameras/cam1/roi/check`, { token: TOKEN, body: { roi: { x: 0, y: 0, width: 100000, height: 10 } } });
  assert.equal(misfit.status, 400, misfit.text);
  assert.match(misfit.json.error, /does not fit the \d+x\d+ frame/);
  const malformed = await call(`${base}/api/cameras/cam1/roi/check`, { token: TOKEN, body: { roi: { x: -1, y: 0, width: 10, height: 10 } } });
  assert.equal(malformed.status, 400, malformed.text);
  const anonymous = await call(`${base}/api/cameras/cam1/roi/check`, { body: { roi: null } });
  assert.equal(anonymous.status, 401);
});

test('a click on the pinned NG, a region or the live image opens that result\'s full frame from the archive', async () => {
  const fullSize = { width: frames.roi.width, height: frames.roi.height + frames.roi.y };
  await page.waitForFunction(() => !(document.getElementById('last-ng-box') as HTMLElement).hidden, { timeout: 60_000 });
  // Read and clicked in one step of the page: a newer NG may be pinned any moment.
  const pinned = await page.evaluate(`(() => { const s = lastNg.sequence; document.getElementById('last-ng').click(); return s; })()`) as number;
  assert.match(await text('#last-ng-info'), /^frame \d+, /);
  await page.waitForFunction(() => (document.getElementById('zoom-frame') as HTMLCanvasElement).dataset.entry !== undefined, { timeout: 30_000 });
  const zoomed = await page.$eval('#zoom-frame', (c) => ({ width: (c as HTMLCanvasElement).width, height: (c as HTMLCanvasElement).height, sequence: Number((c as HTMLCanvasElement).dataset.sequence) }));
  assert.deepEqual(zoomed, { ...fullSize, sequence: pinned }, 'the pinned NG\'s whole frame at full size');
  assert.match(await text('#zoom-info'), new RegExp(`^NG frame ${pinned}, .*, score \\d\\.\\d{3}, [1-9]\\d* region\\(s\\), ${fullSize.width}x${fullSize.height} px, with its heatmap overlay$`));
  // The overlay (the part of the frame the model saw, at full size: overlay.maxSize 0) beside it.
  await page.waitForFunction(() => { const img = document.getElementById('zoom-overlay') as HTMLImageElement; return !img.hidden && img.complete && img.naturalWidth > 0; }, { timeout: 30_000 });
  const entry = await call(`${base}/api/archive/${await page.$eval('#zoom-frame', (c) => (c as HTMLCanvasElement).dataset.entry)}/result.json`, { token: TOKEN });
  assert.deepEqual(await page.$eval('#zoom-overlay', (img) => [(img as HTMLImageElement).naturalWidth, (img as HTMLImageElement).naturalHeight]), [entry.json.roi.width, entry.json.roi.height], 'the overlay of the ROI that result was inspected with');
  await shot('zoom-pinned-ng');
  await page.click('#zoom-close');
  assert.equal(await hidden('#zoom'), true);

  // A click on a region box on the live image: that frame, that region. Found and clicked in one
  // step of the page, so no newer frame comes between.
  await page.waitForFunction(() => document.getElementById('verdict')!.textContent === 'NG' && document.querySelectorAll('#regions li').length > 0, { timeout: 60_000, polling: 50 });
  const clicked = await page.evaluate(`(() => {
    const f = frame, r = f.regions[0], { area, scale } = imageFrame();
    const rect = document.getElementById('drawing').getBoundingClientRect();
    const x = rect.left + (r.x + r.width / 2 - area.x) * scale, y = rect.top + (r.y + r.height / 2 - area.y) * scale;
    document.getElementById('drawing').dispatchEvent(new MouseEvent('click', { clientX: x, clientY: y, bubbles: true }));
    return { sequence: f.sequence, region: r };
  })()`) as { sequence: number; region: { x: number; y: number; width: number; height: number } };
  await page.waitForFunction(() => (document.getElementById('zoom-frame') as HTMLCanvasElement).dataset.entry !== undefined, { timeout: 30_000 });
  assert.equal(Number(await page.$eval('#zoom-frame', (c) => (c as HTMLCanvasElement).dataset.sequence)), clicked.sequence, 'the clicked frame');
  const r = clicked.region;
  assert.equal(await page.$eval('#zoom-frame', (c) => (c as HTMLCanvasElement).dataset.region), `${r.x},${r.y},${r.width},${r.height}`, 'the clicked region is the one highlighted');
  // The highlighted box is drawn in yellow on the full frame, at the region's full-frame place.
  const edge = await page.$eval('#zoom-frame', (c, x: number, y: number) => Array.from((c as HTMLCanvasElement).getContext('2d')!.getImageData(x, y, 1, 1).data), r.x, r.y + Math.floor(r.height / 2));
  assert.ok(edge[0]! > 200 && edge[1]! > 150 && edge[2]! < 100, `yellow box edge at the region: ${edge.join(',')}`);
  await shot('zoom-region');
  await page.click('#zoom-close');

  // The regions list opens the same way.
  await page.waitForFunction(() => document.getElementById('verdict')!.textContent === 'NG' && document.querySelectorAll('#regions li').length > 0, { timeout: 60_000, polling: 50 });
  const listed = await page.evaluate(`(() => { const s = frame.sequence; document.querySelector('#regions li').click(); return s; })()`) as number;
  await page.waitForFunction(() => (document.getElementById('zoom-frame') as HTMLCanvasElement).dataset.entry !== undefined, { timeout: 30_000 });
  assert.equal(Number(await page.$eval('#zoom-frame', (c) => (c as HTMLCanvasElement).dataset.sequence)), listed);
  await page.keyboard.press('Escape');
  assert.equal(await hidden('#zoom'), true);

  // An OK frame is not archived here (archive.verdicts is NG): the page says so.
  let okClicked = false;
  for (let i = 0; i < 600 && !okClicked; i++) {
    okClicked = await page.evaluate(`(() => {
      if (frame.verdict !== 'OK') return false;
      const rect = document.getElementById('drawing').getBoundingClientRect();
      document.getElementById('drawing').dispatchEvent(new MouseEvent('click', { clientX: rect.left + 2, clientY: rect.top + rect.height - 2, bubbles: true }));
      return true;
    })()`) as boolean;
    if (!okClicked) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(okClicked, 'an OK frame was shown');
  await page.waitForFunction(() => /is not in the archive/.test(document.getElementById('zoom-info')!.textContent ?? ''), { timeout: 30_000 });
  await page.click('#zoom-close');
  assert.deepEqual(pageErrors, []);
});
