// The NG archive on a real disk: what an entry holds, retention by count, bytes, age and the
// free-disk floor (oldest first, counted by reason), a folder that cannot be written (as root
// too), a full queue, and a caller that is never thrown at.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import cv from '../src/cv.js';
import { Archive, type ArchiveOptions } from '../src/console/archive.js';
import { capturingLogger } from './fixtures/frames.js';
import { tempDir } from './helpers/cleanup.js';
import { resultMaker, type ResultMaker } from './helpers/results.js';

let maker: ResultMaker;
before(async () => {
  maker = await resultMaker();
});
after(() => maker.release());

const HOUR = 3_600_000;

function options(dir: string, overrides: Partial<ArchiveOptions> = {}): ArchiveOptions {
  return { dir, verdicts: ['NG'], maxCount: 1000, maxBytes: 1 << 30, maxAgeHours: 0, minFreeBytes: 0, queue: 8, quality: 90, ...overrides };
}

/** An archive on its own clock (`clock.now` is moved by the test). */
async function openArchive(opts: ArchiveOptions) {
  const clock = { now: Date.parse('2024-05-01T08:00:00.000Z') };
  const logs = capturingLogger();
  const archive = new Archive(opts, logs.log, () => clock.now);
  await archive.open();
  return { archive, clock, logs };
}

/** Offer one result and wait until it is written; returns its sequence number. */
async function archiveOne(archive: Archive, verdict: 'NG' | 'OK' = 'NG'): Promise<number> {
  const { result, image } = await maker.make(verdict);
  archive.offer(result, image);
  image.release(); // as the pipeline does right after the sink returns
  await archive.idle();
  return result.frame.sequence;
}

const sequences = (archive: Archive): number[] => archive.list(0, 1000).entries.map((e) => e.sequence).reverse();

test('an NG result is archived whole (frame, overlay, JSON); an OK one is not', async () => {
  const dir = path.join(tempDir('archive'), 'archive');
  const { archive } = await openArchive(options(dir));
  const sequence = await archiveOne(archive);
  await archiveOne(archive, 'OK');
  const { total, entries } = archive.list(0, 10);
  assert.equal(total, 1);
  const entry = entries[0]!;
  assert.equal(entry.sequence, sequence);
  assert.equal(entry.verdict, 'NG');
  assert.ok(entry.regions.length > 0);
  const frame = cv.imdecode(fs.readFileSync(archive.file(entry.id, 'frame')!));
  assert.deepEqual([frame.cols, frame.rows], [96, 64]);
  frame.release();
  assert.ok(fs.statSync(archive.file(entry.id, 'overlay')!).size > 0);
  const json = JSON.parse(fs.readFileSync(archive.file(entry.id, 'json')!, 'utf8')) as Record<string, unknown>;
  assert.equal(json.id, entry.id);
  assert.equal(json.camera, 'cam1');
  assert.equal(archive.status().bytes, fs.readdirSync(dir).reduce((sum, name) => sum + fs.statSync(path.join(dir, name)).size, 0));
  await archive.close();

  // A new run finds the entry; a write cut short (a frame without its JSON) is cleaned away.
  fs.writeFileSync(path.join(dir, '20240501T070000000Z-000001.frame.jpg'), 'partial');
  const again = await openArchive(options(dir));
  assert.deepEqual(again.archive.list(0, 10).entries.map((e) => e.id), [entry.id]);
  assert.equal(fs.existsSync(path.join(dir, '20240501T070000000Z-000001.frame.jpg')), false);
  await again.archive.close();
});

test('retention by count deletes the oldest first and counts them', async () => {
  const dir = tempDir('archive-count');
  const { archive } = await openArchive(options(dir, { maxCount: 3 }));
  const written: number[] = [];
  for (let i = 0; i < 5; i++) written.push(await archiveOne(archive));
  assert.deepEqual(sequences(archive), written.slice(2));
  assert.equal(archive.status().deleted.count, 2);
  assert.equal(fs.readdirSync(dir).filter((n) => n.endsWith('.json')).length, 3);
  await archive.close();
});

