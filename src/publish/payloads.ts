// The JSON payloads the publisher sends and accepts. Their JSON Schemas live in schemas/ (one file
// per payload); test/publish-schemas.test.ts checks that what a subscriber receives matches them.
import { randomBytes } from 'node:crypto';
import type { CameraState, CameraStatus } from '../capture/frame.js';
import type { ConfigPushResponse } from '../config/remote.js';
import type { RecipeReport } from '../inference/recipes.js';
import type { InputForm, ModelInfo, Region, Result, ResultVerdict } from '../inference/types.js';

/** Bumped when a payload changes incompatibly; every payload carries it. */
export const SCHEMA_VERSION = 1;

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix ms timestamp, then random bits. Time-ordered, unique across
 * restarts and camera rebuilds (frame sequences restart at 1), and persisted with the outbox row,
 * so a replayed result keeps the id its first attempt had.
 */
export function uuidv7(now: number = Date.now()): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = 0x70 | (bytes[6]! & 0x0f);
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export interface ResultPayload {
  schemaVersion: number;
  messageId: string;
  device: string;
  camera: string;
  sequence: number;
  triggerId: string | null;
  capturedAt: string;
  /** When this copy was handed to the broker connection (a replay gets a new one). */
  publishedAt: string;
  latencyMs: { queue: number; preprocess: number; inference: number; postprocess: number; total: number };
  batchSize: number;
  /** null only when a trigger's failure answer reached no model. */
  model: { name: string; version: string; variant: string; hash: string; executionProvider: string } | null;
  /** The recipe the frame was inspected under (null: the base configuration). */
  recipe: string | null;
  /** null only in a trigger's failure answer. */
  raw: number | null;
  normalized: number | null;
  verdict: ResultVerdict | null;
  /** The recipe's number (recipes.<name>.number), present when the config gives the recipe one. */
  recipeNumber?: number;
  /** Why a trigger could not be inspected: present exactly in a trigger's failure answer. */
  reason?: string;
  /** The reason's stable numeric code (README "Triggers"): present exactly with reason. */
  code?: number;
  /** When the daemon received the trigger: present exactly with reason. */
  receivedAt?: string;
  calibrated: boolean;
  regions: Region[];
  /** Crop messages that belong to this result (topic .../crop/<index into regions>). */
  crops: number;
  /** Whether an overlay message belongs to this result. */
  overlay: boolean;
  /** True when this copy comes from the outbox backlog (broker was away, or a resend). */
  replayed: boolean;
}

/** What the outbox stores: the payload without the fields only known when it is sent. */
export type StoredResult = Omit<ResultPayload, 'publishedAt' | 'replayed' | 'latencyMs'> & {
  latencyMs: Omit<ResultPayload['latencyMs'], 'total'>;
};

const ms = (value: number): number => Math.round(value * 100) / 100;

export function storedResult(result: Result, device: string, messageId: string): StoredResult {
  const { frame, model, latency } = result;
  return {
    schemaVersion: SCHEMA_VERSION,
    messageId,
    device,
    camera: frame.cameraId,
    sequence: frame.sequence,
    triggerId: frame.triggerId ?? null,
    capturedAt: frame.capturedAt,
    latencyMs: {
      queue: ms(latency.queueMs),
      preprocess: ms(latency.preprocessMs),
      inference: ms(latency.inferenceMs),
      postprocess: ms(latency.postprocessMs),
    },
    batchSize: latency.batchSize,
    model: model && {
      name: model.name,
      version: model.version,
      variant: model.variant,
      hash: model.hash,
      executionProvider: model.executionProvider,
    },
    recipe: result.recipe ?? null,
    raw: result.raw,
    normalized: result.normalized,
    verdict: result.verdict,
    ...(result.recipeNumber !== undefined ? { recipeNumber: result.recipeNumber } : {}),
    ...(result.reason !== undefined ? { reason: result.reason } : {}),
    ...(result.code !== undefined ? { code: result.code } : {}),
    ...(result.receivedAt !== undefined ? { receivedAt: result.receivedAt } : {}),
    calibrated: result.calibrated,
    regions: result.regions.map((r) => ({
      x: r.x, y: r.y, width: r.width, height: r.height, area: r.area, peak: r.peak, peakNormalized: r.peakNormalized,
    })),
    crops: result.crops.length,
    overlay: result.overlay !== null,
  };
}

