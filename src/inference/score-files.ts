// Scoring image files with a loaded model, in batches and in order: `crad-edge infer` and the
// golden samples both read images this way.
import cv from '../cv.js';
import type { Frame } from '../capture/frame.js';
import type { CradModel } from './model.js';
import { postprocess, type PostprocessOptions } from './postprocess.js';
import type { InspectionResult } from './types.js';

/** One image file scored by the model; result null when the file does not decode. */
export interface ScoredFile {
  file: string;
  result: InspectionResult | null;
}

/** Score image files with a loaded model in batches of `maxBatch`, in order (infer and golden samples). */
export async function* scoreFiles(model: CradModel, files: string[], post: PostprocessOptions, maxBatch: number): AsyncGenerator<ScoredFile> {
  let sequence = 0;
  for (let i = 0; i < files.length; i += maxBatch) {
    const frames: { frame: Frame; file: string }[] = [];
    for (const file of files.slice(i, i + maxBatch)) {
      const frame = await readFrame(file, ++sequence);
      if (frame) frames.push({ frame, file });
      else yield { file, result: null };
    }
    if (frames.length === 0) continue;
    try {
      const inference = await model.run(frames.map((f) => f.frame));
      for (const [k, frameInference] of inference.frames.entries()) {
        yield {
          file: frames[k]!.file,
          result: postprocess(frameInference, inference.model, post, {
            queueMs: 0,
            preprocessMs: inference.timings.preprocessMs,
            inferenceMs: inference.timings.inferenceMs,
            batchSize: inference.timings.batchSize,
          }),
        };
      }
    } finally {
      for (const { frame } of frames) frame.release();
    }
  }
}

async function readFrame(file: string, sequence: number): Promise<Frame | null> {
  let image;
  try {
    image = await cv.imreadAsync(file, cv.IMREAD_COLOR);
  } catch {
    return null;
  }
  if (image.empty) return null;
  const now = Date.now();
  return {
    cameraId: 'infer',
    sequence,
    capturedAt: new Date(now).toISOString(),
    capturedMono: performance.now(),
    image,
    roi: null,
    release: () => image.release(),
  };
}
