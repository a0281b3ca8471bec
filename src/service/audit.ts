// The audit trail: every change of configuration or model and every golden-sample run, appended to
// <stateDir>/audit/audit.jsonl as one JSON line each, fsynced before record() returns, rotated to
// audit.jsonl.1.. when the file would pass audit.maxBytes. Other parts (recipes, the console) call
// record() with what they changed; readers page through it newest first (audit/get, `crad-edge audit`).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { IPublishPacket } from 'mqtt';
import { redact, type AppConfig } from '../config/load.js';
import { parsePublicKey } from '../config/remote.js';
import { valueAt } from '../config/schema.js';

/**
 * Who made a change:
 * - mqtt: a command's sender. MQTT 5 PUBLISH carries no sender id, so clientId is what the sender
 *   says: the user property "client-id" (clientIdFrom "user-property"), else a "clientId" field
 *   of the request (clientIdFrom "payload"), else absent. keyFingerprint names the Ed25519 key that
 *   signed the request, which is the only proof of origin.
 * - file: the operator's files (config file, a model file replaced on disk).
 * - console: a console user (username).
 * - daemon: the daemon itself (start-up checks, probation rollbacks).
 * - cli: a local command (`crad-edge validate`).
 */
export interface AuditActor {
  kind: 'mqtt' | 'file' | 'console' | 'daemon' | 'cli';
  clientId?: string;
  clientIdFrom?: 'user-property' | 'payload';
  keyFingerprint?: string;
  file?: string;
  username?: string;
}

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

export class AuditLog {
  readonly file: string;
  private seq: number;
  /** The file ends in a line torn by a power cut: the next entry starts on a line of its own. */
  private tornTail: boolean;

  constructor(readonly dir: string, private limits: AuditLimits) {
    this.file = path.join(dir, FILE_NAME);
    fs.mkdirSync(dir, { recursive: true });
    this.seq = this.lastSeq();
    this.tornTail = endsTorn(this.file);
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
    const entry: AuditEntry = { seq: this.seq + 1, at: new Date().toISOString(), ...input };
    const line = `${this.tornTail ? '\n' : ''}${JSON.stringify(entry)}\n`;
    const size = fs.existsSync(this.file) ? fs.statSync(this.file).size : 0;
    if (size > 0 && size + Buffer.byteLength(line) > this.limits.maxBytes) this.rotate();
    const fd = fs.openSync(this.file, 'a', 0o640);
    try {
      fs.writeSync(fd, line);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.seq = entry.seq;
    this.tornTail = false;
    return entry;
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
    const dirFd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  }

  private lastSeq(): number {
    for (const file of this.files()) {
      const entries = parseLines(file);
      if (entries.length > 0) return entries[entries.length - 1]!.seq;
    }
    return 0;
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

/** The entries of one file; a line torn by a power cut is skipped. */
function parseLines(file: string): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
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

/** The sender of an MQTT command as far as it says (see AuditActor). */
export function mqttActor(properties: IPublishPacket['properties'] | undefined, payload: Buffer | null, signedWith: string | null): AuditActor {
  const actor: AuditActor = { kind: 'mqtt' };
  const property = properties?.userProperties?.['client-id'];
  const fromProperty = Array.isArray(property) ? property[0] : property;
  if (typeof fromProperty === 'string' && fromProperty !== '') {
    actor.clientId = fromProperty.slice(0, 256);
    actor.clientIdFrom = 'user-property';
  } else {
    const fromPayload = payloadClientId(payload);
    if (fromPayload) {
      actor.clientId = fromPayload;
      actor.clientIdFrom = 'payload';
    }
  }
  if (signedWith) actor.keyFingerprint = signedWith;
  return actor;
}

function payloadClientId(payload: Buffer | null): string | null {
  if (!payload) return null;
  try {
    const clientId = (JSON.parse(payload.toString('utf8')) as { clientId?: unknown } | null)?.clientId;
    return typeof clientId === 'string' && clientId !== '' ? clientId.slice(0, 256) : null;
  } catch {
    return null;
  }
}
