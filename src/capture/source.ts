// One shape for every kind of camera source. The Camera (camera.ts) owns the behaviour around a
// source — throttling, triggers, stall detection, reconnects — so a source only opens, reads and
// closes.
import cv, { type Mat } from '../cv.js';
import { redactUrls } from '../shared/redact.js';

export interface CameraSource {
  /** What this source reads from, safe to log (credentials redacted). */
  readonly description: string;
  /** Live sources (cameras, streams) keep producing whether or not anyone reads, so the Camera
   * drains them continuously; recorded sources (folder, file) are read only when a frame is wanted. */
  readonly live: boolean;
  /** For recorded sources: the rate frames are paced at when the camera sets no fps (0 = unpaced). */
  readonly nativeFps: number;
  /** Open the source; rejects with an Error that names the source. */
  open(): Promise<void>;
  /** Next frame (the caller owns the Mat), or null at the end of a non-looping recording.
   * Rejects when the source failed; an empty read counts as a failure. */
  read(): Promise<Mat | null>;
  /** Close the handle. Never called while a read is in flight. Safe to call more than once. May
   * return a promise that settles once the handle is really released (gige defers that). */
  close(): void | Promise<void>;
  /** Frames the source dropped on its own (e.g. undecodable images). */
  readonly skipped: number;
}

/** opencv4nodejs throws plain strings; turn whatever was thrown into an Error naming the source. */
export function captureError(action: string, description: string, thrown: unknown): Error {
  const detail = thrown instanceof Error ? thrown.message : String(thrown);
  return new Error(`${action} ${description}: ${redactUrls(detail)}`);
}

/** A VideoCapture-backed source: open once, read with readAsync (off the event loop). */
export abstract class VideoCaptureSource implements CameraSource {
  abstract readonly description: string;
  abstract readonly live: boolean;
  nativeFps = 0;
  readonly skipped = 0;
  protected capture: import('@u4/opencv4nodejs').VideoCapture | null = null;

  /** Checks that can fail fast without blocking (device present, host reachable). */
  protected async preflight(): Promise<void> {}
  /** The filename/pipeline/index and backend to hand to cv.VideoCapture. */
  protected abstract target(): { target: string | number; api: number };
  /** Backend properties to apply after opening. */
  protected configure(_capture: import('@u4/opencv4nodejs').VideoCapture): void {}

  async open(): Promise<void> {
    this.close();
    await this.preflight();
    const { target, api } = this.target();
    let capture;
    try {
      // Synchronous in opencv4nodejs (no async open exists); preflight() keeps the slow failure
      // cases (absent camera, unreachable host) from getting here.
      capture = new cv.VideoCapture(target, api);
    } catch (thrown) {
      throw captureError('cannot open', this.description, thrown);
    }
    try {
      this.configure(capture);
    } catch (err) {
      capture.release();
      throw captureError('cannot configure', this.description, err);
    }
    this.capture = capture;
  }

  async read(): Promise<Mat | null> {
    if (!this.capture) throw new Error(`read from ${this.description}: not open`);
    let mat: Mat;
    try {
      mat = await this.capture.readAsync();
    } catch (thrown) {
      throw captureError('read failed on', this.description, thrown);
    }
    if (mat.empty) {
      mat.release();
      return this.onEmptyRead();
    }
    return mat;
  }

  /** An empty read means the stream ended or the pipeline failed (GStreamer reports open
   * failures this way too); sources that can end override this. */
  protected async onEmptyRead(): Promise<Mat | null> {
    throw new Error(`${this.description} delivered no frame (stream ended or pipeline failed)`);
  }

  close(): void {
    if (this.capture) {
      this.capture.release();
      this.capture = null;
    }
  }
}
