// The committed demo model against the outputs the trainer computed in torch for the same inputs
// (models/demo/crad-demo.reference.json, written by `crad export`): onnxruntime-node and the
// daemon's own path must agree within the reference's tolerance (1e-4 of each output's scale), and
// the file must pass the contract check.
// CRAD_REFERENCE_MODEL=<file.onnx> checks another export (its <name>.reference.json beside it).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import cv from '../src/cv.js';
import { loadModel } from '../src/inference/model.js';
import { loadConfig } from '../src/config/load.js';
import { preprocessInto } from '../src/inference/preprocess.js';
import { postprocess, postprocessOptions, type PostprocessOptions } from '../src/inference/postprocess.js';
import { capturingLogger, cpuOptions, frameOf } from './fixtures/frames.js';
import { assertWithin, checkAgainstReference, decodeF32, maxAbsDiff, readReference, referenceFrames, REFERENCE_TOLERANCE } from './helpers/model-reference.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const modelPath = process.env.CRAD_REFERENCE_MODEL ?? path.join(root, 'models/demo/crad-demo.onnx');

test(`${path.basename(modelPath)} reproduces its torch reference outputs (onnxruntime and the daemon's path)`, async () => {
  const reference = readReference(modelPath);
  assert.match(reference.format, /^crad-reference\/[12]$/);
  assert.equal(reference.model, path.basename(modelPath));
  await checkAgainstReference(modelPath);
});

test('the daemon path (BGR frame -> preprocessing -> session -> post-processing) gives the calibrated verdicts of the reference scores', async () => {
  const reference = readReference(modelPath);
  const n = reference.score.length;
  const frames = referenceFrames(reference);
  const model = await loadModel(modelPath, { ...cpuOptions, maxBatch: n }, capturingLogger().log);
  try {
    const inference = await model.run(frames);
    const raw = inference.frames.map((f) => f.raw);
    assertWithin('daemon scores', raw, reference.score, reference.tolerance ?? REFERENCE_TOLERANCE);
    const calibration = model.info.calibration;
    if (calibration) {
      const opts: PostprocessOptions = {
        imageThreshold: null,
        pixelThreshold: null,
        sensitivity: 0,
        regions: { enabled: true, minArea: 64, topK: 5 },
        crops: { enabled: false, onlyNG: true, margin: 16, maxSize: 512, quality: 85 },
        overlay: { enabled: false, onlyNG: true, alpha: 0.5, maxSize: 640, quality: 80 },
      };
      const timings = { queueMs: 0, ...inference.timings };
      const imageThreshold = calibration.image.threshold;
      const pixelThreshold = calibration.pixel.threshold;
      let ngWithRegions = 0;
      for (const fi of inference.frames) {
        const result = postprocess(fi, model.info, opts, timings);
        const expected: 'OK' | 'NG' = fi.raw >= imageThreshold ? 'NG' : 'OK';
        assert.equal(result.verdict, expected, `raw ${fi.raw} against threshold ${imageThreshold}`);
        for (const region of result.regions) assert.ok(region.peak > pixelThreshold);
        if (result.verdict === 'NG' && result.regions.length > 0) ngWithRegions++;
      }
      // The demo's reference set holds defect images: at least one must be found and located.
      assert.ok(ngWithRegions > 0, 'no NG frame with a located region');
    }
  } finally {
    await model.release();
    for (const f of frames) f.release();
  }
});

test('daemon preprocessing of a 256 px sample equals the trainer\'s read_image at 224 (same OpenCV resize rule)', async () => {
  const sample = path.join(root, 'samples/washer_01_scratch.png');
  const script = 'import sys, base64\nfrom crad.data import read_image\na = read_image(sys.argv[1], int(sys.argv[2]))\nsys.stdout.write(base64.b64encode(a.astype("<f4").tobytes()).decode())';
  const encoded = execFileSync('/usr/bin/python3', ['-c', script, sample, '224'], { env: { ...process.env, PYTHONPATH: path.join(root, 'training') }, maxBuffer: 16 << 20 }).toString();
  const trainer = decodeF32(encoded, [3, 224, 224]);
  const image = cv.imread(sample);
  assert.deepEqual([image.cols, image.rows], [256, 256], 'the sample must need a resize for this test to mean anything');
  const daemon = new Float32Array(3 * 224 * 224);
  await preprocessInto([frameOf(image)], daemon, 224, 224);
  assert.ok(maxAbsDiff(daemon, trainer) <= 1e-6, `max abs difference ${maxAbsDiff(daemon, trainer)}`);
  image.release();
});

test('the demo samples get the verdicts their manifest expects, NG ones with regions inside the image', async () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'samples/manifest.json'), 'utf8')) as { images: { file: string; expected: 'OK' | 'NG' }[] };
  assert.ok(manifest.images.length > 0);
  const model = await loadModel(path.join(root, 'models/demo/crad-demo.onnx'), cpuOptions, capturingLogger().log);
  const opts = postprocessOptions(loadConfig());
  try {
    for (const entry of manifest.images) {
      const image = cv.imread(path.join(root, 'samples', entry.file));
      const frame = frameOf(image);
      const inference = await model.run([frame]);
      const result = postprocess(inference.frames[0]!, model.info, opts, { queueMs: 0, ...inference.timings });
      assert.equal(result.verdict, entry.expected, `${entry.file}: raw ${result.raw}, normalized ${result.normalized}`);
      if (entry.expected === 'NG') {
        assert.ok(result.regions.length > 0, `${entry.file}: NG without a region`);
        for (const r of result.regions) {
          assert.ok(r.x >= 0 && r.y >= 0 && r.x + r.width <= image.cols && r.y + r.height <= image.rows, `${entry.file}: region ${JSON.stringify(r)}`);
        }
      }
      frame.release();
    }
  } finally {
    await model.release();
  }
});
