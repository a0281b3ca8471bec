// Tests write a configuration file the way an operator's tool would: the file is always either
// the old or the new config, never half of one. The revision lives inside it (remoteConfig.revision),
// so config and revision change together.
import { writeFileAtomic } from '../../src/shared/atomic-write.js';
import { leaves, valueAt } from '../../src/config/schema.js';
import { ConfigError } from '../../src/config/load.js';

/**
 * Atomically replace `file` with `config` as JSON: write a temp file in the same directory, fsync
 * it, rename it over `file`, fsync the directory (so the rename itself is durable). With
 * `revision`, remoteConfig.revision is set to it in the written copy.
 *
 * Values the environment supplies (schema keys with `env` whose variable is set, e.g.
 * CRAD_MQTT_PASSWORD) are left out: secrets given through the environment never land on disk, and
 * the environment supplies them again on load. The file is created 0600 (it may hold secrets).
 * Synchronous on purpose: pushes are rare and small, and the caller commits only after it returns.
 */
export function persistConfig(file: string, config: object, revision?: number): void {
  const copy = structuredClone(config) as Record<string, unknown>;
  if (revision !== undefined) {
    if (!Number.isSafeInteger(revision) || revision < 0) throw new ConfigError(`revision must be a non-negative integer, got ${revision}`);
    const remote = (copy.remoteConfig ??= {}) as Record<string, unknown>;
    remote.revision = revision;
  }
  dropEnvironmentValues(copy);
  const text = `${JSON.stringify(copy, null, 2)}\n`;

  try {
    writeFileAtomic(file, text);
  } catch (err) {
    throw new ConfigError(`cannot write config file ${file}: ${(err as Error).message}`);
  }
}

/** Remove, in place, every value whose schema key takes its value from a set environment variable. */
function dropEnvironmentValues(target: Record<string, unknown>): void {
  for (const [key, leaf] of leaves()) {
    if (!leaf.env || process.env[leaf.env] === undefined) continue;
    const segments = key.split('.');
    const group = segments.length > 1 ? valueAt(target, segments.slice(0, -1).join('.')) : target;
    if (typeof group === 'object' && group !== null) delete (group as Record<string, unknown>)[segments[segments.length - 1]!];
  }
}
