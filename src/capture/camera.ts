// A camera: one source plus the behaviour every source gets — target-fps throttling, MQTT trigger
// mode, stall detection, reopening with backoff, checking the ROI against the frames, status, and
// the native-memory bookkeeping that makes sure no Mat outlives its use.
import { ReplaySubject, Subject, type Observable } from 'rxjs';
import type { Mat } from '../cv.js';
import type { CameraConfig } from '../config/schema.js';
import { REOPEN_CAMERA_FIELDS, sameValue } from '../config/policy.js';
import type { Logger } from '../shared/log.js';
import { roiFitsFrame, roiMisfit, type CameraState, type CameraStatus, type Frame, type FrameSize } from './frame.js';
import { Backoff } from '../shared/backoff.js';
import type { CameraSource } from './source.js';

export type SourceFactory = (config: CameraConfig, log: Logger) => CameraSource;

export interface CameraStats {
  /** Frames handed on through frames$. */
  captured: number;
  /** Open failures, read failures and stalls. */
  failures: number;
  /** Reopen attempts after a failure. */
  reconnects: number;
  /** performance.now() of the last frame handed on, or null before the first. */
  lastFrameMono: number | null;
  /** Frames the source itself skipped (e.g. images that do not decode). */
  skipped: number;
  /** Frames read and released unused: above the target fps, not asked for by a trigger, nobody subscribed, or arrived after stop. */
  dropped: number;
  /** Triggers that got no frame within stallTimeoutMs. */
  triggerTimeouts: number;
}

interface PendingTrigger {
  id: string | undefined;
  /** The pipeline's number for it, carried by its frame and by its drop. */
  ticket: number | undefined;
  atMono: number;
}

/** A trigger the camera let go without a frame, and why (its owner answers it). */
export interface DroppedTrigger {
  triggerId: string | undefined;
  ticket: number | undefined;
  reason: string;
}

/** Triggers beyond this are refused: a flood of triggers must not pile up. */
export const MAX_PENDING_TRIGGERS = 16;
/** Longest stop() waits for a source to release its handle (a gige camera that is gone). */
const STOP_RELEASE_WAIT_MS = 2000;
/** While no frame can be used, an unpaced recorded source is read this often: enough to see a
 * frame that fits, without decoding images as fast as the CPU allows. */
const UNUSABLE_READ_INTERVAL_MS = 1000;

export class Camera {
  readonly id: string;
  readonly frames$: Observable<Frame>;
  /** The latest status on subscribe (none before start()), then every change of state (or of the
   * error while offline or in error); completes after 'stopped'. */
  readonly status$: Observable<CameraStatus>;
  /** Triggers dropped without a frame (stopped, expired, mode changed, unusable frames). */
  readonly triggerDrops$: Observable<DroppedTrigger>;

  private config: CameraConfig;
  private readonly frames = new Subject<Frame>();
  /** Latest status replayed to late subscribers; nothing before start(). */
  private readonly status = new ReplaySubject<CameraStatus>(1);
  private readonly triggerDrops = new Subject<DroppedTrigger>();
  private current: CameraStatus;
  private readonly backoff: Backoff;

  private running = false;
  private finished = false;
  /** Bumped whenever the current source is abandoned (failure, stall, update, stop): loops and
   * waits belonging to an older generation wind down and release what they hold. */
  private generation = 0;
  private source: CameraSource | null = null;
  /** The read in flight on the current source (a source is never closed under a read). */
  private reading: Promise<Mat | null> | null = null;
  /** Settles when an abandoned source's last read has returned and the source is closed. */
  private abandoned: Promise<void> | null = null;
  /** The open in progress, so stop() can wait for it and close what it opened. */
  private opening: Promise<void> | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private wakers = new Set<() => void>();

  /** A consumer that reports inferred frames (Frame.inferred) has been seen: recorded sources
   * without an fps are then read at the consumer's pace. */
  private consumerPaced = false;
  /** Sequence of the last frame handed on that the consumer has neither inferred nor released. */
  private pendingSequence: number | null = null;

  private triggers: PendingTrigger[] = [];
  private sequence = 0;
  private nextDueMono = 0;
  /** When the camera last had evidence the source is alive (open, or any frame read). */
  private aliveMono = 0;
  /** When a read of a recorded source started (those are read only when a frame is wanted). */
  private readStartedMono: number | null = null;
  private onlineSinceMono = 0;
  private lastFrameSize: FrameSize | null = null;

