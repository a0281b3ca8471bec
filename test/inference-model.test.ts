// The session and the preprocessing, with real onnxruntime-node and real OpenCV on the fixture
// model whose anomaly map is the input's red channel.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import cv from '../src/cv.js';
import { ModelContractError, ModelFileError } from '../src/inference/model-file.js';
import { loadModel } from '../src/inference/model.js';
import { batchesInFlight, intraOpThreadsPerSession, modelOptions, resolveInferenceThread, sessionOptions } from '../src/inference/model-options.js';
import { effectiveRoi, preprocessInto, resizeInterpolation } from '../src/inference/preprocess.js';
import { loadConfig } from '../src/config/load.js';
import { capturingLogger, cpuOptions, frameOf, imageWithSpots, noiseImage } from './fixtures/frames.js';
import { tinyModels } from './fixtures/tiny-models.js';
import { demoModel } from './helpers/daemon.js';

const dir = tinyModels();
const good = path.join(dir, 'good.onnx');

test('preprocessing without resize: RGB planes of the BGR image, scaled to [0, 1], NCHW', async () => {
  const { mat, data } = noiseImage(32, 32, 7);
  const input = new Float32Array(3 * 32 * 32);
  await preprocessInto([frameOf(mat)], input, 32, 32);
  let worst = 0;
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 32; x++) {
      for (let c = 0; c < 3; c++) {
        const expected = data[(y * 32 + x) * 3 + (2 - c)]! / 255;
        worst = Math.max(worst, Math.abs(input[c * 1024 + y * 32 + x]! - expected));
      }
    }
  }
  assert.ok(worst <= 1e-6, `max abs difference ${worst}`);
  mat.release();
});

test('preprocessing with ROI and a 4x shrink: INTER_AREA means of 4x4 blocks of the ROI, second slot of the batch', async () => {
  const width = 140;
  const height = 135;
  const roi = { x: 5, y: 3, width: 128, height: 128 };
  const { mat, data } = noiseImage(width, height, 11);
  const plain = noiseImage(32, 32, 3);
  const input = new Float32Array(2 * 3 * 32 * 32).fill(-1);
  await preprocessInto([frameOf(plain.mat), frameOf(mat, roi)], input, 32, 32);
  const at = (x: number, y: number, ch: number) => data[(y * width + x) * 3 + ch]!;
  let worst = 0;
  const offset = 3 * 32 * 32;
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 32; x++) {
      for (let c = 0; c < 3; c++) {
        const ch = 2 - c;
        let sum = 0;
        for (let dy = 0; dy < 4; dy++) for (let dx = 0; dx < 4; dx++) sum += at(roi.x + 4 * x + dx, roi.y + 4 * y + dy, ch);
        // OpenCV's integer-factor area resize of 8-bit images rounds the block mean to 8 bits,
        // halves to even (cvRound).
        const mean = sum / 16;
        const rounded = mean - Math.floor(mean) === 0.5 ? (Math.floor(mean) % 2 === 0 ? Math.floor(mean) : Math.ceil(mean)) : Math.round(mean);
        const expected = rounded / 255;
        worst = Math.max(worst, Math.abs(input[offset + c * 1024 + y * 32 + x]! - expected));
      }
    }
  }
  assert.ok(worst <= 1e-6, `max abs difference ${worst}`);
  assert.ok(input.subarray(0, offset).every((v) => v >= 0 && v <= 1), 'first slot written too');
  mat.release();
  plain.mat.release();
});

test('grayscale frames become three equal planes', async () => {
  const gray = new cv.Mat(32, 32, cv.CV_8UC1, 128);
  const input = new Float32Array(3 * 1024);
  await preprocessInto([frameOf(gray)], input, 32, 32);
  assert.ok(input.every((v) => Math.abs(v - 128 / 255) < 1e-6));
  gray.release();
});

test('resize rule: bilinear only when both sides grow (as the trainer), ROI clipped to the image', () => {
  assert.equal(resizeInterpolation({ width: 100, height: 100 }, { width: 32, height: 32 }), cv.INTER_AREA);
  assert.equal(resizeInterpolation({ width: 16, height: 16 }, { width: 32, height: 32 }), cv.INTER_LINEAR);
  assert.equal(resizeInterpolation({ width: 16, height: 64 }, { width: 32, height: 32 }), cv.INTER_AREA);
  const image = new cv.Mat(50, 80, cv.CV_8UC3, [0, 0, 0]);
  assert.deepEqual(effectiveRoi(frameOf(image, { x: 60, y: 40, width: 100, height: 100 })), { x: 60, y: 40, width: 20, height: 10 });
  assert.deepEqual(effectiveRoi(frameOf(image, null)), { x: 0, y: 0, width: 80, height: 50 });
  assert.throws(() => effectiveRoi(frameOf(image, { x: 90, y: 0, width: 10, height: 10 }, 'camX')), /camera camX .*outside the 80x50 image/);
  image.release();
});

