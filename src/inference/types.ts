import type { Frame } from '../capture/frame.js';

/** Calibration as the model contract's crad.calibration metadata defines it. */
export interface Calibration {
  image: { threshold: number; min: number; max: number };
  pixel: { threshold: number; min: number; max: number };
  source?: string;
  images?: number;
}

/** What the daemon knows about the loaded model (from the ONNX file and its metadata). */
export interface ModelInfo {
  path: string;
  /** sha256 of the file, hex. */
  hash: string;
  name: string;
  variant: string;
  backbone: string;
  version: string;
  input: { height: number; width: number; color: 'RGB'; range: [number, number]; resize: string };
  classes: string[];
  calibration: Calibration | null;
  training: Record<string, unknown> | null;
  executionProvider: string;
}

/** The model's raw output for one frame. */
export interface FrameInference {
  frame: Frame;
  /** Raw image score (graph output `score`). */
  raw: number;
  /** Smoothed anomaly map, model input size (H*W floats, row-major), in raw distance units. */
  map: Float32Array;
  mapHeight: number;
  mapWidth: number;
}

/** One batch through the model. */
export interface Inference {
  frames: FrameInference[];
  model: ModelInfo;
  timings: { preprocessMs: number; inferenceMs: number; batchSize: number };
}

export interface Region {
  /** Box in full-resolution frame pixels. */
  x: number;
  y: number;
  width: number;
  height: number;
  /** Area of the component in frame pixels. */
  area: number;
  /** Highest raw map value inside the region, and the same normalised. */
  peak: number;
  peakNormalized: number | null;
}

export type Verdict = 'OK' | 'NG';

/** The post-processed result of one frame, ready to publish. */
export interface Result {
  frame: Omit<Frame, 'image' | 'release'>;
  model: ModelInfo;
  raw: number;
  /** null when the model is uncalibrated. */
  normalized: number | null;
  verdict: Verdict | null;
  calibrated: boolean;
  regions: Region[];
  /** JPEG crops, one per region (same order), when crops are enabled for this result. */
  crops: Buffer[];
  overlay: Buffer | null;
  latency: {
    queueMs: number;
    preprocessMs: number;
    inferenceMs: number;
    postprocessMs: number;
    batchSize: number;
  };
}
