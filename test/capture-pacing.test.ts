// A recorded source without an fps is read at its consumer's pace once the consumer reports the
// frames the model has run on (Frame.inferred, as the pipeline does): no image is decoded only to
// be dropped. A consumer that never reports keeps the old behaviour (as fast as images decode).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createCamera, type Frame } from '../src/capture/index.js';
import { cameraConfig, imageNumber, memoryLogger, writeImages } from './helpers/capture.js';
import { tempDir } from './helpers/cleanup.js';
import { until } from './helpers/wait.js';

/** An unpaced, looping folder camera over 4 numbered images, with every frame it hands on kept. */
function startLoopingFolderCamera(name: string): { camera: ReturnType<typeof createCamera>; frames: Frame[] } {
  const dir = tempDir(name);
  writeImages(dir, 4);
  const camera = createCamera(cameraConfig({ path: dir, loop: true, fps: 0 }), memoryLogger().log);
  const frames: Frame[] = [];
  camera.frames$.subscribe((f) => frames.push(f));
  camera.start();
  return { camera, frames };
}

test('unpaced folder camera: with a consumer that reports inferred frames, the next image is read only after the last was inferred', async () => {
  const { camera, frames } = startLoopingFolderCamera('pace');
  try {
    await until('the first frame', () => frames.length >= 1);
    // Until a consumer reports an inferred frame the camera reads freely; from then on it waits.
    frames.at(-1)!.inferred!();
    await delay(100); // a read already in flight still arrives
    const settled = frames.length;
    await delay(300);
    assert.equal(frames.length, settled, 'no image read while the last one waits, not inferred');
    frames.at(-1)!.inferred!();
    await until('the next frame once the last was inferred', () => frames.length === settled + 1);
    await delay(200);
    assert.equal(frames.length, settled + 1, 'exactly one frame per frame inferred');
    // Frames still come in order: consecutive images of the folder.
    const numbers = frames.map((f) => imageNumber(f.image));
    for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], (numbers[i - 1]! + 1) % 4);
    // Releasing (a consumer done with it, or a slot dropping it) also lets the camera go on.
    frames.at(-1)!.release();
    await until('the next frame once the last was released', () => frames.length === settled + 2);
  } finally {
    await camera.stop();
    for (const f of frames) f.release();
  }
});

test('unpaced folder camera: a consumer that never reports inferred frames gets them as fast as they decode', async () => {
  const { camera, frames } = startLoopingFolderCamera('nopace');
  try {
    await until('20 frames without taking any', () => frames.length >= 20);
  } finally {
    await camera.stop();
    for (const f of frames) f.release();
  }
});
