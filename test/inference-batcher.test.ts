// FrameBatcher: how long a batch waits for more frames.
import assert from 'node:assert/strict';
import test from 'node:test';
import type { Frame } from '../src/capture/frame.js';
import { FrameBatcher } from '../src/inference/batcher.js';

let sequence = 0;
function frame(cameraId: string): Frame {
  return { cameraId, sequence: ++sequence, capturedAt: new Date().toISOString(), capturedMono: performance.now(), image: null as never, roi: null, release() {} };
}

test('one free-running camera: the batch goes at once (no frame can join a latest-frame slot)', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 1);
  batcher.put(frame('cam1'));
  const t0 = performance.now();
  const batch = await batcher.take(4, 500);
  assert.equal(batch.length, 1);
  assert.ok(performance.now() - t0 < 100, `took ${(performance.now() - t0).toFixed(0)} ms`);
});

test('two cameras: the batch waits for the second camera, and goes as soon as both slots are full', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 1);
  batcher.setCapacity('cam2', 1);
  batcher.put(frame('cam1'));
  setTimeout(() => batcher.put(frame('cam2')), 30);
  const t0 = performance.now();
  const batch = await batcher.take(4, 1000);
  const elapsed = performance.now() - t0;
  assert.deepEqual(batch.map((f) => f.cameraId).sort(), ['cam1', 'cam2']);
  assert.ok(elapsed >= 20 && elapsed < 500, `waited ${elapsed.toFixed(0)} ms`);
});

test('a slot that can still fill: the batch waits up to maxWaitMs', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 1);
  batcher.setCapacity('cam2', 1);
  batcher.put(frame('cam1'));
  const t0 = performance.now();
  const batch = await batcher.take(4, 80);
  const elapsed = performance.now() - t0;
  assert.equal(batch.length, 1);
  assert.ok(elapsed >= 70, `waited only ${elapsed.toFixed(0)} ms`);
});

test('a triggered camera (FIFO of 16) still fills a batch up to maxBatch', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 16);
  batcher.put(frame('cam1'));
  setTimeout(() => {
    batcher.put(frame('cam1'));
    batcher.put(frame('cam1'));
  }, 20);
  const batch = await batcher.take(3, 1000);
  assert.equal(batch.length, 3);
});
