// The uint8 input form (model contract format 2) against the float form, with real
// onnxruntime-node and real OpenCV. Both forms resize with OpenCV before the graph, so the same
// frame must give the same pixels, and the same model in both forms the same scores and maps:
// only where x/255 happens differs (OpenCV's convertTo on the float path, the graph's Div on the
// uint8 path), at most one float32 rounding step of the input.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import cv, { type Mat } from '../src/cv.js';
import type { Frame } from '../src/capture/frame.js';
import { loadConfig } from '../src/config/load.js';
import { runGoldenSamples } from '../src/inference/golden.js';
import { ModelContractError } from '../src/inference/model-file.js';
import { loadModel, type CradModel } from '../src/inference/model.js';
import type { ModelOptions } from '../src/inference/model-options.js';
import { inputBuffer, preprocessInto } from '../src/inference/preprocess.js';
import { postprocess, postprocessOptions } from '../src/inference/postprocess.js';
import { scoreFiles } from '../src/inference/score-files.js';
import type { Inference } from '../src/inference/types.js';
import { capturingLogger, cpuOptions, frameOf, noiseImage } from './fixtures/frames.js';
import { tinyModels } from './fixtures/tiny-models.js';
import { uint8FormOf } from './fixtures/uint8-form.js';
import { demoModel, samplesDir } from './helpers/daemon.js';
import { allowedDifference, maxAbsDiff } from './helpers/tolerance.js';

const tiny = tinyModels();
/** Scores and map cells of the two forms agree within these fractions of the outputs' scale
 * (max(1, largest magnitude): helpers/model-reference.ts), as trained models score in the tens;
 * on the demo (scores to 10.6, maps to about 20) that is the 1e-5 and 2e-5 it always met. */
const SCORE_TOLERANCE = 1e-6;
const MAP_TOLERANCE = 1e-6;

/**
 * Frames that take every preprocessing route: no resize, an ROI of exactly the model's size (a
 * view of the frame), an ROI shrunk 4x (area), a frame grown 2x (bilinear), gray with an ROI, BGRA.
 */
function framesOfEveryKind(size: number): Frame[] {
  const mats: Mat[] = [
    noiseImage(size, size, 1).mat,
    noiseImage(size + 18, size + 8, 2).mat,
    noiseImage(4 * size + 12, 4 * size + 7, 3).mat,
    noiseImage(size / 2, size / 2, 4).mat,
    noiseImage(2 * size, 2 * size, 5).mat.cvtColor(cv.COLOR_BGR2GRAY),
    noiseImage(size + 16, size, 6).mat.cvtColor(cv.COLOR_BGR2BGRA),
  ];
  const rois: Frame['roi'][] = [null, { x: 5, y: 3, width: size, height: size }, { x: 6, y: 3, width: 4 * size, height: 4 * size }, null, { x: 4, y: 8, width: size + 20, height: size + 4 }, null];
  return mats.map((mat, i) => frameOf(mat, rois[i]));
}

async function withModel<T>(file: string, use: (model: CradModel) => Promise<T>, options: ModelOptions = cpuOptions): Promise<T> {
  const model = await loadModel(file, { ...options, maxBatch: 6 }, capturingLogger().log);
  try {
    return await use(model);
  } finally {
    await model.release();
  }
}

/** Tolerances relative to the batch's scale: score and map cells within tolerance x max(1, largest magnitude). */
function assertSameOutputs(float: Inference, uint8: Inference, tolerance: { score: number; map: number }): void {
  assert.equal(uint8.frames.length, float.frames.length);
  const scoreAllowed = allowedDifference(tolerance.score, float.frames.map((f) => f.raw), uint8.frames.map((u) => u.raw));
  const mapAllowed = Math.max(...float.frames.map((f, i) => allowedDifference(tolerance.map, f.map, uint8.frames[i]!.map)));
  float.frames.forEach((f, i) => {
    const u = uint8.frames[i]!;
    assert.ok(Math.abs(f.raw - u.raw) <= scoreAllowed, `frame ${i}: score ${f.raw} (float) vs ${u.raw} (uint8), allowed ${scoreAllowed}`);
    const worst = maxAbsDiff(f.map, u.map);
    assert.ok(worst <= mapAllowed, `frame ${i}: map cells differ by up to ${worst}, allowed ${mapAllowed}`);
    assert.ok(f.map.some((v) => v !== 0), `frame ${i}: an all-zero map proves nothing`);
  });
}

test('both forms see the same pixels: the uint8 batch holds the resized BGR bytes whose /255 are the float batch\'s RGB planes', async () => {
  const size = 32;
  const frames = framesOfEveryKind(size);
  const plane = size * size;
  const float = inputBuffer('float32-rgb-nchw', frames.length, size, size);
  const uint8 = inputBuffer('uint8-bgr-nhwc', frames.length, size, size);
  assert.ok(float instanceof Float32Array && uint8 instanceof Uint8Array);
  await preprocessInto(frames, float, size, size);
  await preprocessInto(frames, uint8, size, size);
  for (let i = 0; i < frames.length; i++) {
    let worst = 0;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(float[i * 3 * plane + c * plane + p]! - uint8[(i * plane + p) * 3 + (2 - c)]! / 255));
    }
    assert.ok(worst <= 1e-6, `frame ${i}: max abs difference ${worst}`);
  }
  // Without resize or conversion the uint8 form is the frame's own bytes, in order.
  assert.deepEqual(Buffer.from(uint8.subarray(0, 3 * plane)), frames[0]!.image.getData());
  assert.deepEqual(Buffer.from(uint8.subarray(3 * plane, 6 * plane)), frames[1]!.image.getRegion(new cv.Rect(5, 3, size, size)).copy().getData());
  for (const frame of frames) frame.release();
});

