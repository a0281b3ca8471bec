import type { Frame } from '../capture/frame.js';

/** Calibration as the model contract's crad.calibration metadata defines it. */
export interface Calibration {
  image: { threshold: number; min: number; max: number };
  pixel: { threshold: number; min: number; max: number };
  source?: string;
  images?: number;
  /** Calibrated on good images only: the synthetic anomalies the image threshold passes as OK. */
  synthetic?: { anomalies: number; missedAtThreshold: number; missRateAtThreshold: number };
  /** The trainer's warning (e.g. the threshold passes most synthetic anomalies): logged at load, in the device status. */
  warning?: string;
}

/**
 * How the graph takes its input (the model contract): format 1's float32 RGB planes (NCHW) in
 * [0, 1], or format 2's uint8 BGR pixels (NHWC) in [0, 255], the bytes OpenCV delivers after the
 * resize, cast and normalised inside the graph.
 */
export type InputForm = 'float32-rgb-nchw' | 'uint8-bgr-nhwc';

/** What the daemon knows about the loaded model (from the ONNX file and its metadata). */
export interface ModelInfo {
  path: string;
  /** sha256 of the file, hex. */
  hash: string;
  name: string;
  variant: string;
  backbone: string;
  version: string;
  input: { form: InputForm; height: number; width: number; color: 'RGB' | 'BGR'; range: [number, number]; resize: string };
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
/** A published verdict: ERROR (or NG, per camera) answers a trigger that could not be inspected. */
export type ResultVerdict = Verdict | 'ERROR';

/** The post-processed result of one frame, or the answer to a trigger that got none; ready to publish. */
export interface Result {
  frame: Omit<Frame, 'image' | 'release'>;
  /** null only in a trigger's failure answer when no model was reached. */
  model: ModelInfo | null;
  /** null only in a trigger's failure answer. */
  raw: number | null;
  /** null when the model is uncalibrated. */
  normalized: number | null;
  verdict: ResultVerdict | null;
  /** The recipe the frame was inspected under (null: the base configuration). */
  recipe?: string | null;
  /** The recipe's number when the config gives it one (recipes.<name>.number). */
  recipeNumber?: number;
  /** Why a trigger could not be inspected (its failure answer only). */
  reason?: string;
  /** The stable numeric code of that reason (src/shared/answer-codes.ts; failure answer only). */
  code?: number;
  /** When the daemon received the trigger (failure answer only). */
  receivedAt?: string;
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

/** A frame the model did inspect: model and score are there. */
export type InspectionResult = Result & { model: ModelInfo; raw: number; verdict: Verdict | null };
