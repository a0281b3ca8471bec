// training.autoPromote: policy promotes the candidate by itself once it passed its checks (no
// shadow check here: training.shadowFrames 0), through the same push as a person's promotion:
// the next results carry its hash, and the audit log says the daemon promoted it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { tempDir } from './helpers/cleanup.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Plc } from './helpers/plc.js';
import { until } from './helpers/wait.js';

let broker: Mosquitto | null = null;
let daemon: DaemonProcess | null = null;
let plc: Plc | null = null;

after(async () => {
  await plc?.close();
  await daemon?.stop();
  await broker?.stop();
});

test('training.autoPromote: a candidate that passed its checks serves without a person', async () => {
  const dir = tempDir('teach-auto');
  const models = path.join(dir, 'models');
  fs.mkdirSync(models);
  fs.copyFileSync(demoModel, path.join(models, 'serving.onnx'));
  const good = path.join(dir, 'dataset', 'cam1', 'train', 'good');
  fs.mkdirSync(good, { recursive: true });
  const samples = fs.readdirSync(samplesDir).filter((name) => name.endsWith('.png'));
  for (let i = 0; i < 22; i++) fs.copyFileSync(path.join(samplesDir, samples[i % samples.length]!), path.join(good, `${i}.png`));
  broker = await Mosquitto.start();
  daemon = new DaemonProcess(writeConfig({
    device: { id: 'teach-auto' },
    mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, topicPrefix: 'crad' },
    model: { path: path.join(models, 'serving.onnx'), modelsDir: models, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 4 }],
    training: { randomBackbone: true, backbone: 'mobilenet-v2', inputSize: 64, epochs: 1, minSteps: 0, batchSize: 8, selectSteps: 8, threads: 1, shadowFrames: 0, autoPromote: true },
  }, dir));
  daemon.start();
  plc = await Plc.connect('crad/teach-auto', broker.port, 'teach-auto-engineer');
  const results = () => plc!.results('cam1');
  await until('the first result', () => results().length > 0, 60_000);
  const servingHash = results().at(-1).model.hash;

  plc.publish('train/start', { transaction: 'auto-1', cameraId: 'cam1' });
  const run = () => plc!.messages('train/progress').at(-1)?.json;
  await until('the run promoted by policy', () => ['promoted', 'failed'].includes(run()?.state), 240_000);
  assert.equal(run().state, 'promoted', run().error);
  const states = plc.messages('train/progress').map((m) => m.json?.state);
  assert.ok(states.includes('ready') && !states.includes('shadow'), `no shadow check with shadowFrames 0: ${states}`);
  const candidate = run().candidate.sha256 as string;
  assert.notEqual(candidate, servingHash);
  const count = results().length;
  await until('a result from the promoted model', () => results().slice(count - 1).some((r) => r.model.hash === candidate), 30_000);
  const audit = fs.readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
  const promoted = audit.find((e) => e.kind === 'teach' && e.outcome === 'promoted');
  assert.equal(promoted?.actor.kind, 'daemon');
  assert.equal(promoted.details.sha256, candidate);
  assert.ok(audit.some((e) => e.kind === 'config' && e.changes?.some((c: { key: string }) => c.key === 'model.path')), 'the promotion is a model.path push');
  assert.ok(fs.existsSync(path.join(models, `teach-${run().id}.onnx`)));
});

