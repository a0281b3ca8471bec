// The archive and dataset routes through fastify's inject(), over a real archive and dataset
// folder: list, downloads, bad ids, mark good into the trainer's layout, read-only refusals,
// record mode and capture on demand; then the trainer itself reads the dataset folder.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import cv from '../src/cv.js';
import { Archive } from '../src/console/archive.js';
import { archiveRoutes } from '../src/console/archive-routes.js';
import { ProductionCounters } from '../src/console/counters.js';
import { DatasetCapture } from '../src/console/dataset.js';
import { capturingLogger } from './fixtures/frames.js';
import { tempDir } from './helpers/cleanup.js';
import { repoRoot } from './helpers/daemon.js';
import { resultMaker, type ResultMaker } from './helpers/results.js';

let maker: ResultMaker;
let archive: Archive;
let dataset: DatasetCapture;
let app: FastifyInstance;
let readOnlyApp: FastifyInstance;
const root = tempDir('console-routes');
const datasetDir = path.join(root, 'dataset');

async function appWith(readOnly: boolean): Promise<FastifyInstance> {
  const instance = Fastify();
  await instance.register(archiveRoutes, { prefix: '/api', archive, dataset, readOnly });
  await instance.ready();
  return instance;
}

async function feed(target: Archive | DatasetCapture, verdict: 'NG' | 'OK', count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const { result, image } = await maker.make(verdict);
    target.offer(result, image);
    image.release();
    await target.idle();
  }
}

before(async () => {
  maker = await resultMaker();
  const { log } = capturingLogger();
  archive = new Archive(
    { dir: path.join(root, 'archive'), verdicts: ['NG'], maxCount: 100, maxBytes: 1 << 30, maxAgeHours: 0, minFreeBytes: 0, queue: 8, quality: 90 },
    log,
  );
  await archive.open();
  dataset = new DatasetCapture({ dir: datasetDir, cameras: ['cam1'], recordEvery: 0, recordCameras: [] }, log);
  await feed(archive, 'NG', 3);
  app = await appWith(false);
  readOnlyApp = await appWith(true);
});
after(async () => {
  await app?.close();
  await readOnlyApp?.close();
  await archive?.close();
  await dataset?.close();
  await maker?.release();
});

const goodImages = (): string[] => (fs.existsSync(dataset.goodDir('cam1')) ? fs.readdirSync(dataset.goodDir('cam1')).sort() : []);

