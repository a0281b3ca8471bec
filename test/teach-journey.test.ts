// Teaching the station on the line through MQTT only (#27), with a client we did not write:
// Eclipse Paho (test/helpers/plc_client.py) against a real mosquitto and the real daemon. The
// daemon records a folder camera's frames as good images (dataset.recordEvery), train/start runs
// `crad teach` as its child process (a tiny schedule: random backbone, 64 px, 2 epochs), progress
// arrives retained on train/progress, the candidate is shadowed on live frames, train/promote makes
// it serve (the next results carry its hash) and train/rollback returns the previous model. Then
// what must change nothing: a cancelled run, a killed trainer, a candidate failing the golden
// samples, a set too small, a daemon stopped
// mid-training (interrupted after the restart); the serving model and the configuration revision
// stay as they were, and the run's files are gone.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { tempDir } from './helpers/cleanup.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Plc } from './helpers/plc.js';
import { assertValid, schemaValidator } from './helpers/publish-fixtures.js';
import { until } from './helpers/wait.js';

const PREFIX = 'crad/teach-1';
const ajv = schemaValidator();
const TRAINING = { randomBackbone: true, backbone: 'mobilenet-v2', inputSize: 64, epochs: 2, minSteps: 0, batchSize: 8, selectSteps: 8, calibrationRule: 'frr', threads: 1, nice: 5, shadowShare: 1, shadowFrames: 4 };

let broker: Mosquitto;
let daemon: DaemonProcess;
let plc: Plc;
let dir: string;
let servingHash: string;

function dataset(): string {
  return path.join(dir, 'dataset', 'cam1', 'train', 'good');
}

function images(folder: string): number {
  try {
    return fs.readdirSync(folder).filter((name) => name.endsWith('.png')).length;
  } catch {
    return 0;
  }
}

/** The last retained run on train/progress. */
function run(): any {
  return plc.messages('train/progress').at(-1)?.json;
}

/** Send train/<command> and wait for its answer (matched by transaction). */
async function train(command: string, body: object = {}): Promise<any> {
  const transaction = `${command}-${Date.now()}-${Math.random()}`;
  plc.publish(`train/${command}`, { ...body, transaction });
  let answer: any;
  await until(`the answer to train/${command}`, () => (answer = plc.messages('train/response').map((m) => m.json).find((a) => a?.transaction === transaction)) !== undefined, 60_000);
  return answer;
}

function procFile(pid: number, name: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch {
    return '';
  }
}

/** A process's nice value (field 19 of /proc/<pid>/stat, after the command in parentheses). */
function niceOf(pid: number): number {
  return Number(procFile(pid, 'stat').split(') ')[1]!.split(' ')[16]);
}

/** Every train/response and train/progress message so far matches its schema. */
function everyMessageValid(): void {
  for (const m of plc.messages('train/response')) assertValid(ajv, 'train-response.schema.json', m.json);
  for (const m of plc.messages('train/progress')) assertValid(ajv, 'teach-run.schema.json', m.json);
}

function lastResult(): any {
  return plc.results('cam1').at(-1);
}

