// A model's reference file (<model>.reference.json, written by `crad export`): the inputs and the
// outputs torch computed for them. The check the daemon's side makes of an export: onnxruntime on
// the reference inputs, and the daemon's own path (BGR frames -> preprocessing -> session), must
// reproduce those outputs within the reference's tolerance relative to each output's scale: the
// trainer's rule (training/crad/export.py output_tolerance), as raw scores of trained models are
// in the tens, where float32 rounding alone exceeds an absolute 1e-4.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import cv from '../../src/cv.js';
import type { Frame } from '../../src/capture/frame.js';
import { INPUT_NAME, MAP_OUTPUT, SCORE_OUTPUT } from '../../src/inference/model-contract.js';
import { readModelFile } from '../../src/inference/model-file.js';
import { loadModel } from '../../src/inference/model.js';
import { capturingLogger, cpuOptions, frameOf } from '../fixtures/frames.js';
import { assertWithin } from './tolerance.js';

export { allowedDifference, assertWithin, maxAbsDiff } from './tolerance.js';

/** The tolerance of a reference file that states none (files written before it did). */
export const REFERENCE_TOLERANCE = 1e-4;

export interface ModelReference {
  format: string;
  model: string;
  tolerance?: number;
  /** float32 RGB NCHW (crad-reference/1), or uint8 BGR NHWC where dtype says so (crad-reference/2). */
  image: { shape: number[]; data: string; dtype?: string };
  anomaly_map: { shape: number[]; data: string };
  score: number[];
}

export function referencePathOf(modelPath: string): string {
  return modelPath.replace(/\.onnx$/i, '.reference.json');
}

export function readReference(modelPath: string): ModelReference {
  return JSON.parse(fs.readFileSync(referencePathOf(modelPath), 'utf8')) as ModelReference;
}

export function decodeF32(base64: string, shape: number[]): Float32Array {
  const bytes = Buffer.from(base64, 'base64');
  const count = shape.reduce((a, b) => a * b, 1);
  assert.equal(bytes.length, count * 4, `reference array of shape [${shape.join(', ')}] has ${bytes.length} bytes`);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}

function isUint8(reference: ModelReference): boolean {
  return reference.image.dtype === 'uint8';
}

/** The reference images as the BGR frames a camera delivers (the float form's are 8-bit / 255). */
export function referenceFrames(reference: ModelReference): Frame[] {
  const [n, ...rest] = reference.image.shape as [number, number, number, number];
  const [height, width] = isUint8(reference) ? [rest[0], rest[1]] : [rest[1], rest[2]];
  const pixels = height * width;
  const uint8 = isUint8(reference) ? Buffer.from(reference.image.data, 'base64') : null;
  const planes = uint8 ? null : decodeF32(reference.image.data, reference.image.shape);
  return Array.from({ length: n }, (_, i) => {
    let bgr: Buffer;
    if (uint8) {
      bgr = Buffer.from(uint8.subarray(i * pixels * 3, (i + 1) * pixels * 3));
    } else {
      bgr = Buffer.alloc(pixels * 3);
      const base = i * 3 * pixels;
      for (let p = 0; p < pixels; p++) {
        for (let c = 0; c < 3; c++) bgr[p * 3 + (2 - c)] = Math.round(planes![base + c * pixels + p]! * 255);
      }
    }
    return frameOf(new cv.Mat(bgr, height, width, cv.CV_8UC3));
  });
}

/**
 * The check of an export against its reference file: the contract check (readModelFile), the
 * bare onnxruntime session on the reference inputs (map and score), and the daemon's own path
 * (loadModel, frames, preprocessing) on the same images (raw scores). Returns the raw scores.
 */
export async function checkAgainstReference(modelPath: string): Promise<number[]> {
  const model = await readModelFile(modelPath);
  const reference = readReference(modelPath);
  const tolerance = reference.tolerance ?? REFERENCE_TOLERANCE;
  const n = reference.score.length;
  const imageShape = isUint8(reference) ? [n, model.height, model.width, 3] : [n, 3, model.height, model.width];
  assert.deepEqual(reference.image.shape, imageShape);
  assert.deepEqual(reference.anomaly_map.shape, [n, 1, model.height, model.width]);

  const session = await ort.InferenceSession.create(model.bytes, { executionProviders: ['cpu'] });
  try {
    const input = isUint8(reference)
      ? new ort.Tensor('uint8', new Uint8Array(Buffer.from(reference.image.data, 'base64')), imageShape)
      : new ort.Tensor('float32', decodeF32(reference.image.data, imageShape), imageShape);
    const out = await session.run({ [INPUT_NAME]: input }, [MAP_OUTPUT, SCORE_OUTPUT]);
    assert.deepEqual(out[MAP_OUTPUT]!.dims, reference.anomaly_map.shape);
    assertWithin('anomaly_map', out[MAP_OUTPUT]!.data as Float32Array, decodeF32(reference.anomaly_map.data, reference.anomaly_map.shape), tolerance);
    assertWithin('score', out[SCORE_OUTPUT]!.data as Float32Array, reference.score, tolerance);
  } finally {
    await session.release();
  }

  const frames = referenceFrames(reference);
  const loaded = await loadModel(modelPath, { ...cpuOptions, maxBatch: n }, capturingLogger().log);
  try {
    const raw = (await loaded.run(frames)).frames.map((f) => f.raw);
    assertWithin('daemon raw scores', raw, reference.score, tolerance);
    return raw;
  } finally {
    await loaded.release();
    for (const f of frames) f.release();
  }
}
