// Shared bits for the capture tests: a logger that keeps its records, images and videos made with
// OpenCV, and waiting for frames or statuses.
import path from 'node:path';
import { Writable } from 'node:stream';
import { firstValueFrom, filter, take, toArray, timeout, type Observable } from 'rxjs';
import cv from '../../src/cv.js';
import type { CameraConfig } from '../../src/config/schema.js';
import { createLogger, type Logger } from '../../src/shared/log.js';

export interface MemoryLog {
  log: Logger;
  records: () => Array<Record<string, unknown>>;
}

/** A real pino logger whose JSON lines are kept for assertions. */
export function memoryLogger(): MemoryLog {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const log = createLogger('debug', sink);
  return { log, records: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

/** A BGR image whose pixels encode n, so tests can tell frames apart. */
export function numberedImage(n: number, width = 64, height = 48): import('@u4/opencv4nodejs').Mat {
  return new cv.Mat(height, width, cv.CV_8UC3, [n % 256, (n * 7) % 256, (n * 13) % 256]);
}

/** Write images 0..count-1 as PNGs named so that name order is number order. */
export function writeImages(dir: string, count: number): string[] {
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = path.join(dir, `img-${String(i).padStart(3, '0')}.png`);
    const mat = numberedImage(i);
    cv.imwrite(file, mat);
    mat.release();
    files.push(file);
  }
  return files;
}

/** The number a numberedImage encodes (its blue channel). */
export function imageNumber(mat: import('@u4/opencv4nodejs').Mat): number {
  return (mat.at(0, 0) as unknown as { x: number }).x;
}

export function cameraConfig(overrides: Partial<CameraConfig>): CameraConfig {
  return {
    id: 'cam1', enabled: true, source: 'folder', path: '', loop: true, device: '0', url: '', address: '',
    pixelFormat: '', pipeline: '', width: 0, height: 0, fourcc: '', fps: 0, roi: null, trigger: 'free',
    stallTimeoutMs: 5000, reconnectMinMs: 500, reconnectMaxMs: 30000,
    recipe: '', triggerDeadlineMs: 5000, triggerFailVerdict: 'ERROR',
    ...overrides,
  };
}

export function takeN<T>(source: Observable<T>, n: number, ms = 10_000): Promise<T[]> {
  return firstValueFrom(source.pipe(take(n), toArray(), timeout(ms)));
}

export function waitFor<T>(source: Observable<T>, predicate: (value: T) => boolean, ms = 10_000): Promise<T> {
  return firstValueFrom(source.pipe(filter(predicate), timeout(ms)));
}
