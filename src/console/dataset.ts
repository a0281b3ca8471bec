// Dataset capture for retraining: good images in the trainer's MVTec layout
// (<dir>/<camera>/train/good/*, see training/crad/data.py), from record mode (every Nth frame
// of a camera), a capture on demand (the next frame), or an archived NG an operator marks good.
// Frames are copied and written off the pipeline, like the archive's.
import fs from 'node:fs';
import path from 'node:path';
import cv, { type Mat } from '../cv.js';
import type { AppConfig } from '../config/load.js';
import type { Result } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import { DiskQueue } from './disk-queue.js';

/** Frames waiting to be written; more are dropped (counted). */
const DATASET_QUEUE = 8;

export interface DatasetOptions {
  dir: string;
  /** Enabled camera ids. */
  cameras: string[];
  recordEvery: number;
  /** Empty = all cameras. */
  recordCameras: string[];
}

export function datasetOptions(config: AppConfig): DatasetOptions {
  return {
    dir: config.dataset.dir || path.join(config.service.stateDir, 'dataset'),
    cameras: config.cameras.filter((c) => c.enabled).map((c) => c.id),
    recordEvery: config.dataset.recordEvery,
    recordCameras: config.dataset.recordCameras,
  };
}

export interface DatasetStatus {
  dir: string;
  /** Camera id -> every Nth frame saved, for cameras recording now. */
  recording: Record<string, number>;
  saved: number;
  dropped: number;
  failed: number;
  /** Captures on demand waiting for their camera's next frame. */
  waiting: number;
}

/** A camera id as a folder name: ids are MQTT topic levels (no '/'), but '.' and '..' are valid ones. */
function classFolder(cameraId: string): string {
  return /^\.+$/.test(cameraId) ? `_${cameraId}` : cameraId;
}

function compactTime(iso: string): string {
  return iso.replace(/[-:.]/g, '');
}

export class DatasetCapture {
  private readonly queue: DiskQueue;
  private readonly recording = new Map<string, number>();
  /** Recording started (a number) or stopped (null) from the console: kept across config pushes. */
  private readonly manual = new Map<string, number | null>();
  private readonly seen = new Map<string, number>();
  private readonly waiting = new Map<string, Array<{ resolve: (file: string) => void; reject: (err: Error) => void }>>();
  private saved = 0;
  private dropped = 0;
  private failed = 0;

  constructor(
    private options: DatasetOptions,
    private readonly log: Logger,
  ) {
    this.queue = new DiskQueue(DATASET_QUEUE, log);
    this.applyRecordConfig();
  }

  get cameras(): readonly string[] {
    return this.options.cameras;
  }

  hasCamera(cameraId: string): boolean {
    return this.options.cameras.includes(cameraId);
  }

  /** The folder the trainer reads a camera's good images from. */
  goodDir(cameraId: string): string {
    return path.join(this.options.dir, classFolder(cameraId), 'train', 'good');
  }

  /**
   * A pushed configuration: recording started or stopped from the console stays so (a push of any
   * other key must not end it), unless the push changes the record settings themselves.
   */
  updateLive(options: DatasetOptions): void {
    const recordChanged = options.recordEvery !== this.options.recordEvery || options.recordCameras.join('\n') !== this.options.recordCameras.join('\n');
    if (recordChanged) this.manual.clear();
    this.options = { ...options, dir: this.options.dir };
    this.applyRecordConfig();
  }

  private applyRecordConfig(): void {
    this.recording.clear();
    if (this.options.recordEvery > 0) {
      const chosen = this.options.recordCameras.length > 0 ? this.options.recordCameras : this.options.cameras;
      for (const id of chosen) if (this.hasCamera(id)) this.recording.set(id, this.options.recordEvery);
    }
    for (const [id, every] of this.manual) {
      if (every === null || !this.hasCamera(id)) this.recording.delete(id);
      else this.recording.set(id, every);
    }
  }

  startRecording(cameraId: string, every: number): void {
    this.manual.set(cameraId, every);
    this.recording.set(cameraId, every);
    this.seen.set(cameraId, 0);
    this.log.info({ camera: cameraId, every }, 'dataset recording started');
  }

  stopRecording(cameraId: string): void {
    this.manual.set(cameraId, null);
    if (this.recording.delete(cameraId)) this.log.info({ camera: cameraId }, 'dataset recording stopped');
  }

  /** The file the camera's next frame is saved to, once it is written. */
  captureNext(cameraId: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const list = this.waiting.get(cameraId) ?? [];
      list.push({ resolve, reject });
      this.waiting.set(cameraId, list);
    });
  }

  /** Called by the daemon for every result while its frame is alive. Never throws. */
  offer(result: Result, image: Mat): void {
    try {
      const cameraId = result.frame.cameraId;
      const count = (this.seen.get(cameraId) ?? 0) + 1;
      this.seen.set(cameraId, count);
      const every = this.recording.get(cameraId);
      const waiters = this.waiting.get(cameraId) ?? [];
      this.waiting.delete(cameraId);
      if (waiters.length === 0 && (every === undefined || count % every !== 0)) return;
      const file = path.join(this.goodDir(cameraId), `${compactTime(result.frame.capturedAt)}-${result.frame.sequence}.png`);
      const queued = this.queue.pushFrame(image, async (copy) => {
        try {
          await fs.promises.mkdir(path.dirname(file), { recursive: true });
          await fs.promises.writeFile(file, await cv.imencodeAsync('.png', copy));
          this.saved++;
          for (const w of waiters) w.resolve(file);
        } catch (err) {
          this.failed++;
          this.log.error({ err, file }, 'dataset image not written');
          for (const w of waiters) w.reject(err as Error);
        }
      });
      if (!queued) {
        this.dropped++;
        for (const w of waiters) w.reject(new Error('the dataset writer is busy; try again'));
      }
    } catch (err) {
      this.failed++;
      this.log.error({ err }, 'dataset capture could not take a frame');
    }
  }

  /** Copy an image file (an archived frame an operator marked good) into the camera's good images. */
  async addGood(cameraId: string, source: string, name: string): Promise<string> {
    const file = path.join(this.goodDir(cameraId), `${name}${path.extname(source)}`);
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    await fs.promises.copyFile(source, file);
    this.saved++;
    return file;
  }

  status(): DatasetStatus {
    const waiting = [...this.waiting.values()].reduce((sum, list) => sum + list.length, 0);
    return { dir: this.options.dir, recording: Object.fromEntries(this.recording), saved: this.saved, dropped: this.dropped, failed: this.failed, waiting };
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  /** Waiting captures end: no frame will come for them. */
  async close(): Promise<void> {
    for (const list of this.waiting.values()) for (const w of list) w.reject(new Error('the daemon is stopping'));
    this.waiting.clear();
    await this.queue.idle();
  }
}
