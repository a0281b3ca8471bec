// From the model's raw output for one frame to a publishable Result: the normalised score and
// verdict of the model contract, defect regions in full-frame pixels, JPEG crops and an optional
// heatmap overlay. Every OpenCV Mat made here is released here; the frame is not (the pipeline
// owns it).
import cv, { type Mat } from '../cv.js';
import type { AppConfig } from '../config/load.js';
import { effectiveRoi, resizeInterpolation } from './preprocess.js';
import type { Calibration, FrameInference, Inference, InspectionResult, ModelInfo, Region, Result, Verdict } from './types.js';

export interface PostprocessOptions {
  /** Override of the calibrated image threshold (raw score units), or null. */
  imageThreshold: number | null;
  /** Override of the calibrated pixel threshold (raw map units), or null. */
  pixelThreshold: number | null;
  /** NG when normalized >= 0.5 + sensitivity. */
  sensitivity: number;
  regions: { enabled: boolean; minArea: number; topK: number };
  crops: { enabled: boolean; onlyNG: boolean; margin: number; maxSize: number; quality: number };
  overlay: { enabled: boolean; onlyNG: boolean; alpha: number; maxSize: number; quality: number };
}

/** PostprocessOptions from the config's inference, regions, crops and overlay sections. */
export function postprocessOptions(config: AppConfig): PostprocessOptions {
  return {
    imageThreshold: config.inference.imageThreshold,
    pixelThreshold: config.inference.pixelThreshold,
    sensitivity: config.inference.sensitivity,
    regions: { ...config.regions },
    crops: { ...config.crops },
    overlay: { ...config.overlay },
  };
}

export interface Timings {
  queueMs: number;
  preprocessMs: number;
  inferenceMs: number;
  batchSize: number;
}

/** The contract's normalisation: 0.5 at the threshold, one unit per calibrated (max - min). */
export function normalize(raw: number, threshold: number, min: number, max: number): number {
  const value = (raw - threshold) / (max - min) + 0.5;
  return Math.min(1, Math.max(0, value));
}

/** Normalised score and verdict; both null for an uncalibrated model (no min/max to scale by). */
export function scoreVerdict(
  raw: number,
  calibration: Calibration | null,
  opts: Pick<PostprocessOptions, 'imageThreshold' | 'sensitivity'>,
): { normalized: number | null; verdict: Verdict | null; calibrated: boolean } {
  if (!calibration) return { normalized: null, verdict: null, calibrated: false };
  const { min, max } = calibration.image;
  const threshold = opts.imageThreshold ?? calibration.image.threshold;
  const normalized = normalize(raw, threshold, min, max);
  return { normalized, verdict: normalized >= 0.5 + opts.sensitivity ? 'NG' : 'OK', calibrated: true };
}

/** The pixel threshold in force: the override, else the calibration's, else none (no regions). */
export function pixelThresholdOf(calibration: Calibration | null, override: number | null): number | null {
  return override ?? calibration?.pixel.threshold ?? null;
}

type Rect = { x: number; y: number; width: number; height: number };

/** A Float32Array map as a CV_32F Mat (OpenCV copies the data). */
function mapMat(map: Float32Array, height: number, width: number): Mat {
  if (map.length !== height * width) throw new Error(`anomaly map has ${map.length} values, expected ${height}x${width}`);
  return new cv.Mat(Buffer.from(map.buffer, map.byteOffset, map.byteLength), height, width, cv.CV_32F);
}

/**
 * Defect regions: connected components (8-connected) of the map above the pixel threshold, kept
 * when at least minArea frame pixels, boxes mapped from map cells through the resize and the ROI
 * offset to full-frame pixels, sorted by peak (highest first), at most topK.
 */
