// The batch loop's liveness, as a fact others read: the loop is dead once it ended outside stop()
// (a fault, said once), and stalled when frames wait or a batch runs with no batch taken or
// finished for longer than the stall time (a hung model run, a loop that stopped taking).
export interface LoopLoad {
  /** Frames waiting for a batch. */
  waiting: number;
  /** Batches taken and not yet through. */
  running: number;
}

export class LoopWatch {
  private fault: string | null = null;
  private progressMono = performance.now();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly load: () => LoopLoad, private readonly stallMs: () => number, private readonly onFault: (reason: string) => void) {}

  /** Why inspection has stopped for good, or null. */
  get faultReason(): string | null {
    return this.fault;
  }

  /** A batch was taken or finished. */
  progress(): void {
    this.progressMono = performance.now();
  }

  /** Look for a stall a few times per stall time (a stall has no event of its own). */
  start(): void {
    this.progress();
    this.timer = setInterval(() => {
      const { alive, reason } = this.liveness();
      if (!alive) this.declare(reason!);
    }, Math.min(1000, this.stallMs() / 4));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The loop is gone for good: said once. */
  declare(reason: string): void {
    if (this.fault !== null) return;
    this.fault = reason;
    this.stop();
    this.onFault(reason);
  }

  /** Reads only; changes nothing. */
  liveness(): { alive: boolean; reason: string | null } {
    if (this.fault !== null) return { alive: false, reason: this.fault };
    if (this.timer === null) return { alive: true, reason: null };
    const idleMs = performance.now() - this.progressMono;
    const { waiting, running } = this.load();
    if ((waiting > 0 || running > 0) && idleMs > this.stallMs()) {
      return { alive: false, reason: `the batch loop is stalled: ${running} batches running, ${waiting} frames waiting, no batch taken or finished for ${Math.round(idleMs)} ms` };
    }
    return { alive: true, reason: null };
  }
}