test('a good model loads, names its provider and infers a batch larger than maxBatch', async () => {
  const { log, lines } = capturingLogger();
  const model = await loadModel(good, cpuOptions, log);
  try {
    assert.equal(model.info.executionProvider, 'cpu');
    assert.ok(lines().some((l) => l.msg === 'model loaded on execution provider cpu'));
    const frames = [0.2, 1, 0.6].map((level) => frameOf(imageWithSpots(64, 64, [{ x: 10, y: 20, width: 4, height: 6, level }])));
    const inference = await model.run(frames);
    assert.equal(inference.frames.length, 3);
    assert.equal(inference.timings.batchSize, 3);
    assert.ok(inference.timings.preprocessMs >= 0 && inference.timings.inferenceMs >= 0);
    assert.equal(inference.model, model.info);
    inference.frames.forEach((fi, i) => {
      assert.equal(fi.frame, frames[i]);
      assert.equal(fi.mapHeight, 32);
      assert.equal(fi.mapWidth, 32);
      assert.equal(fi.map.length, 1024);
      // Map = red channel: the spot (2x3 map cells after the 2x shrink) at its level, zero elsewhere.
      const level = Math.round(255 * [0.2, 1, 0.6][i]!) / 255;
      assert.ok(Math.abs(fi.raw - level) < 1e-6, `frame ${i}: raw ${fi.raw} vs ${level}`);
      assert.ok(Math.abs(fi.map[10 * 32 + 5]! - level) < 1e-6);
      assert.equal(fi.map[0], 0);
      assert.equal(fi.map.filter((v) => v > 0).length, 6);
    });
    // A smaller batch after a larger one reuses the buffer without leftovers from the last run.
    const single = await model.run([frameOf(imageWithSpots(64, 64, []))]);
    assert.equal(single.frames[0]!.raw, 0);
    for (const f of frames) f.release();
  } finally {
    await model.release();
  }
});

test('execution providers: unusable ones are skipped with a log line, cpu is the last resort', async () => {
  const { log, lines } = capturingLogger();
  const model = await loadModel(good, { ...cpuOptions, executionProviders: ['no-such-provider'] }, log);
  try {
    assert.equal(model.info.executionProvider, 'cpu');
    const all = lines();
    assert.ok(all.some((l) => l.provider === 'no-such-provider' && /not usable/.test(String(l.msg))), JSON.stringify(all));
    assert.ok(all.some((l) => l.msg === 'execution provider fallback: running on cpu'));
  } finally {
    await model.release();
  }
});

test('inference on a worker thread gives the same maps and scores as on the main thread, and falls back across providers there too', async () => {
  const { log, lines } = capturingLogger();
  const onMain = await loadModel(good, cpuOptions, log);
  const onWorker = await loadModel(good, { ...cpuOptions, executionProviders: ['no-such-provider'], inferenceThread: 'worker' }, log);
  const frames = [0.3, 0.9].map((level) => frameOf(imageWithSpots(64, 64, [{ x: 8, y: 8, width: 6, height: 4, level }])));
  try {
    assert.ok(lines().some((l) => l.msg === 'model loaded on execution provider cpu' && l.thread === 'worker'));
    assert.equal(onWorker.info.executionProvider, 'cpu');
    const a = await onMain.run(frames);
    const b = await onWorker.run(frames);
    assert.deepEqual(b.frames.map((f) => f.raw), a.frames.map((f) => f.raw));
    b.frames.forEach((f, i) => assert.deepEqual([...f.map], [...a.frames[i]!.map]));
  } finally {
    for (const f of frames) f.release();
    await onMain.release();
    await onWorker.release();
  }
});

