// The audit trail: every change of configuration or model and every golden-sample run, appended to
// <stateDir>/audit/audit.jsonl as one JSON line each, fsynced before record() returns, rotated to
// audit.jsonl.1.. when the file would pass audit.maxBytes. The daemon and local commands
// (`crad-edge validate`) append to the same file: each append holds an exclusive lock file
// around reading the last seq, rotating and writing, so seqs rise strictly across processes. Other parts (recipes, the console) call
// record() with what they changed; readers page through it newest first (audit/get, `crad-edge audit`).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { redact, type AppConfig } from '../config/load.js';
import { parsePublicKey } from '../config/push-signing.js';
import { valueAt } from '../config/schema.js';
import type { AuditActor } from '../control/actor.js';
import { syncDirectoryOf } from '../shared/atomic-write.js';
import type { Logger } from '../shared/log.js';

export { mqttActor, type AuditActor } from '../control/actor.js';

export interface AuditChange {
  key: string;
  old: unknown;
  new: unknown;
}

export interface AuditEntryInput {
  /** What happened: config, model, golden, rollback, delivery, recipe, ... */
  kind: string;
  /** applied, rejected, rolled-back, passed, failed, refused, ... */
  outcome: string;
  actor: AuditActor;
  transaction?: string | null;
  revisionBefore?: number | null;
  revisionAfter?: number | null;
  changes?: AuditChange[];
  error?: string;
  /** Anything else worth keeping (a golden run, a delivery's url and hash). */
  details?: Record<string, unknown>;
}

export interface AuditEntry extends AuditEntryInput {
  /** Raised by one per entry, across rotations and restarts. */
  seq: number;
  at: string;
}

export interface AuditPage {
  /** Newest first. */
  entries: AuditEntry[];
  /** Pass as `before` for the next (older) page; null when there is none. */
  next: number | null;
}

export const MAX_AUDIT_PAGE = 100;
const FILE_NAME = 'audit.jsonl';

export interface AuditLimits {
  maxBytes: number;
  keepFiles: number;
}

/** How long an append waits for another process's lock before it gives up (the entry is reported unwritten). */
const LOCK_WAIT_MS = 5000;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

export class AuditLog {
  readonly file: string;
  private readonly lockFile: string;

  constructor(readonly dir: string, private limits: AuditLimits) {
    this.file = path.join(dir, FILE_NAME);
    this.lockFile = path.join(dir, `${FILE_NAME}.lock`);
  }

  /** The audit log of a configuration's state directory. */
  static forConfig(config: AppConfig): AuditLog {
    return new AuditLog(path.join(config.service.stateDir, 'audit'), config.audit);
  }

  setLimits(limits: AuditLimits): void {
    this.limits = limits;
  }

  /** Append one entry, durably; returns it with its seq and time. Throws when the disk refuses. */
  record(input: AuditEntryInput): AuditEntry {
    return this.locked(() => {
      // Read under the lock: another process may have appended since.
      const entry: AuditEntry = { seq: this.lastSeq() + 1, at: new Date().toISOString(), ...input };
      // A line torn by a power cut: the entry starts on a line of its own.
      const line = `${endsTorn(this.file) ? '\n' : ''}${JSON.stringify(entry)}\n`;
      const size = fs.existsSync(this.file) ? fs.statSync(this.file).size : 0;
      if (size > 0 && size + Buffer.byteLength(line) > this.limits.maxBytes) this.rotate();
      const fd = fs.openSync(this.file, 'a', 0o640);
      try {
        fs.writeSync(fd, line);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      return entry;
    });
  }

  /**
   * Run `work` holding the lock file (created exclusively, holding our pid). A lock whose process
   * is gone (killed mid-append) is taken over; one held longer than LOCK_WAIT_MS is an error.
   */
  private locked<T>(work: () => T): T {
    const deadline = Date.now() + LOCK_WAIT_MS;
    // Made by the first append, not the constructor: building the daemon writes nothing.
    fs.mkdirSync(this.dir, { recursive: true });
    for (;;) {
      try {
        fs.writeFileSync(this.lockFile, String(process.pid), { flag: 'wx', mode: 0o640 });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (holderGone(this.lockFile)) {
          fs.rmSync(this.lockFile, { force: true });
          continue;
        }
        if (Date.now() > deadline) throw new Error(`the audit log is locked by another process for over ${LOCK_WAIT_MS} ms (${this.lockFile})`);
        Atomics.wait(SLEEPER, 0, 0, 2);
      }
    }
    try {
      return work();
    } finally {
      fs.rmSync(this.lockFile, { force: true });
    }
  }

