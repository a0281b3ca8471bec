// Recipes and the trigger guarantee with real parts: the daemon with the demo model (and a variant
// of it as a second recipe's model, and a corrupt one) against a real mosquitto, a folder camera
// in trigger mode; and a real Pipeline with a real folder camera whose model run a test can hold.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { createCamera } from '../src/capture/index.js';
import type { CameraStatus } from '../src/capture/frame.js';
import { loadModel, type CradModel } from '../src/inference/model.js';
import type { ModelInfo, Result } from '../src/inference/types.js';
import { Pipeline, type PipelineSink } from '../src/pipeline.js';
import { Daemon } from '../src/service/daemon.js';
import { createLogger } from '../src/shared/log.js';
import { tempDir } from './helpers/cleanup.js';
import { cameraConfig } from './helpers/capture.js';
import { demoModel, samplesDir } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { writeCorruptModel, writeModelVariant, writeRecalibratedModel } from './helpers/model-variants.js';
import { assertValid, schemaValidator, Subscriber, until, type Received } from './helpers/publish-fixtures.js';
import { capturingLogger, cpuOptions } from './fixtures/frames.js';

const ajv = schemaValidator();
const PREFIX = 'plant/line2/press9';
let broker: Mosquitto;

before(async () => {
  broker = await Mosquitto.start();
});
after(async () => {
  await broker.stop();
});

const sha256 = (file: string): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** The daemon's config: recipe A (base model, every verdict NG), B (another model file), C (a corrupt model). */
function recipeConfig(dir: string) {
  const variant = path.join(dir, 'variant-b.onnx');
  const corrupt = path.join(dir, 'corrupt-c.onnx');
  writeModelVariant(demoModel, variant, 'recipe', 'B');
  writeCorruptModel(demoModel, corrupt);
  const config = loadConfig(undefined, {
    device: { id: 'press9' },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, trigger: 'mqtt', recipe: 'A', triggerDeadlineMs: 60_000 }],
    recipes: {
      A: { inference: { sensitivity: -0.5 } },
      B: { model: { path: variant }, cameras: { cam1: { roi: { x: 0, y: 0, width: 64, height: 64 } } } },
      C: { model: { path: corrupt } },
    },
    model: { path: demoModel, warmupRuns: 0 },
    mqtt: { url: broker.url, topicPrefix: 'plant/line2' },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    service: { stateDir: dir, shutdownTimeoutMs: 5000 },
  });
  return { config, variantHash: sha256(variant) };
}

/** MQTT 5 requests and triggers with their answers, each schema-checked. */
class Plc {
  private n = 0;
  constructor(readonly client: Subscriber) {}

  results(): any[] {
    return this.client.on(`${PREFIX}/cam1/result`).map((m) => m.json);
  }

  async trigger(payload: object): Promise<any> {
    await this.client.client.publishAsync(`${PREFIX}/cam1/trigger`, JSON.stringify(payload), { qos: 1 });
    const id = (payload as { id: string }).id;
    await until(`the result of trigger ${id}`, () => this.results().some((r) => r.triggerId === id), 60_000);
    const result = this.results().find((r) => r.triggerId === id);
    assertValid(ajv, 'result.schema.json', result);
    return result;
  }

  async recipeSet(payload: Buffer | object): Promise<any> {
    const correlation = `recipe-${++this.n}`;
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
    await this.client.client.publishAsync(`${PREFIX}/recipe/set`, body, { qos: 1, properties: { correlationData: Buffer.from(correlation) } });
    const answer = (): Received | undefined => this.client.on(`${PREFIX}/recipe/response`).find((m) => m.packet.properties?.correlationData?.toString() === correlation);
    await until(`the answer to recipe/set ${correlation}`, () => answer() !== undefined, 30_000);
    assertValid(ajv, 'recipe-response.schema.json', answer()!.json);
    return answer()!.json;
  }

  cameraStatus(): any {
    return this.client.on(`${PREFIX}/cam1/status`).at(-1)?.json;
  }
}

