// Commit-confirmed for pushed configuration: a revision that rebuilds a part runs on probation until
// what it changed proves itself (broker up, changed cameras delivering), else it is rolled back.
// Pure timing logic: what "proves itself" means and what a confirm or rollback does are given.
export interface ProbationWindow {
  revision: number;
  transaction: string | null;
  /** When it began (the clock's time). */
  since: number;
  /** Free-run cameras that must deliver a result; triggered ones must be online. */
  cameras: string[];
}

export interface ProbationHooks {
  /** Monotonic milliseconds. */
  now(): number;
  windowMs(): number;
  /** What still keeps the revision from being confirmed (empty: it works). */
  missing(window: ProbationWindow): string[];
  confirm(window: ProbationWindow): void;
  rollBack(window: ProbationWindow, reason: string): void;
}

export class Probation {
  private window: ProbationWindow | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly hooks: ProbationHooks) {}

  get current(): ProbationWindow | null {
    return this.window;
  }

  start(revision: number, transaction: string | null, cameras: string[]): void {
    this.stop();
    const windowMs = this.hooks.windowMs();
    this.window = { revision, transaction, since: this.hooks.now(), cameras };
    this.timer = setInterval(() => this.check(), Math.max(50, Math.min(1000, windowMs / 20)));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.window = null;
  }

  /** Confirm once nothing is missing; roll back when the window closes first. */
  check(): void {
    const window = this.window;
    if (!window) return;
    const missing = this.hooks.missing(window);
    if (missing.length === 0) {
      this.stop();
      this.hooks.confirm(window);
    } else if (this.hooks.now() - window.since >= this.hooks.windowMs()) {
      this.stop();
      this.hooks.rollBack(window, `not confirmed within remoteConfig.probationMs (${this.hooks.windowMs()} ms): ${missing.join('; ')}`);
    }
  }
}
