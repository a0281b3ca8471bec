// A camera: one source plus the behaviour every source gets — target-fps throttling, MQTT trigger
// mode, stall detection, reopening with backoff, checking the ROI against the frames, status, and
// the native-memory bookkeeping that makes sure no Mat outlives its use.
//
// The class is built in layers, one file each, bottom up: camera-base.ts (state and status),
// camera-triggers.ts (the trigger queue), camera-pacing.ts (reading, pacing, the ROI check),
// camera-reopen.ts (open, fail, reopen with backoff), camera-health.ts (stall detection), and
// here what the rest of the daemon calls.
import type { CameraConfig } from '../config/schema.js';
import { REOPEN_CAMERA_FIELDS, sameValue } from '../config/policy.js';
import type { FrameSize } from './frame.js';
import type { CameraStats } from './camera-base.js';
import { CameraHealth } from './camera-health.js';

export type { CameraStats, DroppedTrigger, SourceFactory } from './camera-base.js';
export { MAX_PENDING_TRIGGERS } from './camera-triggers.js';

/** Longest stop() waits for a source to release its handle (a gige camera that is gone). */
const STOP_RELEASE_WAIT_MS = 2000;

export class Camera extends CameraHealth {
  start(): void {
    if (this.finished) throw new Error(`camera ${this.id} was stopped or its source ended; create a new camera`);
    if (this.running) return;
    this.running = true;
    this.watchdog = setInterval(() => this.checkHealth(), Math.max(20, Math.min(1000, this.config.stallTimeoutMs / 4)));
    this.setState('starting');
    void this.openAndRun();
  }

  async stop(): Promise<void> {
    if (this.finished) return;
    this.running = false;
    this.generation++;
    this.wakeAll();
    this.clearTimers();
    const source = this.source;
    const reading = this.reading;
    this.source = null;
    this.dropTriggers('camera stopped');
    if (source) {
      this.counters.skipped += source.skipped;
      if (reading) {
        // The read's own loop releases the Mat it returns; the handle closes once it is back.
        const settled = await settleWithin(reading, Math.max(1000, this.config.stallTimeoutMs));
        if (!settled) {
          this.log.warn('a capture read is still blocked at stop; its handle is closed when it returns');
          void reading.then(() => source.close(), () => source.close());
        } else {
          await settleWithin(Promise.resolve(source.close()), STOP_RELEASE_WAIT_MS);
        }
      } else {
        await settleWithin(Promise.resolve(source.close()), STOP_RELEASE_WAIT_MS);
      }
    }
    // An open still in progress closes its own handle when it sees the new generation.
    if (this.opening) await settleWithin(this.opening, 1000);
    if (this.abandoned) await settleWithin(this.abandoned, 1000);
    this.finish('stopped');
  }

  update(config: CameraConfig): 'live' | 'restart' {
    if (config.id !== this.id) throw new Error(`camera ${this.id}: update cannot change the id (got "${config.id}")`);
    const old = this.config;
    const reopen = [...REOPEN_CAMERA_FIELDS].some((key) => !sameValue(old[key], config[key]))
      // usb asks the device itself for the rate, so a new rate must be set on the device.
      || (config.source === 'usb' && config.fps !== old.fps);
    this.config = config;
    this.backoff.setLimits(config.reconnectMinMs, config.reconnectMaxMs);
    if (config.fps !== old.fps) this.nextDueMono = 0;
    if (config.trigger !== old.trigger) this.dropTriggers('trigger mode changed');
    if (config.stallTimeoutMs !== old.stallTimeoutMs && this.watchdog) {
      clearInterval(this.watchdog);
      this.watchdog = setInterval(() => this.checkHealth(), Math.max(20, Math.min(1000, config.stallTimeoutMs / 4)));
    }
    this.wakeAll();
    if (!reopen) return 'live';
    this.log.info('camera source changed; reopening');
    if (this.running) {
      this.abandonSource();
      if (this.reopenTimer) clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
      this.backoff.reset();
      this.setState('starting');
      void this.openAndRun();
    }
    return 'restart';
  }

  /** Size of the last frame read, or null before the first: what a new ROI must fit. */
  get frameSize(): FrameSize | null {
    return this.lastFrameSize;
  }

  stats(): CameraStats {
    return {
      ...this.counters,
      skipped: this.counters.skipped + (this.source?.skipped ?? 0),
      lastFrameMono: this.lastFrameMono,
    };
  }

}

/** Wait for a promise to settle, at most ms; true if it settled. */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = promise.then(() => true as const, () => true as const);
  const result = await Promise.race([settled, timeout]);
  clearTimeout(timer);
  return result;
}
