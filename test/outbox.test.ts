import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Outbox, type OutboxEntry } from '../src/publish/outbox.js';
import { createLogger } from '../src/shared/log.js';
import { tempDir } from './helpers/cleanup.js';

const log = createLogger('silent');
const dir = tempDir('publish');
const LIMITS = { maxBytes: 1_000_000, maxAgeMs: 3_600_000 };
let fileNo = 0;
const newFile = () => path.join(dir, `outbox-${++fileNo}.sqlite`);

function entry(messageId: string, kind: 'result' | 'image' = 'result', size = 100, createdAt = Date.now()): OutboxEntry {
  return {
    kind, messageId, topic: `t/${messageId}/${kind}`, payload: Buffer.alloc(size, 7), qos: 1, retain: false,
    meta: { note: messageId }, createdAt, live: true,
  };
}

test('rows come back in insertion order with their fields, and acknowledged rows are gone', () => {
  const outbox = new Outbox(newFile(), LIMITS, log);
  const ids = outbox.commit([entry('a'), entry('a', 'image', 50), entry('b')], []);
  assert.equal(ids.length, 3);
  assert.ok(ids[0]! < ids[1]! && ids[1]! < ids[2]!);
  const rows = outbox.next(0, 10);
  assert.deepEqual(rows.map((r) => [r.messageId, r.kind, r.payload.length]), [['a', 'result', 100], ['a', 'image', 50], ['b', 'result', 100]]);
  assert.deepEqual(rows[0]!.meta, { note: 'a' });
  assert.equal(rows[0]!.live, true);
  assert.deepEqual(outbox.next(ids[0]!, 1).map((r) => r.id), [ids[1]]);
  outbox.commit([], [ids[0]!, ids[1]!]);
  assert.deepEqual(outbox.next(0, 10).map((r) => r.messageId), ['b']);
  const counts = outbox.counts();
  assert.equal(counts.pending, 1);
  assert.equal(counts.pendingResults, 1);
  outbox.close();
});

test('ids are never reused, so a send cursor stays valid after the newest row is deleted', () => {
  const outbox = new Outbox(newFile(), LIMITS, log);
  const [first] = outbox.commit([entry('a')], []);
  outbox.commit([], [first!]);
  const [second] = outbox.commit([entry('b')], []);
  assert.ok(second! > first!, `id ${second} reused or lower than deleted id ${first}`);
  outbox.close();
});

test('the byte limit drops the oldest results first, with their images, and counts them', () => {
  const outbox = new Outbox(newFile(), { ...LIMITS, maxBytes: 2500 }, log);
  outbox.commit([entry('r1', 'result', 800), entry('r1', 'image', 400)], []);
  outbox.commit([entry('r2', 'result', 800)], []);
  assert.equal(outbox.counts().droppedResults, 0);
  outbox.commit([entry('r3', 'result', 800)], []); // about 2900 bytes with r1 still there
  assert.deepEqual(outbox.next(0, 10).map((r) => r.messageId), ['r2', 'r3']);
  const counts = outbox.counts();
  assert.equal(counts.droppedResults, 1);
  assert.equal(counts.droppedImages, 1);
  assert.ok(counts.pendingBytes <= 2500, `pendingBytes ${counts.pendingBytes} over the limit`);
  outbox.close();
});

test('the age limit drops messages captured too long ago and counts them', () => {
  const now = Date.now();
  const outbox = new Outbox(newFile(), { ...LIMITS, maxAgeMs: 60_000 }, log);
  outbox.commit([entry('old', 'result', 10, now - 120_000), entry('new', 'result', 10, now - 1000)], [], [], now - 130_000);
  assert.equal(outbox.counts().pending, 2, 'nothing is old yet at the commit time');
  assert.equal(outbox.pruneByAge(now), 1);
  assert.deepEqual(outbox.next(0, 10).map((r) => r.messageId), ['new']);
  assert.equal(outbox.counts().droppedResults, 1);
  assert.equal(outbox.counts().oldestCreatedAt, now - 1000);
  outbox.close();
});

