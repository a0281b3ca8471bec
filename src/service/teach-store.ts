// What the on-device training keeps in <service.stateDir>/teach: the current run (run.json,
// rewritten atomically on every change, so that a daemon restarted mid-run finds it and reports
// it interrupted), the run's work folder (removed whole when a run ends without a candidate: no
// half files), and the versions it promoted (models.json, newest first, with what each replaced:
// the one-call rollback).
import fs from 'node:fs';
import path from 'node:path';
import { fileSha256 } from '../control/model-delivery.js';
import { writeFileAtomic } from '../shared/atomic-write.js';
import type { Logger } from '../shared/log.js';
import { ENDED_STATES, type TeachRun } from '../shared/teach-status.js';

/** The run as kept on disk: what the status shows, and where its files are. */
export interface StoredRun {
  run: TeachRun;
  work: string;
  /** The candidate ONNX file once the trainer wrote it (inside `work`). */
  onnx: string | null;
  /** The trainer's process (group) while it runs: one left behind by a killed daemon is ended at start. */
  pid?: number;
}

export interface StoredVersion {
  sha256: string;
  file: string;
  /** The recipe it serves (null: the base configuration's model.path); absent in versions kept before recipes. */
  recipe?: string | null;
  promotedAt: string;
  datasetSha256: string;
  trainerVersion: string;
  figures: Record<string, unknown>;
  runId: string;
  /** The model that served before this one (rollback returns to it). */
  replaced: { file: string; sha256: string } | null;
}

/** States in which a run may go on after a restart: its candidate file is complete. */
const SURVIVES_RESTART = new Set(['ready', ...ENDED_STATES]);

export class TeachStore {
  readonly dir: string;

  constructor(stateDir: string, private readonly log: Logger) {
    this.dir = path.join(stateDir, 'teach');
  }

  private get runFile(): string {
    return path.join(this.dir, 'run.json');
  }

  private get versionsFile(): string {
    return path.join(this.dir, 'models.json');
  }

  /** A fresh work folder for a run. */
  workDir(runId: string): string {
    const work = path.join(this.dir, 'runs', runId);
    fs.mkdirSync(work, { recursive: true });
    return work;
  }

  /** The run found at start: one stopped mid-way is reported interrupted, its files removed. */
  load(now: () => Date): StoredRun | null {
    let stored: StoredRun;
    try {
      stored = JSON.parse(fs.readFileSync(this.runFile, 'utf8')) as StoredRun;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: (err as Error).message, file: this.runFile }, 'the last training run could not be read; ignored');
      return null;
    }
    if (SURVIVES_RESTART.has(stored.run.state)) return stored;
    if (stored.pid) endOrphan(stored.pid);
    delete stored.pid;
    const was = stored.run.state;
    stored.run = {
      ...stored.run, state: 'interrupted', endedAt: now().toISOString(),
      error: `the daemon stopped while the run was ${was === 'shadow' ? 'in its shadow check' : was}; nothing was changed: start it again`,
    };
    delete stored.run.shadow;
    this.discardWork(stored);
    stored.onnx = null;
    this.save(stored);
    return stored;
  }

  save(stored: StoredRun): void {
    fs.mkdirSync(this.dir, { recursive: true });
    writeFileAtomic(this.runFile, JSON.stringify(stored, null, 1), 0o644);
  }

  /** Remove a run's work folder (checkpoints, split, candidate): a run that ends without serving leaves nothing. */
  discardWork(stored: StoredRun): void {
    fs.rmSync(stored.work, { recursive: true, force: true });
  }

  versions(): StoredVersion[] {
    try {
      return JSON.parse(fs.readFileSync(this.versionsFile, 'utf8')) as StoredVersion[];
    } catch {
      return [];
    }
  }

  addVersion(version: StoredVersion): void {
    fs.mkdirSync(this.dir, { recursive: true });
    writeFileAtomic(this.versionsFile, JSON.stringify([version, ...this.versions()], null, 1), 0o644);
  }
}

/**
 * Copy `file` into `modelsDir` as `name` (a push may only name a file there), with its golden
 * samples folder when `golden` names one: the gate then holds the copy to the same samples.
 * An existing file of the same content is reused; the copy is complete before it has its name.
 */
export async function placeModel(file: string, modelsDir: string, name: string, golden: string | null): Promise<{ file: string; sha256: string }> {
  fs.mkdirSync(modelsDir, { recursive: true });
  const target = path.join(modelsDir, name);
  const sha256 = await fileSha256(file);
  if (path.resolve(file) !== path.resolve(target)) {
    if (!fs.existsSync(target) || (await fileSha256(target)) !== sha256) writeFileAtomic(target, fs.readFileSync(file), 0o644);
  }
  const goldenTarget = target.replace(/\.onnx$/i, '') + '.golden';
  if (golden && path.resolve(golden) !== path.resolve(goldenTarget) && !fs.existsSync(goldenTarget)) fs.cpSync(golden, goldenTarget, { recursive: true });
  return { file: target, sha256 };
}

/** End a trainer a killed daemon left running (its process group), if that pid is still a `crad teach`. */
function endOrphan(pid: number): void {
  try {
    if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('teach')) return;
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone already
  }
}