test('beforeBlockingRun: awaited after preprocessing and before a session.run on the main thread, never for one on a worker', async () => {
  const onMain = await loadModel(good, cpuOptions, capturingLogger().log);
  const onWorker = await loadModel(good, { ...cpuOptions, inferenceThread: 'worker' }, capturingLogger().log);
  const frames = [frameOf(imageWithSpots(64, 64, [{ x: 8, y: 8, width: 6, height: 4, level: 0.7 }]))];
  try {
    const order: string[] = [];
    let release!: () => void;
    const run = onMain.run(frames, {
      preprocessed: () => order.push('preprocessed'),
      beforeBlockingRun: () => {
        order.push('beforeBlockingRun');
        return new Promise<void>((resolve) => (release = resolve));
      },
    });
    void run.then(() => order.push('ran'));
    while (!order.includes('beforeBlockingRun')) await new Promise((r) => setTimeout(r, 5));
    // The run waits for the hook: nothing holds the main thread until it resolves.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(order, ['preprocessed', 'beforeBlockingRun']);
    release();
    const inference = await run;
    assert.deepEqual(order, ['preprocessed', 'beforeBlockingRun', 'ran']);
    assert.equal(inference.frames[0]!.raw, (await onWorker.run(frames)).frames[0]!.raw);

    let called = false;
    await onWorker.run(frames, { beforeBlockingRun: async () => void (called = true) });
    assert.equal(called, false, 'a session on a worker does not hold the main thread');
  } finally {
    frames[0]!.release();
    await onMain.release();
    await onWorker.release();
  }
});

test('model.sessions 2: two worker sessions run batches at once and score them as one session does; a run after release is refused', async () => {
  const { log, lines } = capturingLogger();
  const one = await loadModel(good, cpuOptions, log);
  const two = await loadModel(good, { ...cpuOptions, intraOpThreads: 0, sessions: 2 }, log);
  const batches = [0.2, 0.5, 0.8, 1].map((level) => [frameOf(imageWithSpots(64, 64, [{ x: 8, y: 8, width: 6, height: 4, level }]))]);
  try {
    assert.ok(lines().some((l) => l.msg === 'model loaded on execution provider cpu' && l.sessions === 2 && l.thread === 'worker'), JSON.stringify(lines()));
    const expected = [];
    for (const batch of batches) expected.push((await one.run(batch)).frames[0]!.raw);
    const together = await Promise.all(batches.map((batch) => two.run(batch)));
    assert.deepEqual(together.map((inference) => inference.frames[0]!.raw), expected);
    // Different levels, different scores: the batches did not share a buffer.
    assert.equal(new Set(expected).size, expected.length);
    // The frames' pixels are in the batch before the run ends: the pipeline lets a recording read on then.
    let resolved = false;
    let preprocessedBeforeTheEnd: boolean | undefined;
    await two.run(batches[0]!, { preprocessed: () => (preprocessedBeforeTheEnd = !resolved) }).then(() => (resolved = true));
    assert.equal(preprocessedBeforeTheEnd, true);
    await two.release();
    await assert.rejects(two.run(batches[0]!), /has been released/);
  } finally {
    for (const batch of batches) batch[0]!.release();
    await one.release();
    await two.release();
  }
});