export function findRegions(
  map: Float32Array,
  mapHeight: number,
  mapWidth: number,
  roi: Rect,
  threshold: number,
  pixelCalibration: Calibration['pixel'] | null,
  opts: { minArea: number; topK: number },
): Region[] {
  if (opts.topK <= 0) return [];
  const sx = roi.width / mapWidth;
  const sy = roi.height / mapHeight;
  const owned: Mat[] = [];
  const own = (m: Mat): Mat => {
    owned.push(m);
    return m;
  };
  try {
    const values = own(mapMat(map, mapHeight, mapWidth));
    const mask = own(own(values.threshold(threshold, 255, cv.THRESH_BINARY)).convertTo(cv.CV_8U));
    const { labels, stats, centroids } = mask.connectedComponentsWithStats(8, cv.CV_32S);
    own(labels);
    own(stats);
    own(centroids);
    const rows = stats.getDataAsArray() as number[][];
    const regions: Region[] = [];
    // Label 0 is the background.
    for (let label = 1; label < rows.length; label++) {
      const [left, top, w, h, cells] = rows[label] as [number, number, number, number, number];
      const area = cells * sx * sy;
      if (area < opts.minArea) continue;
      const box = new cv.Rect(left, top, w, h);
      const component = own(own(labels.getRegion(box)).inRange(label, label));
      const peak = own(values.getRegion(box)).minMaxLoc(component).maxVal;
      // Outward rounding: the box covers every frame pixel that fed a map cell of the component.
      const x0 = Math.max(roi.x, Math.floor(roi.x + left * sx));
      const y0 = Math.max(roi.y, Math.floor(roi.y + top * sy));
      const x1 = Math.min(roi.x + roi.width, Math.ceil(roi.x + (left + w) * sx));
      const y1 = Math.min(roi.y + roi.height, Math.ceil(roi.y + (top + h) * sy));
      regions.push({
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
        area: Math.round(area),
        peak,
        peakNormalized: pixelCalibration ? normalize(peak, threshold, pixelCalibration.min, pixelCalibration.max) : null,
      });
    }
    regions.sort((a, b) => b.peak - a.peak);
    return regions.slice(0, opts.topK);
  } finally {
    for (const m of owned) m.release();
  }
}

