// Post-processing: the contract's score normalisation and verdict, regions mapped back to frame
// pixels (through the fixture model whose map is the red channel, so a planted red spot has a
// known place), crops and overlay as JPEG.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import cv from '../src/cv.js';
import { loadConfig } from '../src/config/load.js';
import { loadModel, type CradModel } from '../src/inference/model.js';
import { findRegions, normalize, postprocess, postprocessOptions, scoreVerdict, type PostprocessOptions } from '../src/inference/postprocess.js';
import type { Calibration, FrameInference } from '../src/inference/types.js';
import { capturingLogger, cpuOptions, frameOf, imageWithSpots } from './fixtures/frames.js';
import { tinyModels } from './fixtures/tiny-models.js';

const dir = tinyModels();
let model: CradModel;
let uncalibrated: CradModel;

before(async () => {
  const { log } = capturingLogger();
  model = await loadModel(path.join(dir, 'good.onnx'), cpuOptions, log);
  uncalibrated = await loadModel(path.join(dir, 'uncalibrated.onnx'), cpuOptions, log);
});
after(async () => {
  await model.release();
  await uncalibrated.release();
});

const timings = { queueMs: 1, preprocessMs: 2, inferenceMs: 3, batchSize: 1 };

function options(overrides: Partial<PostprocessOptions> = {}): PostprocessOptions {
  return {
    imageThreshold: null,
    pixelThreshold: null,
    sensitivity: 0,
    regions: { enabled: true, minArea: 1, topK: 5 },
    crops: { enabled: false, onlyNG: false, margin: 0, maxSize: 0, quality: 90 },
    overlay: { enabled: false, onlyNG: false, alpha: 0.5, maxSize: 0, quality: 90 },
    ...overrides,
  };
}

async function inferOne(m: CradModel, frame: ReturnType<typeof frameOf>): Promise<FrameInference> {
  return (await m.run([frame])).frames[0]!;
}

const calibration: Calibration = { image: { threshold: 2, min: 1, max: 5 }, pixel: { threshold: 0.5, min: 0, max: 1 } };

test('normalised score: 0.5 at the threshold, scaled by max - min, clamped to [0, 1]', () => {
  assert.equal(normalize(2, 2, 1, 5), 0.5);
  assert.ok(Math.abs(normalize(3, 2, 1, 5) - 0.75) < 1e-12);
  assert.ok(Math.abs(normalize(1.9, 2, 1, 5) - 0.475) < 1e-12);
  assert.equal(normalize(100, 2, 1, 5), 1);
  assert.equal(normalize(-100, 2, 1, 5), 0);
});

test('verdict: NG from normalized >= 0.5 + sensitivity; threshold override; uncalibrated gives nulls', () => {
  assert.deepEqual(scoreVerdict(2, calibration, { imageThreshold: null, sensitivity: 0 }), { normalized: 0.5, verdict: 'NG', calibrated: true });
  assert.equal(scoreVerdict(1.9, calibration, { imageThreshold: null, sensitivity: 0 }).verdict, 'OK');
  // Stricter (negative sensitivity): 0.475 >= 0.45 is NG.
  assert.equal(scoreVerdict(1.9, calibration, { imageThreshold: null, sensitivity: -0.05 }).verdict, 'NG');
  // More lenient: 0.55 < 0.6 is OK.
  assert.equal(scoreVerdict(2.2, calibration, { imageThreshold: null, sensitivity: 0.1 }).verdict, 'OK');
  // Override moves the 0.5 point: (1.9 - 1) / 4 + 0.5 = 0.725.
  const overridden = scoreVerdict(1.9, calibration, { imageThreshold: 1, sensitivity: 0 });
  assert.ok(Math.abs(overridden.normalized! - 0.725) < 1e-12);
  assert.equal(overridden.verdict, 'NG');
  assert.deepEqual(scoreVerdict(1.9, null, { imageThreshold: 1, sensitivity: 0 }), { normalized: null, verdict: null, calibrated: false });
});

test('options come from the config sections', () => {
  const config = loadConfig(undefined, { inference: { imageThreshold: 0.7, sensitivity: -0.1 }, regions: { topK: 2 }, crops: { margin: 4 } });
  const opts = postprocessOptions(config);
  assert.equal(opts.imageThreshold, 0.7);
  assert.equal(opts.pixelThreshold, null);
  assert.equal(opts.sensitivity, -0.1);
  assert.equal(opts.regions.topK, 2);
  assert.equal(opts.crops.margin, 4);
  assert.equal(opts.overlay.enabled, config.overlay.enabled);
});

