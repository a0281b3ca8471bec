// Every trigger a camera accepts is owed exactly one answer: the result of its frame, or, when
// that cannot come in time (camera lost, queue full, model failing, deadline passed), a failure
// answer with the reason. The ledger keeps what is owed, the deadlines, and the count of every
// outcome; whoever owns it publishes the answers.
import type { RecipeName } from '../config/recipes.js';
import { failure, type Failure } from '../shared/answer-codes.js';

export interface OwedTrigger {
  ticket: number;
  cameraId: string;
  /** The id the trigger named (undefined: none). */
  triggerId: string | undefined;
  recipe: RecipeName;
  receivedAt: string;
  receivedMono: number;
  /** Its frame has been captured (it is in the batcher or the model now). */
  captured: boolean;
}

export interface TriggerCounts {
  received: number;
  /** Answered with the inspection of its frame. */
  inspected: number;
  /** Answered at once: the camera could not take it (not ready, queue full, unknown recipe). */
  refused: number;
  /** Answered when its deadline passed. */
  expired: number;
  /** Answered when its frame was lost (camera lost, inference or post-processing failed). */
  failed: number;
  /** Results of frames whose trigger had been answered already (not published). */
  late: number;
}

/** When a trigger reached the daemon: wall time for its answer, monotonic time for its latency. */
export interface Received {
  at: string;
  mono: number;
}

export const Received = {
  now: (): Received => ({ at: new Date().toISOString(), mono: performance.now() }),
};

export type FailureOutcome = 'refused' | 'expired' | 'failed';

export interface LedgerHooks {
  /** Publish the failure answer of a trigger. */
  answer(trigger: OwedTrigger, why: Failure): void;
  /** A trigger was answered without its frame's result: stop waiting for the frame, or drop it unused. */
  abandoned(trigger: OwedTrigger): void;
  /** What a camera owes changed (its ready flag may have). */
  changed(cameraId: string): void;
}

export class TriggerLedger {
  private readonly owed = new Map<number, OwedTrigger & { timer: NodeJS.Timeout }>();
  private readonly counts = new Map<string, TriggerCounts>();
  private nextTicket = 1;

  constructor(private readonly hooks: LedgerHooks) {}

  /** Accept a trigger: it is answered by its result, or with a failure once deadlineMs pass. */
  open(cameraId: string, triggerId: string | undefined, recipe: RecipeName, deadlineMs: number, received = Received.now()): OwedTrigger {
    const ticket = this.nextTicket++;
    const timer = setTimeout(() => this.fail(ticket, failure('deadline-passed', `no result within triggerDeadlineMs (${deadlineMs} ms)`), 'expired'), deadlineMs);
    const trigger = { ticket, cameraId, triggerId, recipe, receivedAt: received.at, receivedMono: received.mono, captured: false, timer };
    this.owed.set(ticket, trigger);
    this.count(cameraId).received++;
    this.hooks.changed(cameraId);
    return trigger;
  }

  /** Answer a trigger that cannot be taken, at once. */
  refuse(cameraId: string, triggerId: string | undefined, recipe: RecipeName, why: Failure, received = Received.now()): void {
    const trigger = this.open(cameraId, triggerId, recipe, 0, received);
    this.fail(trigger.ticket, why, 'refused');
  }

  get(ticket: number): OwedTrigger | undefined {
    return this.owed.get(ticket);
  }

  /** Triggers a camera has accepted and not yet answered. */
  owedBy(cameraId: string): number {
    let n = 0;
    for (const trigger of this.owed.values()) if (trigger.cameraId === cameraId) n++;
    return n;
  }

  /** The frame's result is ready: true when it answers its trigger, false when the trigger was answered already. */
  inspected(ticket: number, cameraId: string): boolean {
    const trigger = this.settle(ticket);
    if (!trigger) {
      this.count(cameraId).late++;
      return false;
    }
    this.count(trigger.cameraId).inspected++;
    return true;
  }

  /** Answer a trigger with a failure (no-op when it was answered already). */
  fail(ticket: number, why: Failure, outcome: FailureOutcome = 'failed'): void {
    const trigger = this.settle(ticket);
    if (!trigger) return;
    this.count(trigger.cameraId)[outcome]++;
    this.hooks.abandoned(trigger);
    this.hooks.answer(trigger, why);
  }

  /** Answer what a camera owes with a failure: all of it, or only triggers still waiting for a frame. */
  failCamera(cameraId: string, why: Failure, onlyUncaptured = false): void {
    for (const trigger of [...this.owed.values()]) {
      if (trigger.cameraId === cameraId && !(onlyUncaptured && trigger.captured)) this.fail(trigger.ticket, why);
    }
  }

  failAll(why: Failure): void {
    for (const ticket of [...this.owed.keys()]) this.fail(ticket, why);
  }

  stats(): Record<string, TriggerCounts> {
    return Object.fromEntries([...this.counts].map(([id, counts]) => [id, { ...counts }]));
  }

  private settle(ticket: number): OwedTrigger | undefined {
    const trigger = this.owed.get(ticket);
    if (!trigger) return undefined;
    clearTimeout(trigger.timer);
    this.owed.delete(ticket);
    this.hooks.changed(trigger.cameraId);
    return trigger;
  }

  private count(cameraId: string): TriggerCounts {
    let counts = this.counts.get(cameraId);
    if (!counts) {
      counts = { received: 0, inspected: 0, refused: 0, expired: 0, failed: 0, late: 0 };
      this.counts.set(cameraId, counts);
    }
    return counts;
  }
}
