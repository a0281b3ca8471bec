// The store-and-forward outbox: every result is written here before it is published and deleted
// only when the broker acknowledges it, so results survive a broker outage, a daemon restart and
// a power cut. One SQLite file (better-sqlite3), WAL journal: a commit is on disk before the
// publisher sends what it wrote. The commit itself only writes the WAL (synchronous=NORMAL); its
// fsync runs on libuv's pool (sync()), covering every commit made before it (group commit), and
// the sender asks next() only for rows whose commit that fsync has covered (durableId). Same guarantee as FULL, without
// an fsync per result on the main thread that session.run also needs.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { syncDirectoryOf } from '../shared/atomic-write.js';
import type { Logger } from '../shared/log.js';

export type OutboxKind = 'result' | 'image';

export interface OutboxEntry {
  kind: OutboxKind;
  /** The result's message id; a result's images share it (they are dropped together). */
  messageId: string;
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  /** What the sender needs besides the payload (JSON-serialisable). */
  meta: Record<string, unknown>;
  /** Capture time, epoch ms (fractional): the age limit and the capture-to-publish latency use it. */
  createdAt: number;
  /** Appended while the broker was connected (false: it waits for a replay). */
  live: boolean;
}

export interface OutboxRow extends OutboxEntry {
  /** Insertion order; never reused (AUTOINCREMENT), so "after id N" is a stable cursor. */
  id: number;
}

export interface OutboxLimits {
  maxBytes: number;
  maxAgeMs: number;
}

export interface OutboxCounts {
  pending: number;
  pendingResults: number;
  pendingBytes: number;
  oldestCreatedAt: number | null;
  droppedResults: number;
  droppedImages: number;
  rejected: number;
}

