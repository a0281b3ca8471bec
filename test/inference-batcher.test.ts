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
  // Were it to wait for the batch to fill, it would wait the whole minute.
  const batch = await batcher.take(4, 60_000);
  assert.equal(batch.length, 1);
  assert.ok(performance.now() - t0 < 30_000, `took ${(performance.now() - t0).toFixed(0)} ms`);
});

test('two cameras: the batch waits for the second camera, and goes as soon as both slots are full', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 1);
  batcher.setCapacity('cam2', 1);
  batcher.put(frame('cam1'));
  setTimeout(() => batcher.put(frame('cam2')), 30);
  const t0 = performance.now();
  const batch = await batcher.take(4, 60_000);
  const elapsed = performance.now() - t0;
  assert.deepEqual(batch.map((f) => f.cameraId).sort(), ['cam1', 'cam2']);
  // It waited for cam2 (put after 30 ms), and not for the minute maxWaitMs allows.
  assert.ok(elapsed >= 20 && elapsed < 30_000, `waited ${elapsed.toFixed(0)} ms`);
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

function trackedFrame(cameraId: string, released: Set<number>): Frame {
  const f = frame(cameraId);
  f.release = () => released.add(f.sequence);
  return f;
}

test('latest frame wins for a free-running camera: the older frame is released and counted', async () => {
  const batcher = new FrameBatcher();
  const released = new Set<number>();
  batcher.setCapacity('cam1', 1);
  const old = trackedFrame('cam1', released);
  const newer = trackedFrame('cam1', released);
  batcher.put(old);
  batcher.put(newer);
  assert.deepEqual([...released], [old.sequence]);
  assert.deepEqual(batcher.stats(), { dropped: { cam1: 1 }, waiting: 1 });
  const batch = await batcher.take(4, 0);
  assert.deepEqual(batch.map((f) => f.sequence), [newer.sequence]);
});

test('a triggered camera keeps a FIFO: a full queue drops its oldest frame, and the batch is oldest first', async () => {
  const batcher = new FrameBatcher();
  const released = new Set<number>();
  batcher.setCapacity('cam1', 3);
  const frames = [1, 2, 3, 4].map(() => trackedFrame('cam1', released));
  for (const f of frames) batcher.put(f);
  assert.deepEqual([...released], [frames[0]!.sequence]);
  assert.equal(batcher.stats().dropped.cam1, 1);
  const batch = await batcher.take(8, 0);
  assert.deepEqual(batch.map((f) => f.sequence), frames.slice(1).map((f) => f.sequence));
});

test('close drains what waits, then take() ends with []; frames put after close are released', async () => {
  const batcher = new FrameBatcher();
  const released = new Set<number>();
  batcher.setCapacity('cam1', 2);
  const waiting = trackedFrame('cam1', released);
  batcher.put(waiting);
  batcher.close();
  const late = trackedFrame('cam1', released);
  batcher.put(late);
  assert.ok(released.has(late.sequence));
  assert.deepEqual((await batcher.take(4, 50)).map((f) => f.sequence), [waiting.sequence]);
  assert.deepEqual(await batcher.take(4, 50), []);
});

test('a camera removed from the batcher gives back its waiting frames and no longer holds a batch open', async () => {
  const batcher = new FrameBatcher();
  const released = new Set<number>();
  batcher.setCapacity('cam1', 1);
  batcher.setCapacity('cam2', 1);
  const gone = trackedFrame('cam2', released);
  batcher.put(gone);
  batcher.forget('cam2');
  assert.ok(released.has(gone.sequence));
  assert.equal(batcher.waiting, 0);
  batcher.put(frame('cam1'));
  // cam1 alone can hold one frame: the batch goes without waiting the 60 s for cam2.
  const batch = await batcher.take(4, 60_000);
  assert.equal(batch.length, 1);
});
