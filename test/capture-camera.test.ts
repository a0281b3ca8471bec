// Camera behaviour over real sources: frames and their metadata, fps throttle, trigger mode,
// stalls, reopening with backoff, update, an ROI that does not fit the frames, and that no Mat
// outlives its use.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import cv from '../src/cv.js';
import type { Mat } from '../src/cv.js';
import { Camera, createCamera, createSource, roiFitsFrame, type CameraStatus, type Frame } from '../src/capture/index.js';
import type { CameraSource } from '../src/capture/source.js';
import type { CameraConfig } from '../src/config/schema.js';
import { cameraConfig, imageNumber, memoryLogger, numberedImage, takeN, waitFor, writeImages } from './helpers/capture.js';
import { tempDir } from './helpers/cleanup.js';
import { until } from './helpers/wait.js';
import { samplesDir } from './helpers/daemon.js';

const LIVE_TEST_PIPELINE = (fps: string) =>
  `videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=${fps} ! videoconvert ! video/x-raw,format=BGR ! appsink`;

function statuses(camera: Camera): CameraStatus[] {
  const seen: CameraStatus[] = [];
  camera.status$.subscribe((s) => seen.push(s));
  return seen;
}

function releaseAll(frames: Frame[]): void {
  for (const f of frames) f.release();
}