test('recipes: switched over MQTT or by the trigger, the next triggered frame is inspected under the recipe it names; a recipe whose model cannot load is refused, the others serve', async () => {
  const dir = tempDir('recipes');
  const { config, variantHash } = recipeConfig(dir);
  const demoHash = sha256(demoModel);
  const plc = new Plc(await Subscriber.connect(broker.url, 5, `${PREFIX}/#`));
  const daemon = new Daemon({ config, log: createLogger('warn') });
  try {
    await daemon.start();
    await until('cam1 ready under recipe A', () => plc.cameraStatus()?.ready === true && plc.cameraStatus()?.recipe === 'A', 30_000);
    assertValid(ajv, 'camera-status.schema.json', plc.cameraStatus());
    await until('the device status lists the recipes', () => plc.client.on(`${PREFIX}/status`).at(-1)?.json?.recipes !== undefined);
    const device = plc.client.on(`${PREFIX}/status`).at(-1)!.json;
    assertValid(ajv, 'device-status.schema.json', device);
    assert.equal(device.recipes.recipes.A.state, 'ready');
    assert.equal(device.recipes.recipes.B.state, 'ready');
    assert.equal(device.recipes.recipes.C.state, 'refused');
    assert.match(device.recipes.recipes.C.error, /cannot be loaded/);
    assert.deepEqual([device.recipes.models.loaded, device.recipes.models.max], [1, 4], 'one model file besides model.path: B\'s');

    const first = await plc.trigger({ id: 't1' });
    assert.deepEqual([first.recipe, first.verdict, first.model.hash], ['A', 'NG', demoHash], 'recipe A: base model, sensitivity -0.5 makes every verdict NG');

    const switched = await plc.recipeSet({ transaction: 'mes-1', camera: 'cam1', recipe: 'B' });
    assert.deepEqual(switched, { transaction: 'mes-1', status: 'ok', active: { cam1: 'B' }, code: 0 });
    const second = await plc.trigger({ id: 't2' });
    assert.equal(second.recipe, 'B');
    assert.equal(second.model.hash, variantHash, 'the next frame ran on recipe B\'s model');
    assert.ok(second.regions.every((r: any) => r.x + r.width <= 64 && r.y + r.height <= 64), 'inspected within B\'s ROI');
    await until('status shows recipe B', () => plc.cameraStatus()?.recipe === 'B');

    const third = await plc.trigger({ id: 't3', recipe: 'A' });
    assert.deepEqual([third.recipe, third.model.hash], ['A', demoHash], 'a trigger that names a recipe is inspected under it');
    await until('status shows recipe A again', () => plc.cameraStatus()?.recipe === 'A');

    const refused = await plc.trigger({ id: 't4', recipe: 'C' });
    assert.deepEqual([refused.verdict, refused.recipe, refused.model, refused.sequence], ['ERROR', 'A', null, 0]);
    assert.match(refused.reason, /recipe C refused: .*cannot be loaded/);

    for (const [request, error] of [
      [{ transaction: 'bad-1', recipe: 'C' }, /recipe C refused/],
      [{ transaction: 'bad-2', recipe: 'Z' }, /no recipe named "Z"/],
      [{ transaction: 'bad-3', camera: 'cam7', recipe: 'B' }, /no enabled camera "cam7"/],
      [{ transaction: 'bad-4', recipe: 'B', line: 2 }, /unknown keys: line/],
      [{ transaction: 'bad-5' }, /"recipe" is required/],
      [{ transaction: 'bad-6', recipe: 7 }, /"recipe" must be a recipe name/],
    ] as const) {
      const answer = await plc.recipeSet(request);
      assert.equal(answer.status, 'error', JSON.stringify(answer));
      assert.equal(answer.transaction, request.transaction);
      assert.match(answer.error, error);
      assert.deepEqual(answer.active, { cam1: 'A' }, 'a refused request changes nothing');
    }
    const notJson = await plc.recipeSet(Buffer.from('{"recipe": '));
    assert.deepEqual([notJson.status, notJson.transaction], ['error', null]);
    assert.match(notJson.error, /not valid JSON/);

    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'recipe-selection.json'), 'utf8')), { cam1: 'A' }, 'the selection is kept for a restart');
    // Every switch that took effect is in the audit trail, with who asked and the transaction.
    const audited = fs.readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line)).filter((e) => e.kind === 'recipe');
    assert.deepEqual(audited.map((e) => [e.changes[0].old, e.changes[0].new, e.details.by, e.transaction]), [['A', 'B', 'recipe/set', 'mes-1'], ['B', 'A', 'trigger', 't3']]);
    const counts = daemon.stats().pipeline.triggers.cam1!;
    assert.deepEqual([counts.received, counts.inspected, counts.refused], [4, 3, 1]);
  } finally {
    await daemon.stop();
    await plc.client.close();
  }
  // The ready flag is retained: a PLC that connects later reads it at once.
  const late = await Subscriber.connect(broker.url, 5, `${PREFIX}/cam1/status`);
  try {
    await late.waitFor('the retained camera status', (m) => m.length > 0);
    assert.equal(late.messages[0]!.packet.retain, true);
    assert.equal(late.messages[0]!.json.ready, false, 'a stopped camera takes no triggers');
  } finally {
    await late.close();
  }
});