test('the archive lists newest first, in pages', async () => {
  const all = archive.list(0, 10).entries.map((e) => e.id);
  const res = await app.inject({ method: 'GET', url: '/api/archive?offset=1&limit=2' });
  assert.equal(res.statusCode, 200);
  const body = res.json() as { total: number; entries: Array<{ id: string }>; status: { entries: number } };
  assert.equal(body.total, 3);
  assert.deepEqual(body.entries.map((e) => e.id), all.slice(1, 3));
  assert.ok(all[0]! > all[1]! && all[1]! > all[2]!, 'ids sort by archive time');
  assert.equal((await app.inject({ method: 'GET', url: '/api/archive?limit=0' })).statusCode, 400);
  const page = await readOnlyApp.inject({ method: 'GET', url: '/api/archive.html' });
  assert.equal(page.statusCode, 200);
  assert.match(page.headers['content-type'] as string, /^text\/html/);
  assert.doesNotMatch(page.body, /https?:\/\//, 'the page loads nothing from elsewhere');
});

test('an entry\'s frame, overlay and JSON download; bad or unknown ids are 4xx', async () => {
  const id = archive.list(0, 1).entries[0]!.id;
  const frame = await app.inject({ method: 'GET', url: `/api/archive/${id}/frame.jpg` });
  assert.equal(frame.statusCode, 200);
  assert.equal(frame.headers['content-type'], 'image/jpeg');
  const decoded = cv.imdecode(frame.rawPayload);
  assert.deepEqual([decoded.cols, decoded.rows], [96, 64]);
  decoded.release();
  const overlay = await app.inject({ method: 'GET', url: `/api/archive/${id}/overlay.jpg` });
  assert.equal(overlay.statusCode, 200);
  assert.deepEqual(overlay.rawPayload, fs.readFileSync(archive.file(id, 'overlay')!));
  const json = await app.inject({ method: 'GET', url: `/api/archive/${id}/result.json` });
  assert.equal((json.json() as { id: string }).id, id);

  for (const bad of ['..%2F..%2Fetc%2Fpasswd', 'x', `${id}.json`, encodeURIComponent(`../${id}`)]) {
    const res = await app.inject({ method: 'GET', url: `/api/archive/${bad}/frame.jpg` });
    assert.equal(res.statusCode, 400, bad);
  }
  // A '..' segment never reaches the route: the URL is normalised first.
  for (const dots of ['..', '%2e%2e']) assert.equal((await app.inject({ method: 'GET', url: `/api/archive/${dots}/frame.jpg` })).statusCode, 404);
  const unknown = await app.inject({ method: 'GET', url: '/api/archive/20000101T000000000Z-000001/frame.jpg' });
  assert.equal(unknown.statusCode, 404);
  assert.equal((await app.inject({ method: 'POST', url: '/api/archive/20000101T000000000Z-000001/good' })).statusCode, 404);
});

test('a read-only console refuses every change and changes nothing', async () => {
  const id = archive.list(0, 1).entries[0]!.id;
  const refused = [
    await readOnlyApp.inject({ method: 'POST', url: `/api/archive/${id}/good` }),
    await readOnlyApp.inject({ method: 'PUT', url: '/api/dataset/record/cam1', payload: { every: 2 } }),
    await readOnlyApp.inject({ method: 'DELETE', url: '/api/dataset/record/cam1' }),
    await readOnlyApp.inject({ method: 'POST', url: '/api/dataset/capture/cam1' }),
  ];
  assert.deepEqual(refused.map((r) => r.statusCode), [401, 401, 401, 401]);
  assert.deepEqual(goodImages(), []);
  assert.deepEqual(dataset.status().recording, {});
  assert.equal(dataset.status().waiting, 0);
  // Reading still works.
  assert.equal((await readOnlyApp.inject({ method: 'GET', url: '/api/archive' })).statusCode, 200);
});

test('marking an NG good copies its full frame into the camera\'s good images', async () => {
  const id = archive.list(0, 1).entries[0]!.id;
  const res = await app.inject({ method: 'POST', url: `/api/archive/${id}/good` });
  assert.equal(res.statusCode, 200);
  const { file } = res.json() as { file: string };
  assert.equal(path.dirname(file), path.join(datasetDir, 'cam1', 'train', 'good'));
  assert.deepEqual(fs.readFileSync(file), fs.readFileSync(archive.file(id, 'frame')!));
  assert.equal(archive.get(id)!.markedGood, file);
  const json = JSON.parse(fs.readFileSync(archive.file(id, 'json')!, 'utf8')) as { markedGood: string };
  assert.equal(json.markedGood, file);
});

test('record mode saves every Nth frame of the camera; it starts and stops over HTTP', async () => {
  const before = goodImages().length;
  assert.equal((await app.inject({ method: 'PUT', url: '/api/dataset/record/cam1', payload: { every: 0 } })).statusCode, 400);
  assert.equal((await app.inject({ method: 'PUT', url: '/api/dataset/record/nope', payload: { every: 3 } })).statusCode, 404);
  const started = await app.inject({ method: 'PUT', url: '/api/dataset/record/cam1', payload: { every: 3 } });
  assert.equal(started.statusCode, 200);
  assert.deepEqual((started.json() as { recording: object }).recording, { cam1: 3 });
  await feed(dataset, 'OK', 7);
  const pngs = goodImages().filter((n) => n.endsWith('.png'));
  assert.equal(pngs.length, 2);
  assert.equal(goodImages().length, before + 2);
  const saved = cv.imread(path.join(dataset.goodDir('cam1'), pngs[0]!));
  assert.deepEqual([saved.cols, saved.rows], [96, 64]);
  saved.release();

  assert.equal((await app.inject({ method: 'DELETE', url: '/api/dataset/record/cam1' })).statusCode, 200);
  await feed(dataset, 'OK', 6);
  assert.equal(goodImages().length, before + 2);
});

test('capture now saves the camera\'s next frame', async () => {
  const before = goodImages().length;
  const answer = app.inject({ method: 'POST', url: '/api/dataset/capture/cam1' });
  // The request is waiting once the dataset counts it (no clock involved).
  for (let turn = 0; dataset.status().waiting === 0; turn++) {
    assert.ok(turn < 10_000, 'the capture request never reached the dataset');
    await new Promise((resolve) => setImmediate(resolve));
  }
  await feed(dataset, 'OK', 1);
  const res = await answer;
  assert.equal(res.statusCode, 201);
  const { file } = res.json() as { file: string };
  assert.ok(goodImages().includes(file));
  assert.equal(goodImages().length, before + 1);
});

test('the trainer reads the dataset folder as its MVTec layout', () => {
  const script = [
    'import json, sys',
    'from crad.data import detect_layout, load_samples',
    'root = sys.argv[1]',
    'samples = load_samples(root, split="train")',
    'print(json.dumps({"layout": detect_layout(root), "classes": sorted({s.class_name for s in samples}), "count": len(samples), "labels": sorted({s.label for s in samples})}))',
  ].join('\n');
  const out = execFileSync('/usr/bin/python3', ['-c', script, datasetDir], { env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'training') }, encoding: 'utf8' });
  const seen = JSON.parse(out.trim().split('\n').at(-1)!) as { layout: string; classes: string[]; count: number; labels: number[] };
  assert.deepEqual(seen, { layout: 'mvtec', classes: ['cam1'], count: goodImages().length, labels: [0] });
  assert.equal(seen.count, 4); // one marked good, two recorded, one captured
});