/** The stored result completed at send time. `totalMs` is capture-to-publish. */
export function finishResult(stored: StoredResult, publishedAt: Date, totalMs: number, replayed: boolean): ResultPayload {
  const { schemaVersion, messageId, device, camera, sequence, triggerId, capturedAt, latencyMs, ...rest } = stored;
  return {
    schemaVersion, messageId, device, camera, sequence, triggerId, capturedAt,
    publishedAt: publishedAt.toISOString(),
    latencyMs: { ...latencyMs, total: ms(Math.max(0, totalMs)) },
    ...rest,
    replayed,
  };
}

/** A crop or overlay for MQTT 3.1.1 subscribers, which have no content-type/correlation properties. */
export interface ImageEnvelope {
  schemaVersion: number;
  messageId: string;
  device: string;
  camera: string;
  kind: 'crop' | 'overlay';
  /** Index into the result's regions for a crop, null for the overlay. */
  index: number | null;
  contentType: 'image/jpeg';
  /** The JPEG, base64. */
  data: string;
}

export interface ModelSummary {
  name: string;
  version: string;
  variant: string;
  backbone: string;
  hash: string;
  executionProvider: string;
  /** How the graph takes its input: float32-rgb-nchw (contract format 1) or uint8-bgr-nhwc (format 2). */
  inputForm: InputForm;
  calibrated: boolean;
  /** The trainer's calibration warning (e.g. the threshold passes most synthetic anomalies), or null. */
  calibrationWarning: string | null;
  classes: string[];
}

export function modelSummary(model: ModelInfo): ModelSummary {
  return {
    name: model.name,
    version: model.version,
    variant: model.variant,
    backbone: model.backbone,
    hash: model.hash,
    executionProvider: model.executionProvider,
    inputForm: model.input.form,
    calibrated: model.calibration !== null,
    calibrationWarning: model.calibration?.warning ?? null,
    classes: model.classes,
  };
}

export interface OutboxStats {
  /** Messages waiting for the broker's acknowledgement (results, and images when stored). */
  pending: number;
  pendingResults: number;
  pendingBytes: number;
  /** Sent and not yet acknowledged on the current connection. */
  inflight: number;
  /** Capture time of the oldest pending message, or null when empty. */
  oldestAt: string | null;
  /** Dropped by the byte or age limit since the outbox file was created. */
  droppedResults: number;
  droppedImages: number;
  /** Refused by the broker (an MQTT 5 PUBACK reason code >= 0x80) and removed. */
  rejected: number;
  /** Crops/overlays not stored in the outbox (outbox.includeImages false) that could not be sent. */
  imagesDiscarded: number;
}

/** Where the running configuration stands (device status "config"). */
export interface ConfigLayerStatus {
  revision: number;
  /** The revision a rollback would return to. */
  lastGood: number;
  /** The revision on probation (not yet confirmed), or null. */
  probation: number | null;
  /** The last rollback: the revision undone, the one it returned to, when and why. */
  rollback: { undid: number; to: number; at: string; reason: string } | null;
}

/** Production counters of one camera since its last reset (device status "counters"). */
export interface CameraCounters {
  ok: number;
  ng: number;
  /** Frames that produced no result (failed batch or post-processing). */
  errors: number;
  triggerTimeouts: number;
  /** Results without a verdict (an uncalibrated model). */
  unjudged: number;
  /** Capture-to-result time in ms; null until the first result since the reset. */
  cycleMs: { min: number; max: number; mean: number } | null;
  since: string;
}

