// The model contract check: every kind of bad file is refused with a message that names the
// file and the problem; a good file loads with its metadata.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ModelContractError, ModelFileError, readModelFile } from '../src/inference/model-file.js';
import { tinyModels } from './fixtures/tiny-models.js';
import { writeModelVariant } from './helpers/model-variants.js';
import { tempDir } from './helpers/cleanup.js';

const dir = tinyModels();
const scratch = tempDir('model-file');

async function refusal(file: string): Promise<ModelFileError> {
  try {
    await readModelFile(file);
  } catch (err) {
    assert.ok(err instanceof ModelFileError, `expected a ModelFileError, got ${String(err)}`);
    assert.ok(err.message.includes(file), `message names the file: ${err.message}`);
    return err;
  }
  assert.fail(`${file} was accepted`);
}

test('a good model loads with its metadata, hash and graph size', async () => {
  const file = path.join(dir, 'good.onnx');
  const model = await readModelFile(file);
  assert.equal(model.height, 32);
  assert.equal(model.width, 32);
  assert.equal(model.info.variant, 'fixture-red');
  assert.equal(model.info.backbone, 'none (test fixture)');
  assert.deepEqual(model.info.classes, ['fixture']);
  assert.deepEqual(model.info.input, { form: 'float32-rgb-nchw', height: 32, width: 32, color: 'RGB', range: [0, 1], resize: 'opencv-area' });
  assert.deepEqual(model.info.calibration, {
    image: { threshold: 0.5, min: 0, max: 1 },
    pixel: { threshold: 0.5, min: 0, max: 1 },
    source: 'fixture',
    images: 0,
  });
  assert.deepEqual(model.info.training, { dataset: 'none', trainer: 'make-tiny-model.py' });
  assert.match(model.info.hash, /^[0-9a-f]{64}$/);
  assert.equal(model.opset, 17);
  assert.deepEqual(model.warnings, []);
  assert.equal(model.bytes.length, fs.statSync(file).size);
});

test('the uint8 input form (format 2) loads with its form, every other key as the float model it was converted from', async () => {
  const float = await readModelFile(path.join(dir, 'good.onnx'));
  const model = await readModelFile(path.join(dir, 'good-uint8.onnx'));
  assert.deepEqual(model.info.input, { form: 'uint8-bgr-nhwc', height: 32, width: 32, color: 'BGR', range: [0, 255], resize: 'opencv-area' });
  assert.equal(model.metadata['crad.format'], '2');
  assert.deepEqual([model.height, model.width], [32, 32]);
  for (const key of ['variant', 'backbone', 'classes', 'calibration', 'training'] as const) assert.deepEqual(model.info[key], float.info[key], key);
  assert.deepEqual(model.warnings, []);
});

test('an uncalibrated model loads with a warning and calibration null', async () => {
  const model = await readModelFile(path.join(dir, 'uncalibrated.onnx'));
  assert.equal(model.info.calibration, null);
  assert.equal(model.warnings.length, 1);
  assert.match(model.warnings[0]!, /uncalibrated/);
});

test('the trainer\'s calibration warning and synthetic record reach the model info and the load\'s warnings; malformed, they are refused naming the key', async () => {
  const good = path.join(dir, 'good.onnx');
  const calibration = (await readModelFile(good)).info.calibration!;
  const warning = 'the image threshold 12.5 passes 140 of 228 synthetic anomalies (61 %) as OK';
  const warned = path.join(scratch, 'warned.onnx');
  writeModelVariant(good, warned, 'crad.calibration', JSON.stringify({
    ...calibration, warning, synthetic: { anomalies: 228, missed_at_threshold: 140, miss_rate_at_threshold: 140 / 228 },
  }));
  const model = await readModelFile(warned);
  assert.equal(model.info.calibration?.warning, warning);
  assert.deepEqual(model.info.calibration?.synthetic, { anomalies: 228, missedAtThreshold: 140, missRateAtThreshold: 140 / 228 });
  assert.ok(model.warnings.some((w) => w.includes(warned) && w.includes(warning)), model.warnings.join('\n'));
  for (const [name, extra, key] of [
    ['warning-number.onnx', { warning: 5 }, /crad\.calibration\.warning must be a string/],
    ['synthetic-text.onnx', { synthetic: { anomalies: 'many' } }, /crad\.calibration\.synthetic must be an object of finite numbers/],
  ] as const) {
    const file = path.join(scratch, name);
    writeModelVariant(good, file, 'crad.calibration', JSON.stringify({ ...calibration, ...extra }));
    assert.match((await refusal(file)).message, key);
  }
});