/** A real model whose runs wait until the test opens the gate. */
function heldModel(model: CradModel): { model: CradModel; open: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const held = Object.create(model) as CradModel;
  held.run = async (frames) => {
    await gate;
    return model.run(frames);
  };
  return { model: held, open };
}

class RecordingSink implements PipelineSink {
  readonly results: Result[] = [];
  readonly statuses: CameraStatus[] = [];
  publishResult(result: Result): void {
    this.results.push(result);
  }
  publishAnswer(result: Result): void {
    this.results.push(result);
  }
  publishCameraStatus(status: CameraStatus): void {
    this.statuses.push(status);
  }
  setDeviceStatus(_info: { model: ModelInfo }): void {}
  answerTo(triggerId: string): Result[] {
    return this.results.filter((r) => r.frame.triggerId === triggerId);
  }
}

test('a recipe whose model fails its golden samples is refused before it can serve; the others serve', async () => {
  const dir = tempDir('recipes-golden');
  // Threshold 1000: every part comes out OK, so the samples' NG images fail the challenge test.
  const lenient = path.join(dir, 'lenient.onnx');
  await writeRecalibratedModel(demoModel, lenient, 1000);
  const config = loadConfig(undefined, {
    device: { id: 'press9' },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, trigger: 'mqtt', recipe: 'A' }],
    recipes: { A: { inference: { sensitivity: 0.1 } }, L: { model: { path: lenient, goldenDir: samplesDir } } },
    model: { path: demoModel, warmupRuns: 0 },
    mqtt: { url: broker.url, topicPrefix: 'plant/line2' },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    service: { stateDir: dir, shutdownTimeoutMs: 5000 },
  });
  const status = await Subscriber.connect(broker.url, 5, `${PREFIX}/status`);
  const daemon = new Daemon({ config, log: createLogger('silent') });
  try {
    await daemon.start();
    // This daemon's status, not the retained offline one the previous test's daemon left.
    await until('the device status lists the recipes', () => status.messages.at(-1)?.json?.state === 'online' && status.messages.at(-1)?.json?.recipes !== undefined, 30_000);
    const { recipes } = status.messages.at(-1)!.json;
    assert.equal(recipes.recipes.A.state, 'ready');
    assert.equal(recipes.recipes.L.state, 'refused');
    assert.match(recipes.recipes.L.error, /golden samples failed \(\d+ of \d+ in /);
  } finally {
    await daemon.stop();
    await status.close();
  }
});

