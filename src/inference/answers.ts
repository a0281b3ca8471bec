// A trigger's answer when its part could not be inspected: a result without an inspection, with the
// stable code, the reason and when the trigger was received (schemas/result.schema.json).
import type { OwedTrigger } from '../capture/trigger-ledger.js';
import { answerCode, type Failure } from '../shared/answer-codes.js';
import type { Result, ResultVerdict } from './types.js';

export function failureAnswer(trigger: OwedTrigger, { code, reason }: Failure, verdict: ResultVerdict, recipe: { recipeNumber?: number }): Result {
  const frame: Result['frame'] = { cameraId: trigger.cameraId, sequence: 0, capturedAt: trigger.receivedAt, capturedMono: trigger.receivedMono, roi: null };
  if (trigger.triggerId !== undefined) frame.triggerId = trigger.triggerId;
  return {
    frame, model: null, recipe: trigger.recipe, ...recipe, raw: null, normalized: null,
    verdict, reason, code: answerCode(code), receivedAt: trigger.receivedAt,
    calibrated: false, regions: [], crops: [], overlay: null,
    latency: { queueMs: performance.now() - trigger.receivedMono, preprocessMs: 0, inferenceMs: 0, postprocessMs: 0, batchSize: 0 },
  };
}
