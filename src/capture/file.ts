// Video file replayed as a camera (demos, tests, re-inspecting a recording). Paced at the file's
// own frame rate unless the camera sets fps; loops or ends the camera at the last frame.
import fs from 'node:fs/promises';
import cv, { type Mat } from '../cv.js';
import { VideoCaptureSource } from './source.js';

export class FileSource extends VideoCaptureSource {
  readonly live = false;
  readonly description: string;
  private framesSinceStart = 0;

  constructor(private readonly file: string, private readonly loop: boolean) {
    super();
    this.description = `video file ${file}`;
  }

  protected override async preflight(): Promise<void> {
    try {
      await fs.access(this.file, fs.constants.R_OK);
    } catch (err) {
      throw new Error(`cannot open ${this.description}: ${(err as Error).message}`);
    }
  }

  protected target() {
    return { target: this.file, api: cv.CAP_ANY };
  }

  protected override configure(capture: import('@u4/opencv4nodejs').VideoCapture): void {
    const fps = capture.get(cv.CAP_PROP_FPS);
    this.nativeFps = Number.isFinite(fps) && fps > 0 && fps <= 1000 ? fps : 0;
    this.framesSinceStart = 0;
  }

  override async read(): Promise<Mat | null> {
    const mat = await super.read();
    if (mat) this.framesSinceStart++;
    return mat;
  }

  protected override async onEmptyRead(): Promise<Mat | null> {
    if (this.framesSinceStart === 0) {
      throw new Error(`${this.description} delivered no frame (not a readable video?)`);
    }
    if (!this.loop) return null;
    // Rewind; reopen if the container cannot seek.
    this.framesSinceStart = 0;
    if (!this.capture!.set(cv.CAP_PROP_POS_FRAMES, 0)) await this.open();
    return this.read();
  }
}