test('the tiny model in both forms gives the same maps and scores on frames of every kind', async () => {
  const frames = framesOfEveryKind(32);
  try {
    const float = await withModel(path.join(tiny, 'good.onnx'), (m) => m.run(frames));
    const uint8 = await withModel(path.join(tiny, 'good-uint8.onnx'), async (m) => {
      assert.equal(m.info.input.form, 'uint8-bgr-nhwc');
      return m.run(frames);
    });
    assert.equal(float.model.input.form, 'float32-rgb-nchw');
    // The map is the red channel: the forms differ at most by the rounding of x/255.
    assertSameOutputs(float, uint8, { score: 1e-6, map: 1e-6 });
  } finally {
    for (const frame of frames) frame.release();
  }
});

test(`the demo model converted to the uint8 form scores as the float form (scores and maps within ${SCORE_TOLERANCE} of their scale), on samples, ROI, gray and BGRA frames`, async () => {
  const sample = cv.imread(path.join(samplesDir, 'washer_01_scratch.png'));
  const other = cv.imread(path.join(samplesDir, 'weave_01_hole.png'));
  const frames = [
    frameOf(sample),
    frameOf(other, { x: 20, y: 10, width: 200, height: 230 }),
    frameOf(other.cvtColor(cv.COLOR_BGR2GRAY)),
    frameOf(sample.cvtColor(cv.COLOR_BGR2BGRA), { x: 16, y: 16, width: 224, height: 224 }),
  ];
  const post = postprocessOptions(loadConfig());
  const verdicts = (inference: Inference) =>
    inference.frames.map((f) => {
      const result = postprocess(f, inference.model, post, { queueMs: 0, ...inference.timings });
      return [result.verdict, result.regions.length];
    });
  try {
    const float = await withModel(demoModel, async (m) => [await m.run(frames), await m.run(frames.slice(0, 1))]);
    const uint8 = await withModel(uint8FormOf(demoModel), async (m) => [await m.run(frames), await m.run(frames.slice(0, 1))]);
    for (const [i, batch] of float.entries()) {
      assertSameOutputs(batch, uint8[i]!, { score: SCORE_TOLERANCE, map: MAP_TOLERANCE });
      assert.deepEqual(verdicts(uint8[i]!), verdicts(batch));
    }
    assert.ok(verdicts(float[0]!).some(([verdict]) => verdict === 'NG'), 'the defect samples are found');
  } finally {
    for (const frame of frames) frame.release();
  }
});

test('the uint8 form runs on a worker thread as on the main thread (the uint8 batch is copied over)', async () => {
  const frames = framesOfEveryKind(32);
  try {
    const main = await withModel(path.join(tiny, 'good-uint8.onnx'), (m) => m.run(frames));
    const worker = await withModel(path.join(tiny, 'good-uint8.onnx'), (m) => m.run(frames), { ...cpuOptions, inferenceThread: 'worker' });
    assertSameOutputs(main, worker, { score: 0, map: 0 });
  } finally {
    for (const frame of frames) frame.release();
  }
});

test('golden samples and the file scoring of `crad-edge infer` run the uint8 form: same verdicts and scores as the float form', async () => {
  const post = postprocessOptions(loadConfig());
  const files = fs.readdirSync(samplesDir).filter((f) => f.endsWith('.png')).sort().map((f) => path.join(samplesDir, f));
  const scores = (file: string) =>
    withModel(file, async (m) => {
      const raw: number[] = [];
      for await (const scored of scoreFiles(m, files, post, 4)) raw.push(scored.result!.raw);
      return { raw, golden: await runGoldenSamples(m, samplesDir, post, 4) };
    });
  const float = await scores(demoModel);
  const uint8 = await scores(uint8FormOf(demoModel));
  assert.equal(uint8.golden.passed, true, JSON.stringify(uint8.golden.failed));
  assert.equal(uint8.golden.total, float.golden.total);
  assert.equal(uint8.raw.length, files.length);
  const allowed = allowedDifference(SCORE_TOLERANCE, float.raw, uint8.raw);
  uint8.raw.forEach((raw, i) => assert.ok(Math.abs(raw - float.raw[i]!) <= allowed, `${files[i]}: ${raw} vs ${float.raw[i]} (allowed ${allowed})`));
});

test('loadModel refuses a malformed uint8 model with the contract error naming the problem', async () => {
  const { log } = capturingLogger();
  await assert.rejects(
    loadModel(path.join(tiny, 'uint8-nchw.onnx'), cpuOptions, log),
    (err: unknown) => err instanceof ModelContractError && /crad\.input\.layout must be "NHWC"/.test(err.message) && /\[N, H, W, 3\]/.test(err.message),
  );
  await assert.rejects(
    loadModel(path.join(tiny, 'uint8-declared-float.onnx'), cpuOptions, log),
    (err: unknown) => err instanceof ModelContractError && /declares the float32-rgb-nchw input form but the graph's input "image" is uint8/.test(err.message),
  );
});