test('retention by bytes deletes the oldest first and counts them', async () => {
  const dir = tempDir('archive-bytes');
  const { archive } = await openArchive(options(dir));
  await archiveOne(archive);
  const one = archive.status().bytes;
  // Entries of this fixture differ by a few bytes at most (the JSON's numbers): room for two.
  archive.updateLive(options(dir, { maxBytes: Math.round(one * 2.5) }));
  const written: number[] = [];
  for (let i = 0; i < 3; i++) written.push(await archiveOne(archive));
  assert.deepEqual(sequences(archive), written.slice(1));
  assert.equal(archive.status().deleted.bytes, 2);
  assert.ok(archive.status().bytes <= Math.round(one * 2.5));
  await archive.close();
});

test('retention by age deletes what is older than maxAgeHours', async () => {
  const dir = tempDir('archive-age');
  const { archive, clock } = await openArchive(options(dir, { maxAgeHours: 1 }));
  await archiveOne(archive);
  clock.now += HOUR / 2;
  const kept = await archiveOne(archive);
  clock.now += HOUR / 2 + 1000;
  const newest = await archiveOne(archive);
  assert.deepEqual(sequences(archive), [kept, newest]);
  assert.equal(archive.status().deleted.age, 1);
  await archive.close();
});

test('below the free-disk floor the oldest go, then nothing is written: reported once, counted', async () => {
  const dir = tempDir('archive-floor');
  const { archive, logs } = await openArchive(options(dir));
  for (let i = 0; i < 3; i++) await archiveOne(archive);
  const stats = fs.statfsSync(dir);
  // More free space than this filesystem has in all.
  archive.updateLive(options(dir, { minFreeBytes: stats.blocks * stats.bsize + 1 }));
  await archiveOne(archive);
  await archiveOne(archive);
  const status = archive.status();
  assert.equal(status.entries, 0);
  assert.equal(status.deleted.freeDisk, 3);
  assert.equal(status.dropped.diskFloor, 2);
  assert.match(status.problem ?? '', /minFreeBytes/);
  assert.equal(fs.readdirSync(dir).length, 0);
  assert.equal(logs.lines().filter((l) => l.msg === 'archive cannot write').length, 1);
  await archive.close();
});

test('a folder that cannot be created is reported once, counted, survived, and recovered from', async () => {
  const root = tempDir('archive-ro');
  // A regular file where the archive's parent folder should be: mkdir fails even as root.
  const blocker = path.join(root, 'blocker');
  fs.writeFileSync(blocker, '');
  const dir = path.join(blocker, 'archive');
  const { archive, logs } = await openArchive(options(dir));
  await archiveOne(archive);
  await archiveOne(archive);
  let status = archive.status();
  assert.equal(status.dropped.failed, 2);
  assert.equal(status.entries, 0);
  assert.match(status.problem ?? '', /cannot write/);
  assert.equal(logs.lines().filter((l) => l.msg === 'archive cannot write').length, 1);

  fs.rmSync(blocker);
  fs.mkdirSync(blocker);
  await archiveOne(archive);
  status = archive.status();
  assert.equal(status.entries, 1);
  assert.equal(status.problem, null);
  assert.equal(logs.lines().filter((l) => l.msg === 'archive writes again').length, 1);
  await archive.close();
});

test('a full queue drops the result (counted) instead of making the caller wait', async () => {
  const dir = tempDir('archive-queue');
  const { archive } = await openArchive(options(dir, { queue: 1 }));
  const made = await Promise.all([1, 2, 3, 4].map(() => maker.make('NG')));
  // All offered before any write could finish: the first takes the one place.
  for (const { result, image } of made) archive.offer(result, image);
  for (const { image } of made) image.release();
  await archive.idle();
  assert.equal(archive.status().dropped.queueFull, 3);
  assert.equal(archive.status().entries, 1);
  await archive.close();
});

test('offer never throws into the pipeline, whatever it is handed', async () => {
  const dir = tempDir('archive-bad');
  const { archive } = await openArchive(options(dir));
  const { result, image } = await maker.make('NG');
  image.release();
  assert.doesNotThrow(() => archive.offer(result, image)); // a released (empty) Mat
  assert.doesNotThrow(() => archive.offer(result, {} as never)); // not a Mat at all
  await archive.idle();
  assert.equal(archive.status().dropped.failed, 2);
  assert.equal(archive.status().entries, 0);
  await archive.close();
});