test('recording started or stopped from the console survives a config push; a push of the record settings takes over', () => {
  const { log } = capturingLogger();
  const options = (recordEvery: number, recordCameras: string[] = []) => ({ dir: path.join(root, 'dataset-live'), cameras: ['cam1', 'cam2'], recordEvery, recordCameras });
  const capture = new DatasetCapture(options(0), log);
  capture.startRecording('cam1', 3);
  // A push of another key (the same record settings) used to end it.
  capture.updateLive(options(0));
  assert.deepEqual(capture.status().recording, { cam1: 3 });
  // The file's record settings change: they apply, the console's choices give way.
  capture.updateLive(options(5));
  assert.deepEqual(capture.status().recording, { cam1: 5, cam2: 5 });
  capture.stopRecording('cam2');
  capture.updateLive(options(5));
  assert.deepEqual(capture.status().recording, { cam1: 5 }, 'stopped from the console stays stopped');
  capture.updateLive(options(5, ['cam2']));
  assert.deepEqual(capture.status().recording, { cam2: 5 });
});

test('production counters are kept in a file; one that is not counters is logged and counting starts from zero', async () => {
  const dir = tempDir('counters');
  const file = path.join(dir, 'counters.json');
  const { log, lines } = capturingLogger();
  const first = new ProductionCounters(() => 0);
  first.persistTo(file, log);
  first.countError('cam1');
  await first.close();
  const second = new ProductionCounters(() => 0);
  second.persistTo(file, log);
  const kept = second.snapshot(['cam1']).cam1!;
  assert.equal(kept.errors, 1);
  assert.equal(kept.since, first.snapshot(['cam1']).cam1!.since);
  await second.close();
  for (const bad of ['{"cameras": {"cam1": {"ok": "many"}}}', 'not json', '{"cameras": {"cam1": {"ok": 1e308, "since": "x"}}}']) {
    fs.writeFileSync(file, bad);
    const fresh = new ProductionCounters(() => 0);
    fresh.persistTo(file, log);
    assert.equal(fresh.snapshot(['cam1']).cam1!.errors, 0, bad);
    await fresh.close();
  }
  assert.equal(lines().filter((r) => r.msg === 'saved production counters not usable; counting from zero').length, 3);
});

test('the archive listing filters by camera, verdict, recipe and capture time; a bad filter is a 400', async () => {
  const q = (query: string) => app.inject({ method: 'GET', url: `/api/archive?limit=500&${query}` });
  const total = archive.list(0, 500).total;
  assert.ok(total > 0);
  assert.equal((await q('camera=cam1&verdict=NG')).json().total, archive.list(0, 500).entries.filter((e) => e.camera === 'cam1' && e.verdict === 'NG').length);
  assert.equal((await q('camera=other')).json().total, 0);
  assert.equal((await q('recipe=')).json().total, total, "'' is the base configuration");
  assert.equal((await q('recipe=night')).json().total, 0);
  const newest = archive.list(0, 1).entries[0]!;
  const since = (await q(`from=${encodeURIComponent(newest.capturedAt)}`)).json();
  assert.equal(since.entries[0].id, newest.id);
  assert.ok(since.entries.every((e: { capturedAt: string }) => e.capturedAt >= newest.capturedAt));
  assert.equal((await q('to=2000-01-01T00:00:00Z')).json().total, 0);
  for (const bad of ['verdict=maybe', 'from=yesterday']) {
    const reply = await q(bad);
    assert.equal(reply.statusCode, 400, bad);
    assert.ok(reply.json().error, bad);
  }
});
