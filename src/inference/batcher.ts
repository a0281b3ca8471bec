import type { Frame } from '../capture/frame.js';

export interface BatcherStats {
  /** Frames replaced by a newer frame of the same camera before the model could take them. */
  dropped: Record<string, number>;
  /** Frames waiting now. */
  waiting: number;
}

/**
 * Per-camera frame slots between capture and the model. A free-running camera keeps only its
 * latest frame (a slow model never builds a backlog of stale frames); a triggered camera keeps a
 * short FIFO, because every trigger asked for an inspection. Frames that lose their place are
 * released here and counted.
 */
export class FrameBatcher {
  private readonly slots = new Map<string, Frame[]>();
  private readonly capacity = new Map<string, number>();
  private readonly dropped: Record<string, number> = {};
  private wake: (() => void) | null = null;
  private closed = false;

  /** capacity 1 = latest frame wins; more = FIFO of that length (oldest dropped when full). */
  setCapacity(cameraId: string, capacity: number): void {
    this.capacity.set(cameraId, Math.max(1, capacity));
  }

  /** A camera leaves (stopped or rebuilt): release what it has waiting and stop counting its slot. */
  forget(cameraId: string): void {
    for (const frame of this.slots.get(cameraId) ?? []) frame.release();
    this.slots.delete(cameraId);
    this.capacity.delete(cameraId);
    this.wake?.();
  }

  /** Release waiting frames nobody wants any more (their trigger was answered already). */
  discard(unwanted: (frame: Frame) => boolean): void {
    for (const slot of this.slots.values()) {
      for (const frame of slot.filter(unwanted)) {
        slot.splice(slot.indexOf(frame), 1);
        frame.release();
      }
    }
    this.wake?.();
  }

  put(frame: Frame): void {
    if (this.closed) {
      frame.release();
      return;
    }
    const slot = this.slots.get(frame.cameraId) ?? [];
    this.slots.set(frame.cameraId, slot);
    slot.push(frame);
    const limit = this.capacity.get(frame.cameraId) ?? 1;
    while (slot.length > limit) {
      slot.shift()!.release();
      this.dropped[frame.cameraId] = (this.dropped[frame.cameraId] ?? 0) + 1;
    }
    this.wake?.();
  }

  get waiting(): number {
    let n = 0;
    for (const slot of this.slots.values()) n += slot.length;
    return n;
  }

  /**
   * The next batch: wait for at least one frame, then up to maxWaitMs for the batch to fill, and
   * take up to maxBatch frames, oldest first across cameras. With `groupOf`, a batch holds only
   * frames of the oldest frame's group (one model); the others wait for the next batch.
   * Never an empty batch: frames that leave during the wait (discarded, forgotten) send it back to
   * waiting. `null` means one thing only: closed, and nothing is left to take.
   */
  async take(maxBatch: number, maxWaitMs: number, groupOf?: (frame: Frame) => unknown): Promise<Frame[] | null> {
    for (;;) {
      if (!(await this.someFrame())) return null;
      await this.fillFor(Math.min(maxBatch, this.totalCapacity()), maxWaitMs);
      const batch = this.removeOldest(maxBatch, groupOf);
      if (batch.length > 0) return batch;
    }
  }

  /** Wait until a frame waits (true) or the batcher is closed and empty (false). */
  private async someFrame(): Promise<boolean> {
    while (this.waiting === 0) {
      if (this.closed) return false;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
    return true;
  }

  /** Waiting only helps while more frames can still join: up to `target` frames or maxWaitMs. */
  private async fillFor(target: number, maxWaitMs: number): Promise<void> {
    const deadline = performance.now() + maxWaitMs;
    while (this.waiting > 0 && this.waiting < target && !this.closed) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private removeOldest(maxBatch: number, groupOf?: (frame: Frame) => unknown): Frame[] {
    const all: Frame[] = [];
    for (const slot of this.slots.values()) all.push(...slot);
    all.sort((a, b) => a.capturedMono - b.capturedMono);
    const group = all.length > 0 ? groupOf?.(all[0]!) : undefined;
    const batch = (groupOf ? all.filter((frame) => groupOf(frame) === group) : all).slice(0, maxBatch);
    for (const frame of batch) {
      const slot = this.slots.get(frame.cameraId)!;
      slot.splice(slot.indexOf(frame), 1);
    }
    return batch;
  }

  /** Frames all known cameras can hold at once (a camera that put a frame without a capacity holds 1). */
  private totalCapacity(): number {
    let total = 0;
    for (const id of new Set([...this.capacity.keys(), ...this.slots.keys()])) total += this.capacity.get(id) ?? 1;
    return total;
  }

  stats(): BatcherStats {
    return { dropped: { ...this.dropped }, waiting: this.waiting };
  }

  /** Stop accepting frames; frames already waiting can still be taken (graceful drain). */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  /** Release everything still waiting (after drain, or on hard stop). */
  releaseAll(): void {
    for (const slot of this.slots.values()) for (const frame of slot.splice(0)) frame.release();
  }
}