test('a missing file, a directory and an empty file are refused by name', async () => {
  assert.match((await refusal(path.join(scratch, 'nope.onnx'))).message, /does not exist/);
  assert.match((await refusal(scratch)).message, /is a directory/);
  const empty = path.join(scratch, 'empty.onnx');
  fs.writeFileSync(empty, '');
  assert.match((await refusal(empty)).message, /is empty/);
});

test('garbage bytes and a truncated model are refused as unreadable ONNX', async () => {
  const garbage = path.join(scratch, 'garbage.onnx');
  // Deterministic bytes that are not a protobuf ModelProto (wire type 7 does not exist).
  fs.writeFileSync(garbage, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37 + 0x0f) & 0xff)));
  assert.match((await refusal(garbage)).message, /not a readable ONNX file|not an ONNX model/);
  const good = fs.readFileSync(path.join(dir, 'good.onnx'));
  for (const keep of [10, Math.floor(good.length / 2), good.length - 3]) {
    const truncated = path.join(scratch, `truncated-${keep}.onnx`);
    fs.writeFileSync(truncated, good.subarray(0, keep));
    const err = await refusal(truncated);
    assert.match(err.message, /truncated or corrupt|not an ONNX model|breaks the CRAD model contract/, `cut at ${keep}: ${err.message}`);
  }
});

const broken: [string, RegExp][] = [
  ['no-metadata.onnx', /crad\.format is missing: not a CRAD model/],
  ['wrong-format.onnx', /crad\.format is "3", this daemon reads formats "1" and "2"/],
  ['wrong-input-name.onnx', /no input named "image" \(inputs: "input"\)/],
  ['static-batch.onnx', /input "image" must have a dynamic batch axis, not a fixed 1/],
  ['gray-input.onnx', /input "image" must have 3 channels/],
  ['no-score.onnx', /no output named "score"/],
  ['input-size-mismatch.onnx', /crad\.input says 64x32 but the graph's input "image" is 32x32/],
  ['bad-calibration-json.onnx', /crad\.calibration is not valid JSON/],
  ['bad-calibration-range.onnx', /crad\.calibration\.image: max \(1\) must be greater than min \(1\)/],
  ['no-classes.onnx', /crad\.classes is missing/],
  ['uint8-nchw.onnx', /crad\.input\.layout must be "NHWC" for the uint8-bgr-nhwc input form \(got "NCHW"\)/],
  ['uint8-nchw.onnx', /input "image" must have 3 channels \(BGR\) in NHWC order \[N, H, W, 3\], shape is \[N, 3, 32, 32\]/],
  ['uint8-rgb.onnx', /crad\.input\.color must be "BGR" for the uint8-bgr-nhwc input form \(got "RGB"\)/],
  ['uint8-format-1.onnx', /crad\.format is "1", but the uint8-bgr-nhwc input form needs format "2"/],
  ['uint8-declared-float.onnx', /crad\.input declares the float32-rgb-nchw input form but the graph's input "image" is uint8 \(the uint8-bgr-nhwc form\)/],
  ['float-declared-uint8.onnx', /crad\.input declares the uint8-bgr-nhwc input form but the graph's input "image" is float32 \(the float32-rgb-nchw form\)/],
];

for (const [name, expected] of broken) {
  test(`contract check refuses ${name} (${expected.source.slice(0, 40)})`, async () => {
    const err = await refusal(path.join(dir, name));
    assert.ok(err instanceof ModelContractError, `${name}: expected a contract error, got ${err.name}`);
    assert.ok(err.problems.some((p) => expected.test(p)), `${name}: problems ${JSON.stringify(err.problems)} lack ${expected}`);
  });
}

test('every problem of a file is reported at once', async () => {
  const err = (await refusal(path.join(dir, 'bad-calibration-range.onnx'))) as ModelContractError;
  assert.ok(err.problems.some((p) => /crad\.calibration\.pixel\.max must be a finite number/.test(p)), JSON.stringify(err.problems));
  const classes = (await refusal(path.join(dir, 'no-classes.onnx'))) as ModelContractError;
  assert.ok(classes.problems.some((p) => /crad\.variant is empty/.test(p)), JSON.stringify(classes.problems));
});
