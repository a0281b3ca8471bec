// Stall detection: a camera that wants a frame and gets none within stallTimeoutMs has failed; one
// waiting for a trigger is idle, not dead. Triggers nobody served in time are dropped.
import type { PendingTrigger } from './camera-base.js';
import { CameraReopen } from './camera-reopen.js';

export abstract class CameraHealth extends CameraReopen {
  protected checkHealth(): void {
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
  protected waitingSince(expiredTriggers: PendingTrigger[]): number | null {
    const source = this.source!;
    if (!source.live) return this.readStartedMono;
    if (this.config.trigger === 'free') return this.aliveMono;
    const oldest = expiredTriggers[0] ?? this.triggers[0];
    return oldest ? Math.max(oldest.atMono, this.aliveMono) : null;
  }

  protected healthyMs(): number {
    // A source that fails again sooner than the longest backoff after coming back is not healthy.
    return Math.max(10_000, this.config.reconnectMaxMs);
  }

}
