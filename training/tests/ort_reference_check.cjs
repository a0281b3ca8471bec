// Runs an exported model on its reference inputs with onnxruntime-node and prints the largest
// differences from the torch outputs as JSON. Used by the trainer's export test (Python has no
// onnxruntime here); the daemon's own tests check the committed demo model the same way.
//   node training/tests/ort_reference_check.cjs <model.onnx> <model.reference.json> [batch]
'use strict';
const fs = require('fs');
const path = require('path');

const repoRoot = path.resolve(__dirname, '..', '..');
const ort = require(require.resolve('onnxruntime-node', { paths: [repoRoot] }));

function decode(field) {
  const bytes = Buffer.from(field.data, 'base64');
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new Float32Array(copy.buffer); // little-endian on every platform onnxruntime-node runs on
}

async function main() {
  const [modelPath, referencePath, batchArg] = process.argv.slice(2);
  const reference = JSON.parse(fs.readFileSync(referencePath, 'utf8'));
  const session = await ort.InferenceSession.create(modelPath);
  const images = decode(reference.image);
  const [count, channels, height, width] = reference.image.shape;
  const expectedMap = decode(reference.anomaly_map);
  const perImage = channels * height * width;
  const perMap = height * width;
  // Run in batches of `batch` (default: all at once) to exercise the dynamic batch axis.
  const batch = Number(batchArg || count);
  let mapDiff = 0;
  let scoreDiff = 0;
  const scores = [];
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const input = new ort.Tensor('float32', images.subarray(start * perImage, (start + n) * perImage), [n, channels, height, width]);
    const out = await session.run({ image: input });
    const map = out.anomaly_map.data;
    for (let i = 0; i < n * perMap; i++) {
      mapDiff = Math.max(mapDiff, Math.abs(map[i] - expectedMap[start * perMap + i]));
    }
    for (let i = 0; i < n; i++) {
      scores.push(out.score.data[i]);
      scoreDiff = Math.max(scoreDiff, Math.abs(out.score.data[i] - reference.score[start + i]));
    }
  }
  console.log(JSON.stringify({ mapDiff, scoreDiff, scores, inputNames: session.inputNames, outputNames: session.outputNames }));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
