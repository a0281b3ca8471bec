// Preprocessing with OpenCV: a frame's ROI resized and written into the model's input form
// (float32 RGB planes or uint8 BGR pixels), a batch at a time, every Mat released.
import * as ort from 'onnxruntime-node';
import cv, { type Mat } from '../cv.js';
import type { Frame } from '../capture/frame.js';
import type { InputForm } from './types.js';

type Roi = { x: number; y: number; width: number; height: number };

/**
 * The part of the frame the model inspects: the frame's ROI clipped to the image, or the whole
 * image. Post-processing maps boxes back through the same rectangle.
 */
export function effectiveRoi(frame: Pick<Frame, 'image' | 'roi' | 'cameraId' | 'sequence'>): Roi {
  const { cols, rows } = frame.image;
  if (!frame.roi) return { x: 0, y: 0, width: cols, height: rows };
  const x0 = Math.max(0, frame.roi.x);
  const y0 = Math.max(0, frame.roi.y);
  const x1 = Math.min(cols, frame.roi.x + frame.roi.width);
  const y1 = Math.min(rows, frame.roi.y + frame.roi.height);
  if (x1 <= x0 || y1 <= y0) {
    throw new Error(
      `camera ${frame.cameraId} frame ${frame.sequence}: ROI ${JSON.stringify(frame.roi)} lies outside the ${cols}x${rows} image`,
    );
  }
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** The trainer's resize rule (training/crad/data.py): bilinear only when both sides grow, else area. */
export function resizeInterpolation(src: { width: number; height: number }, dst: { width: number; height: number }): number {
  return dst.height >= src.height && dst.width >= src.width ? cv.INTER_LINEAR : cv.INTER_AREA;
}

/**
 * A batch in the model's input form: float32 RGB planes (NCHW, in [0, 1]) or uint8 BGR pixels
 * (NHWC, in [0, 255]); 3 x H x W elements per frame either way.
 */
export type InputBuffer = Float32Array | Uint8Array;

/** A zeroed buffer for `frames` frames of the input form. */
export function inputBuffer(form: InputForm, frames: number, height: number, width: number): InputBuffer {
  const elements = frames * 3 * height * width;
  return form === 'uint8-bgr-nhwc' ? new Uint8Array(elements) : new Float32Array(elements);
}

/** The graph's input tensor over the first n frames of a batch buffer (its type gives the form). */
export function inputTensor(data: InputBuffer, n: number, height: number, width: number): ort.Tensor {
  return data instanceof Uint8Array ? new ort.Tensor('uint8', data, [n, height, width, 3]) : new ort.Tensor('float32', data, [n, 3, height, width]);
}

/**
 * The frame's ROI resized to height x width as 8-bit BGR (gray and BGRA converted). `view`: it is
 * still a region of the frame's image (an ROI of exactly the model's size), not a Mat of its own.
 * The Mats it makes go to `own` for the caller to release.
 */
async function resizedBgr(frame: Frame, height: number, width: number, own: (m: Mat) => Mat): Promise<{ bgr: Mat; view: boolean }> {
  const image = frame.image;
  if (image.empty) throw new Error(`camera ${frame.cameraId} frame ${frame.sequence}: the image is empty (released?)`);
  if (image.depth !== cv.CV_8U) {
    throw new Error(`camera ${frame.cameraId} frame ${frame.sequence}: image depth ${image.depth} is not 8-bit; capture must deliver 8-bit BGR`);
  }
  const roi = effectiveRoi(frame);
  const wholeImage = roi.x === 0 && roi.y === 0 && roi.width === image.cols && roi.height === image.rows;
  // getRegion is a view (no copy); releasing the view leaves the frame's image alone.
  const region = wholeImage ? image : own(image.getRegion(new cv.Rect(roi.x, roi.y, roi.width, roi.height)));
  let mat = region;
  if (roi.width !== width || roi.height !== height) {
    // The one large operation (full-resolution ROI in): async, so capture and MQTT keep running.
    mat = own(await mat.resizeAsync(height, width, 0, 0, resizeInterpolation(roi, { width, height })));
  }
  if (mat.channels === 1) mat = own(mat.cvtColor(cv.COLOR_GRAY2BGR));
  else if (mat.channels === 4) mat = own(mat.cvtColor(cv.COLOR_BGRA2BGR));
  else if (mat.channels !== 3) throw new Error(`camera ${frame.cameraId} frame ${frame.sequence}: ${mat.channels}-channel image is not supported`);
  return { bgr: mat, view: mat === region && !wholeImage };
}

/** Float form: RGB planes in [0, 1] (NCHW). All pixel work is OpenCV; JS only copies three planes. */
function writeRgbPlanes(bgr: Mat, input: Float32Array, offset: number, height: number, width: number, own: (m: Mat) => Mat): void {
  const scaled = own(bgr.convertTo(cv.CV_32FC3, 1 / 255));
  const planes = scaled.splitChannels();
  for (const plane of planes) own(plane);
  // BGR planes written in reverse order = BGR->RGB without a cvtColor pass.
  const planeBytes = height * width * 4;
  const target = new Uint8Array(input.buffer, input.byteOffset + offset * 4, 3 * planeBytes);
  for (let c = 0; c < 3; c++) {
    const data = planes[2 - c]!.getData();
    if (data.length !== planeBytes) throw new Error(`internal: plane of ${data.length} bytes, expected ${planeBytes}`);
    // Byte copy: a Buffer from getData need not be 4-byte aligned for a Float32Array view.
    target.set(data, c * planeBytes);
  }
}

/** uint8 form: the resized BGR bytes as they are (NHWC); the graph casts, scales and transposes. */
function writeBgrPixels(bgr: Mat, view: boolean, input: Uint8Array, offset: number, height: number, width: number, own: (m: Mat) => Mat): void {
  // getData refuses a region of a larger image: an ROI of exactly the model's size needs a copy.
  const data = (view ? own(bgr.copy()) : bgr).getData();
  if (data.length !== 3 * height * width) throw new Error(`internal: image of ${data.length} bytes, expected ${3 * height * width}`);
  input.set(data, offset);
}

/**
 * Write one frame into `input` at `offset` (in elements) as the model's input form wants it (the
 * buffer's type says which), resized to height x width.
 */
export async function preprocessFrame(frame: Frame, input: InputBuffer, offset: number, height: number, width: number): Promise<void> {
  const owned: Mat[] = [];
  const own = (m: Mat): Mat => {
    owned.push(m);
    return m;
  };
  try {
    const { bgr, view } = await resizedBgr(frame, height, width, own);
    if (input instanceof Float32Array) writeRgbPlanes(bgr, input, offset, height, width, own);
    else writeBgrPixels(bgr, view, input, offset, height, width, own);
  } finally {
    for (const m of owned) m.release();
  }
}

/** Preprocess a batch into the start of `input` (frame i at element i*3*H*W). */
export async function preprocessInto(frames: Frame[], input: InputBuffer, height: number, width: number): Promise<void> {
  const perFrame = 3 * height * width;
  if (input.length < frames.length * perFrame) throw new Error(`input buffer holds ${input.length / perFrame} frames, batch has ${frames.length}`);
  // Frames in parallel (OpenCV's async calls run on libuv's thread pool); allSettled, so that no
  // frame is still writing into the buffer when the batch fails.
  const outcomes = await Promise.allSettled(frames.map((frame, i) => preprocessFrame(frame, input, i * perFrame, height, width)));
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) throw failed.reason;
}