  private counters = { captured: 0, failures: 0, reconnects: 0, skipped: 0, dropped: 0, triggerTimeouts: 0 };
  private lastFrameMono: number | null = null;

  constructor(
    config: CameraConfig,
    private readonly log: Logger,
    private readonly makeSource: SourceFactory,
    random: () => number = Math.random,
  ) {
    this.id = config.id;
    this.config = config;
    this.backoff = new Backoff(config.reconnectMinMs, config.reconnectMaxMs, random);
    this.current = this.statusOf('stopped');
    this.frames$ = this.frames.asObservable();
    this.status$ = this.status.asObservable();
    this.triggerDrops$ = this.triggerDrops.asObservable();
  }

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

  /** Capture a frame for this trigger; returns why it is refused, or null when it is queued. */
  trigger(triggerId?: string, ticket?: number): string | null {
    const refusal = this.config.trigger !== 'mqtt' ? 'camera is in free-run (trigger: free)'
      : !this.running ? 'camera is not running'
        : this.triggers.length >= MAX_PENDING_TRIGGERS ? `queue full: ${MAX_PENDING_TRIGGERS} triggers wait for frames`
          : null;
    if (refusal !== null) {
      this.log.warn({ triggerId }, `trigger ignored: ${refusal}`);
      return refusal;
    }
    this.triggers.push({ id: triggerId, ticket, atMono: performance.now() });
    this.wakeAll();
    return null;
  }