/** Scale so that the longest side is at most maxSize (0 = no limit); never enlarges. */
function fitWithin(width: number, height: number, maxSize: number): { width: number; height: number } {
  const scale = maxSize > 0 ? Math.min(1, maxSize / Math.max(width, height)) : 1;
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/** JPEG crops of the full-resolution frame around each region (margin added, clamped to the image). */
export function encodeCrops(image: Mat, regions: Region[], opts: PostprocessOptions['crops']): Buffer[] {
  const crops: Buffer[] = [];
  for (const region of regions) {
    const x0 = Math.max(0, region.x - opts.margin);
    const y0 = Math.max(0, region.y - opts.margin);
    const x1 = Math.min(image.cols, region.x + region.width + opts.margin);
    const y1 = Math.min(image.rows, region.y + region.height + opts.margin);
    const owned: Mat[] = [];
    try {
      let crop = image.getRegion(new cv.Rect(x0, y0, x1 - x0, y1 - y0));
      owned.push(crop);
      const size = fitWithin(crop.cols, crop.rows, opts.maxSize);
      if (size.width !== crop.cols || size.height !== crop.rows) {
        crop = crop.resize(size.height, size.width, 0, 0, cv.INTER_AREA);
        owned.push(crop);
      }
      crops.push(cv.imencode('.jpg', crop, [cv.IMWRITE_JPEG_QUALITY, opts.quality]));
    } finally {
      for (const m of owned) m.release();
    }
  }
  return crops;
}

/**
 * Heatmap overlay JPEG of the inspected image (the ROI): the map scaled to 0..255 by the pixel
 * calibration's min/max (an uncalibrated model: by the map's own range), JET colours, blended
 * with opacity alpha, longest side at most maxSize.
 */
export function renderOverlay(
  image: Mat,
  roi: Rect,
  map: Float32Array,
  mapHeight: number,
  mapWidth: number,
  pixelCalibration: Calibration['pixel'] | null,
  opts: PostprocessOptions['overlay'],
): Buffer {
  const owned: Mat[] = [];
  const own = (m: Mat): Mat => {
    owned.push(m);
    return m;
  };
  try {
    const size = fitWithin(roi.width, roi.height, opts.maxSize);
    let base = own(image.getRegion(new cv.Rect(roi.x, roi.y, roi.width, roi.height)));
    if (size.width !== roi.width || size.height !== roi.height) {
      base = own(base.resize(size.height, size.width, 0, 0, resizeInterpolation(roi, size)));
    }
    if (base.channels === 1) base = own(base.cvtColor(cv.COLOR_GRAY2BGR));
    else if (base.channels === 4) base = own(base.cvtColor(cv.COLOR_BGRA2BGR));

    const values = own(mapMat(map, mapHeight, mapWidth));
    let lo: number;
    let hi: number;
    if (pixelCalibration) {
      lo = pixelCalibration.min;
      hi = pixelCalibration.max;
    } else {
      ({ minVal: lo, maxVal: hi } = values.minMaxLoc());
    }
    const scale = hi > lo ? 255 / (hi - lo) : 0;
    // convertTo saturates, so values outside [lo, hi] clip to the ends of the colour map.
    const heat8 = own(values.convertTo(cv.CV_8U, scale, -lo * scale));
    const heatSized = own(heat8.resize(size.height, size.width, 0, 0, cv.INTER_LINEAR));
    const heat = own(cv.applyColorMap(heatSized, cv.COLORMAP_JET));
    const blended = own(base.addWeighted(1 - opts.alpha, heat, opts.alpha, 0));
    return cv.imencode('.jpg', blended, [cv.IMWRITE_JPEG_QUALITY, opts.quality]);
  } finally {
    for (const m of owned) m.release();
  }
}

/** Post-process one frame's inference into a Result. Does not release the frame. */
export function postprocess(fi: FrameInference, info: ModelInfo, opts: PostprocessOptions, extra: Timings): InspectionResult {
  const t0 = performance.now();
  const { frame } = fi;
  const calibration = info.calibration;
  const { normalized, verdict, calibrated } = scoreVerdict(fi.raw, calibration, opts);
  const roi = effectiveRoi(frame);

  let regions: Region[] = [];
  const pixelThreshold = pixelThresholdOf(calibration, opts.pixelThreshold);
  if (opts.regions.enabled && pixelThreshold !== null) {
    regions = findRegions(fi.map, fi.mapHeight, fi.mapWidth, roi, pixelThreshold, calibration?.pixel ?? null, opts.regions);
  }
  const crops =
    opts.crops.enabled && (!opts.crops.onlyNG || verdict === 'NG') && regions.length > 0 ? encodeCrops(frame.image, regions, opts.crops) : [];
  const overlay =
    opts.overlay.enabled && (!opts.overlay.onlyNG || verdict === 'NG')
      ? renderOverlay(frame.image, roi, fi.map, fi.mapHeight, fi.mapWidth, calibration?.pixel ?? null, opts.overlay)
      : null;

  // Named fields only: a capture source's Frame object may carry more than the Result should.
  const frameFields: Result['frame'] = {
    cameraId: frame.cameraId,
    sequence: frame.sequence,
    capturedAt: frame.capturedAt,
    capturedMono: frame.capturedMono,
    roi: frame.roi,
  };
  if (frame.triggerId !== undefined) frameFields.triggerId = frame.triggerId;
  return {
    frame: frameFields,
    model: info,
    recipe: frame.recipe ?? null,
    raw: fi.raw,
    normalized,
    verdict,
    calibrated,
    regions,
    crops,
    overlay,
    latency: {
      queueMs: extra.queueMs,
      preprocessMs: extra.preprocessMs,
      inferenceMs: extra.inferenceMs,
      postprocessMs: performance.now() - t0,
      batchSize: extra.batchSize,
    },
  };
}

/** One frame of a batch's inference post-processed, with its latency: queueing is what the run and the preprocessing do not explain. */
export function postprocessFrame(inference: Inference, frameInference: Inference['frames'][number], options: PostprocessOptions): InspectionResult {
  const { timings } = inference;
  const queueMs = Math.max(0, performance.now() - frameInference.frame.capturedMono - timings.inferenceMs - timings.preprocessMs);
  return postprocess(frameInference, inference.model, options, { queueMs, preprocessMs: timings.preprocessMs, inferenceMs: timings.inferenceMs, batchSize: timings.batchSize });
}
