// What a configuration change means for a running daemon, derived from the schema's per-key
// policy (`apply`, `remote`): which keys changed, which parts must be rebuilt or wait for a
// restart, and which changes only a signed push may make. Nothing here lists keys by hand.
import { isDeepStrictEqual } from 'node:util';
import {
  RESTART_PARTS, cameraLeaves, leaves, valueAt,
  type AppConfig, type Apply, type CameraConfig, type Leaf, type Remote,
} from './schema.js';

const daemonLeaves = leaves();
const cameraFields = cameraLeaves();

/** Camera fields a running camera takes through Camera.update (the rest rebuild the camera). */
export const LIVE_CAMERA_FIELDS: ReadonlySet<keyof CameraConfig> = new Set(
  cameraFields.filter(([, leaf]) => leaf.apply === 'live').map(([field]) => field),
);

/** Camera fields that define what a camera opens: Camera.update reopens the source for them. */
export const REOPEN_CAMERA_FIELDS: ReadonlySet<keyof CameraConfig> = new Set(
  cameraFields.filter(([, leaf]) => leaf.apply === 'reopen').map(([field]) => field),
);

/** Equal as configuration values: -0 and 0 are one number to every reader of the config. */
export function sameValue(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(normalizeZero(a), normalizeZero(b));
}

/** A copy of a JSON value with every -0 made 0 (JSON.stringify writes both as 0 anyway). */
export function normalizeZero<T>(value: T): T {
  if (typeof value === 'number') return (Object.is(value, -0) ? 0 : value) as T;
  if (Array.isArray(value)) return value.map(normalizeZero) as T;
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalizeZero(v)])) as T;
  }
  return value;
}

/** The dotted keys whose effective value differs ("cameras" stands for the whole list). */
export function changedKeys(before: AppConfig, after: AppConfig): string[] {
  return daemonLeaves.filter(([key]) => !sameValue(valueAt(before, key), valueAt(after, key))).map(([key]) => key);
}

/** Camera fields that differ between two versions of one camera. */
function changedCameraFields(before: CameraConfig, after: CameraConfig): Array<keyof CameraConfig> {
  return cameraFields.filter(([field]) => !sameValue(before[field], after[field])).map(([field]) => field);
}

/** Cameras added, removed, or changed in a field a running camera cannot take live. */
export function camerasToRebuild(before: CameraConfig[], after: CameraConfig[]): string[] {
  const old = new Map(before.map((c) => [c.id, c]));
  const next = new Map(after.map((c) => [c.id, c]));
  return [...new Set([...old.keys(), ...next.keys()])].filter((id) => {
    const a = old.get(id);
    const b = next.get(id);
    return !a || !b || changedCameraFields(a, b).some((field) => !LIVE_CAMERA_FIELDS.has(field));
  });
}

/**
 * What a change asks of the running daemon: "camera:<id>" per camera to rebuild, "model" for a
 * model reload, and the parts that wait for a daemon restart ("mqtt", "outbox", "daemon"). Sorted;
 * empty when everything applies live.
 */
export function partsToRebuild(before: AppConfig, after: AppConfig, keys = changedKeys(before, after)): string[] {
  const parts = new Set<string>();
  const byKey = new Map(daemonLeaves);
  for (const key of keys) {
    const apply: Apply | undefined = byKey.get(key)?.apply;
    if (key === 'cameras') for (const id of camerasToRebuild(before.cameras, after.cameras)) parts.add(`camera:${id}`);
    else if (apply === 'model' || (apply && RESTART_PARTS.includes(apply))) parts.add(apply);
  }
  return [...parts].sort();
}

/** The parts of `partsToRebuild` that only a daemon restart applies. */
export function pendingRestart(parts: string[]): string[] {
  return parts.filter((part) => (RESTART_PARTS as readonly string[]).includes(part));
}

/** Keys whose change applies as `apply` says (for stages that compare old and new config). */
export function keysApplied(apply: Apply): string[] {
  return daemonLeaves.filter(([, leaf]) => leaf.apply === apply).map(([key]) => key);
}

/** The remote policy of a daemon key: every leaf states it, like `apply`. */
export function remotePolicy(leaf: Leaf): Remote {
  return leaf.remote;
}

/** A new value for a signed-only leaf: changed, and not back to the default (which reaches nothing). */
function signedChange(leaf: Leaf, before: unknown, after: unknown): boolean {
  return remotePolicy(leaf) === 'signed' && !sameValue(before, after) && !sameValue(after, leaf.default);
}

/**
 * The first change only a signed push may make, described for the sender, or null. A new camera's
 * fields count as changed from their defaults.
 */
export function signedOnlyChange(before: AppConfig, after: AppConfig, ownKeys: string[] = []): string | null {
  for (const [key, leaf] of daemonLeaves) {
    if (!ownKeys.includes(key) && signedChange(leaf, valueAt(before, key), valueAt(after, key))) {
      return `${key}: a push may change it only when signed; set remoteConfig.publicKey on the device`;
    }
  }
  const old = new Map(before.cameras.map((c) => [c.id, c]));
  for (const camera of after.cameras) {
    for (const [field, leaf] of cameraFields) {
      const previous = old.has(camera.id) ? old.get(camera.id)![field] : leaf.default;
      if (signedChange(leaf, previous, camera[field])) {
        return `cameras: a push may add or change a ${camera.source} source (camera "${camera.id}") only when signed; set remoteConfig.publicKey on the device`;
      }
    }
  }
  return null;
}

/** Daemon keys a recipe may override: the leaves the schema marks `recipe`. */
export const RECIPE_KEYS: readonly string[] = daemonLeaves.filter(([, leaf]) => leaf.recipe).map(([key]) => key);

/** Camera fields a recipe may override per camera: the camera leaves the schema marks `recipe`. */
export const RECIPE_CAMERA_FIELDS: ReadonlyArray<keyof CameraConfig> = cameraFields.filter(([, leaf]) => leaf.recipe).map(([field]) => field);
