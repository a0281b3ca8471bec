// Disk work for the console's archive and dataset capture, kept off the pipeline: the pipeline
// hands over a frame it releases right after, so the frame is copied (a memcpy) and everything
// slow — encoding, writing, deleting — runs later, one job at a time, in a bounded queue.
import type { Mat } from '../cv.js';
import type { Logger } from '../shared/log.js';

export class DiskQueue {
  private waiting = 0;
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly limit: number,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.waiting;
  }

  get full(): boolean {
    return this.waiting >= this.limit;
  }

  /** Queue a job; false (and nothing runs) when the queue is full. A job's error is logged, never thrown. */
  push(job: () => Promise<void>): boolean {
    if (this.full) return false;
    this.waiting++;
    this.tail = this.tail.then(job).catch((err: unknown) => this.log.error({ err }, 'disk job failed')).finally(() => this.waiting--);
    return true;
  }

  /**
   * Queue a job on a copy of `image` (the caller keeps and releases its own); the copy is
   * released after the job. False when the queue is full: then nothing is copied.
   */
  pushFrame(image: Mat, job: (copy: Mat) => Promise<void>): boolean {
    if (this.full) return false;
    const copy = image.copy();
    return this.push(async () => {
      try {
        await job(copy);
      } finally {
        copy.release();
      }
    });
  }

  /** Resolves once every job queued so far has run. */
  idle(): Promise<void> {
    return this.tail;
  }
}
