// Trigger mode: the queue of triggers waiting for a frame, and the triggers let go without one.
import { CameraBase, type PendingTrigger } from './camera-base.js';

/** Triggers beyond this are refused: a flood of triggers must not pile up. */
export const MAX_PENDING_TRIGGERS = 16;

export abstract class CameraTriggers extends CameraBase {
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

  protected dropTriggers(why: string): void {
    const dropped = this.triggers;
    this.triggers = [];
    for (const t of dropped) this.dropTrigger(t, why);
  }

  protected dropTrigger(trigger: PendingTrigger, reason: string): void {
    this.log.warn({ triggerId: trigger.id }, `trigger dropped: ${reason}`);
    this.triggerDrops.next({ triggerId: trigger.id, ticket: trigger.ticket, reason });
  }

}
