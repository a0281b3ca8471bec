// GigE Vision end to end: aravis's simulated camera on loopback -> aravissrc -> OpenCV -> Camera.
// One fake camera per machine (GVCP port 3956): the tests here run in order and the helper's lock
// keeps other test processes out meanwhile.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createCamera, type CameraStatus, type Frame } from '../src/capture/index.js';
import { unreleasedGigeCaptures } from '../src/capture/gige.js';
import { FakeGigeCamera } from './helpers/fake-gige.js';
import { cameraConfig, memoryLogger, takeN, waitFor } from './helpers/capture.js';

const fake = new FakeGigeCamera();
before(() => fake.start());
after(() => fake.stop());

function gigeConfig(overrides: Parameters<typeof cameraConfig>[0] = {}) {
  return cameraConfig({ id: 'gige1', source: 'gige', address: fake.address, stallTimeoutMs: 1000, reconnectMinMs: 100, reconnectMaxMs: 400, ...overrides });
}

function releaseAll(frames: Frame[]): void {
  for (const f of frames) f.release();
}

test('gige: frames from the simulated camera arrive as BGR with increasing sequence, ISO capturedAt and monotonic times', async () => {
  const camera = createCamera(gigeConfig(), memoryLogger().log);
  const online = waitFor(camera.status$, (s) => s.state === 'online');
  const pending = takeN(camera.frames$, 5);
  camera.start();
  const frames = await pending;
  await online;
  await camera.stop();
  assert.deepEqual(frames.map((f) => f.sequence), [1, 2, 3, 4, 5]);
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i]!;
    assert.equal(f.cameraId, 'gige1');
    assert.match(f.capturedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(f.image.channels, 3, 'converted to BGR');
    assert.ok(f.image.rows > 0 && f.image.cols > 0);
    if (i > 0) {
      assert.ok(f.capturedMono > frames[i - 1]!.capturedMono);
      assert.ok(Date.parse(f.capturedAt) >= Date.parse(frames[i - 1]!.capturedAt));
    }
  }
  releaseAll(frames);
});

test('gige: requested size and pixel format reach the camera', async () => {
  const camera = createCamera(gigeConfig({ width: 320, height: 240, pixelFormat: 'Mono8' }), memoryLogger().log);
  const pending = takeN(camera.frames$, 2);
  camera.start();
  const frames = await pending;
  await camera.stop();
  assert.deepEqual([frames[0]!.image.cols, frames[0]!.image.rows, frames[0]!.image.channels], [320, 240, 3]);
  releaseAll(frames);
});

test('gige: a camera killed mid-stream goes offline, comes back online after a restart, and capture resumes', async () => {
  const camera = createCamera(gigeConfig(), memoryLogger().log);
  const seen: CameraStatus[] = [];
  camera.status$.subscribe((s) => seen.push(s));
  const frames: Frame[] = [];
  camera.frames$.subscribe((f) => frames.push(f));
  camera.start();
  await waitFor(camera.frames$, (f) => f.sequence >= 3);
  await fake.kill();
  const offline = await waitFor(camera.status$, (s) => s.state === 'offline');
  assert.ok(offline.error && offline.error.includes('gige camera 127.0.0.1'), `error names the camera: ${offline.error}`);
  // While the camera is gone its old capture is held, not released: releasing it now would block
  // the event loop for ~13 s of GVCP time-outs. A reopen attempt meanwhile finds nobody.
  const absent = await waitFor(camera.status$, (s) => /no GigE Vision device answers/.test(s.error ?? ''));
  assert.equal(absent.state, 'offline');
  assert.equal(unreleasedGigeCaptures(), 1);
  const beforeRestart = frames.length;
  await fake.restart();
  await waitFor(camera.status$, (s) => s.state === 'online');
  assert.equal(unreleasedGigeCaptures(), 0, 'released once the camera answered, before the new open');
  const resumed = await waitFor(camera.frames$, () => true);
  assert.ok(resumed.sequence > beforeRestart, 'sequence continues after the reconnect');
  await camera.stop();
  const states = seen.map((s) => s.state);
  const wentOffline = states.indexOf('offline');
  assert.ok(wentOffline > states.indexOf('online'), `online, then offline: ${states.join(' ')}`);
  assert.ok(states.lastIndexOf('online') > wentOffline, `then online again: ${states.join(' ')}`);
  assert.ok(camera.stats().reconnects >= 1);
  releaseAll(frames);
});

test('gige: a camera that freezes mid-stream is declared stalled, and recovers when it thaws', async () => {
  const camera = createCamera(gigeConfig({ stallTimeoutMs: 500 }), memoryLogger().log);
  const frames: Frame[] = [];
  camera.frames$.subscribe((f) => frames.push(f));
  camera.start();
  await waitFor(camera.frames$, (f) => f.sequence >= 2);
  fake.pause();
  try {
    const stalled = await waitFor(camera.status$, (s) => s.state === 'offline');
    assert.match(stalled.error!, /gige camera 127\.0\.0\.1 stalled: no frame within stallTimeoutMs \(500 ms\)/);
  } finally {
    fake.resume();
  }
  await waitFor(camera.status$, (s) => s.state === 'online', 20_000);
  const count = frames.length;
  await waitFor(camera.frames$, (f) => f.sequence > count);
  await camera.stop();
  releaseAll(frames);
});
