// model.daemonNice with real onnxruntime on worker threads: the daemon's own threads are lowered,
// the sessions' threads keep the start priority, also for a model loaded after the lowering (a
// swap). Its own file: lowering is for the life of the process.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { test } from 'node:test';
import { loadModel } from '../src/inference/model.js';
import { protectedThreadIds } from '../src/inference/ort-worker.js';
import { capturingLogger, cpuOptions, frameOf, imageWithSpots } from './fixtures/frames.js';
import { demoModel } from './helpers/daemon.js';

const linux = fs.existsSync('/proc/self/task');

function niceOf(tids: Iterable<number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of tids) {
    try {
      out.set(tid, os.getPriority(tid));
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

test('model.daemonNice: the daemon\'s threads run below the inference threads, and a model loaded later keeps the inference priority', { skip: !linux && 'needs Linux /proc/self/task' }, async () => {
  const base = os.getPriority();
  const { log, lines } = capturingLogger();
  const options = { ...cpuOptions, intraOpThreads: 2, inferenceThread: 'worker' as const, prepareAhead: true, daemonNice: 5 };
  const first = await loadModel(demoModel, options, log);
  let second: Awaited<ReturnType<typeof loadModel>> | undefined;
  const frames = [frameOf(imageWithSpots(256, 256, [{ x: 40, y: 40, width: 20, height: 12, level: 0.8 }]))];
  try {
    const kept = await protectedThreadIds();
    // The spawner, the session's worker and the intra-op thread onnxruntime made for it (2 threads: the caller and one more).
    assert.ok(kept.size >= 3, `protected threads: ${[...kept].join(', ')}`);
    assert.equal(os.getPriority(process.pid), base + 5, 'the main thread (event loop) is lowered');
    const all = fs.readdirSync('/proc/self/task').map(Number);
    for (const [tid, nice] of niceOf(all)) assert.equal(nice, kept.has(tid) ? base : base + 5, `thread ${tid} (${kept.has(tid) ? 'inference' : 'daemon'})`);
    assert.ok(lines().some((l) => l.msg === 'daemon threads lowered below the inference threads' && l.nice === base + 5));

    // A swap: the new model's workers come from the spawner, not from the lowered main thread.
    second = await loadModel(demoModel, options, log);
    const keptNow = await protectedThreadIds();
    const added = [...keptNow].filter((tid) => !kept.has(tid));
    assert.ok(added.length >= 2, `the second model's threads: ${added.join(', ')}`);
    for (const [tid, nice] of niceOf(added)) assert.equal(nice, base, `thread ${tid} of the model loaded after the lowering`);
    await first.release();
    assert.ok((await protectedThreadIds()).size < keptNow.size, 'a released model\'s threads leave the protected set');
    // The model still infers on the kept priority.
    const inference = await second.run(frames);
    assert.ok(Number.isFinite(inference.frames[0]!.raw));
  } finally {
    frames[0]!.release();
    await first.release();
    await second?.release();
  }
});