test('a red spot in an ROI comes back as a region in full-frame pixels (4x horizontal, 2x vertical scale)', async () => {
  // ROI 128x64 at (40, 20) -> 32x32 map: one map cell is 4x2 frame pixels. The spot covers
  // ROI pixels x 64..71, y 32..35 = map cells (16..17, 16..17).
  const image = imageWithSpots(200, 100, [{ x: 104, y: 52, width: 8, height: 4 }]);
  const frame = frameOf(image, { x: 40, y: 20, width: 128, height: 64 });
  const fi = await inferOne(model, frame);
  const result = postprocess(fi, model.info, options(), timings);
  assert.equal(result.raw, 1);
  assert.equal(result.normalized, 1);
  assert.equal(result.verdict, 'NG');
  assert.equal(result.calibrated, true);
  assert.deepEqual(result.regions, [{ x: 104, y: 52, width: 8, height: 4, area: 32, peak: 1, peakNormalized: 1 }]);
  assert.equal(result.frame.cameraId, frame.cameraId);
  assert.equal(result.frame.sequence, frame.sequence);
  assert.ok(!('image' in result.frame) && !('release' in result.frame));
  assert.equal(result.latency.queueMs, 1);
  assert.equal(result.latency.batchSize, 1);
  assert.ok(result.latency.postprocessMs >= 0);
  assert.ok(!image.empty && image.rows === 100, 'post-processing leaves the frame to the pipeline');
  image.release();
});

test('regions: sorted by peak, top-K, min area in frame pixels, pixel-threshold override', async () => {
  // Whole 64x64 frame -> 32x32 map, 2x2 frame pixels per cell.
  const image = imageWithSpots(64, 64, [
    { x: 4, y: 4, width: 8, height: 8, level: 0.7 }, // 16 cells = 64 frame px
    { x: 40, y: 40, width: 4, height: 4, level: 0.9 }, // 4 cells = 16 frame px
    { x: 40, y: 4, width: 2, height: 2, level: 1 }, // 1 cell = 4 frame px
  ]);
  const fi = await inferOne(model, frameOf(image));
  const all = postprocess(fi, model.info, options(), timings).regions;
  assert.deepEqual(all.map((r) => [r.x, r.y, r.area]), [[40, 4, 4], [40, 40, 16], [4, 4, 64]]);
  assert.ok(Math.abs(all[1]!.peak - 230 / 255) < 1e-6);
  assert.ok(Math.abs(all[1]!.peakNormalized! - (230 / 255 - 0.5 + 0.5)) < 1e-6);
  const filtered = postprocess(fi, model.info, options({ regions: { enabled: true, minArea: 16, topK: 1 } }), timings).regions;
  assert.deepEqual(filtered.map((r) => [r.x, r.y, r.width, r.height]), [[40, 40, 4, 4]]);
  // Override above 0.9: only the full-red spot is left.
  const strict = postprocess(fi, model.info, options({ pixelThreshold: 0.95 }), timings).regions;
  assert.deepEqual(strict.map((r) => [r.x, r.y]), [[40, 4]]);
  assert.deepEqual(postprocess(fi, model.info, options({ regions: { enabled: false, minArea: 1, topK: 5 } }), timings).regions, []);
  image.release();
});

test('uncalibrated model: raw score only; regions only with a pixel-threshold override, without normalised peaks', async () => {
  const image = imageWithSpots(32, 32, [{ x: 8, y: 8, width: 2, height: 2 }]);
  const fi = await inferOne(uncalibrated, frameOf(image));
  const plain = postprocess(fi, uncalibrated.info, options({ imageThreshold: 0.5 }), timings);
  assert.equal(plain.raw, 1);
  assert.equal(plain.normalized, null);
  assert.equal(plain.verdict, null);
  assert.equal(plain.calibrated, false);
  assert.deepEqual(plain.regions, []);
  const withOverride = postprocess(fi, uncalibrated.info, options({ pixelThreshold: 0.5 }), timings);
  assert.deepEqual(withOverride.regions, [{ x: 8, y: 8, width: 2, height: 2, area: 4, peak: 1, peakNormalized: null }]);
  image.release();
});