  /** Forget a queued trigger (it was answered without its frame). */
  cancelTrigger(ticket: number): void {
    this.triggers = this.triggers.filter((t) => t.ticket !== ticket);
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

  // ---- opening, reading, failing ------------------------------------------------------------

  private async openAndRun(): Promise<void> {
    const generation = ++this.generation;
    // A source abandoned under a blocked read still holds its device; wait for it to let go.
    if (this.abandoned) {
      this.log.warn('waiting for the previous capture handle to return from a blocked read before reopening');
      await this.abandoned;
    }
    if (generation !== this.generation) return;
    let source: CameraSource | null = null;
    try {
      source = this.makeSource(this.config, this.log);
      const opening = source.open();
      this.opening = opening;
      await opening;
    } catch (err) {
      source?.close();
      if (generation === this.generation) this.fail(err);
      return;
    }
    if (generation !== this.generation) {
      source.close();
      return;
    }
    this.source = source;
    this.aliveMono = performance.now();
    this.nextDueMono = 0;
    this.log.info({ source: source.description }, 'camera source open');
    // A recorded source is ready once open; a live one proves itself with its first frame
    // (GStreamer pipelines can open fine and then deliver nothing).
    if (!source.live) this.setOnline();
    void this.readLoop(generation, source);
  }

  private async readLoop(generation: number, source: CameraSource): Promise<void> {
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
  private async waitUntilWanted(generation: number, source: CameraSource): Promise<void> {
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

  private handle(mat: Mat, source: CameraSource): void {
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

  private noteFrameSize(mat: Mat): FrameSize {
    const last = this.lastFrameSize;
    if (last && last.width === mat.cols && last.height === mat.rows) return last;
    this.lastFrameSize = { width: mat.cols, height: mat.rows };
    return this.lastFrameSize;
  }

  /** The source works but its frames cannot be used: not a failure to reopen for, a state to report. */
  private setUnusable(why: string): void {
    if (this.current.state === 'error' && this.current.error === why) return;
    this.log.error({ roi: this.config.roi, frame: this.lastFrameSize }, why);
    this.setState('error', why);
  }

  private drop(mat: Mat): void {
    this.counters.dropped++;
    mat.release();
  }

  private fail(err: unknown): void {
    if (!this.running) return;
    const message = err instanceof Error ? err.message : String(err);
    this.counters.failures++;
    this.abandonSource();
    this.log.warn({ err: message }, 'camera offline');
    this.setState('offline', message);
    this.scheduleReopen();
  }

  /** Let go of the current source; if a read is in flight the handle closes once it returns. */
  private abandonSource(): void {
    this.generation++;
    this.wakeAll();
    this.readStartedMono = null;
    const source = this.source;
    const reading = this.reading;
    this.source = null;
    this.reading = null;
    if (!source) return;
    this.counters.skipped += source.skipped;
    if (!reading) {
      source.close();
      return;
    }
    const closed: Promise<void> = reading.then(() => undefined, () => undefined).then(() => {
      void source.close();
      if (this.abandoned === closed) this.abandoned = null;
    });
    this.abandoned = closed;
  }

  private scheduleReopen(): void {
    const { delayMs, ceilingMs } = this.backoff.next();
    this.counters.reconnects++;
    this.log.info({ delayMs, ceilingMs, attempt: this.backoff.attempts }, 'camera reopen scheduled');
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.running) void this.openAndRun();
    }, delayMs);
  }

  // ---- health -------------------------------------------------------------------------------

  private checkHealth(): void {
    if (!this.running) return;
    const now = performance.now();
    const timeout = this.config.stallTimeoutMs;
    // Triggers nobody could serve in time are answered by nothing: say so and forget them.
    const expired = this.triggers.filter((t) => now - t.atMono > timeout);
    if (expired.length > 0) {
      this.triggers = this.triggers.filter((t) => now - t.atMono <= timeout);
      this.counters.triggerTimeouts += expired.length;
      for (const t of expired) this.dropTrigger(t, `no frame within stallTimeoutMs (${timeout} ms)`);
    }
    if (!this.source) return;
    const waitingSince = this.waitingSince(expired);
    if (waitingSince !== null && now - waitingSince > timeout) {
      // Stable text (no elapsed time in it), so repeated stalls do not look like new errors.
      this.fail(new Error(`${this.source.description} stalled: no frame within stallTimeoutMs (${timeout} ms)`));
    }
  }

  /** Since when the camera has been waiting for a frame it wants, or null if it wants none. A
   * trigger-mode camera with no trigger pending wants nothing, so it is idle, not stalled. */
  private waitingSince(expiredTriggers: PendingTrigger[]): number | null {
    const source = this.source!;
    if (!source.live) return this.readStartedMono;
    if (this.config.trigger === 'free') return this.aliveMono;
    const oldest = expiredTriggers[0] ?? this.triggers[0];
    return oldest ? Math.max(oldest.atMono, this.aliveMono) : null;
  }

  private healthyMs(): number {
    // A source that fails again sooner than the longest backoff after coming back is not healthy.
    return Math.max(10_000, this.config.reconnectMaxMs);
  }

  // ---- status and plumbing ------------------------------------------------------------------

  private setOnline(): void {
    this.onlineSinceMono = performance.now();
    if (this.current.state === 'error') this.log.info('camera frames are usable again; online');
    this.setState('online');
  }

  private setState(state: CameraState, error?: string): void {
    const previous = this.current;
    if (previous.state === state && previous.error === error) return;
    this.current = this.statusOf(state, error);
    this.status.next(this.current);
  }

  private statusOf(state: CameraState, error?: string): CameraStatus {
    const status: CameraStatus = {
      cameraId: this.id,
      state,
      since: new Date().toISOString(),
      framesCaptured: this.counters.captured,
      reconnects: this.counters.reconnects,
    };
    if (error !== undefined) status.error = error;
    return status;
  }

  private finish(state: 'stopped'): void {
    if (this.finished) return;
    this.finished = true;
    this.setState(state);
    this.frames.complete();
    this.status.complete();
    this.triggerDrops.complete();
  }

  private dropTriggers(why: string): void {
    const dropped = this.triggers;
    this.triggers = [];
    for (const t of dropped) this.dropTrigger(t, why);
  }

  private dropTrigger(trigger: PendingTrigger, reason: string): void {
    this.log.warn({ triggerId: trigger.id }, `trigger dropped: ${reason}`);
    this.triggerDrops.next({ triggerId: trigger.id, ticket: trigger.ticket, reason });
  }

  private clearTimers(): void {
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.reopenTimer = null;
    this.watchdog = null;
  }

  /** Sleep until ms pass (null: indefinitely) or something wakes waiters (trigger, stop, update). */
  private sleep(ms: number | null): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(done, ms);
      const wakers = this.wakers;
      function done() {
        if (timer) clearTimeout(timer);
        wakers.delete(done);
        resolve();
      }
      wakers.add(done);
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
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