export interface InspectionStatus {
  ready: boolean;
  /** Why not, null when ready. */
  reason: string | null;
}

/** The golden samples: whether the cameras may run, and the last run against a model. */
export interface GoldenStatus {
  /** false: the model failed its golden samples at start-up and the cameras are not started. */
  ready: boolean;
  /** Why not ready (the images that failed), null when ready. */
  reason: string | null;
  lastRun: {
    passed: boolean;
    dir: string;
    model: { path: string; hash: string };
    total: number;
    failed: { file: string; expected: 'OK' | 'NG'; got: 'OK' | 'NG' | null; normalized: number | null }[];
    error?: string;
    at: string;
    durationMs: number;
  } | null;
}

export interface DeviceStatusPayload {
  schemaVersion: number;
  device: string;
  state: 'online' | 'offline';
  /** Why the device is offline: a clean stop, or the broker noticed the connection die (the Will). */
  reason?: 'shutdown' | 'connection-lost';
  version: string | null;
  /** The git commit of the checkout the daemon runs from; null (or absent) in an installed tree. */
  commit?: string | null;
  bootId: string;
  startedAt: string;
  /** Absent in the Last Will (it is written at connect time and sent by the broker later). */
  publishedAt?: string;
  model?: ModelSummary | null;
  configRevision?: number | null;
  /** Why the last model load/swap failed (the previous model keeps serving), null when fine. */
  modelError?: string | null;
  /** The configuration's pushed-layer state: probation, and the last rollback with its reason. */
  config?: ConfigLayerStatus;
  golden?: GoldenStatus;
  /** Failures per plane (mqtt, sparkplug, console, archive, ...) since start: each counted against its plane only. */
  planeFailures?: Record<string, number>;
  /** Whether a frame captured now will be inspected (false: the batch loop is not running; the daemon restarts). */
  inspection?: InspectionStatus;
  cameras?: Record<string, { state: CameraState; since: string; error?: string }>;
  /** Each recipe's model and whether it serves; what the recipe models hold (see model.maxRecipeModels). */
  recipes?: RecipeReport;
  broker?: { protocolVersion: 4 | 5; connects: number; connectedSince: string | null };
  outbox?: OutboxStats;
  /** Per camera: OK / NG / errors / trigger timeouts and cycle time since the last reset. */
  counters?: Record<string, CameraCounters>;
  extra?: Record<string, unknown>;
}

export interface CameraStatusPayload extends CameraStatus {
  schemaVersion: number;
  device: string;
  publishedAt: string;
}

export function cameraStatusPayload(status: CameraStatus, device: string, publishedAt: Date): CameraStatusPayload {
  const payload: CameraStatusPayload = {
    schemaVersion: SCHEMA_VERSION,
    device,
    cameraId: status.cameraId,
    state: status.state,
    since: status.since,
    framesCaptured: status.framesCaptured,
    reconnects: status.reconnects,
    publishedAt: publishedAt.toISOString(),
  };
  if (status.error !== undefined) payload.error = status.error;
  if (status.ready !== undefined) payload.ready = status.ready;
  if (status.notReady !== undefined) payload.notReady = status.notReady;
  if (status.recipe !== undefined) payload.recipe = status.recipe;
  return payload;
}

/**
 * The answer to a config/get request (schemas/config-response.schema.json). The answer to a
 * config/set push is src/config/remote.ts's ConfigPushResponse (schemas/config-set.schema.json).
 */
export interface ConfigGetResponse {
  /** Defaults to the request's transaction (config-get.schema.json), null when it had none. */
  transaction?: string | null;
  status: 'ok' | 'error';
  error?: string;
  revision: number;
  /** The effective configuration, secrets redacted. */
  config?: unknown;
}

export type ConfigResponse = ConfigPushResponse | ConfigGetResponse;

export const MAX_TRIGGER_ID_LENGTH = 200;