  /** record(), but a disk that refuses is logged, never thrown: the change it describes still happens. */
  tryRecord(input: AuditEntryInput, log: Logger): void {
    try {
      this.record(input);
    } catch (err) {
      log.error({ err: (err as Error).message, entry: input.kind }, 'audit entry not written');
    }
  }

  /** Up to `limit` entries older than seq `before` (all when absent), newest first. */
  read(options: { before?: number | null; limit?: number } = {}): AuditPage {
    const limit = Math.max(1, Math.min(MAX_AUDIT_PAGE, options.limit ?? 20));
    const before = options.before ?? Number.POSITIVE_INFINITY;
    const entries: AuditEntry[] = [];
    // Newest file first; within a file, lines are in seq order.
    for (const file of this.files()) {
      const older = parseLines(file).filter((e) => e.seq < before).reverse();
      entries.push(...older.slice(0, limit + 1 - entries.length));
      if (entries.length > limit) break;
    }
    const page = entries.slice(0, limit);
    return { entries: page, next: entries.length > limit ? page[page.length - 1]!.seq : null };
  }

  private files(): string[] {
    const rotated = Array.from({ length: this.limits.keepFiles }, (_, i) => `${this.file}.${i + 1}`);
    return [this.file, ...rotated].filter((f) => fs.existsSync(f));
  }

  private rotate(): void {
    const { keepFiles } = this.limits;
    fs.rmSync(`${this.file}.${keepFiles}`, { force: true });
    for (let i = keepFiles - 1; i >= 1; i--) {
      if (fs.existsSync(`${this.file}.${i}`)) fs.renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    }
    fs.renameSync(this.file, `${this.file}.1`);
    // The renames must survive a power cut as well as the lines.
    syncDirectoryOf(this.file);
  }

  /** The newest entry's seq: from the tail of the newest file that has one (entries are short). */
  private lastSeq(): number {
    for (const file of this.files()) {
      const entries = parseLines(file, TAIL_BYTES);
      if (entries.length > 0) return entries[entries.length - 1]!.seq;
    }
    return 0;
  }

}

/** The lock's process is gone (or the file is empty or unreadable past a moment's grace). */
function holderGone(lockFile: string): boolean {
  let text: string;
  try {
    text = fs.readFileSync(lockFile, 'utf8');
  } catch {
    return false; // released meanwhile: the next try takes it
  }
  const pid = Number(text);
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    // Created and not yet written by its holder, or torn: stale only once it is old.
    try {
      return Date.now() - fs.statSync(lockFile).mtimeMs > 1000;
    } catch {
      return false;
    }
  }
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function readText(file: string, tailBytes?: number): string {
  const size = fs.statSync(file).size;
  if (tailBytes === undefined || size <= tailBytes) return fs.readFileSync(file, 'utf8');
  const fd = fs.openSync(file, 'r');
  try {
    const tail = Buffer.alloc(tailBytes);
    fs.readSync(fd, tail, 0, tailBytes, size - tailBytes);
    // The first line is most likely cut: skipped as torn.
    return tail.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

function endsTorn(file: string): boolean {
  if (!fs.existsSync(file) || fs.statSync(file).size === 0) return false;
  const fd = fs.openSync(file, 'r');
  try {
    const last = Buffer.alloc(1);
    fs.readSync(fd, last, 0, 1, fs.fstatSync(fd).size - 1);
    return last[0] !== 0x0a;
  } finally {
    fs.closeSync(fd);
  }
}

/** Bytes from the end of a file enough to hold its last whole entries. */
const TAIL_BYTES = 256 * 1024;

/** The entries of one file (of its last `tailBytes` only, when given); a torn line is skipped. */
function parseLines(file: string, tailBytes?: number): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (const line of readText(file, tailBytes).split('\n')) {
    if (!line) continue;
    try {
      const entry = JSON.parse(line) as AuditEntry;
      if (Number.isSafeInteger(entry.seq)) out.push(entry);
    } catch {
      // torn line
    }
  }
  return out;
}

/** The changed keys with their old and new values as config/get shows them (secrets redacted). */
export function auditChanges(before: AppConfig, after: AppConfig, keys: string[]): AuditChange[] {
  const shownBefore = redact(before);
  const shownAfter = redact(after);
  return keys.map((key) => ({ key, old: valueAt(shownBefore, key) ?? null, new: valueAt(shownAfter, key) ?? null }));
}

/** sha256 of the key's SPKI DER, "SHA256:" + base64 as ssh-keygen -l writes it; null when unusable. */
export function keyFingerprint(publicKey: string): string | null {
  if (publicKey.trim() === '') return null;
  try {
    const der = parsePublicKey(publicKey).export({ type: 'spki', format: 'der' });
    return `SHA256:${crypto.createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
  } catch {
    return null;
  }
}
