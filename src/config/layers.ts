// Configuration in layers: defaults <- the operator's file <- pushed changes <- environment.
// Remote pushes never rewrite the operator's file (its comments survive); they live in the state
// directory as numbered revisions, each kept with its predecessor, so a push that strands the
// device can be rolled back to the last revision known to work (the "commit confirmed" model).
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, readConfigFile, validateConfigObject, type AppConfig } from './load.js';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { leaves, valueAt } from './schema.js';

/** One revision of the pushed layer: every key pushes changed, over the file. */
export interface LayerRevision {
  revision: number;
  /** Dotted keys -> values ("cameras" is the whole list), applied over the file. */
  changes: Record<string, unknown>;
  /** The revision this one was made from (null: made over the file alone). */
  previous: number | null;
  createdAt: string;
  /** A push (with its transaction), or a rollback (which revision it undid, and why). */
  origin: { kind: 'push'; transaction: string | null } | { kind: 'rollback'; undid: number; reason: string };
}

/** Which revision runs, which is known good, and which is on probation (not yet confirmed). */
export interface LayerState {
  current: number;
  lastGood: number;
  probation: { revision: number; since: string } | null;
  /** Revisions known good, newest last (what a corrupt current or last-good revision falls back to). */
  good?: number[];
}

/** Revisions kept on disk (the current and last good ones always are). */
const KEEP_REVISIONS = 20;
const STATE_FILE = 'state.json';

export class PushedLayerStore {
  constructor(readonly dir: string) {}

  static forConfig(config: AppConfig): PushedLayerStore {
    return new PushedLayerStore(path.join(config.service.stateDir, 'pushed-config'));
  }

  /** The recorded state; null when nothing was ever pushed. Throws ConfigError when unreadable. */
  state(): LayerState | null {
    const file = path.join(this.dir, STATE_FILE);
    if (!fs.existsSync(file)) return null;
    const state = readJson(file) as LayerState;
    if (!Number.isSafeInteger(state?.current) || !Number.isSafeInteger(state?.lastGood)) {
      throw new ConfigError(`${file}: not a pushed-config state (current, lastGood)`);
    }
    return state;
  }

  /** One revision; revision 0 is the file alone. Throws ConfigError when missing or corrupt. */
  revision(revision: number): LayerRevision {
    if (revision === 0) return { revision: 0, changes: {}, previous: null, createdAt: new Date(0).toISOString(), origin: { kind: 'push', transaction: null } };
    const file = this.revisionFile(revision);
    const record = readJson(file) as LayerRevision;
    if (record?.revision !== revision || typeof record.changes !== 'object' || record.changes === null || Array.isArray(record.changes)) {
      throw new ConfigError(`${file}: not pushed-config revision ${revision}`);
    }
    return record;
  }

