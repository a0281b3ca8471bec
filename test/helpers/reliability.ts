// Shared pieces of the real-process reliability tests: a finite image folder (so the expected
// results are known exactly), a read-only look into the daemon's outbox, and result bookkeeping
// by messageId.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { tempDir } from './cleanup.js';
import type { Received } from './publish-fixtures.js';
import { samplesDir } from './daemon.js';

/** A temp folder of `count` images (symlinks to the samples, in a fixed name order). */
export function imageFolder(count: number, dir = tempDir('images')): string {
  const samples = fs.readdirSync(samplesDir).filter((f) => f.endsWith('.png')).sort();
  if (samples.length === 0) throw new Error(`no .png samples in ${samplesDir}`);
  for (let i = 0; i < count; i++) {
    fs.symlinkSync(path.join(samplesDir, samples[i % samples.length]!), path.join(dir, `img-${String(i).padStart(4, '0')}.png`));
  }
  return dir;
}

export interface ResultSeen {
  messageId: string;
  camera: string;
  sequence: number;
  capturedAt: number;
  replayed: boolean;
  /** The broker's own redelivery to this subscriber (MQTT DUP flag), e.g. after a broker restart. */
  brokerRedelivery: boolean;
  /** Index in the subscriber's message list (arrival order). */
  index: number;
  json: any;
}

/** Every result message under `prefix` in arrival order (duplicates included). */
export function resultMessages(messages: Received[], prefix: string): ResultSeen[] {
  const out: ResultSeen[] = [];
  messages.forEach((m, index) => {
    if (!m.topic.startsWith(`${prefix}/`) || !m.topic.endsWith('/result') || !m.json) return;
    out.push({
      messageId: m.json.messageId,
      camera: m.json.camera,
      sequence: m.json.sequence,
      capturedAt: Date.parse(m.json.capturedAt),
      replayed: m.json.replayed,
      brokerRedelivery: m.packet.dup === true,
      index,
      json: m.json,
    });
  });
  return out;
}

/** The first copy of each messageId, in arrival order. */
export function firstCopies(results: ResultSeen[]): ResultSeen[] {
  const seen = new Set<string>();
  return results.filter((r) => (seen.has(r.messageId) ? false : (seen.add(r.messageId), true)));
}

/** Sequence numbers a camera's results miss between 1 and `upTo` (or their maximum). */
export function missingSequences(results: ResultSeen[], camera: string, upTo?: number): number[] {
  const got = new Set(results.filter((r) => r.camera === camera).map((r) => r.sequence));
  const last = upTo ?? Math.max(0, ...got);
  const missing: number[] = [];
  for (let s = 1; s <= last; s++) if (!got.has(s)) missing.push(s);
  return missing;
}

export interface OutboxResultRow {
  id: number;
  messageId: string;
  camera: string;
  sequence: number;
  live: boolean;
}

/**
 * The results a daemon's outbox file holds, read without changing it (read-only connection, no
 * checkpoint). Only for a file no process has open: the daemon locks it exclusively.
 */
export function outboxResults(file: string): { rows: OutboxResultRow[]; counters: Record<string, number> } {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const rows = (db.prepare("SELECT id, message_id, meta, live FROM messages WHERE kind = 'result' ORDER BY id").all() as {
      id: number; message_id: string; meta: string; live: number;
    }[]).map((r) => {
      const meta = JSON.parse(r.meta) as { camera: string; sequence: number };
      return { id: r.id, messageId: r.message_id, camera: meta.camera, sequence: meta.sequence, live: r.live === 1 };
    });
    const counters = Object.fromEntries(
      (db.prepare('SELECT name, value FROM counters').all() as { name: string; value: number }[]).map((c) => [c.name, c.value]),
    );
    return { rows, counters };
  } finally {
    db.close();
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A short description of what a camera's results look like, for failure messages. */
export function describeResults(results: ResultSeen[], camera: string): string {
  return results
    .filter((r) => r.camera === camera)
    .map((r) => `${r.sequence}${r.replayed ? 'r' : ''}`)
    .join(' ');
}