interface DbRow {
  id: number;
  kind: OutboxKind;
  message_id: string;
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  meta: string;
  created_at: number;
  live: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL CHECK (kind IN ('result', 'image')),
  message_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  qos INTEGER NOT NULL,
  retain INTEGER NOT NULL,
  meta TEXT NOT NULL,
  created_at REAL NOT NULL,
  live INTEGER NOT NULL,
  bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_created_at ON messages (created_at);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`;

type Counter = 'dropped_result' | 'dropped_image' | 'rejected';

export class Outbox {
  private readonly db: Database.Database;
  private limits: OutboxLimits;
  private pendingBytes = 0;
  private pendingResults = 0;
  private pending = 0;
  private readonly counters: Record<Counter, number> = { dropped_result: 0, dropped_image: 0, rejected: 0 };
  private readonly statements;
  /** The WAL file, opened for fsync only (SQLite keeps it, same inode, while the outbox is open). */
  private walFd: number | null = null;
  /** Highest row id committed (in the WAL), and highest whose commit an fsync has covered. */
  private committedId = 0;
  private durable = 0;
  private syncing: Promise<void> | null = null;
  private queuedSync: Promise<void> | null = null;

  constructor(readonly file: string, limits: OutboxLimits, private readonly log: Logger) {
    validateLimits(limits);
    this.limits = { ...limits };
    this.db = openDatabase(file, log);
    this.statements = {
      insert: this.db.prepare(
        'INSERT INTO messages (kind, message_id, topic, payload, qos, retain, meta, created_at, live, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      remove: this.db.prepare('DELETE FROM messages WHERE id = ? RETURNING kind, bytes'),
      removeGroup: this.db.prepare('DELETE FROM messages WHERE message_id = ? RETURNING kind, bytes'),
      removeOlder: this.db.prepare('DELETE FROM messages WHERE created_at < ? RETURNING kind, bytes'),
      oldest: this.db.prepare('SELECT message_id FROM messages ORDER BY id LIMIT 1'),
      oldestCreated: this.db.prepare('SELECT MIN(created_at) AS t FROM messages'),
      next: this.db.prepare('SELECT * FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?'),
      bump: this.db.prepare(
        'INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value',
      ),
      clearLive: this.db.prepare('UPDATE messages SET live = 0 WHERE live = 1'),
      maxId: this.db.prepare('SELECT MAX(id) AS id FROM messages'),
    };
    const totals = this.db
      .prepare("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS bytes, COALESCE(SUM(kind = 'result'), 0) AS results FROM messages")
      .get() as { n: number; bytes: number; results: number };
    this.pending = totals.n;
    this.pendingBytes = totals.bytes;
    this.pendingResults = totals.results;
    for (const row of this.db.prepare('SELECT name, value FROM counters').all() as { name: Counter; value: number }[]) {
      if (row.name in this.counters) this.counters[row.name] = row.value;
    }
    // Whatever a previous run left behind is a replay now, whatever it was when written.
    this.statements.clearLive.run();
    // What a killed run committed may still be only in the page cache: on disk before it is sent.
    this.walFd = fs.openSync(`${file}-wal`, 'r');
    fs.fsyncSync(this.walFd);
    syncDirectoryOf(file);
    this.committedId = this.durable = this.maxId();
  }

  setLimits(limits: OutboxLimits): void {
    validateLimits(limits);
    this.limits = { ...limits };
  }

  /**
   * One transaction (one fsync): append new messages, remove acknowledged (or rejected) ones, and
   * enforce the limits (oldest dropped first, a result together with its images). Returns the ids of
   * the appended rows, in order.
   */
  commit(appends: OutboxEntry[], acknowledged: number[], rejected: number[] = [], now = Date.now()): number[] {
    return this.db.transaction(() => {
      const ids: number[] = [];
      for (const e of appends) {
        const meta = JSON.stringify(e.meta);
        const bytes = e.payload.length + Buffer.byteLength(e.topic) + Buffer.byteLength(meta) + e.messageId.length;
        const info = this.statements.insert.run(
          e.kind, e.messageId, e.topic, e.payload, e.qos, e.retain ? 1 : 0, meta, e.createdAt, e.live ? 1 : 0, bytes,
        );
        ids.push(Number(info.lastInsertRowid));
        this.account(e.kind, bytes, +1);
      }
      if (ids.length > 0) this.committedId = ids.at(-1)!;
      for (const id of acknowledged) this.forget(this.statements.remove.all(id));
      for (const id of rejected) {
        const gone = this.statements.remove.all(id) as { kind: OutboxKind; bytes: number }[];
        this.forget(gone);
        if (gone.length > 0) this.bump('rejected', gone.length);
      }
      this.enforceLimits(now);
      return ids;
    })();
  }

  /** Drop messages older than the age limit; returns how many were dropped. */
  pruneByAge(now = Date.now()): number {
    return this.db.transaction(() => this.dropOlderThan(now - this.limits.maxAgeMs))();
  }

  /**
   * fsync the WAL on libuv's pool: every commit made before this call is durable when it resolves.
   * Calls while one runs share the next one (group commit); rejects when the fsync fails (the
   * rows stay unsent and the next sync tries again).
   */
  sync(): Promise<void> {
    if (this.queuedSync) return this.queuedSync;
    const previous = this.syncing ?? Promise.resolve();
    const next: Promise<void> = previous
      .catch(() => undefined)
      .then(async () => {
        this.queuedSync = null;
        this.syncing = next;
        const upTo = this.committedId;
        const fd = this.walFd;
        if (fd === null) throw new Error(`outbox ${this.file} is closed`);
        await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
        this.durable = Math.max(this.durable, upTo);
      })
      .finally(() => {
        if (this.syncing === next) this.syncing = null;
      });
    this.queuedSync = next;
    return next;
  }

  /** Whether some commit is not yet covered by a finished fsync. */
  get unsynced(): boolean {
    return this.committedId > this.durable;
  }

  /** Highest row id committed (written to the WAL), fsynced or not. */
  get lastCommittedId(): number {
    return this.committedId;
  }

  /** Rows up to this id are on disk (their commit fsynced): the ones that may be sent. */
  get durableId(): number {
    return this.durable;
  }

  /** Up to `limit` rows after `afterId` and up to `upTo`, in insertion (capture) order. */
  next(afterId: number, limit: number, upTo = Number.MAX_SAFE_INTEGER): OutboxRow[] {
    const rows = this.statements.next.all(afterId, upTo, limit) as DbRow[];
    return rows.map((r) => ({
      id: r.id,
      kind: r.kind,
      messageId: r.message_id,
      topic: r.topic,
      payload: r.payload,
      qos: r.qos as 0 | 1 | 2,
      retain: r.retain === 1,
      meta: JSON.parse(r.meta) as Record<string, unknown>,
      createdAt: r.created_at,
      live: r.live === 1,
    }));
  }

  /** The highest id stored, 0 when empty. */
  maxId(): number {
    return (this.statements.maxId.get() as { id: number | null }).id ?? 0;
  }

  /** Mark every stored row as a replay (called when the broker connection is lost). */
  markAllReplayed(): void {
    this.statements.clearLive.run();
  }

  counts(): OutboxCounts {
    const oldest = this.pending > 0 ? (this.statements.oldestCreated.get() as { t: number | null }).t : null;
    return {
      pending: this.pending,
      pendingResults: this.pendingResults,
      pendingBytes: this.pendingBytes,
      oldestCreatedAt: oldest,
      droppedResults: this.counters.dropped_result,
      droppedImages: this.counters.dropped_image,
      rejected: this.counters.rejected,
    };
  }

  close(): void {
    // Closing checkpoints the WAL into the database file with fsyncs, unsent commits included.
    if (this.db.open) this.db.close();
    if (this.walFd !== null) fs.closeSync(this.walFd);
    this.walFd = null;
  }

  private enforceLimits(now: number): void {
    this.dropOlderThan(now - this.limits.maxAgeMs);
    while (this.pendingBytes > this.limits.maxBytes) {
      const oldest = this.statements.oldest.get() as { message_id: string } | undefined;
      if (!oldest) break;
      const gone = this.statements.removeGroup.all(oldest.message_id) as { kind: OutboxKind; bytes: number }[];
      this.countDropped(gone, 'byte limit');
    }
  }

  private dropOlderThan(cutoff: number): number {
    const gone = this.statements.removeOlder.all(cutoff) as { kind: OutboxKind; bytes: number }[];
    this.countDropped(gone, 'age limit');
    return gone.length;
  }

  private countDropped(gone: { kind: OutboxKind; bytes: number }[], why: string): void {
    if (gone.length === 0) return;
    this.forget(gone);
    const results = gone.filter((g) => g.kind === 'result').length;
    if (results > 0) this.bump('dropped_result', results);
    if (gone.length > results) this.bump('dropped_image', gone.length - results);
    this.log.warn({ results, images: gone.length - results, limit: why }, `outbox full: dropped the oldest messages (${why})`);
  }

  private forget(gone: unknown[]): void {
    for (const g of gone as { kind: OutboxKind; bytes: number }[]) this.account(g.kind, g.bytes, -1);
  }

  private account(kind: OutboxKind, bytes: number, sign: 1 | -1): void {
    this.pending += sign;
    this.pendingBytes += sign * bytes;
    if (kind === 'result') this.pendingResults += sign;
  }

  private bump(name: Counter, by: number): void {
    this.statements.bump.run(name, by);
    this.counters[name] += by;
  }
}

function validateLimits(limits: OutboxLimits): void {
  if (!(limits.maxBytes > 0)) throw new Error(`outbox.maxBytes must be > 0 (got ${limits.maxBytes})`);
  if (!(limits.maxAgeMs > 0)) throw new Error(`outbox.maxAgeHours must be > 0 (got ${limits.maxAgeMs / 3_600_000})`);
}

/**
 * Open (or create) the outbox file. A file SQLite cannot read (not a database, corrupt after a
 * storage failure) is moved aside and replaced, so one bad file cannot keep the daemon from
 * publishing; the log says where the old one went.
 */
function openDatabase(file: string, log: Logger): Database.Database {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  try {
    return initialise(new Database(file));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'SQLITE_BUSY') {
      throw new Error(`outbox ${file} is in use by another process (is a second crad-edge running?)`);
    }
    if (code !== 'SQLITE_NOTADB' && code !== 'SQLITE_CORRUPT') {
      throw new Error(`cannot open outbox ${file}: ${(err as Error).message}`);
    }
    const aside = `${file}.corrupt-${Date.now()}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (fs.existsSync(file + suffix)) fs.renameSync(file + suffix, aside + suffix);
    }
    log.error({ file, movedTo: aside, err: (err as Error).message }, 'outbox file unreadable: moved aside, starting an empty outbox');
    return initialise(new Database(file));
  }
}

function initialise(db: Database.Database): Database.Database {
  try {
    // Exclusive locking: a second daemon on the same file fails loudly instead of double-sending.
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('busy_timeout = 1000');
    db.pragma('journal_mode = WAL');
    // NORMAL: a commit writes the WAL without fsync; Outbox.sync() does the fsync off the main
    // thread and next() sends nothing before it, so a power cut loses nothing that a subscriber
    // may already have seen. Checkpoints still fsync (SQLite does that in NORMAL too).
    db.pragma('synchronous = NORMAL');
    db.exec(SCHEMA);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
