// Each camera's retained status as the pipeline publishes it: what the camera itself says, whether
// a trigger sent now will be inspected (`ready`, and `notReady` why not), its recipe and the frames
// it delivered. Published when any of these changes; the frame count with the periodic refresh.
import type { RecipeName } from '../config/recipes.js';
import { failure, type Failure } from '../shared/answer-codes.js';
import type { CameraStatus } from './frame.js';

/** Triggered cameras owe at most this many answers (every trigger asked for an inspection); a
 * trigger beyond it is answered at once. Frames waiting in the batcher never exceed it. */
export const TRIGGER_QUEUE = 16;

export interface ReadinessFacts {
  /** Why inspection has stopped for good, or null. */
  fault(): string | null;
  recipeRefusal(recipe: RecipeName): string | null;
  activeRecipe(cameraId: string): RecipeName;
  triggered(cameraId: string): boolean;
  owedBy(cameraId: string): number;
  /** How long a model swap has waited for the old model's batches (0: none). */
  swapBlockedMs(): number;
  deadlineMs(cameraId: string): number;
  publish(status: CameraStatus): void;
}

export class CameraReadiness {
  private readonly statuses = new Map<string, CameraStatus>();
  private readonly published = new Map<string, CameraStatus>();
  private readonly frames = new Map<string, number>();

  constructor(private readonly facts: ReadinessFacts) {}

  /** What the camera says of itself (state, error, reconnects). */
  note(status: CameraStatus): void {
    this.statuses.set(status.cameraId, status);
  }

  status(cameraId: string): CameraStatus | undefined {
    return this.statuses.get(cameraId);
  }

  countFrame(cameraId: string): void {
    this.frames.set(cameraId, (this.frames.get(cameraId) ?? 0) + 1);
  }

  forget(cameraId: string): void {
    this.statuses.delete(cameraId);
    this.published.delete(cameraId);
  }

  /** Why a camera cannot take a trigger now, or null. */
  notReady(cameraId: string): Failure | null {
    const fault = this.facts.fault();
    if (fault !== null) return failure('inspection-stopped', `inspection stopped: ${fault}`);
    const status = this.statuses.get(cameraId);
    if (status && status.state !== 'online') return failure('camera-offline', `camera ${status.state}${status.error ? `: ${status.error}` : ''}`);
    const recipe = this.facts.activeRecipe(cameraId);
    const refusal = this.facts.recipeRefusal(recipe);
    if (refusal !== null) return failure('recipe-refused', `recipe ${recipe} refused: ${refusal}`);
    if (this.facts.triggered(cameraId) && this.facts.owedBy(cameraId) >= TRIGGER_QUEUE) return failure('queue-full', `queue full: ${TRIGGER_QUEUE} triggers wait for results`);
    if (this.facts.swapBlockedMs() > this.facts.deadlineMs(cameraId)) return failure('inspection-stopped', 'the model swap takes longer than the trigger deadline');
    return null;
  }

  /** Publish every camera's status that changed (with `countsToo`, also when only its frame count did). */
  publishAll(countsToo = false): void {
    for (const cameraId of this.statuses.keys()) this.publish(cameraId, countsToo);
  }

  publish(cameraId: string, countsToo = false): void {
    const status = this.statuses.get(cameraId);
    if (!status) return;
    const why = this.notReady(cameraId);
    const next: CameraStatus = {
      ...status, framesCaptured: this.frames.get(cameraId) ?? status.framesCaptured,
      ready: why === null, recipe: this.facts.activeRecipe(cameraId), ...(why ? { notReady: why.reason } : {}),
    };
    const last = this.published.get(cameraId);
    const same = last && last.since === next.since && last.state === next.state && last.error === next.error && last.ready === next.ready
      && last.notReady === next.notReady && last.recipe === next.recipe && (!countsToo || last.framesCaptured === next.framesCaptured);
    if (same) return;
    this.published.set(cameraId, next);
    this.facts.publish(next);
  }
}
