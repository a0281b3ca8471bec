// Part a (and d): the bare runtime. onnxruntime-node's session.run on tensors that are already
// preprocessed: no capture, no OpenCV, no post-processing, nothing but the model.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import cv from '../../src/cv.js';
import type { Frame } from '../../src/capture/frame.js';
import { NO_SPINNING } from '../../src/inference/model-options.js';
import { preprocessInto } from '../../src/inference/preprocess.js';
import { OtherLoad } from './proc.js';
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
  /** Lowest and highest images/s of the rounds (imagesPerSecond is their median). */
  imagesPerSecondRange: [number, number];
  /** CPU other processes used meanwhile, % of one core (noise indicator). */
  otherLoadPercent: number;
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
    ...(settings.spinning === false ? { extra: NO_SPINNING } : {}),
  };
}

export async function openSession(modelPath: string, settings: SessionSettings): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(modelPath, sessionOptions(settings));
}

/**
 * images/s and per-run latency of session.run for each batch size, after two warm-up runs each.
 * The time per batch size (at least `seconds` and `minRuns` runs) is split into `rounds` rounds
 * that interleave the batch sizes (1,2,4,8,1,2,4,8,...): a slow spell of the machine then hits
 * every batch size alike, and images/s is the median of the rounds (their range is kept, to show
 * the noise). Batches cycle through the images; tensors are built before timing.
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
  rounds = 3,
): Promise<BatchTiming[]> {
  const perImage = 3 * height * width;
  const inputName = session.inputNames[0]!;
  const tensorsOf = new Map<number, ort.Tensor[]>();
  for (const batch of batches) {
    const tensors: ort.Tensor[] = [];
    for (let start = 0; start < imageCount; start++) {
      const data = new Float32Array(batch * perImage);
      for (let i = 0; i < batch; i++) {
        const from = ((start + i) % imageCount) * perImage;
        data.set(images.subarray(from, from + perImage), i * perImage);
      }
      tensors.push(new ort.Tensor('float32', data, [batch, 3, height, width]));
    }
    tensorsOf.set(batch, tensors);
    for (let warm = 0; warm < 2; warm++) await session.run({ [inputName]: tensors[warm % tensors.length]! });
  }
  const latencies = new Map<number, number[]>(batches.map((b) => [b, []]));
  const rates = new Map<number, number[]>(batches.map((b) => [b, []]));
  const otherLoad = new OtherLoad();
  for (let round = 0; round < rounds; round++) {
    for (const batch of batches) {
      const tensors = tensorsOf.get(batch)!;
      const all = latencies.get(batch)!;
      const started = performance.now();
      let runs = 0;
      while (runs < Math.ceil(minRuns / rounds) || performance.now() - started < (seconds * 1000) / rounds) {
        const t0 = performance.now();
        await session.run({ [inputName]: tensors[all.length % tensors.length]! });
        all.push(performance.now() - t0);
        runs++;
      }
      rates.get(batch)!.push((batch * runs * 1000) / (performance.now() - started));
    }
  }
  const load = otherLoad.percent();
  return batches.map((batch) => {
    const r = [...rates.get(batch)!].sort((a, b) => a - b);
    return {
      batch,
      runs: latencies.get(batch)!.length,
      imagesPerSecond: r[Math.floor(r.length / 2)]!,
      imagesPerSecondRange: [r[0]!, r.at(-1)!] as [number, number],
      latencyMs: summarize(latencies.get(batch)!),
      otherLoadPercent: load,
    };
  });
}

/**
 * session.run at batch 1 started at a fixed rate, idle between runs, as a paced camera leaves the
 * model: the runtime's own spread at that pace, with no daemon around it (part b's paced row sets
 * its latency beside this).
 */
export async function timePaced(
  session: ort.InferenceSession,
  images: Float32Array,
  imageCount: number,
  height: number,
  width: number,
  ratePerSecond: number,
  seconds: number,
): Promise<BatchTiming> {
  const perImage = 3 * height * width;
  const inputName = session.inputNames[0]!;
  const tensors = Array.from({ length: imageCount }, (_, i) => new ort.Tensor('float32', images.slice(i * perImage, (i + 1) * perImage), [1, 3, height, width]));
  for (let warm = 0; warm < 2; warm++) await session.run({ [inputName]: tensors[warm % tensors.length]! });
  const period = 1000 / ratePerSecond;
  const latencies: number[] = [];
  const otherLoad = new OtherLoad();
  const started = performance.now();
  for (let next = started; next - started < seconds * 1000; next += period) {
    const wait = next - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const t0 = performance.now();
    await session.run({ [inputName]: tensors[latencies.length % tensors.length]! });
    latencies.push(performance.now() - t0);
  }
  const rate = (latencies.length * 1000) / (performance.now() - started);
  return { batch: 1, runs: latencies.length, imagesPerSecond: rate, imagesPerSecondRange: [rate, rate], latencyMs: summarize(latencies), otherLoadPercent: otherLoad.percent() };
}
