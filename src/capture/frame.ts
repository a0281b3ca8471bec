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
  /** Full-resolution BGR image. */
  image: Mat;
  /** ROI in full-frame pixels that inference should see, or null for the whole frame. */
  roi: { x: number; y: number; width: number; height: number } | null;
  /** Release native memory; safe to call more than once. */
  release(): void;
  /** The consumer calls this once the model has run on the frame (the pipeline does). A recorded
   * source without an fps then reads its next image only after that (or after a release), instead
   * of decoding images that a latest-frame slot would drop or that would wait there. */
  inferred?(): void;
}

export type CameraState = 'starting' | 'online' | 'offline' | 'stopped';

/** Camera status as published on the camera's retained status topic. */
export interface CameraStatus {
  cameraId: string;
  state: CameraState;
  /** Why the camera is offline (last error), if it is. */
  error?: string;
  since: string;
  framesCaptured: number;
  reconnects: number;
}
