// Where a trigger is taken in: too late (it waited at the broker past its deadline), for no camera,
// for a camera that is not ready, or accepted into the ledger and passed to the camera. Every
// path ends in exactly one answer, through the ledger.
import type { RecipeName } from '../config/recipes.js';
import { failure, type Failure } from '../shared/answer-codes.js';
import type { Logger } from '../shared/log.js';
import { Received, type TriggerLedger } from './trigger-ledger.js';

export interface TriggerTarget {
  /** Capture the next frame for this ticket; a string says why the camera cannot. */
  trigger(triggerId?: string, ticket?: number): string | null | void;
}

export interface TriggerDeskFacts {
  camera(cameraId: string): TriggerTarget | undefined;
  notReady(cameraId: string): Failure | null;
  activeRecipe(cameraId: string): RecipeName;
  deadlineMs(cameraId: string): number;
}

export class TriggerDesk {
  constructor(private readonly ledger: TriggerLedger, private readonly facts: TriggerDeskFacts, private readonly log: Logger) {}

  /**
   * Answered by the result of its frame, or with a failure result: at once when it cannot be
   * taken, else when the camera's deadline (counted from `sentAt` when the PLC gave it) passes first.
   */
  take(cameraId: string, triggerId: string | undefined, received = Received.now(), sentAt?: Date): void {
    const deadlineMs = this.facts.deadlineMs(cameraId);
    const lateMs = sentAt ? Date.parse(received.at) - sentAt.getTime() : 0;
    if (lateMs > deadlineMs) {
      // It waited at the broker (the daemon was reconnecting): its part has left the station.
      const why = `expired while the broker was away: sent ${sentAt!.toISOString()}, received ${lateMs} ms later (triggerDeadlineMs ${deadlineMs})`;
      this.refuse(cameraId, triggerId, failure('expired-broker-outage', why), received);
      return;
    }
    const camera = this.facts.camera(cameraId);
    if (!camera) {
      this.log.warn({ cameraId }, 'trigger for an unknown camera refused');
      this.refuse(cameraId, triggerId, failure('camera-unknown', 'no such camera running'), received);
      return;
    }
    const notReady = this.facts.notReady(cameraId);
    if (notReady !== null) {
      this.refuse(cameraId, triggerId, notReady, received);
      return;
    }
    const owed = this.ledger.open(cameraId, triggerId, this.facts.activeRecipe(cameraId), deadlineMs - Math.max(0, lateMs), received);
    const refused = camera.trigger(triggerId, owed.ticket);
    if (typeof refused === 'string') this.ledger.fail(owed.ticket, failure('camera-refused', refused), 'refused');
  }

  /** Answer a trigger that cannot be taken (it named a recipe that does not exist, or could not be read). */
  refuse(cameraId: string, triggerId: string | undefined, why: Failure, received = Received.now()): void {
    this.ledger.refuse(cameraId, triggerId, this.facts.activeRecipe(cameraId), why, received);
  }
}
