// The camera's state, shared by the layers of its class (camera.ts lists them): every field lives
// here, so each is set up once, in the order it always was; and the status it reports.
import { ReplaySubject, Subject, type Observable } from 'rxjs';
import type { Mat } from '../cv.js';
import type { CameraConfig } from '../config/schema.js';
import type { Logger } from '../shared/log.js';
import type { CameraState, CameraStatus, Frame, FrameSize } from './frame.js';
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

export interface PendingTrigger {
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

export abstract class CameraBase {
  readonly id: string;
  readonly frames$: Observable<Frame>;
  /** The latest status on subscribe (none before start()), then every change of state (or of the
   * error while offline or in error); completes after 'stopped'. */
  readonly status$: Observable<CameraStatus>;
  /** Triggers dropped without a frame (stopped, expired, mode changed, unusable frames). */
  readonly triggerDrops$: Observable<DroppedTrigger>;

  protected config: CameraConfig;
  protected readonly frames = new Subject<Frame>();
  /** Latest status replayed to late subscribers; nothing before start(). */
  protected readonly status = new ReplaySubject<CameraStatus>(1);
  protected readonly triggerDrops = new Subject<DroppedTrigger>();
  protected current: CameraStatus;
  protected readonly backoff: Backoff;

  protected running = false;
  protected finished = false;
  /** Bumped whenever the current source is abandoned (failure, stall, update, stop): loops and
   * waits belonging to an older generation wind down and release what they hold. */
  protected generation = 0;
  protected source: CameraSource | null = null;
  /** The read in flight on the current source (a source is never closed under a read). */
  protected reading: Promise<Mat | null> | null = null;
  /** Settles when an abandoned source's last read has returned and the source is closed. */
  protected abandoned: Promise<void> | null = null;
  /** The open in progress, so stop() can wait for it and close what it opened. */
  protected opening: Promise<void> | null = null;
  protected reopenTimer: NodeJS.Timeout | null = null;
  protected watchdog: NodeJS.Timeout | null = null;
  protected wakers = new Set<() => void>();

  /** A consumer that reports inferred frames (Frame.inferred) has been seen: recorded sources
   * without an fps are then read at the consumer's pace. */
  protected consumerPaced = false;
  /** Sequence of the last frame handed on that the consumer has neither inferred nor released. */
  protected pendingSequence: number | null = null;

  protected triggers: PendingTrigger[] = [];
  protected sequence = 0;
  protected nextDueMono = 0;
  /** When the camera last had evidence the source is alive (open, or any frame read). */
  protected aliveMono = 0;
  /** When a read of a recorded source started (those are read only when a frame is wanted). */
  protected readStartedMono: number | null = null;
  protected onlineSinceMono = 0;
  protected lastFrameSize: FrameSize | null = null;

  protected counters = { captured: 0, failures: 0, reconnects: 0, skipped: 0, dropped: 0, triggerTimeouts: 0 };
  protected lastFrameMono: number | null = null;

  constructor(
    config: CameraConfig,
    protected readonly log: Logger,
    protected readonly makeSource: SourceFactory,
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

  // ---- status and plumbing ------------------------------------------------------------------

  protected setOnline(): void {
    this.onlineSinceMono = performance.now();
    if (this.current.state === 'error') this.log.info('camera frames are usable again; online');
    this.setState('online');
  }

  protected setState(state: CameraState, error?: string): void {
    const previous = this.current;
    if (previous.state === state && previous.error === error) return;
    this.current = this.statusOf(state, error);
    this.status.next(this.current);
  }

  protected statusOf(state: CameraState, error?: string): CameraStatus {
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

  protected finish(state: 'stopped'): void {
    if (this.finished) return;
    this.finished = true;
    this.setState(state);
    this.frames.complete();
    this.status.complete();
    this.triggerDrops.complete();
  }

  protected clearTimers(): void {
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.reopenTimer = null;
    this.watchdog = null;
  }

  /** Sleep until ms pass (null: indefinitely) or something wakes waiters (trigger, stop, update). */
  protected sleep(ms: number | null): Promise<void> {
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

  protected wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
  }

  /** The source failed: abandon it and reopen after a pause (camera-reopen.ts). */
  protected abstract fail(err: unknown): void;
  /** How long a source must work before its backoff starts again (camera-health.ts). */
  protected abstract healthyMs(): number;
}
