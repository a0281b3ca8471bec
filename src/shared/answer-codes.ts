// One table of the numeric codes a PLC maps onto integer tags: every trigger answered without an
// inspection and every command answer carries one beside its text. Codes are stable: never
// renumber one, only add. README "Triggers" and the result and response schemas list them.

export const ANSWER_CODES = {
  /** Inspected, or the command did what it was asked. */
  'ok': 0,
  /** The camera is not online (offline, in error, starting, reconnecting). */
  'camera-offline': 10,
  /** No such camera runs (not configured, disabled, or not in trigger mode). */
  'camera-unknown': 11,
  /** The camera's driver could not take the trigger or lost its frame (e.g. a GigE trigger dropped). */
  'camera-refused': 12,
  /** The camera was removed or rebuilt (a configuration change) while the trigger waited. */
  'camera-removed': 13,
  /** The camera already owes as many answers as its trigger queue holds. */
  'queue-full': 20,
  /** No result within the camera's triggerDeadlineMs. */
  'deadline-passed': 21,
  /** The trigger reached the daemon after its deadline: it waited at the broker while the daemon was away. */
  'expired-broker-outage': 22,
  /** The recipe named (or active) does not exist, its model is refused, or its ROI does not fit the frame. */
  'recipe-refused': 30,
  /** The model run failed for this frame's batch. */
  'inference-failed': 40,
  /** Post-processing or publishing the frame's result failed. */
  'postprocess-failed': 41,
  /** Inspection has stopped (the batch loop is not running); the daemon restarts. */
  'inspection-stopped': 42,
  /** The daemon is stopping; the trigger was not inspected. */
  'shutting-down': 43,
  /** The trigger payload could not be read (bad JSON, unknown field, bad id). */
  'malformed-trigger': 50,
  /** A command's payload could not be read. */
  'malformed-command': 51,
  /** A command was read but refused (see its error text). */
  'command-refused': 60,
  /** A command's handler failed inside the daemon. */
  'internal-error': 99,
} as const;

export type AnswerCodeName = keyof typeof ANSWER_CODES;

/** Why a trigger was answered without an inspection: a stable code and a sentence. */
export interface Failure {
  code: AnswerCodeName;
  reason: string;
}

export function failure(code: AnswerCodeName, reason: string): Failure {
  return { code, reason };
}

export function answerCode(name: AnswerCodeName): number {
  return ANSWER_CODES[name];
}