test('every trigger is answered once: beyond the queue at once, past its deadline with ERROR, and the late inspection is not published', async () => {
  const { log } = capturingLogger();
  const demo = await loadModel(demoModel, cpuOptions, log);
  const { model, open } = heldModel(demo);
  const config = loadConfig(undefined, {
    inference: { maxBatch: 1, maxWaitMs: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, trigger: 'mqtt', triggerDeadlineMs: 2000 }],
  });
  const sink = new RecordingSink();
  const pipeline = new Pipeline(config, model, sink, log);
  pipeline.addCamera(createCamera(config.cameras[0]!, log), true);
  pipeline.start();
  try {
    await until('cam1 ready', () => sink.statuses.at(-1)?.ready === true);
    const ids = Array.from({ length: 17 }, (_, i) => `t${i}`);
    for (const id of ids) pipeline.trigger('cam1', id);
    const beyond = sink.answerTo('t16');
    assert.equal(beyond.length, 1, 'the 17th trigger is answered at once');
    assert.equal(beyond[0]!.verdict, 'ERROR');
    assert.match(beyond[0]!.reason!, /queue full/);
    assert.equal(sink.statuses.some((s) => s.ready === false && s.state === 'online'), true, 'not ready while the queue is full');

    await until('every trigger answered', () => ids.every((id) => sink.answerTo(id).length === 1), 30_000);
    for (const id of ids.slice(0, 16)) {
      const [answer] = sink.answerTo(id);
      assert.deepEqual([answer!.verdict, answer!.model, answer!.frame.sequence], ['ERROR', null, 0]);
      assert.match(answer!.reason!, /no result within triggerDeadlineMs \(2000 ms\)/);
    }
    open();
    await until('the held inspection finished', () => (pipeline.stats().triggers.cam1?.late ?? 0) >= 1, 30_000);
    assert.ok(ids.every((id) => sink.answerTo(id).length === 1), 'a late inspection does not answer twice');
    const counts = pipeline.stats().triggers.cam1!;
    assert.deepEqual([counts.received, counts.refused, counts.expired, counts.inspected], [17, 1, 16, 0]);
    await until('ready again', () => sink.statuses.at(-1)?.ready === true);

    // Answered normally once nothing holds the model.
    pipeline.trigger('cam1', 'after');
    await until('the result of trigger after', () => sink.answerTo('after').length === 1, 30_000);
    assert.notEqual(sink.answerTo('after')[0]!.verdict, 'ERROR');
  } finally {
    open();
    await pipeline.stop(30_000);
  }
});

test('a trigger for a lost camera is answered with the fail verdict and the reason; the camera is not ready', async () => {
  const { log } = capturingLogger();
  const config = loadConfig(undefined, {
    cameras: [{ id: 'cam1', source: 'folder', path: path.join(tempDir('gone'), 'missing'), trigger: 'mqtt', triggerFailVerdict: 'NG' }],
  });
  const sink = new RecordingSink();
  const pipeline = new Pipeline(config, await loadModel(demoModel, cpuOptions, log), sink, log);
  pipeline.addCamera(createCamera(config.cameras[0]!, log), true);
  pipeline.start();
  try {
    await until('cam1 offline', () => sink.statuses.at(-1)?.state === 'offline');
    assert.equal(sink.statuses.at(-1)!.ready, false);
    pipeline.trigger('cam1', 'lost-1');
    const [answer] = sink.answerTo('lost-1');
    assert.equal(answer!.verdict, 'NG', 'triggerFailVerdict NG');
    assert.match(answer!.reason!, /^camera offline/);
    assert.equal(pipeline.stats().triggers.cam1!.refused, 1);
  } finally {
    await pipeline.stop(30_000);
  }
});

test('recipes in the config: only keys marked recipe, each by its own format, naming cameras and recipes that exist', () => {
  const camera = cameraConfig({ id: 'cam1', path: samplesDir });
  const load = (recipes: object, cameraFields: object = {}) => loadConfig(undefined, { cameras: [{ ...camera, ...cameraFields }], recipes });
  assert.deepEqual(load({ A: { crops: { enabled: false }, cameras: { cam1: { roi: null } } } }, { recipe: 'A' }).recipes.A!.crops, { enabled: false });
  assert.throws(() => load({ A: { inference: { maxBatch: 2 } } }), /recipes\.A\.inference\.maxBatch: a recipe may not override this key/);
  assert.throws(() => load({ A: { cameras: { cam1: { fps: 3 } } } }), /recipes\.A\.cameras\.cam1\.fps: a recipe may not override this key/);
  assert.throws(() => load({ A: { inference: { sensitivity: 0.9 } } }), /recipes\.A\.inference\.sensitivity: must be between -0\.5 and 0\.5/);
  assert.throws(() => load({ A: { inference: { sensitivity: '0.1' } } }), /recipes\.A\.inference\.sensitivity: must be number/);
  assert.throws(() => load({ A: { modle: {} } }), /recipes\.A\.modle: not a configuration key/);
  assert.throws(() => load({ A: { cameras: { cam2: {} } } }), /recipes\.A\.cameras\.cam2: no camera with this id/);
  assert.throws(() => load({ A: {} }, { recipe: 'B' }), /cameras\[0\]\.recipe: no recipe named "B"/);
  assert.throws(() => load({ 'a/b': {} }), /must be one MQTT topic level/);
});
