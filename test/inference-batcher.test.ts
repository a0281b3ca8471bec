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
  const batch = (await batcher.take(4, 60_000))!;
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
  const batch = (await batcher.take(4, 60_000))!;
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
  const batch = (await batcher.take(4, 80))!;
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
  const batch = (await batcher.take(3, 1000))!;
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
  const batch = (await batcher.take(4, 0))!;
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
  const batch = (await batcher.take(8, 0))!;
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
  assert.deepEqual((await batcher.take(4, 50))!.map((f) => f.sequence), [waiting.sequence]);
  assert.equal(await batcher.take(4, 50), null, 'closed and empty: null, never an empty batch');
});

// The seam that halted a line: a frame leaving during the wait (its trigger expired) made take()
// answer [], which the pipeline read as "closed" and ended its loop for good.
test('a frame discarded during the wait: take() goes back to waiting and answers the next frame, never []', async () => {
  const batcher = new FrameBatcher();
  const released = new Set<number>();
  batcher.setCapacity('cam1', 16);
  const expired = trackedFrame('cam1', released);
  batcher.put(expired);
  const taking = batcher.take(4, 100);
  setTimeout(() => batcher.discard((f) => f === expired), 20);
  let answered: Frame[] | null | undefined;
  void taking.then((batch) => (answered = batch));
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.ok(released.has(expired.sequence), 'the discarded frame was released');
  assert.equal(answered, undefined, 'nothing waits: take() still waits instead of answering an empty batch');
  const next = frame('cam1');
  batcher.put(next);
  assert.deepEqual((await taking)!.map((f) => f.sequence), [next.sequence]);
});

test('every frame gone after the wait (forgotten camera): take() waits on, then answers the next frame', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 1);
  batcher.setCapacity('cam2', 1);
  batcher.put(frame('cam2'));
  const taking = batcher.take(4, 60);
  setTimeout(() => batcher.forget('cam2'), 10);
  await new Promise((resolve) => setTimeout(resolve, 120));
  const next = frame('cam1');
  batcher.put(next);
  assert.deepEqual((await taking)!.map((f) => f.sequence), [next.sequence]);
});

test('closed during the wait: the frames waiting go in the batch; the next take() answers null', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 16);
  const waiting = frame('cam1');
  batcher.put(waiting);
  const taking = batcher.take(4, 60_000);
  setTimeout(() => batcher.close(), 20);
  assert.deepEqual((await taking)!.map((f) => f.sequence), [waiting.sequence], 'close does not wait out maxWaitMs');
  assert.equal(await batcher.take(4, 60_000), null);
});

test('closed while empty and waiting for a first frame: take() answers null at once', async () => {
  const batcher = new FrameBatcher();
  batcher.setCapacity('cam1', 1);
  const taking = batcher.take(4, 60_000);
  setTimeout(() => batcher.close(), 20);
  assert.equal(await taking, null);
});

test('discarded during the wait with others left: the batch holds the others only', async () => {
  const batcher = new FrameBatcher();
  const released = new Set<number>();
  batcher.setCapacity('cam1', 16);
  const keep = trackedFrame('cam1', released);
  const drop = trackedFrame('cam1', released);
  batcher.put(keep);
  batcher.put(drop);
  const taking = batcher.take(4, 80);
  setTimeout(() => batcher.discard((f) => f === drop), 10);
  assert.deepEqual((await taking)!.map((f) => f.sequence), [keep.sequence]);
  assert.ok(released.has(drop.sequence) && !released.has(keep.sequence));
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
  const batch = (await batcher.take(4, 60_000))!;
  assert.equal(batch.length, 1);
});
