// Results the Sparkplug plane could not send live (no Sparkplug session, or its camera not born):
// kept here until they go out as historical DDATA after the next birth. Its own table, not the
// JSON outbox: the outbox deletes a row once the JSON plane's broker acknowledges it, which can
// happen long before this plane is back (it may be waiting for its primary host), so reading
// outbox rows by id would lose results. A row is deleted only after the broker confirmed its DDATA
// (a round trip on the same connection after it, see EdgeNode.replay): a session lost midway leaves
// the row for the next one. Live results whose DDATA was not confirmed when their session ended
// are written here too. SQLite (better-sqlite3), WAL, synchronous=FULL; written while the plane is
// down or at a session's end, read and deleted during a replay.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from '../shared/log.js';
import type { MetricValue } from './metrics.js';

export interface HistoryRow {
  id: number;
  cameraId: string;
  /** Capture time, epoch ms: the metrics' timestamp. */
  capturedAt: number;
  values: Record<string, MetricValue>;
}

export class History {
  private readonly db: Database.Database;
  private readonly statements;
  private pending: number;
  /** Rows dropped because the table was full. */
  dropped = 0;

  constructor(file: string, private readonly maxRows: number, private readonly log: Logger) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS history (
      id INTEGER PRIMARY KEY AUTOINCREMENT, camera TEXT NOT NULL, captured_at REAL NOT NULL, "values" TEXT NOT NULL)`);
    this.db.exec('CREATE INDEX IF NOT EXISTS history_camera ON history (camera, id)');
    this.statements = {
      insert: this.db.prepare('INSERT INTO history (camera, captured_at, "values") VALUES (?, ?, ?)'),
      next: this.db.prepare('SELECT id, camera, captured_at, "values" FROM history WHERE camera = ? ORDER BY id LIMIT ?'),
      remove: this.db.prepare('DELETE FROM history WHERE id = ?'),
      cameras: this.db.prepare('SELECT DISTINCT camera FROM history'),
      dropOldest: this.db.prepare('DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY id LIMIT ?)'),
    };
    this.pending = (this.db.prepare('SELECT COUNT(*) AS n FROM history').get() as { n: number }).n;
  }

  get size(): number {
    return this.pending;
  }

  append(cameraId: string, capturedAt: number, values: Record<string, MetricValue>): void {
    this.appendMany([{ cameraId, capturedAt, values }]);
  }

  /** Several rows in one transaction: one fsync, not one per row. */
  appendMany(rows: { cameraId: string; capturedAt: number; values: Record<string, MetricValue> }[]): void {
    if (!this.db.open) {
      // Only after the node stopped (the daemon stops the pipeline first): said and counted, no throw.
      this.dropped += rows.length;
      this.log.error({ results: rows.length }, 'Sparkplug history closed: results after the stop not kept');
      return;
    }
    this.db.transaction(() => {
      for (const r of rows) this.statements.insert.run(r.cameraId, r.capturedAt, JSON.stringify(r.values));
    })();
    this.pending += rows.length;
    if (this.pending > this.maxRows) {
      const excess = this.pending - this.maxRows;
      this.statements.dropOldest.run(excess);
      this.pending -= excess;
      this.dropped += excess;
      this.log.warn({ dropped: excess, maxRows: this.maxRows }, 'Sparkplug history full: dropped the oldest results');
    }
  }

  /** The oldest `limit` rows of a camera, in the order they were made. */
  oldest(cameraId: string, limit: number): HistoryRow[] {
    const rows = this.statements.next.all(cameraId, limit) as { id: number; camera: string; captured_at: number; values: string }[];
    return rows.map((r) => ({ id: r.id, cameraId: r.camera, capturedAt: r.captured_at, values: JSON.parse(r.values) as Record<string, MetricValue> }));
  }

  /** Every camera with rows kept (configured or not: a removed camera's results are still its own). */
  cameras(): string[] {
    return (this.statements.cameras.all() as { camera: string }[]).map((r) => r.camera);
  }

  remove(ids: number[]): void {
    this.db.transaction(() => {
      for (const id of ids) this.pending -= this.statements.remove.run(id).changes;
    })();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
