// Runs an exported model on its reference inputs with onnxruntime-node and prints the largest
// differences from the torch outputs as JSON. Used by the trainer's export test (Python has no
// onnxruntime here); the daemon's own tests check the committed demo model the same way.
// Reads both reference formats: float32 RGB NCHW images (crad-reference/1) and the uint8 input
// form's uint8 BGR NHWC images (crad-reference/2, image.dtype "uint8").
//   node training/tests/ort_reference_check.cjs <model.onnx> <model.reference.json> [batch] [--print-outputs]
// --print-outputs adds the outputs themselves (anomaly_map as base64 float32, score), so that a
// test can compare two models on the same images. mapAllowed / scoreAllowed are the reference's
// tolerance times each output's scale (max(1, its largest magnitude), the rule `crad export` writes
// as tolerance_rule) and `agrees` says whether both differences are within them.
'use strict';
const fs = require('fs');
const path = require('path');

const repoRoot = path.resolve(__dirname, '..', '..');
const ort = require(require.resolve('onnxruntime-node', { paths: [repoRoot] }));

function decode(field) {
  const bytes = Buffer.from(field.data, 'base64');
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  if (field.dtype === 'uint8') return copy;
  return new Float32Array(copy.buffer); // little-endian on every platform onnxruntime-node runs on
}

async function main() {
  const args = process.argv.slice(2);
  const printOutputs = args.includes('--print-outputs');
  const [modelPath, referencePath, batchArg] = args.filter((arg) => arg !== '--print-outputs');
  const reference = JSON.parse(fs.readFileSync(referencePath, 'utf8'));
  const session = await ort.InferenceSession.create(modelPath);
  const images = decode(reference.image);
  const imageType = reference.image.dtype === 'uint8' ? 'uint8' : 'float32';
  const [count, ...imageDims] = reference.image.shape;
  const expectedMap = decode(reference.anomaly_map);
  const [, , height, width] = reference.anomaly_map.shape;
  const perImage = imageDims.reduce((a, b) => a * b, 1);
  const perMap = height * width;
  const maps = new Float32Array(count * perMap);
  // Run in batches of `batch` (default: all at once) to exercise the dynamic batch axis.
  const batch = Number(batchArg || count);
  let mapDiff = 0;
  let scoreDiff = 0;
  let mapScale = 1;
  let scoreScale = 1;
  const scores = [];
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const input = new ort.Tensor(imageType, images.subarray(start * perImage, (start + n) * perImage), [n, ...imageDims]);
    const out = await session.run({ image: input });
    const map = out.anomaly_map.data;
    maps.set(map, start * perMap);
    for (let i = 0; i < n * perMap; i++) {
      mapDiff = Math.max(mapDiff, Math.abs(map[i] - expectedMap[start * perMap + i]));
      mapScale = Math.max(mapScale, Math.abs(map[i]), Math.abs(expectedMap[start * perMap + i]));
    }
    for (let i = 0; i < n; i++) {
      scores.push(out.score.data[i]);
      scoreDiff = Math.max(scoreDiff, Math.abs(out.score.data[i] - reference.score[start + i]));
      scoreScale = Math.max(scoreScale, Math.abs(out.score.data[i]), Math.abs(reference.score[start + i]));
    }
  }
  const outputs = printOutputs ? { outputs: { anomaly_map: Buffer.from(maps.buffer).toString('base64'), score: scores } } : {};
  const tolerance = typeof reference.tolerance === 'number' ? reference.tolerance : 1e-4;
  const mapAllowed = tolerance * mapScale;
  const scoreAllowed = tolerance * scoreScale;
  const agrees = mapDiff <= mapAllowed && scoreDiff <= scoreAllowed;
  console.log(JSON.stringify({ mapDiff, scoreDiff, mapAllowed, scoreAllowed, agrees, scores, inputNames: session.inputNames, outputNames: session.outputNames, ...outputs }));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