test('a run for a recipe is promoted into that recipe, not model.path: the other camera keeps the base model; rollback returns the recipe to what it ran on', async () => {
  const dir = tempDir('teach-recipe');
  const models = path.join(dir, 'models');
  fs.mkdirSync(models);
  const base = path.join(models, 'serving.onnx');
  fs.copyFileSync(demoModel, base);
  const good = path.join(dir, 'dataset', 'cam1', 'train', 'good');
  fs.mkdirSync(good, { recursive: true });
  const samples = fs.readdirSync(samplesDir).filter((name) => name.endsWith('.png'));
  for (let i = 0; i < 22; i++) fs.copyFileSync(path.join(samplesDir, samples[i % samples.length]!), path.join(good, `${i}.png`));
  const recipeBroker = await Mosquitto.start();
  const recipeDaemon = new DaemonProcess(writeConfig({
    device: { id: 'teach-recipe' },
    mqtt: { url: `mqtt://127.0.0.1:${recipeBroker.port}`, topicPrefix: 'crad' },
    model: { path: base, modelsDir: models, warmupRuns: 0 },
    // A recipe without a model of its own: it runs on the base model until a run is promoted into it.
    recipes: { tiles: { inference: { sensitivity: 0.05 } } },
    cameras: [
      { id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 4, recipe: 'tiles' },
      { id: 'cam2', source: 'folder', path: samplesDir, loop: true, fps: 4 },
    ],
    training: { randomBackbone: true, backbone: 'mobilenet-v2', inputSize: 64, epochs: 1, minSteps: 0, batchSize: 8, selectSteps: 8, threads: 1, shadowFrames: 0, autoPromote: true },
  }, dir));
  const engineer = { plc: null as Plc | null };
  try {
    recipeDaemon.start();
    const line = (engineer.plc = await Plc.connect('crad/teach-recipe', recipeBroker.port, 'teach-recipe-engineer'));
    await until('results of both cameras', () => line.results('cam1').length > 0 && line.results('cam2').length > 0, 60_000);
    const servingHash = line.results('cam1').at(-1).model.hash as string;
    assert.equal(line.results('cam1').at(-1).recipe, 'tiles');

    line.publish('train/start', { transaction: 'recipe-1', cameraId: 'cam1', recipe: 'tiles' });
    const run = () => line.messages('train/progress').at(-1)?.json;
    await until('the recipe run promoted by policy', () => ['promoted', 'failed'].includes(run()?.state), 240_000);
    assert.equal(run().state, 'promoted', run().error);
    assert.equal(run().recipe, 'tiles');
    const candidate = run().candidate.sha256 as string;
    const from = { cam1: line.results('cam1').length, cam2: line.results('cam2').length };
    await until('a recipe result from the promoted model', () => line.results('cam1').slice(from.cam1).some((r) => r.model.hash === candidate), 30_000);
    await until('more base results', () => line.results('cam2').length > from.cam2 + 3, 30_000);
    const cam2 = line.results('cam2').slice(from.cam2);
    assert.ok(cam2.every((r) => r.model.hash === servingHash), `the camera on the base configuration keeps the base model: ${JSON.stringify(cam2.map((r) => [r.recipe, r.model.hash.slice(0, 8)]))} (${servingHash.slice(0, 8)}, candidate ${candidate.slice(0, 8)})`);

    const audit = () => fs.readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((entry) => JSON.parse(entry));
    const push = audit().find((e) => e.kind === 'config' && e.outcome === 'applied' && e.changes?.some((c: { key: string }) => c.key === 'recipes'));
    assert.ok(push, 'the promotion is a push of the recipe');
    assert.ok(!push.changes.some((c: { key: string }) => c.key === 'model.path'), 'model.path is not touched');

    line.publish('train/rollback', { transaction: 'recipe-back' });
    await until('the rollback answered', () => line.messages('train/response').some((m) => m.json?.transaction === 'recipe-back'), 60_000);
    const answer = line.messages('train/response').find((m) => m.json?.transaction === 'recipe-back')!.json;
    assert.equal(answer.status, 'ok', answer.error);
    const after = line.results('cam1').length;
    await until('recipe results from the model it ran on before', () => line.results('cam1').slice(after).some((r) => r.model.hash === servingHash), 30_000);
    assert.deepEqual(answer.models.map((m: { recipe: string | null; serving: boolean }) => [m.recipe, m.serving]), [['tiles', false]]);
  } finally {
    await engineer.plc?.close();
    await recipeDaemon.stop();
    await recipeBroker.stop();
  }
});
