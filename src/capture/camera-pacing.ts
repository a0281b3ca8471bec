// Reading and pacing: recorded sources read only when a frame is wanted, every frame checked
// against the ROI, and frames above the target fps or not asked for by a trigger dropped.
import type { Mat } from '../cv.js';
import { roiFitsFrame, roiMisfit, type Frame, type FrameSize } from './frame.js';
import type { CameraSource } from './source.js';
import type { PendingTrigger } from './camera-base.js';
import { CameraTriggers } from './camera-triggers.js';

/** While no frame can be used, an unpaced recorded source is read this often: enough to see a
 * frame that fits, without decoding images as fast as the CPU allows. */
const UNUSABLE_READ_INTERVAL_MS = 1000;

export abstract class CameraPacing extends CameraTriggers {
  protected async readLoop(generation: number, source: CameraSource): Promise<void> {
    const current = () => generation === this.generation;
    while (current()) {
      if (!source.live) {
        await this.waitUntilWanted(generation, source);
        if (!current()) return;
        this.readStartedMono = performance.now();
      }
      let mat: Mat | null;
      const reading = source.read();
      this.reading = reading;
      try {
        mat = await reading;
      } catch (err) {
        if (current()) {
          this.reading = null;
          this.fail(err);
        }
        return;
      }
      if (!current()) {
        // Abandoned while reading (stop, stall, update): this frame goes nowhere.
        if (mat) this.drop(mat);
        return;
      }
      this.reading = null;
      this.readStartedMono = null;
      if (mat === null) {
        this.log.info({ source: source.description }, 'camera source ended');
        this.source = null;
        this.counters.skipped += source.skipped;
        source.close();
        this.running = false;
        this.generation++;
        this.clearTimers();
        this.finish('stopped');
        return;
      }
      this.handle(mat, source);
    }
  }

  /** Recorded sources are read only when a frame is wanted: on a trigger, or at the target rate. */
  protected async waitUntilWanted(generation: number, source: CameraSource): Promise<void> {
    while (generation === this.generation) {
      if (this.config.trigger === 'mqtt') {
        if (this.triggers.length > 0) return;
        await this.sleep(null);
        continue;
      }
      const fps = this.config.fps > 0 ? this.config.fps : source.nativeFps;
      if (fps <= 0 && this.current.state === 'error') {
        // No frame is handed on, so no consumer paces the reads.
        await this.sleep(UNUSABLE_READ_INTERVAL_MS);
        return;
      }
      if (fps <= 0) {
        // Unpaced: as fast as the consumer gets through frames (when it says so), never faster.
        if (!this.consumerPaced || this.pendingSequence === null) return;
        await this.sleep(null);
        continue;
      }
      const wait = this.nextDueMono - performance.now();
      if (wait <= 0) return;
      await this.sleep(wait);
    }
  }

  protected handle(mat: Mat, source: CameraSource): void {
    const now = performance.now();
    this.aliveMono = now;
    // Every frame is checked: the ROI or the frame size may change at any time.
    const size = this.noteFrameSize(mat);
    const unusable = this.config.roi && !roiFitsFrame(this.config.roi, size)
      ? `${roiMisfit(this.config.roi, size)}; no results until the roi or the frame size changes`
      : null;
    if (unusable !== null) this.setUnusable(unusable);
    else if (this.current.state !== 'online') this.setOnline();
    if (this.backoff.attempts > 0 && now - this.onlineSinceMono >= this.healthyMs()) {
      // Healthy long enough: the next failure starts again from the shortest delay.
      this.backoff.reset();
    }
    let trigger: PendingTrigger | undefined;
    if (this.config.trigger === 'mqtt') {
      trigger = this.triggers.shift();
      if (!trigger) {
        // Live source while no trigger waits: keep draining so a trigger gets a fresh frame.
        this.drop(mat);
        return;
      }
    } else {
      const fps = this.config.fps > 0 ? this.config.fps : source.live ? 0 : source.nativeFps;
      if (fps > 0) {
        if (now < this.nextDueMono) {
          this.drop(mat);
          return;
        }
        const interval = 1000 / fps;
        // Advance by whole intervals to hold the average rate; after a long gap, restart the
        // schedule from now instead of bursting to catch up.
        this.nextDueMono = now - this.nextDueMono > interval ? now + interval : this.nextDueMono + interval;
      }
    }
    if (unusable !== null || !this.frames.observed) {
      if (trigger) this.dropTrigger(trigger, unusable ?? 'nobody takes the frames');
      this.drop(mat);
      return;
    }
    let released = false;
    const sequence = ++this.sequence;
    this.pendingSequence = sequence;
    const handedOff = () => {
      if (this.pendingSequence !== sequence) return;
      this.pendingSequence = null;
      this.wakeAll();
    };
    const frame: Frame = {
      cameraId: this.id,
      sequence,
      capturedAt: new Date().toISOString(),
      capturedMono: now,
      image: mat,
      roi: this.config.roi,
      release() {
        if (released) return;
        released = true;
        mat.release();
        handedOff();
      },
      inferred: () => {
        this.consumerPaced = true;
        handedOff();
      },
    };
    if (trigger?.id !== undefined) frame.triggerId = trigger.id;
    if (trigger?.ticket !== undefined) frame.ticket = trigger.ticket;
    this.counters.captured++;
    this.lastFrameMono = now;
    this.frames.next(frame);
  }

  protected noteFrameSize(mat: Mat): FrameSize {
    const last = this.lastFrameSize;
    if (last && last.width === mat.cols && last.height === mat.rows) return last;
    this.lastFrameSize = { width: mat.cols, height: mat.rows };
    return this.lastFrameSize;
  }

  /** The source works but its frames cannot be used: not a failure to reopen for, a state to report. */
  protected setUnusable(why: string): void {
    if (this.current.state === 'error' && this.current.error === why) return;
    this.log.error({ roi: this.config.roi, frame: this.lastFrameSize }, why);
    this.setState('error', why);
  }

  protected drop(mat: Mat): void {
    this.counters.dropped++;
    mat.release();
  }

}