  /**
   * Record a new revision and make it current: on probation when `probation`, else known good at
   * once. The revision file is durable before the state names it.
   */
  commit(record: LayerRevision, probation: boolean): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileAtomic(this.revisionFile(record.revision), `${JSON.stringify(record, null, 2)}\n`);
    const previous = this.state();
    const lastGood = probation ? (previous?.lastGood ?? 0) : record.revision;
    const good = withGood(previous?.good, probation ? null : record.revision);
    this.writeState({ current: record.revision, lastGood, probation: probation ? { revision: record.revision, since: record.createdAt } : null, good });
    this.prune(good);
  }

  /** The revision on probation has proven itself: it becomes the last known good one. */
  confirm(revision: number): void {
    const state = this.state();
    if (!state || state.current !== revision) return;
    this.writeState({ current: revision, lastGood: revision, probation: null, good: withGood(state.good, revision) });
  }

  /** Whether `revision` runs on probation with an older known-good revision to go back to. */
  canRollBack(revision: number): boolean {
    const state = this.state();
    return state !== null && state.current === revision && state.lastGood !== revision;
  }

  /**
   * Undo the current revision: a new revision (numbers only rise, so a replayed push stays stale)
   * with the last good one's changes, recorded as a rollback with its reason. Returns it.
   */
  rollBack(current: number, reason: string, to?: number): LayerRevision {
    const state = this.state();
    if (!state) throw new ConfigError('nothing was pushed: there is no revision to roll back');
    const target = to ?? state.lastGood;
    const good = this.revision(target);
    const record: LayerRevision = {
      revision: Math.max(current, state.current, ...this.recorded()) + 1,
      changes: good.changes,
      previous: target,
      createdAt: new Date().toISOString(),
      origin: { kind: 'rollback', undid: state.current, reason },
    };
    this.commit(record, false);
    return record;
  }

  private writeState(state: LayerState): void {
    writeFileAtomic(path.join(this.dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  }

  private revisionFile(revision: number): string {
    return path.join(this.dir, `revision-${String(revision).padStart(6, '0')}.json`);
  }

  /** Revision numbers with a file, newest first. */
  private recorded(): number[] {
    if (!fs.existsSync(this.dir)) return [];
    return fs.readdirSync(this.dir)
      .map((name) => /^revision-(\d+)\.json$/.exec(name)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .sort((a, b) => b - a);
  }

  /** Keep the newest revisions and every known-good one a fallback may need. */
  private prune(good: number[]): void {
    for (const revision of this.recorded().slice(KEEP_REVISIONS)) {
      if (!good.includes(revision)) fs.rmSync(this.revisionFile(revision), { force: true });
    }
  }
}

/** The known-good list with `revision` added (newest last), bounded. */
function withGood(good: number[] | undefined, revision: number | null): number[] {
  const list = (good ?? []).filter((r) => r !== revision);
  if (revision !== null) list.push(revision);
  return list.slice(-KEEP_REVISIONS);
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Nested form of dotted changes, for loading over the file. */
function nested(changes: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(changes)) {
    const segments = key.split('.');
    let node = out;
    for (const segment of segments.slice(0, -1)) node = (node[segment] ??= {}) as Record<string, unknown>;
    node[segments[segments.length - 1]!] = structuredClone(value);
  }
  return out;
}

/** Deep merge of plain objects; lists and values from `source` replace. Mutates `target`. */
function mergeDeep(target: Record<string, unknown>, source: Record<string, unknown>): Record<string, unknown> {
  for (const [key, value] of Object.entries(source)) {
    const current = target[key];
    const bothObjects = [value, current].every((v) => typeof v === 'object' && v !== null && !Array.isArray(v));
    if (bothObjects) mergeDeep(current as Record<string, unknown>, value as Record<string, unknown>);
    else target[key] = value;
  }
  return target;
}

/** The file's config (or a base config) with a layer revision over it; the environment still wins. */
export function configWithLayer(file: string | undefined, base: AppConfig, layer: LayerRevision): AppConfig {
  if (layer.revision === 0) return base;
  const overrides = mergeDeep(nested(layer.changes), { remoteConfig: { revision: layer.revision } });
  if (file) return loadConfig(file, overrides);
  return validateConfigObject(mergeDeep(structuredClone(base) as unknown as Record<string, unknown>, overrides));
}

export interface LayeredConfig {
  config: AppConfig;
  /** The pushed revision running (0: the file alone). */
  revision: number;
  /** Set when the recorded revision could not be used and an older one runs instead. */
  fallback: { from: number; to: number; reason: string } | null;
  /** The revision on probation, when the running one is not yet confirmed. */
  probation: number | null;
  store: PushedLayerStore;
}

/**
 * The effective configuration: the file (or a given base config), then the recorded pushed
 * revision. A revision that is corrupt or no longer validates falls back to the last good one,
 * then to the file alone, and says so. The file itself must be valid (ConfigError otherwise).
 */
export function loadLayered(file: string | undefined, base?: AppConfig): LayeredConfig {
  const fileConfig = file ? loadConfig(file) : base ?? loadConfig();
  const store = PushedLayerStore.forConfig(fileConfig);
  let state: LayerState | null;
  try {
    state = store.state();
  } catch (err) {
    return { config: fileConfig, revision: fileConfig.remoteConfig.revision, fallback: { from: -1, to: 0, reason: (err as Error).message }, probation: null, store };
  }
  if (!state) return { config: fileConfig, revision: fileConfig.remoteConfig.revision, fallback: null, probation: null, store };
  const tried: string[] = [];
  for (const revision of [...new Set([state.current, state.lastGood, ...(state.good ?? []).slice().reverse(), 0])]) {
    try {
      const config = configWithLayer(file, fileConfig, store.revision(revision));
      const fallback = revision === state.current ? null : { from: state.current, to: revision, reason: tried.join('; ') };
      const probation = revision === state.current && state.probation?.revision === revision ? revision : null;
      return { config, revision, fallback, probation, store };
    } catch (err) {
      tried.push(`revision ${revision}: ${(err as Error).message}`);
    }
  }
  throw new ConfigError(`no usable configuration: ${tried.join('; ')}`);
}

/** Where each key's effective value comes from, for `config print`. */
export function valueSources(file: string | undefined, layered: LayeredConfig): Record<string, 'default' | 'file' | 'pushed' | 'environment'> {
  const raw = file ? readConfigFile(file) : {};
  const pushed = layered.revision > 0 ? layered.store.revision(layered.revision).changes : {};
  const sources: Record<string, 'default' | 'file' | 'pushed' | 'environment'> = {};
  for (const [key, leaf] of leaves()) {
    if (leaf.env && process.env[leaf.env] !== undefined) sources[key] = 'environment';
    else if (Object.hasOwn(pushed, key)) sources[key] = 'pushed';
    else if (valueAt(raw, key) !== undefined) sources[key] = 'file';
    else sources[key] = 'default';
  }
  return sources;
}
