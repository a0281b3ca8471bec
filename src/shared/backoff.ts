// Retry delays for everything that reconnects (cameras, the broker): exponential backoff with
// jitter. The ceiling doubles per failed attempt (min, 2*min, 4*min, ... up to max) and the delay is
// drawn uniformly between min and that ceiling, so that line PCs (or cameras) that failed together
// do not retry in lock-step — MQTT.js's own reconnectPeriod is a fixed period.

/** Smallest minimum, so a configured 0 cannot become a busy retry loop. */
const MIN_FLOOR_MS = 10;

/** Ceiling for the attempt'th retry (attempt = failures since the last success, from 0). */
export function backoffCeiling(attempt: number, minMs: number, maxMs: number): number {
  if (!Number.isInteger(attempt) || attempt < 0) throw new Error(`backoff attempt must be an integer >= 0 (got ${attempt})`);
  if (!(minMs >= 0) || !(maxMs >= minMs)) {
    throw new Error(`backoff bounds must satisfy 0 <= minMs <= maxMs (got minMs=${minMs}, maxMs=${maxMs})`);
  }
  // Cap the exponent so the product stays finite however long the peer is away.
  return Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
}

export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = backoffCeiling(attempt, minMs, maxMs);
  return Math.round(minMs + random() * (ceiling - minMs));
}

/** The same schedule with the failure count kept. */
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
    const min = Math.max(MIN_FLOOR_MS, this.minMs);
    const max = Math.max(min, this.maxMs);
    const ceilingMs = backoffCeiling(this.failures, min, max);
    const delayMs = backoffDelay(this.failures, min, max, this.random);
    this.failures++;
    return { delayMs, ceilingMs };
  }

  reset(): void {
    this.failures = 0;
  }
}
