// The console's /api/teach routes on the real daemon (its console on a free loopback port, a
// token required): TeachStatus as the contract shapes it, the refusals (400, 409) in plain words,
// a run from start to promoted over HTTP, the shadow frames served as JPEG, and auth.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { tempDir } from './helpers/cleanup.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { freePort } from './helpers/mosquitto.js';
import { until } from './helpers/wait.js';

const TOKEN = 'teach-token';
let daemon: DaemonProcess;
let base: string;
let dir: string;

async function call(method: 'GET' | 'POST', route: string, body?: object, token: string | null = TOKEN): Promise<{ status: number; json: any; type: string | null; bytes: Buffer }> {
  const response = await fetch(`${base}${route}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  const type = response.headers.get('content-type');
  return { status: response.status, type, bytes, json: type?.includes('json') ? JSON.parse(bytes.toString()) : null };
}

before(async () => {
  dir = tempDir('teach-routes');
  const models = path.join(dir, 'models');
  fs.mkdirSync(models);
  fs.copyFileSync(demoModel, path.join(models, 'serving.onnx'));
  const port = await freePort();
  const config = writeConfig({
    device: { id: 'teach-routes' },
    mqtt: { url: `mqtt://127.0.0.1:${await freePort()}` },
    model: { path: path.join(models, 'serving.onnx'), modelsDir: models, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 6 }],
    http: { enabled: true, host: '127.0.0.1', port, token: TOKEN },
    remoteConfig: { probationMs: 0 },
    training: { randomBackbone: true, backbone: 'mobilenet-v2', inputSize: 64, epochs: 2, minSteps: 0, batchSize: 8, selectSteps: 8, calibrationRule: 'frr', threads: 1, shadowShare: 1, shadowFrames: 6 },
  }, dir);
  daemon = new DaemonProcess(config);
  daemon.start();
  base = `http://127.0.0.1:${port}/api`;
  await until('the console answering', () => daemon.output.includes('crad-edge running'), 60_000);
});

after(async () => {
  await daemon?.stop();
});

test('GET /api/teach: TeachStatus before any run; refusals in plain words; auth', async () => {
  const status = await call('GET', '/teach');
  assert.equal(status.status, 200);
  assert.deepEqual(Object.keys(status.json).sort(), ['dataset', 'models', 'previous', 'run']);
  assert.equal(status.json.run, null);
  assert.deepEqual(status.json.models, []);
  assert.equal(status.json.previous, null);
  const { dataset } = status.json;
  assert.deepEqual([dataset.cameraId, dataset.count, dataset.minimum, dataset.recommended], ['cam1', 0, 20, 100]);
  assert.match(dataset.why, /Record 20 more/);

  assert.equal((await call('GET', '/teach', undefined, null)).status, 401);
  assert.equal((await call('POST', '/teach/start', { cameraId: 'cam1' }, null)).status, 401);
  const unknown = await call('POST', '/teach/start', { cameraId: 'nope' });
  assert.equal(unknown.status, 400);
  assert.match(unknown.json.error, /no enabled camera "nope"/);
  assert.equal((await call('POST', '/teach/start', { cameraId: 'cam1', extra: 1 })).status, 400);
  const tooFew = await call('POST', '/teach/start', { cameraId: 'cam1' });
  assert.equal(tooFew.status, 400);
  assert.match(tooFew.json.error, /0 of at least 20 good images/);
  for (const action of ['cancel', 'promote', 'rollback']) {
    const refused = await call('POST', `/teach/${action}`, {});
    assert.equal(refused.status, 409, action);
    assert.equal(typeof refused.json.error, 'string');
  }
  assert.equal((await call('POST', '/teach/cancel')).status, 409, 'a POST without a body is an empty request');
  assert.equal((await call('GET', '/teach/shadow/..%2Fconfig.json')).status, 400);
  assert.equal((await call('GET', '/teach/shadow/none.jpg')).status, 404);
});

test('POST /api/teach/start -> progress -> shadow -> ready -> promote -> rollback, over HTTP', async () => {
  // Good images as the dataset capture stores them.
  const good = path.join(dir, 'dataset', 'cam1', 'train', 'good');
  fs.mkdirSync(good, { recursive: true });
  const samples = fs.readdirSync(samplesDir).filter((name) => name.endsWith('.png'));
  for (let i = 0; i < 24; i++) fs.copyFileSync(path.join(samplesDir, samples[i % samples.length]!), path.join(good, `${i}.png`));

  const started = await call('POST', '/teach/start', { cameraId: 'cam1' });
  assert.equal(started.status, 202, JSON.stringify(started.json));
  assert.equal(started.json.run.state, 'training');
  assert.equal(started.json.run.cameraId, 'cam1');
  assert.equal(started.json.run.recipe, null);
  assert.ok(!Number.isNaN(Date.parse(started.json.run.startedAt)));
  assert.equal(started.json.dataset.count, 24);
  const busy = await call('POST', '/teach/start', { cameraId: 'cam1' });
  assert.equal(busy.status, 409);
  assert.match(busy.json.error, /already training/);

  let run: any;
  const fractions: number[] = [];
  const deadline = Date.now() + 240_000;
  while (Date.now() < deadline) {
    run = (await call('GET', '/teach')).json.run;
    fractions.push(run.progress.fraction);
    if (['ready', 'failed'].includes(run.state)) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.equal(run.state, 'ready', run.error);
  assert.deepEqual(fractions, [...fractions].sort((a, b) => a - b), 'progress never goes back');
  assert.ok(run.shadow.frames >= 6);
  assert.equal(typeof run.candidate.threshold, 'number');
  for (const example of run.shadow.examples) {
    const frame = await call('GET', example.image.replace(/^\/api/, ''));
    assert.equal(frame.status, 200);
    assert.equal(frame.type, 'image/jpeg');
    assert.deepEqual([...frame.bytes.subarray(0, 2)], [0xff, 0xd8]);
  }

  const promoted = await call('POST', '/teach/promote', {});
  assert.equal(promoted.status, 200, JSON.stringify(promoted.json));
  assert.equal(promoted.json.run.state, 'promoted');
  assert.equal(promoted.json.models.length, 1);
  assert.equal(promoted.json.models[0].sha256, run.candidate.sha256);
  assert.equal(promoted.json.models[0].serving, true);
  assert.match(promoted.json.previous, /^[0-9a-f]{64}$/);
  assert.equal((await call('POST', '/teach/promote', {})).status, 409, 'a promoted run is not promoted twice');

  const rolledBack = await call('POST', '/teach/rollback', {});
  assert.equal(rolledBack.status, 200, JSON.stringify(rolledBack.json));
  assert.equal(rolledBack.json.models[0].serving, false);
  assert.equal(rolledBack.json.previous, null);
  assert.equal((await call('POST', '/teach/rollback', {})).status, 409);
});