/** A trigger payload read (schemas/trigger.schema.json): what it asks, or what is wrong with it. */
export type ParsedTrigger =
  | { ok: true; triggerId: string | undefined; recipe?: string; sentAt?: Date }
  /** `triggerId`: the id as far as it could be read (cut to MAX_TRIGGER_ID_LENGTH), null when none could. */
  | { ok: false; error: string; triggerId: string | null };

/**
 * A trigger payload: empty, plain text (the id), or JSON {"id"?, "recipe"?, "sentAt"?}. A payload
 * that cannot be used still yields what id could be read from it, so that its answer can name it.
 */
export function parseTrigger(payload: Buffer): ParsedTrigger {
  const text = payload.toString('utf8').trim();
  if (text.length === 0) return { ok: true, triggerId: undefined };
  if (!text.startsWith('{')) return withTriggerId(text, {});
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `trigger payload starts with "{" but is not valid JSON: ${(err as Error).message}`, triggerId: null };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { ok: false, error: 'trigger payload must be a JSON object', triggerId: null };
  }
  const { id, recipe, sentAt } = parsed as { id?: unknown; recipe?: unknown; sentAt?: unknown };
  const readable = typeof id === 'string' || typeof id === 'number' ? readableId(String(id)) : null;
  const refuse = (error: string): ParsedTrigger => ({ ok: false, error: readable?.cut ? `${error}; ${readable.cut}` : error, triggerId: readable?.id ?? null });
  const extra = Object.keys(parsed).filter((k) => k !== 'id' && k !== 'recipe' && k !== 'sentAt');
  if (extra.length > 0) return refuse(`trigger payload has unknown keys: ${extra.join(', ')} (allowed: id, recipe, sentAt)`);
  if (recipe !== undefined && (typeof recipe !== 'string' || recipe.length === 0)) return refuse('trigger payload "recipe" must be a recipe name');
  let sent: Date | undefined;
  if (sentAt !== undefined) {
    sent = typeof sentAt === 'string' && ISO_TIME.test(sentAt) ? new Date(sentAt) : undefined;
    if (!sent || Number.isNaN(sent.getTime())) return refuse('trigger payload "sentAt" must be an ISO 8601 time with a zone, e.g. 2026-12-07T10:15:00.000Z');
  }
  const fields = { ...(recipe !== undefined ? { recipe: recipe as string } : {}), ...(sent ? { sentAt: sent } : {}) };
  if (id === undefined) return { ok: true, triggerId: undefined, ...fields };
  if (typeof id !== 'string') return refuse(`trigger payload "id" must be a string, got ${id === null ? 'null' : typeof id}`);
  return withTriggerId(id, fields);
}

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;

function withTriggerId(triggerId: string, fields: { recipe?: string; sentAt?: Date }): ParsedTrigger {
  const readable = readableId(triggerId);
  if (triggerId.length === 0 || triggerId.length > MAX_TRIGGER_ID_LENGTH) {
    const error = `trigger id must be 1..${MAX_TRIGGER_ID_LENGTH} characters (got ${triggerId.length})`;
    return { ok: false, error: readable.cut ? `${error}; ${readable.cut}` : error, triggerId: readable.id };
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(triggerId)) return { ok: false, error: 'trigger id must not contain control characters', triggerId: readable.id };
  return { ok: true, triggerId, ...fields };
}

/** An id as an answer may carry it: control characters replaced, cut to the limit (and said so). */
function readableId(id: string): { id: string | null; cut: string | null } {
  // eslint-disable-next-line no-control-regex
  const clean = id.replace(/[\u0000-\u001f\u007f]/g, '?');
  if (clean.length === 0) return { id: null, cut: null };
  if (clean.length <= MAX_TRIGGER_ID_LENGTH) return { id: clean, cut: null };
  return { id: clean.slice(0, MAX_TRIGGER_ID_LENGTH), cut: `the answer's triggerId is its first ${MAX_TRIGGER_ID_LENGTH} characters` };
}
