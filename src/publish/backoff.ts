/**
 * Reconnect delays: exponential backoff with full jitter, floored at minMs.
 *
 * The ceiling doubles per failed attempt (minMs, 2*minMs, 4*minMs, ... up to maxMs) and the delay is
 * drawn uniformly between minMs and that ceiling, so that a fleet of line PCs that lost the same
 * broker does not reconnect in lock-step (MQTT.js's own reconnectPeriod is a fixed period).
 * `attempt` counts failures since the last successful connection, starting at 0.
 */
export function backoffCeiling(attempt: number, minMs: number, maxMs: number): number {
  if (!Number.isInteger(attempt) || attempt < 0) throw new Error(`backoff attempt must be an integer >= 0 (got ${attempt})`);
  if (!(minMs >= 0) || !(maxMs >= minMs)) {
    throw new Error(`backoff bounds must satisfy 0 <= minMs <= maxMs (got minMs=${minMs}, maxMs=${maxMs})`);
  }
  // Cap the exponent so the product stays finite however long the broker is away.
  return Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
}

export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = backoffCeiling(attempt, minMs, maxMs);
  return Math.round(minMs + random() * (ceiling - minMs));
}
