// Part a (and d): the bare runtime. onnxruntime-node's session.run on tensors that are already
// preprocessed: no capture, no OpenCV, no post-processing, nothing but the model.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import cv from '../../src/cv.js';
import type { Frame } from '../../src/capture/frame.js';
import { preprocessInto } from '../../src/inference/model.js';
import { summarize, type Summary } from './stats.js';

export interface SessionSettings {
  executionProviders: string[];
  intraOpThreads: number;
  interOpThreads: number;
  graphOptimization: 'disabled' | 'basic' | 'extended' | 'all';
  memoryArena: boolean;
  executionMode?: 'sequential' | 'parallel';
  /** false: idle intra-op threads sleep instead of spin-waiting (session.intra_op.allow_spinning 0). */
  spinning?: boolean;
}

export interface BatchTiming {
  batch: number;
  runs: number;
  imagesPerSecond: number;
  /** Wall time of one session.run of the whole batch, ms. */
  latencyMs: Summary;
}

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.bmp']);

export function listImages(dir: string): string[] {
  const files = fs.readdirSync(dir).filter((f) => IMAGE_EXTENSIONS.has(path.extname(f).toLowerCase())).sort();
  if (files.length === 0) throw new Error(`bench: no images in ${dir}`);
  return files.map((f) => path.join(dir, f));
}

/**
 * The images as the daemon's preprocessing makes them (the same OpenCV code path: ROI, resize
 * rule, BGR->RGB, [0,1], NCHW): one Float32Array of N frames.
 */
export async function preprocessedImages(files: string[], height: number, width: number): Promise<Float32Array> {
  const frames: Frame[] = files.map((file, i) => {
    const image = cv.imread(file, cv.IMREAD_COLOR);
    return { cameraId: 'bench', sequence: i + 1, capturedAt: new Date().toISOString(), capturedMono: 0, image, roi: null, release: () => image.release() };
  });
  const data = new Float32Array(frames.length * 3 * height * width);
  try {
    await preprocessInto(frames, data, height, width);
  } finally {
    for (const frame of frames) frame.release();
  }
  return data;
}

function sessionOptions(settings: SessionSettings): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: settings.executionProviders,
    graphOptimizationLevel: settings.graphOptimization,
    enableCpuMemArena: settings.memoryArena,
    logSeverityLevel: 3,
    ...(settings.intraOpThreads > 0 ? { intraOpNumThreads: settings.intraOpThreads } : {}),
    ...(settings.interOpThreads > 0 ? { interOpNumThreads: settings.interOpThreads } : {}),
    ...(settings.executionMode ? { executionMode: settings.executionMode } : {}),
    ...(settings.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

export async function openSession(modelPath: string, settings: SessionSettings): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(modelPath, sessionOptions(settings));
}

/**
 * images/s and per-run latency of session.run for each batch size, over at least `seconds` and
 * `minRuns` runs each, after two warm-up runs. Batches cycle through the images, so consecutive
 * runs see different inputs; tensors are built before timing (the limit has no copies in it).
 */
export async function timeBatches(
  session: ort.InferenceSession,
  images: Float32Array,
  imageCount: number,
  height: number,
  width: number,
  batches: number[],
  seconds: number,
  minRuns: number,
): Promise<BatchTiming[]> {
  const perImage = 3 * height * width;
  const inputName = session.inputNames[0]!;
  const timings: BatchTiming[] = [];
  for (const batch of batches) {
    const tensors: ort.Tensor[] = [];
    for (let start = 0; start < imageCount; start++) {
      const data = new Float32Array(batch * perImage);
      for (let i = 0; i < batch; i++) data.set(images.subarray(((start + i) % imageCount) * perImage, ((start + i) % imageCount + 1) * perImage), i * perImage);
      tensors.push(new ort.Tensor('float32', data, [batch, 3, height, width]));
    }
    for (let warm = 0; warm < 2; warm++) await session.run({ [inputName]: tensors[warm % tensors.length]! });
    const latencies: number[] = [];
    const started = performance.now();
    while (latencies.length < minRuns || performance.now() - started < seconds * 1000) {
      const t0 = performance.now();
      await session.run({ [inputName]: tensors[latencies.length % tensors.length]! });
      latencies.push(performance.now() - t0);
    }
    const elapsed = (performance.now() - started) / 1000;
    timings.push({ batch, runs: latencies.length, imagesPerSecond: (batch * latencies.length) / elapsed, latencyMs: summarize(latencies) });
  }
  return timings;
}