test('model.prepareAhead: a second batch is queued on the busy worker and runs while the main thread is held; without it, only after', async () => {
  // The demo model: a run long enough (tens of ms) to tell "ran during the hold" from "ran after".
  const frames = [0.3, 0.8].map((level) => [frameOf(imageWithSpots(256, 256, [{ x: 40, y: 40, width: 20, height: 12, level }]))]);
  const timeline = async (prepareAhead: boolean) => {
    const model = await loadModel(demoModel, { ...cpuOptions, intraOpThreads: 0, inferenceThread: 'worker', prepareAhead }, capturingLogger().log);
    try {
      const warmRunMs = (await model.run(frames[0]!)).timings.inferenceMs;
      let secondPreprocessed!: () => void;
      const ready = new Promise<void>((resolve) => (secondPreprocessed = resolve));
      // The first takes the session before the second exists (preprocessing runs off this thread,
      // and the batch preprocessed first would take it first).
      let firstPreprocessed!: () => void;
      const firstHasSession = new Promise<void>((resolve) => (firstPreprocessed = resolve));
      const first = model.run(frames[0]!, { preprocessed: () => firstPreprocessed() });
      await firstHasSession;
      const second = model.run(frames[1]!, { preprocessed: () => secondPreprocessed() });
      let firstDone = false;
      let secondDone = 0;
      void first.then(() => (firstDone = true));
      void second.then(() => (secondDone = performance.now()));
      await ready;
      await new Promise((r) => setImmediate(r));
      // The first batch's answer already reached this thread: nothing is held behind it, try again.
      if (firstDone) {
        await Promise.all([first, second]);
        return null;
      }
      // Hold the main thread for far longer than both runs take (a loaded machine's runs included,
      // measured on a run just before): what is queued on the worker runs now.
      const holdEnds = performance.now() + Math.max(1500, 20 * warmRunMs);
      while (performance.now() < holdEnds);
      const released = performance.now();
      const [a, b] = await Promise.all([first, second]);
      return { afterHold: secondDone - released, runMs: b.timings.inferenceMs, scores: [a.frames[0]!.raw, b.frames[0]!.raw] };
    } finally {
      await model.release();
    }
  };
  const held = async (prepareAhead: boolean) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const outcome = await timeline(prepareAhead);
      if (outcome) return outcome;
    }
    assert.fail('the first batch always finished before the second was ready: the hold could not be set up');
  };
  try {
    const ahead = await held(true);
    const serial = await held(false);
    assert.ok(ahead.afterHold < ahead.runMs / 2, `with prepareAhead the second batch ran during the hold: ended ${ahead.afterHold.toFixed(1)} ms after it, its run ${ahead.runMs.toFixed(1)} ms`);
    assert.ok(serial.afterHold >= serial.runMs * 0.9, `without, it ran after the hold: ended ${serial.afterHold.toFixed(1)} ms after it, its run ${serial.runMs.toFixed(1)} ms`);
    assert.deepEqual(ahead.scores, serial.scores);
    assert.notEqual(ahead.scores[0], ahead.scores[1]);
  } finally {
    for (const batch of frames) batch[0]!.release();
  }
});

test('model.prepareAhead and daemonNice: off by default; one more batch in flight per session only on worker threads', () => {
  const defaults = modelOptions(loadConfig(undefined, {}));
  assert.equal(defaults.prepareAhead, false);
  assert.equal(defaults.daemonNice, 0);
  assert.throws(() => loadConfig(undefined, { model: { daemonNice: 20 } }), /model\.daemonNice/);
  assert.equal(batchesInFlight({ sessions: 1, inferenceThread: 'main', prepareAhead: true }), 1);
  assert.equal(batchesInFlight({ sessions: 1, inferenceThread: 'worker', prepareAhead: true }), 2);
  assert.equal(batchesInFlight({ sessions: 2, inferenceThread: 'main', prepareAhead: true }), 4);
  assert.equal(batchesInFlight({ sessions: 2, inferenceThread: 'main', prepareAhead: false }), 2);
});

test('model.sessions: 1 by default; with intraOpThreads 0 the cores are shared out between the sessions, a set number is kept', () => {
  assert.equal(modelOptions(loadConfig(undefined, {})).sessions, 1);
  assert.equal(modelOptions(loadConfig(undefined, { model: { sessions: 3 } })).sessions, 3);
  assert.throws(() => loadConfig(undefined, { model: { sessions: 0 } }), /model\.sessions/);
  assert.equal(intraOpThreadsPerSession({ intraOpThreads: 0, sessions: 1 }, 8), 0);
  assert.equal(intraOpThreadsPerSession({ intraOpThreads: 0, sessions: 2 }, 2), 1);
  assert.equal(intraOpThreadsPerSession({ intraOpThreads: 0, sessions: 2 }, 12), 6);
  assert.equal(intraOpThreadsPerSession({ intraOpThreads: 0, sessions: 4 }, 2), 1);
  assert.equal(intraOpThreadsPerSession({ intraOpThreads: 3, sessions: 2 }, 2), 3);
  assert.equal(sessionOptions({ ...cpuOptions, intraOpThreads: 0 }).intraOpNumThreads, undefined);
  assert.equal(sessionOptions({ ...cpuOptions, intraOpThreads: 0, sessions: 2 }).intraOpNumThreads, Math.max(1, Math.floor(os.availableParallelism() / 2)));
});

test('model.inferenceThread auto: a worker thread with 4 or more cores, the main thread below', () => {
  assert.equal(resolveInferenceThread('auto', 2), 'main');
  assert.equal(resolveInferenceThread('auto', 4), 'worker');
  assert.equal(resolveInferenceThread('main', 12), 'main');
  assert.equal(resolveInferenceThread('worker', 2), 'worker');
  assert.equal(modelOptions(loadConfig(undefined, { model: { inferenceThread: 'worker' } })).inferenceThread, 'worker');
});

