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