test('folder camera: frames carry id, increasing sequence, ISO capturedAt, monotonic time and the ROI; a non-looping folder ends the camera', async () => {
  const dir = tempDir('cam');
  writeImages(dir, 3);
  const roi = { x: 4, y: 2, width: 32, height: 16 };
  const camera = createCamera(cameraConfig({ id: 'line3-top', path: dir, loop: false, roi }), memoryLogger().log);
  const seen = statuses(camera);
  const all = takeN(camera.frames$, 3);
  const completed = new Promise<void>((resolve) => camera.frames$.subscribe({ complete: resolve }));
  camera.start();
  const frames = await all;
  await completed;
  assert.deepEqual(frames.map((f) => f.sequence), [1, 2, 3]);
  assert.deepEqual(frames.map((f) => imageNumber(f.image)), [0, 1, 2]);
  for (const f of frames) {
    assert.equal(f.cameraId, 'line3-top');
    assert.deepEqual(f.roi, roi);
    assert.equal(f.triggerId, undefined);
    assert.match(f.capturedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual([f.image.rows, f.image.cols, f.image.channels], [48, 64, 3]);
  }
  assert.ok(frames[0]!.capturedMono < frames[1]!.capturedMono && frames[1]!.capturedMono < frames[2]!.capturedMono);
  releaseAll(frames);
  assert.deepEqual(seen.map((s) => s.state), ['starting', 'online', 'stopped']);
  assert.equal(seen.at(-1)!.framesCaptured, 3);
  assert.equal(camera.stats().captured, 3);
  assert.throws(() => camera.start(), /create a new camera/);
});

test('video file camera: replayed at the file\'s own frame rate, and a non-looping file ends the camera', async () => {
  const file = path.join(tempDir('filecam'), 'clip.avi');
  const writer = new cv.VideoWriter(file, cv.VideoWriter.fourcc('MJPG'), 25, new cv.Size(64, 48), true);
  for (let i = 0; i < 5; i++) {
    const mat = numberedImage(i * 40);
    writer.write(mat);
    mat.release();
  }
  writer.release();
  const camera = createCamera(cameraConfig({ source: 'file', path: file, loop: false }), memoryLogger().log);
  const frames: Frame[] = [];
  const completed = new Promise<void>((resolve) => camera.frames$.subscribe({ next: (f) => frames.push(f), complete: resolve }));
  camera.start();
  await completed;
  assert.deepEqual(frames.map((f) => Math.round(imageNumber(f.image) / 40)), [0, 1, 2, 3, 4]);
  assert.ok(frames.at(-1)!.capturedMono - frames[0]!.capturedMono >= 4 * 40 - 1, 'paced at 25 fps');
  releaseAll(frames);
});

test('a gstreamer pipeline that opens but delivers an empty frame is a failure: offline, then reopened', async () => {
  // OpenCV takes the only buffer while opening, so the first read is empty.
  const camera = createCamera(cameraConfig({ source: 'gstreamer', pipeline: 'videotestsrc num-buffers=1 ! videoconvert ! video/x-raw,format=BGR ! appsink', reconnectMinMs: 20, reconnectMaxMs: 40 }), memoryLogger().log);
  const offline = waitFor(camera.status$, (s) => s.state === 'offline');
  camera.start();
  assert.match((await offline).error!, /delivered no frame/);
  await until('a second failed attempt', () => camera.stats().failures >= 2);
  await camera.stop();
});

test('fps throttle on a live source: frames above the target rate are skipped at the source', async () => {
  const camera = createCamera(cameraConfig({ source: 'gstreamer', pipeline: LIVE_TEST_PIPELINE('30/1'), fps: 5 }), memoryLogger().log);
  const pending = takeN(camera.frames$, 4);
  camera.start();
  const frames = await pending;
  await camera.stop();
  // The schedule never lets more than one frame through per 1/fps on average.
  const span = frames.at(-1)!.capturedMono - frames[0]!.capturedMono;
  assert.ok(span >= 3 * 200 - 1, `4 frames at 5 fps span at least 600 ms, got ${span.toFixed(1)} ms`);
  assert.ok(camera.stats().dropped > 0, 'frames were read and skipped');
  releaseAll(frames);
});

test('fps on a folder paces the reads instead of skipping images', async () => {
  const dir = tempDir('paced');
  writeImages(dir, 5);
  const camera = createCamera(cameraConfig({ path: dir, fps: 20 }), memoryLogger().log);
  const pending = takeN(camera.frames$, 4);
  camera.start();
  const frames = await pending;
  await camera.stop();
  assert.deepEqual(frames.map((f) => imageNumber(f.image)), [0, 1, 2, 3], 'no image skipped');
  assert.ok(frames.at(-1)!.capturedMono - frames[0]!.capturedMono >= 3 * 50 - 1);
  releaseAll(frames);
});

test('trigger mode on a folder: no frame until trigger(), each trigger gets the next image and carries its id', async () => {
  const dir = tempDir('trig');
  writeImages(dir, 3);
  const camera = createCamera(cameraConfig({ path: dir, trigger: 'mqtt', stallTimeoutMs: 100 }), memoryLogger().log);
  const got: Frame[] = [];
  camera.frames$.subscribe((f) => got.push(f));
  const seen = statuses(camera);
  camera.start();
  await delay(400);
  assert.equal(got.length, 0, 'an untriggered camera delivers nothing');
  camera.trigger('t-1');
  await waitFor(camera.frames$, () => true);
  camera.trigger('t-2');
  camera.trigger();
  await waitFor(camera.frames$, (f) => f.sequence === 3);
  assert.deepEqual(got.map((f) => [f.sequence, f.triggerId, imageNumber(f.image)]), [[1, 't-1', 0], [2, 't-2', 1], [3, undefined, 2]]);
  // Idle for several stall timeouts while waiting for triggers: not stalled.
  assert.ok(!seen.some((s) => s.state === 'offline'), 'idle trigger-mode camera is not declared stalled');
  assert.equal(camera.stats().failures, 0);
  await camera.stop();
  releaseAll(got);
});

test('trigger mode on a live source: frames are drained while idle, idle is not a stall, a trigger gets the next frame', async () => {
  const camera = createCamera(cameraConfig({ source: 'gstreamer', pipeline: LIVE_TEST_PIPELINE('30/1'), trigger: 'mqtt', stallTimeoutMs: 150 }), memoryLogger().log);
  const got: Frame[] = [];
  camera.frames$.subscribe((f) => got.push(f));
  const seen = statuses(camera);
  camera.start();
  await waitFor(camera.status$, (s) => s.state === 'online');
  await delay(500);
  assert.equal(got.length, 0);
  assert.ok(camera.stats().dropped > 0, 'the live source kept being read while idle');
  camera.trigger('job-42');
  const frame = await waitFor(camera.frames$, () => true);
  assert.equal(frame.triggerId, 'job-42');
  assert.equal(frame.sequence, 1);
  assert.deepEqual(seen.map((s) => s.state), ['starting', 'online']);
  await camera.stop();
  releaseAll(got);
});

test('trigger() in free-run is ignored with a warning', async () => {
  const dir = tempDir('free');
  writeImages(dir, 2);
  const { log, records } = memoryLogger();
  const camera = createCamera(cameraConfig({ path: dir, fps: 50 }), log);
  const pending = takeN(camera.frames$, 2);
  camera.start();
  camera.trigger('ignored');
  const frames = await pending;
  await camera.stop();
  assert.ok(frames.every((f) => f.triggerId === undefined));
  assert.ok(records().some((r) => String(r.msg).startsWith('trigger ignored: camera is in free-run')));
  releaseAll(frames);
});

test('a camera that will not open goes offline with the error and is retried with growing delays', async () => {
  const { log, records } = memoryLogger();
  const camera = createCamera(cameraConfig({ source: 'gstreamer', pipeline: 'nosuchelement ! appsink', reconnectMinMs: 20, reconnectMaxMs: 160 }), log);
  const offline = waitFor(camera.status$, (s) => s.state === 'offline');
  camera.start();
  const status = await offline;
  assert.match(status.error!, /cannot open gstreamer pipeline "nosuchelement ! appsink"/);
  const scheduled = () => records().filter((r) => r.msg === 'camera reopen scheduled');
  await until('six reopen attempts', () => scheduled().length >= 6);
  await camera.stop();
  const reopen = scheduled().slice(0, 6);
  assert.deepEqual(reopen.map((r) => r.ceilingMs), [20, 40, 80, 160, 160, 160], 'ceiling doubles up to reconnectMaxMs');
  for (const r of reopen) assert.ok((r.delayMs as number) >= 0 && (r.delayMs as number) <= (r.ceilingMs as number), 'full jitter: 0..ceiling');
  assert.ok(camera.stats().failures >= 6);
  assert.ok(camera.stats().reconnects >= 6);
});

test('a usb camera that is not there (/dev/video99) is offline with an error naming the device', async () => {
  const camera = createCamera(cameraConfig({ source: 'usb', device: '/dev/video99', reconnectMinMs: 50, reconnectMaxMs: 100 }), memoryLogger().log);
  const offline = waitFor(camera.status$, (s) => s.state === 'offline');
  camera.start();
  assert.match((await offline).error!, /usb camera \/dev\/video99/);
  await camera.stop();
});

test('a free-run live source that opens but delivers nothing in time is declared stalled, offline, and reopened', async () => {
  // OpenCV's open consumes the first buffer, so at 1 frame/s nothing arrives for a second: longer
  // than the 200 ms stall timeout. (A camera freezing mid-stream: see capture-gige.test.ts.)
  const { log, records } = memoryLogger();
  const camera = createCamera(cameraConfig({ source: 'gstreamer', pipeline: LIVE_TEST_PIPELINE('1/1'), stallTimeoutMs: 200, reconnectMinMs: 10, reconnectMaxMs: 20 }), log);
  const seen = statuses(camera);
  camera.start();
  const stalled = await waitFor(camera.status$, (s) => s.state === 'offline');
  assert.match(stalled.error!, /stalled: no frame within stallTimeoutMs \(200 ms\)/);
  assert.deepEqual(seen.map((s) => s.state), ['starting', 'offline'], 'never online: it delivered nothing');
  // The stalled read is still blocked inside GStreamer; the handle is closed once it returns and
  // only then is the camera opened again.
  const opens = () => records().filter((r) => r.msg === 'camera source open').length;
  await until('a second open', () => opens() >= 2);
  assert.ok(records().some((r) => r.msg === 'waiting for the previous capture handle to return from a blocked read before reopening'));
  await camera.stop();
  assert.ok(camera.stats().failures >= 1);
});

test('update(): fps and roi apply live; a new source path reopens and frames come from it', async () => {
  const first = tempDir('upd-a');
  writeImages(first, 2);
  const second = tempDir('upd-b');
  writeImages(second, 6);
  const config = cameraConfig({ path: first, fps: 50 });
  const camera = createCamera(config, memoryLogger().log);
  const got: Frame[] = [];
  camera.frames$.subscribe((f) => got.push(f));
  camera.start();
  await waitFor(camera.frames$, () => true);
  const roi = { x: 0, y: 0, width: 10, height: 10 };
  assert.equal(camera.update({ ...config, fps: 40, roi }), 'live');
  const withRoi = await waitFor(camera.frames$, (f) => f.roi !== null);
  assert.deepEqual(withRoi.roi, roi);
  assert.equal(camera.update({ ...config, fps: 40, roi, path: second }), 'restart');
  // The second folder has images 2..5, which the first does not.
  await waitFor(camera.frames$, (f) => imageNumber(f.image) >= 2);
  assert.throws(() => camera.update({ ...config, id: 'other' }), /cannot change the id/);
  await camera.stop();
  releaseAll(got);
});

/** Wrap the real source so every Mat it hands out is recorded. */
function recordingFactory(mats: Mat[]) {
  return (config: CameraConfig, log: ReturnType<typeof memoryLogger>['log']): CameraSource => {
    const real = createSource(config, log);
    return {
      get description() { return real.description; },
      get live() { return real.live; },
      get nativeFps() { return real.nativeFps; },
      get skipped() { return real.skipped; },
      open: () => real.open(),
      close: () => real.close(),
      async read() {
        const mat = await real.read();
        if (mat) mats.push(mat);
        return mat;
      },
    };
  };
}

/** Subscribe like the pipeline would: keep every third frame (handed on), release the rest. */
function keepEveryThird(camera: Camera): { kept: Frame[]; received: () => number } {
  const kept: Frame[] = [];
  let received = 0;
  camera.frames$.subscribe((f) => {
    received++;
    if (f.sequence % 3 === 0) kept.push(f);
    else f.release();
  });
  return { kept, received: () => received };
}

async function assertNothingLeaks(config: CameraConfig, waitForFrames: number): Promise<void> {
  const mats: Mat[] = [];
  const camera = new Camera(config, memoryLogger().log, recordingFactory(mats));
  const { kept, received } = keepEveryThird(camera);
  camera.start();
  await until(`${waitForFrames} frames`, () => received() >= waitForFrames);
  await camera.stop();
  const keptMats = new Set(kept.map((f) => f.image));
  const alive = mats.filter((m) => !m.empty);
  assert.ok(mats.length > received(), 'the source produced more Mats than were handed on (drops happened)');
  assert.deepEqual(alive.length, kept.length, `only the ${kept.length} frames the subscriber kept hold native memory; ${alive.length} Mats are alive`);
  assert.ok(alive.every((m) => keptMats.has(m)));
  releaseAll(kept);
  assert.ok(mats.every((m) => m.empty), 'after the keeper releases, every Mat is released');
}

test('no Mat leaks: live source with fps throttle releases every skipped frame', async () => {
  await assertNothingLeaks(cameraConfig({ source: 'gstreamer', pipeline: LIVE_TEST_PIPELINE('60/1'), fps: 10 }), 4);
});

test('no Mat leaks: unpaced folder camera stopped mid-stream releases the frame in flight', async () => {
  const dir = tempDir('leak2');
  writeImages(dir, 5);
  const mats: Mat[] = [];
  const camera = new Camera(cameraConfig({ path: dir }), memoryLogger().log, recordingFactory(mats));
  const { kept, received } = keepEveryThird(camera);
  camera.start();
  await until('20 frames', () => received() >= 20);
  await camera.stop();
  // Unpaced, the camera always has a read in flight: stop() lands on one, and that frame is dropped.
  assert.ok(mats.length > received(), 'a frame read after stop() was dropped');
  const alive = mats.filter((m) => !m.empty);
  assert.equal(alive.length, kept.length);
  releaseAll(kept);
  assert.ok(mats.every((m) => m.empty));
});


test('roiFitsFrame: null and ROIs inside the frame fit; one pixel over or far outside does not', () => {
  const size = { width: 256, height: 128 };
  assert.equal(roiFitsFrame(null, size), true);
  assert.equal(roiFitsFrame({ x: 0, y: 0, width: 256, height: 128 }, size), true);
  assert.equal(roiFitsFrame({ x: 1, y: 0, width: 256, height: 128 }, size), false);
  assert.equal(roiFitsFrame({ x: 0, y: 100, width: 10, height: 29 }, size), false);
  assert.equal(roiFitsFrame({ x: 100000, y: 0, width: 10, height: 10 }, size), false);
});

test('an roi outside the frame: state error naming roi and frame size, no frame handed on, every Mat released, no reopen; a fitting roi brings frames back', async () => {
  // Unpaced: while no frame can be used, nothing else paces the reads.
  const config = cameraConfig({ path: samplesDir, roi: { x: 100000, y: 0, width: 10, height: 10 } });
  const mats: Mat[] = [];
  const logged = memoryLogger();
  const camera = new Camera(config, logged.log, recordingFactory(mats));
  const seen = statuses(camera);
  const emitted: Array<Frame['roi']> = [];
  camera.frames$.subscribe((f) => {
    emitted.push(f.roi);
    f.release();
  });
  assert.equal(camera.frameSize, null);
  camera.start();
  const error = await waitFor(camera.status$, (s) => s.state === 'error');
  assert.match(error.error!, /^roi \{x: 100000, y: 0, width: 10, height: 10\} does not fit the 256x256 frame/);
  assert.deepEqual(camera.frameSize, { width: 256, height: 256 });
  await until('a second frame read while the roi does not fit', () => camera.stats().dropped >= 2);
  assert.equal(emitted.length, 0);
  assert.equal(camera.stats().captured, 0);
  assert.ok(mats.every((m) => m.empty), 'every frame read was released');
  assert.equal(camera.stats().failures, 0, 'a source that delivers is not a failure');
  assert.equal(camera.stats().reconnects, 0, 'nothing reopened');
  assert.equal(logged.records().filter((r) => r.level === 50).length, 1, 'one error logged, not one per frame');

  const roi = { x: 16, y: 16, width: 128, height: 128 };
  assert.equal(camera.update({ ...config, roi }), 'live');
  await until('a frame with the fitting roi', () => emitted.length > 0);
  assert.deepEqual(emitted[0], roi);
  await camera.stop();
  assert.deepEqual(seen.map((s) => s.state).slice(-3), ['error', 'online', 'stopped']);
  assert.equal(seen.filter((s) => s.state === 'error').length, 1);
  assert.ok(mats.every((m) => m.empty));
});

test('an roi that fits only some frame sizes: online for the frames it fits, error with the size for the others', async () => {
  const dir = tempDir('roi-sizes');
  // Name order: the small image is read first.
  for (const [name, width, height] of [['a-small.png', 64, 48], ['b-large.png', 256, 256]] as const) {
    const mat = numberedImage(1, width, height);
    cv.imwrite(path.join(dir, name), mat);
    mat.release();
  }
  const camera = createCamera(cameraConfig({ path: dir, fps: 20, roi: { x: 100, y: 100, width: 50, height: 50 } }), memoryLogger().log);
  const seen = statuses(camera);
  const sizes: number[][] = [];
  camera.frames$.subscribe((f) => {
    sizes.push([f.image.cols, f.image.rows]);
    f.release();
  });
  camera.start();
  await until('two frames from the large image', () => sizes.length >= 2);
  await camera.stop();
  assert.deepEqual(sizes.slice(0, 2), [[256, 256], [256, 256]], 'only frames the roi fits are handed on');
  const states = seen.map((s) => s.state);
  assert.ok(states.indexOf('error') < states.lastIndexOf('online'), `back online after error: ${states.join(', ')}`);
  assert.match(seen.find((s) => s.state === 'error')!.error!, /does not fit the 64x48 frame/);
});

test('trigger mode with an roi outside the frame: the trigger is answered by a warning, not a frame', async () => {
  const logged = memoryLogger();
  const camera = createCamera(cameraConfig({ path: samplesDir, trigger: 'mqtt', roi: { x: 0, y: 300, width: 10, height: 10 } }), logged.log);
  const got: Frame[] = [];
  camera.frames$.subscribe((f) => got.push(f));
  camera.start();
  camera.trigger('t-1');
  await until('the dropped trigger\'s warning', () => logged.records().some((r) => r.triggerId === 't-1' && /^trigger dropped: roi .* does not fit the 256x256 frame/.test(String(r.msg))));
  assert.equal(camera.stats().dropped, 1);
  await camera.stop();
  assert.equal(got.length, 0);
});