test('model.intraOpSpinning: off by default, off means idle intra-op threads sleep; a model loads and infers the same either way', async () => {
  assert.equal(modelOptions(loadConfig(undefined, {})).intraOpSpinning, false);
  const off = sessionOptions({ ...cpuOptions, intraOpSpinning: false });
  assert.deepEqual(off.extra, { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
  assert.equal(sessionOptions({ ...cpuOptions, intraOpSpinning: true }).extra, undefined);
  const { log } = capturingLogger();
  const spinning = await loadModel(good, { ...cpuOptions, intraOpSpinning: true }, log);
  const sleeping = await loadModel(good, { ...cpuOptions, intraOpSpinning: false, inferenceThread: 'worker' }, log);
  const frames = [frameOf(imageWithSpots(64, 64, [{ x: 8, y: 8, width: 6, height: 4, level: 0.7 }]))];
  try {
    const a = await spinning.run(frames);
    const b = await sleeping.run(frames);
    assert.deepEqual(b.frames.map((f) => f.raw), a.frames.map((f) => f.raw));
  } finally {
    for (const f of frames) f.release();
    await spinning.release();
    await sleeping.release();
  }
});

test('model options come from config.model and inference.maxBatch', () => {
  const config = loadConfig(undefined, { model: { executionProviders: ['cuda', 'cpu'], intraOpThreads: 2 }, inference: { maxBatch: 3 } });
  const options = modelOptions(config);
  assert.deepEqual(options.executionProviders, ['cuda', 'cpu']);
  assert.equal(options.intraOpThreads, 2);
  assert.equal(options.maxBatch, 3);
  assert.equal(options.graphOptimization, config.model.graphOptimization);
});

test('release() releases the onnxruntime session once; a reload keeps the new model running', async () => {
  const released: unknown[] = [];
  // The exported value is typed as a factory, but it is the session class: patch its prototype.
  const proto = (ort.InferenceSession as unknown as { prototype: { release(this: ort.InferenceSession): Promise<void> } }).prototype;
  const original = proto.release;
  proto.release = async function (this: ort.InferenceSession) {
    released.push(this);
    return original.call(this);
  };
  try {
    const { log } = capturingLogger();
    const first = await loadModel(good, cpuOptions, log);
    const second = await loadModel(good, cpuOptions, log);
    // Results outlive the session (the pipeline post-processes while a swap releases the old model).
    const spot = frameOf(imageWithSpots(32, 32, [{ x: 3, y: 5, width: 1, height: 1 }]));
    const kept = (await first.run([spot])).frames[0]!;
    await first.release();
    await first.release();
    for (let i = 0; i < 3; i++) await second.run([spot]);
    assert.equal(kept.map[5 * 32 + 3], 1);
    assert.equal(kept.map.reduce((a, b) => a + b, 0), 1);
    spot.release();
    assert.equal(released.length, 1, 'one session released, once');
    await assert.rejects(first.run([frameOf(imageWithSpots(32, 32, []))]), /has been released/);
    const frame = frameOf(imageWithSpots(32, 32, [{ x: 0, y: 0, width: 1, height: 1 }]));
    assert.equal((await second.run([frame])).frames[0]!.raw, 1);
    await second.release();
    assert.equal(released.length, 2);
    frame.release();
  } finally {
    proto.release = original;
  }
});

test('loadModel refuses bad files with the contract error, never a crash', async () => {
  const { log } = capturingLogger();
  await assert.rejects(loadModel(path.join(dir, 'missing.onnx'), cpuOptions, log), (err: unknown) => err instanceof ModelFileError && /does not exist/.test(err.message));
  await assert.rejects(loadModel(path.join(dir, 'no-metadata.onnx'), cpuOptions, log), (err: unknown) => err instanceof ModelContractError && /not a CRAD model/.test(err.message));
});

test('a frame with an empty image is an error naming the camera', async () => {
  const { log } = capturingLogger();
  const model = await loadModel(good, cpuOptions, log);
  try {
    const empty = frameOf(new cv.Mat(), null, 'camEmpty');
    await assert.rejects(model.run([empty]), /camera camEmpty .*empty/);
    // The model still serves the next batch.
    assert.equal((await model.run([frameOf(imageWithSpots(32, 32, []))])).frames.length, 1);
  } finally {
    await model.release();
  }
});
