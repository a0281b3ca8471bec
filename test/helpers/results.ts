// Real Results for the console tests: a frame through the tiny contract model (onnxruntime) and
// post-processing (OpenCV), with the frame's Mat the pipeline would lend the sink.
import path from 'node:path';
import type { Mat } from '../../src/cv.js';
import { loadModel, type CradModel } from '../../src/inference/model.js';
import { postprocess, type PostprocessOptions } from '../../src/inference/postprocess.js';
import type { InspectionResult } from '../../src/inference/types.js';
import { capturingLogger, cpuOptions, frameOf, imageWithSpots } from '../fixtures/frames.js';
import { tinyModels } from '../fixtures/tiny-models.js';

const options: PostprocessOptions = {
  imageThreshold: null,
  pixelThreshold: null,
  sensitivity: 0,
  regions: { enabled: true, minArea: 1, topK: 5 },
  crops: { enabled: false, onlyNG: true, margin: 0, maxSize: 0, quality: 90 },
  overlay: { enabled: true, onlyNG: true, alpha: 0.5, maxSize: 0, quality: 80 },
};

export interface ResultMaker {
  /** A result with its frame image (the caller releases the image). NG: a red spot (the tiny model's map is the red channel). */
  make(verdict: 'NG' | 'OK', cameraId?: string): Promise<{ result: InspectionResult; image: Mat }>;
  release(): Promise<void>;
}

export async function resultMaker(): Promise<ResultMaker> {
  const model: CradModel = await loadModel(path.join(tinyModels(), 'good.onnx'), cpuOptions, capturingLogger().log);
  return {
    async make(verdict, cameraId = 'cam1') {
      const image = imageWithSpots(96, 64, verdict === 'NG' ? [{ x: 20, y: 20, width: 24, height: 16 }] : []);
      const frame = frameOf(image, null, cameraId);
      const inference = await model.run([frame]);
      const result = postprocess(inference.frames[0]!, inference.model, options, { queueMs: 0, preprocessMs: 0, inferenceMs: 0, batchSize: 1 });
      if (result.verdict !== verdict) throw new Error(`fixture gave ${result.verdict}, expected ${verdict}`);
      return { result, image };
    },
    release: () => model.release(),
  };
}