test('crops: JPEG of the region plus margin from the full-res frame, scaled to maxSize, only when the verdict allows', async () => {
  const image = imageWithSpots(400, 300, [{ x: 100, y: 60, width: 200, height: 100 }]);
  const fi = await inferOne(model, frameOf(image));
  const crops = { enabled: true, onlyNG: true, margin: 10, maxSize: 0, quality: 90 };
  const result = postprocess(fi, model.info, options({ crops }), timings);
  assert.equal(result.verdict, 'NG');
  assert.equal(result.crops.length, result.regions.length);
  const region = result.regions[0]!;
  const decoded = cv.imdecode(result.crops[0]!);
  assert.equal(decoded.cols, region.width + 20);
  assert.equal(decoded.rows, region.height + 20);
  // The crop centre is the red spot.
  const centre = decoded.at(Math.floor(decoded.rows / 2), Math.floor(decoded.cols / 2)) as unknown as { x: number; y: number; z: number };
  assert.ok(centre.z > 200 && centre.x < 50, `centre BGR ${JSON.stringify(centre)}`);
  decoded.release();

  const scaled = postprocess(fi, model.info, options({ crops: { ...crops, maxSize: 64 } }), timings);
  const small = cv.imdecode(scaled.crops[0]!);
  assert.equal(Math.max(small.cols, small.rows), 64);
  assert.equal(small.cols, Math.round((region.width + 20) * (64 / (region.width + 20))));
  small.release();

  // An OK verdict (threshold override above the score) with onlyNG: regions, but no crops.
  const ok = postprocess(fi, model.info, options({ crops, imageThreshold: 2 }), timings);
  assert.equal(ok.verdict, 'OK');
  assert.ok(ok.regions.length > 0);
  assert.deepEqual(ok.crops, []);
  assert.equal(postprocess(fi, model.info, options({ crops: { ...crops, enabled: false } }), timings).crops.length, 0);
  image.release();
});

test('overlay: heatmap JPEG of the ROI, red where the map is hot, blue elsewhere; off unless enabled', async () => {
  const image = imageWithSpots(300, 200, [{ x: 120, y: 80, width: 40, height: 40 }]);
  const roi = { x: 100, y: 60, width: 160, height: 120 };
  const fi = await inferOne(model, frameOf(image, roi));
  const overlay = { enabled: true, onlyNG: false, alpha: 0.5, maxSize: 80, quality: 95 };
  const result = postprocess(fi, model.info, options({ overlay }), timings);
  assert.ok(result.overlay);
  const decoded = cv.imdecode(result.overlay);
  assert.deepEqual([decoded.cols, decoded.rows], [80, 60]);
  // Spot centre in ROI pixels (40, 40) -> overlay (20, 20); a cold point: ROI (140, 100) -> (70, 50).
  const hot = decoded.at(20, 20) as unknown as { x: number; y: number; z: number };
  const cold = decoded.at(50, 70) as unknown as { x: number; y: number; z: number };
  assert.ok(hot.z > hot.x, `hot pixel BGR ${JSON.stringify(hot)} should be red-dominant`);
  assert.ok(cold.x > cold.z, `cold pixel BGR ${JSON.stringify(cold)} should be blue-dominant`);
  decoded.release();
  assert.equal(postprocess(fi, model.info, options(), timings).overlay, null);
  const okOnly = postprocess(fi, model.info, options({ overlay: { ...overlay, onlyNG: true }, imageThreshold: 2 }), timings);
  assert.equal(okOnly.overlay, null);
  image.release();
});

test('findRegions maps a cell-aligned box exactly, with the ROI offset', () => {
  const map = new Float32Array(8 * 8);
  for (const [x, y] of [[2, 3], [3, 3], [3, 4]] as const) map[y * 8 + x] = 2;
  const regions = findRegions(map, 8, 8, { x: 10, y: 20, width: 80, height: 40 }, 1, { threshold: 1, min: 0, max: 4 }, { minArea: 0, topK: 5 });
  // Cells x 2..3, y 3..4 at 10x5 frame pixels per cell.
  assert.deepEqual(regions, [{ x: 30, y: 35, width: 20, height: 10, area: 150, peak: 2, peakNormalized: 0.75 }]);
});