test('pending rows, drop and reject counters survive reopening; reopened rows are replays', () => {
  const file = newFile();
  const first = new Outbox(file, { ...LIMITS, maxBytes: 500 }, log);
  first.commit([entry('x', 'result', 300)], []);
  first.commit([entry('y', 'result', 300)], []); // drops x
  const [z] = first.commit([entry('z', 'result', 10)], []);
  first.commit([], [], [z!]); // the broker refused z
  first.close();
  const second = new Outbox(file, { ...LIMITS, maxBytes: 500 }, log);
  const rows = second.next(0, 10);
  assert.deepEqual(rows.map((r) => r.messageId), ['y']);
  assert.equal(rows[0]!.live, false);
  const counts = second.counts();
  assert.equal(counts.droppedResults, 1);
  assert.equal(counts.rejected, 1);
  assert.equal(counts.pending, 1);
  assert.ok(counts.pendingBytes > 300);
  second.close();
});

test('the outbox is in WAL mode, and a second open of the same file fails naming the file', () => {
  const file = newFile();
  const outbox = new Outbox(file, LIMITS, log);
  outbox.commit([entry('a')], []);
  assert.ok(fs.existsSync(`${file}-wal`), 'a WAL file should exist next to the outbox');
  assert.throws(() => new Outbox(file, LIMITS, log), (err: Error) => err.message.includes(file) && /in use/.test(err.message));
  outbox.close();
});

test('an unreadable outbox file is moved aside and replaced by an empty one', () => {
  const file = newFile();
  fs.writeFileSync(file, 'this is not an SQLite database, just text that happens to be long enough to fail the header check');
  const outbox = new Outbox(file, LIMITS, log);
  assert.equal(outbox.counts().pending, 0);
  outbox.commit([entry('a')], []);
  outbox.close();
  const aside = fs.readdirSync(dir).filter((f) => f.startsWith(`${path.basename(file)}.corrupt-`));
  assert.equal(aside.length, 1, 'the bad file should have been kept beside the new one');
});

test('bad limits are refused with the config key named', () => {
  assert.throws(() => new Outbox(newFile(), { maxBytes: 0, maxAgeMs: 1000 }, log), /outbox.maxBytes/);
  assert.throws(() => new Outbox(newFile(), { maxBytes: 1000, maxAgeMs: 0 }, log), /outbox.maxAgeHours/);
});

test('a commit becomes sendable (durableId) only when an fsync has covered it; commits made meanwhile share the next fsync', async () => {
  const file = newFile();
  const outbox = new Outbox(file, LIMITS, log);
  try {
    const [a] = outbox.commit([entry('a')], []);
    assert.ok(outbox.unsynced);
    assert.ok(outbox.durableId < a!, 'committed, not yet fsynced: not sendable');
    assert.deepEqual(outbox.next(0, 10, outbox.durableId), []);
    const first = outbox.sync();
    // Committed while the first fsync runs: covered by the one queued after it, not by the first.
    const [b] = outbox.commit([entry('b')], []);
    const second = outbox.sync();
    assert.equal(outbox.sync(), second, 'calls during an fsync share the next one');
    await first;
    assert.ok(outbox.durableId >= a!);
    await second;
    assert.equal(outbox.durableId, b);
    assert.equal(outbox.unsynced, false);
    assert.deepEqual(outbox.next(0, 10, outbox.durableId).map((r) => r.messageId), ['a', 'b']);
    // Acknowledgements alone need no fsync before sending anything (a lost one means a resend).
    outbox.commit([], [a!]);
    assert.equal(outbox.unsynced, false);
  } finally {
    outbox.close();
  }
  const reopened = new Outbox(file, LIMITS, log);
  try {
    assert.equal(reopened.durableId, reopened.maxId(), 'what a previous run committed is fsynced at open, then sendable');
  } finally {
    reopened.close();
  }
});
