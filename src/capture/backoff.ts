// Reopen delays after capture failures: exponential with full jitter (a random delay between 0 and
// a ceiling that doubles per failure), so cameras that failed together do not retry in lockstep.

/** Shortest ceiling, so a reconnectMinMs of 0 cannot become a busy retry loop. */
const MIN_CEILING_MS = 10;

export class Backoff {
  private failures = 0;

  constructor(
    private minMs: number,
    private maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** Failures since the last reset. */
  get attempts(): number {
    return this.failures;
  }

  setLimits(minMs: number, maxMs: number): void {
    this.minMs = minMs;
    this.maxMs = maxMs;
  }

  /** Delay before the next attempt, and the ceiling it was drawn under. */
  next(): { delayMs: number; ceilingMs: number } {
    const min = Math.max(MIN_CEILING_MS, this.minMs);
    const max = Math.max(min, this.maxMs);
    // 2 ** failures overflows to Infinity long after it passed max; Math.min handles that.
    const ceilingMs = Math.min(max, min * 2 ** this.failures);
    this.failures++;
    return { delayMs: Math.round(this.random() * ceilingMs), ceilingMs };
  }

  reset(): void {
    this.failures = 0;
  }
}