before(async () => {
  dir = tempDir('teach-journey');
  // The demo model in a folder of its own, without golden samples (a random-backbone candidate meets none).
  const models = path.join(dir, 'models');
  fs.mkdirSync(models);
  fs.copyFileSync(demoModel, path.join(models, 'serving.onnx'));
  broker = await Mosquitto.start();
  const config = writeConfig({
    device: { id: 'teach-1' },
    mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, topicPrefix: 'crad' },
    model: { path: path.join(models, 'serving.onnx'), modelsDir: models, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 6 }],
    dataset: { recordEvery: 2, recordCameras: ['cam1'] },
    remoteConfig: { probationMs: 20_000 },
    training: TRAINING,
  }, dir);
  daemon = new DaemonProcess(config);
  daemon.start();
  plc = await Plc.connect(PREFIX, broker.port, 'teach-engineer');
  await until('the first result', () => lastResult() !== undefined, 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${daemon.output.slice(-3000)}`);
  });
  servingHash = lastResult().model.hash;
});

after(async () => {
  await plc?.close();
  await daemon?.stop();
  await broker?.stop();
});

test('through MQTT only: record, train/start, progress, shadow, train/promote, results carry the new hash, train/rollback', async (t) => {
  await until('24 recorded good images', () => images(dataset()) >= 24, 60_000);
  const started = await train('start', { cameraId: 'cam1' });
  assert.equal(started.status, 'ok', JSON.stringify(started));
  assert.equal(started.run.state, 'training');
  assert.ok(started.dataset.count >= 24 && started.dataset.minimum === 20, JSON.stringify(started.dataset));

  await until('the candidate ready after its shadow check', () => run()?.state === 'ready' || run()?.state === 'failed', 240_000);
  const ready = run();
  assert.equal(ready.state, 'ready', ready.error);
  const states = new Set(plc.messages('train/progress').map((m) => m.json?.state));
  for (const state of ['training', 'calibrating', 'exporting', 'checking', 'shadow']) assert.ok(states.has(state), `train/progress never said ${state}: ${[...states]}`);
  const epochs = plc.messages('train/progress').map((m) => m.json?.progress).filter((p) => p?.phase === 'train');
  assert.deepEqual(epochs.map((p) => p.epoch), [1, 2]);
  assert.ok(epochs.every((p) => p.epochs === 2 && p.loss > 0 && p.fraction > 0 && p.fraction < 1));
  // Retained: a client that connects now reads the run at once.
  const late = await Plc.connect(PREFIX, broker.port, 'teach-late-reader');
  try {
    await until('the retained run', () => late.messages('train/progress').length > 0, 20_000);
    const [retained] = late.messages('train/progress');
    assert.equal(retained!.retain, true);
    assert.equal(retained!.json.id, started.run.id);
    assert.equal(retained!.json.state, 'ready');
  } finally {
    await late.close();
  }
  // Recording goes on while it trains: the trainer takes what is there when it starts.
  assert.ok(ready.images.train + ready.images.calibration >= started.dataset.count, JSON.stringify(ready.images));
  assert.ok(ready.images.calibration >= 10 && ready.images.train > ready.images.calibration, JSON.stringify(ready.images));
  assert.match(ready.candidate.sha256, /^[0-9a-f]{64}$/);
  assert.notEqual(ready.candidate.sha256, servingHash);
  assert.match(ready.candidate.datasetSha256, /^[0-9a-f]{64}$/);
  assert.ok(ready.shadow.frames >= 4, JSON.stringify(ready.shadow));
  assert.ok(ready.shadow.changed <= ready.shadow.frames && ready.shadow.examples.length <= ready.shadow.changed);
  t.diagnostic(`shadow: ${JSON.stringify({ ...ready.shadow, examples: ready.shadow.examples.length })}`);
  // Nothing served yet: the results still carry the serving model's hash.
  assert.equal(lastResult().model.hash, servingHash);

  const promoted = await train('promote');
  assert.equal(promoted.status, 'ok', JSON.stringify(promoted));
  assert.equal(promoted.run.state, 'promoted');
  assert.equal(promoted.models[0].sha256, ready.candidate.sha256);
  assert.equal(promoted.models[0].serving, true);
  assert.equal(promoted.models[0].datasetSha256, ready.candidate.datasetSha256);
  assert.match(promoted.models[0].trainerVersion, /^crad /);
  assert.equal(promoted.previous, servingHash);
  const count = plc.results('cam1').length;
  await until('a result from the promoted model', () => plc.results('cam1').slice(count).some((r) => r.model?.hash === ready.candidate.sha256), 30_000);

  const rolledBack = await train('rollback');
  assert.equal(rolledBack.status, 'ok', JSON.stringify(rolledBack));
  assert.equal(rolledBack.previous, null);
  const after = plc.results('cam1').length;
  await until('a result from the previous model again', () => plc.results('cam1').slice(after).some((r) => r.model?.hash === servingHash), 30_000);
  const audit = fs.readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
  const teach = audit.filter((e) => e.kind === 'teach').map((e) => `${e.outcome}:${e.actor.kind}`);
  assert.deepEqual(teach, ['started:mqtt', 'ready:daemon', 'promoted:mqtt', 'rolled-back:mqtt']);
  everyMessageValid();
});

test('a cancelled run, a killed trainer, a candidate failing its golden samples, a set too small and a restart mid-training change nothing', async () => {
  const revision = async () => (await configGet()).revision as number;
  const configGet = async () => {
    const transaction = `get-${Date.now()}`;
    plc.publish('config/get', { transaction });
    let answer: any;
    await until('config/get answered', () => (answer = plc.messages('config/response').map((m) => m.json).find((a) => a?.transaction === transaction)) !== undefined, 20_000);
    return answer;
  };
  const before = await revision();
  const serving = () => lastResult().model.hash;
  assert.equal(serving(), servingHash);
  const runsDir = path.join(dir, 'teach', 'runs');

  // Cancelled while training.
  const started = await train('start', { cameraId: 'cam1' });
  assert.equal(started.status, 'ok', JSON.stringify(started));
  const again = await train('start', { cameraId: 'cam1' });
  assert.equal(again.status, 'error');
  assert.equal(again.code, 60);
  assert.match(again.error, /already training/);
  const cancelled = await train('cancel');
  assert.equal(cancelled.run.state, 'cancelled');
  assert.equal(fs.existsSync(path.join(runsDir, cancelled.run.id)), false, 'the cancelled run left files');
  assert.match((await train('cancel')).error, /no training run to cancel/);

  // The trainer killed under the daemon.
  const second = await train('start', { cameraId: 'cam1' });
  const stored = () => JSON.parse(fs.readFileSync(path.join(dir, 'teach', 'run.json'), 'utf8'));
  await until('the trainer running', () => stored().pid !== undefined && procFile(stored().pid, 'cmdline').includes('teach'), 20_000);
  // Niced below the daemon, held to training.threads cores, its math libraries told the same.
  const pid = stored().pid as number;
  assert.equal(niceOf(pid), niceOf(daemon.pid!) + TRAINING.nice);
  const cores = os.availableParallelism();
  if (cores > 1) assert.equal(procFile(pid, 'status').match(/^Cpus_allowed_list:\s*(\S+)$/m)?.[1], String(cores - 1));
  assert.ok(procFile(pid, 'environ').split('\0').includes('OMP_NUM_THREADS=1'));
  process.kill(pid, 'SIGKILL');
  await until('the run failed', () => run()?.id === second.run.id && run()?.state === 'failed', 30_000);
  assert.match(run().error, /the trainer was killed \(SIGKILL\)/);
  assert.equal(fs.existsSync(path.join(runsDir, second.run.id)), false);

  // A candidate that fails the station's golden samples: a set added after start-up whose one image
  // is expected OK and NG at once, so that no model can pass it.
  const golden = path.join(dir, 'models', 'serving.golden');
  for (const kind of ['ok', 'ng']) {
    fs.mkdirSync(path.join(golden, kind), { recursive: true });
    fs.copyFileSync(path.join(samplesDir, 'washer_00_good.png'), path.join(golden, kind, 'washer.png'));
  }
  const checked = await train('start', { cameraId: 'cam1' });
  assert.equal(checked.status, 'ok', JSON.stringify(checked));
  await until('the checked run failed', () => run()?.id === checked.run.id && ['failed', 'shadow', 'ready'].includes(run()?.state), 240_000);
  fs.rmSync(golden, { recursive: true });
  assert.equal(run().state, 'failed');
  assert.match(run().error, /the candidate did not pass the station's golden samples, nothing was changed: golden samples failed \(1 of 2/);
  assert.deepEqual(run().candidate.golden, { passed: 1, total: 2 });
  assert.equal(fs.existsSync(path.join(runsDir, checked.run.id)), false);

  // Nothing to promote or roll back; an unknown camera; a set too small.
  assert.match((await train('promote')).error, /no candidate to promote \(the run is failed\)/);
  assert.match((await train('rollback')).error, /nothing to roll back to/);
  assert.match((await train('start', { cameraId: 'nope' })).error, /no enabled camera "nope"/);
  const unreadable = `bad-${Date.now()}`;
  plc.publish('train/start', `{"transaction": "${unreadable}"`);
  await until('the unreadable request answered', () => plc.messages('train/response').some((m) => m.json?.code === 51), 20_000);
  const empty = path.join(dir, 'dataset', 'cam1', 'train', 'good');
  const kept = path.join(dir, 'kept-images');
  fs.renameSync(empty, kept);
  fs.mkdirSync(empty);
  for (const name of fs.readdirSync(kept).slice(0, 5)) fs.copyFileSync(path.join(kept, name), path.join(empty, name));
  const small = await train('start', { cameraId: 'cam1' });
  assert.equal(small.status, 'error');
  assert.equal(small.code, 60);
  assert.match(small.error, /of at least 20 good images/);

  assert.equal(await revision(), before, 'the configuration changed');
  const count = plc.results('cam1').length;
  await until('more results', () => plc.results('cam1').length > count + 2, 20_000);
  assert.ok(plc.results('cam1').slice(count).every((r) => r.model.hash === servingHash), 'the serving model changed');
  fs.rmSync(empty, { recursive: true });
  fs.renameSync(kept, empty);

  // The daemon stopped mid-training: after its restart the run is reported interrupted, its files gone.
  const third = await train('start', { cameraId: 'cam1' });
  assert.equal(third.status, 'ok');
  await daemon.stop();
  daemon.start();
  await until('the interrupted run reported', () => run()?.id === third.run.id && run()?.state === 'interrupted', 60_000);
  assert.match(run().error, /the daemon stopped while the run was training/);
  assert.equal(fs.existsSync(path.join(runsDir, third.run.id)), false);
  const restarted = plc.results('cam1').length;
  await until('results after the restart', () => plc.results('cam1').length > restarted, 60_000);
  assert.equal(lastResult().model.hash, servingHash);
  assert.equal(await revision(), before);
  everyMessageValid();
});
