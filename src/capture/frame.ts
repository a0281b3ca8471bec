import type { Mat } from '@u4/opencv4nodejs';

/** One captured image and where/when it came from. The Mat is native memory: whoever ends the
 * frame's life (the pipeline, after post-processing, or a buffer that drops it) calls release(). */
export interface Frame {
  cameraId: string;
  /** Per-camera sequence number, starting at 1 each time the daemon starts. */
  sequence: number;
  /** Wall-clock capture time, ISO-8601 UTC. */
  capturedAt: string;
  /** Monotonic capture time in ms (performance.now()), for latency measurements. */
  capturedMono: number;
  /** Correlation id of the trigger that asked for this frame (trigger mode only). */
  triggerId?: string;
  /** The pipeline's number for the trigger that asked for this frame (its answer is owed). */
  ticket?: number;
  /** The recipe the frame is inspected under (null: the base configuration); set by the pipeline. */
  recipe?: string | null;
  /** Full-resolution BGR image. */
  image: Mat;
  /** ROI in full-frame pixels that inference should see, or null for the whole frame. */
  roi: Roi | null;
  /** Release native memory; safe to call more than once. */
  release(): void;
  /** The consumer calls this once the model has run on the frame (the pipeline does). A recorded
   * source without an fps then reads its next image only after that (or after a release), instead
   * of decoding images that a latest-frame slot would drop or that would wait there. */
  inferred?(): void;
}

export interface Roi {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface FrameSize {
  width: number;
  height: number;
}

/** Whether inference can see all of the ROI (null: the whole frame) in frames of this size. */
export function roiFitsFrame(roi: Roi | null, size: FrameSize): boolean {
  return roi === null || (roi.x + roi.width <= size.width && roi.y + roi.height <= size.height);
}

/** Why an ROI does not fit frames of this size, for statuses, logs and config answers. */
export function roiMisfit(roi: Roi, size: FrameSize): string {
  return `roi {x: ${roi.x}, y: ${roi.y}, width: ${roi.width}, height: ${roi.height}} does not fit the ${size.width}x${size.height} frame`;
}

/** 'error': the source delivers frames but none can be used (e.g. the ROI does not fit them);
 * nothing is reopened, a config change or a frame that fits brings the camera back online. */
export type CameraState = 'starting' | 'online' | 'offline' | 'error' | 'stopped';

/** Camera status as published on the camera's retained status topic. */
export interface CameraStatus {
  cameraId: string;
  state: CameraState;
  /** Why the camera is offline (last error) or in error, if it is. */
  error?: string;
  since: string;
  framesCaptured: number;
  reconnects: number;
  /** Whether a trigger (or a frame) can be inspected now; set by the pipeline. */
  ready?: boolean;
  /** Why not ready (present exactly when ready is false); set by the pipeline. */
  notReady?: string;
  /** The recipe the camera inspects under (null: the base configuration); set by the pipeline. */
  recipe?: string | null;
}
