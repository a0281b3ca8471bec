// The Pipeline itself: a fake camera (frames with real Mats whose releases are counted), the
// demo model or a fake one where a test must make the model fail or hold a batch, real
// post-processing, and a sink that records what would be published.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Subject } from 'rxjs';
import { loadConfig } from '../src/config/load.js';
import type { CameraStatus, Frame } from '../src/capture/frame.js';
import { loadModel, type CradModel } from '../src/inference/model.js';
import type { FrameInference, Inference, ModelInfo, Result } from '../src/inference/types.js';
import { RecipeModels } from '../src/inference/recipes.js';
import { Pipeline, type PipelineCamera, type PipelineSink } from '../src/pipeline.js';
import { capturingLogger, cpuOptions, frameOf, imageWithSpots } from './fixtures/frames.js';
import { tinyModels } from './fixtures/tiny-models.js';
import { tempDir } from './helpers/cleanup.js';
import { demoModel, samplesDir } from './helpers/daemon.js';
import { MODEL, until } from './helpers/publish-fixtures.js';

/** Generous: a drain that works ends long before; one that hangs fails the test instead of stalling it. */
const STOP_TIMEOUT_MS = 30_000;

class FakeCamera implements PipelineCamera {
  readonly frames = new Subject<Frame>();
  readonly frames$ = this.frames.asObservable();
  readonly status$ = new Subject<CameraStatus>();
  readonly triggers: (string | undefined)[] = [];
  /** Releases per frame sequence. */
  readonly releases = new Map<number, number>();

  constructor(readonly id = 'cam1') {}

  start(): void {}
  async stop(): Promise<void> {
    this.frames.complete();
    this.status$.complete();
  }
  trigger(triggerId?: string): void {
    this.triggers.push(triggerId);
  }
  update(): 'live' {
    return 'live';
  }

  /** Capture one frame (a small real image) and hand it to the pipeline. */
  emit(): Frame {
    const frame = frameOf(imageWithSpots(64, 48, [{ x: 20, y: 10, width: 12, height: 8 }]), null, this.id);
    const releaseImage = frame.release;
    this.releases.set(frame.sequence, 0);
    frame.release = () => {
      this.releases.set(frame.sequence, this.releases.get(frame.sequence)! + 1);
      releaseImage();
    };
    this.frames.next(frame);
    return frame;
  }

  assertEachReleasedOnce(): void {
    assert.ok(this.releases.size > 0);
    for (const [sequence, count] of this.releases) assert.equal(count, 1, `frame ${sequence} released ${count} times`);
  }
}

class RecordingSink implements PipelineSink {
  readonly results: Result[] = [];
  readonly models: ModelInfo[] = [];
  /** Results published by the time of each sendPending call. */
  readonly sendPendingAt: number[] = [];
  sendPending(): Promise<void> {
    this.sendPendingAt.push(this.results.length);
    return Promise.resolve();
  }
  publishResult(result: Result): void {
    this.results.push(result);
  }
  publishAnswer(result: Result): void {
    this.results.push(result);
  }
  publishCameraStatus(): void {}
  setDeviceStatus(info: { model: ModelInfo }): void {
    this.models.push(info.model);
  }
}

/** A gate a test opens to let a held model run finish. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

type Failure = 'reject' | 'throw';

/** A model whose runs can fail, be held at a gate, or give one frame a map post-processing rejects. */
class FakeModel implements CradModel {
  readonly info: ModelInfo;
  runs = 0;
  releases = 0;
  /** Runs started on a released model, or that it was released under. */
  runsAfterRelease = 0;
  private inFlight = 0;
  /** Most runs in the model at once. */
  maxInFlight = 0;
  /** Holds of single runs by run number (1-based), besides `hold`. */
  holds = new Map<number, Promise<void>>();
  /** Failures by run number (1-based). */
  failures = new Map<number, Failure>();
  hold: Promise<void> | null = null;
  releaseHold: Promise<void> | null = null;
  /** Frames whose anomaly map has the wrong size (post-processing throws for them). */
  badMap = new Set<number>();

  constructor(name: string) {
    this.info = { ...MODEL, path: `/models/${name}.onnx`, name };
  }

  run(frames: Frame[]): Promise<Inference> {
    const run = ++this.runs;
    if (this.releases > 0) this.runsAfterRelease++;
    if (this.failures.get(run) === 'throw') throw new Error(`run ${run} fails`);
    return (async () => {
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      await this.hold;
      await this.holds.get(run);
      this.inFlight--;
      if (this.failures.get(run) === 'reject') throw new Error(`run ${run} fails`);
      const results: FrameInference[] = frames.map((frame) => ({
        frame,
        raw: 2,
        map: new Float32Array(this.badMap.has(frame.sequence) ? 3 : 8 * 8),
        mapHeight: 8,
        mapWidth: 8,
      }));
      return { frames: results, model: this.info, timings: { preprocessMs: 0, inferenceMs: 0, batchSize: frames.length } };
    })();
  }

  async release(): Promise<void> {
    this.releases++;
    this.runsAfterRelease += this.inFlight;
    await this.releaseHold;
  }
}

/** A pipeline with one triggered camera (a FIFO: frames wait for the model, none replaced). */
function pipelineWith(model: CradModel, inference: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
  const config = loadConfig(undefined, { inference: { maxBatch: 1, maxWaitMs: 0, ...inference }, ...overrides });
  const camera = new FakeCamera();
  const sink = new RecordingSink();
  const { log, lines } = capturingLogger();
  const pipeline = new Pipeline(config, model, sink, log);
  pipeline.addCamera(camera, true);
  return { pipeline, camera, sink, lines };
}

test('stop() drains: frames still waiting in the batcher are scored and published, each frame released once', async () => {
  const model = await loadModel(demoModel, cpuOptions, capturingLogger().log);
  const { pipeline, camera, sink } = pipelineWith(model, { maxBatch: 2 });
  pipeline.start();
  const frames = [1, 2, 3, 4, 5].map(() => camera.emit());
  const drained = await pipeline.stop(STOP_TIMEOUT_MS);
  assert.equal(drained, true);
  assert.deepEqual(sink.results.map((r) => r.frame.sequence), frames.map((f) => f.sequence));
  assert.equal(pipeline.stats().processed, frames.length);
  camera.assertEachReleasedOnce();
});

test('model.sessions 2: two batches at once, never more; a batch that finishes first publishes after the one taken before it', async () => {
  const model = new FakeModel('a');
  const first = gate();
  model.holds.set(1, first.opened);
  const { pipeline, camera, sink } = pipelineWith(model, {}, { model: { sessions: 2 } });
  pipeline.start();
  const frames = [1, 2, 3, 4].map(() => camera.emit());
  // Run 2 is not held: it starts beside run 1 and finishes first, then waits to publish after it.
  await until('a second batch in the model while the first is held', () => model.runs === 2);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(sink.results.length, 0, 'nothing published before the first batch');
  assert.equal(model.runs, 2, 'no third batch while two are taken and not through');
  first.open();
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  assert.equal(model.maxInFlight, 2);
  assert.deepEqual(sink.results.map((r) => r.frame.sequence), frames.map((f) => f.sequence));
  camera.assertEachReleasedOnce();
});

test('model.prepareAhead on a worker: one batch more than sessions in flight (the next taken while one runs), on the main thread it does not apply', async () => {
  for (const [model, expected] of [[{ inferenceThread: 'worker', prepareAhead: true }, 2], [{ inferenceThread: 'main', prepareAhead: true }, 1], [{ sessions: 2, prepareAhead: true }, 4]] as const) {
    const fake = new FakeModel('a');
    const held = gate();
    fake.holds.set(1, held.opened);
    const { pipeline, camera, sink } = pipelineWith(fake, {}, { model });
    pipeline.start();
    const frames = [1, 2, 3, 4, 5, 6].map(() => camera.emit());
    await until(`${expected} batch(es) in the model while the first is held`, () => fake.runs === expected);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(fake.runs, expected, `no more than ${expected} with ${JSON.stringify(model)}`);
    held.open();
    assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
    assert.deepEqual(sink.results.map((r) => r.frame.sequence), frames.map((f) => f.sequence));
    camera.assertEachReleasedOnce();
  }
});

test('model.sessions 1 (the default): one batch at a time', async () => {
  const model = new FakeModel('a');
  const { pipeline, camera, sink } = pipelineWith(model);
  pipeline.start();
  const frames = [1, 2, 3].map(() => camera.emit());
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  assert.equal(model.maxInFlight, 1);
  assert.deepEqual(sink.results.map((r) => r.frame.sequence), frames.map((f) => f.sequence));
});

test('one session on the main thread: before each run the sink is asked to send the results published so far', async () => {
  const log = capturingLogger().log;
  const onMain = await loadModel(demoModel, cpuOptions, log);
  const onWorker = await loadModel(demoModel, { ...cpuOptions, inferenceThread: 'worker' }, log);
  try {
    for (const model of [onMain, onWorker]) {
      const { pipeline, camera, sink } = pipelineWith(model);
      pipeline.start();
      const frames = [1, 2, 3].map(() => camera.emit());
      assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
      assert.deepEqual(sink.results.map((r) => r.frame.sequence), frames.map((f) => f.sequence));
      // Batches of one: the run of frame n waits for the n - 1 results before it to be sent.
      assert.deepEqual(sink.sendPendingAt, model === onMain ? [0, 1, 2] : [], model === onMain ? 'main thread' : 'worker');
    }
  } finally {
    await onMain.release();
    await onWorker.release();
  }
});

test('model.sessions 2 on the demo model: every frame scored as one session scores it, in order, each released once', async () => {
  const log = capturingLogger().log;
  const one = await loadModel(demoModel, cpuOptions, log);
  const two = await loadModel(demoModel, { ...cpuOptions, sessions: 2 }, log);
  const runs = [one, two].map(async (model) => {
    const { pipeline, camera, sink } = pipelineWith(model, { maxBatch: 2 }, { model: { sessions: model === two ? 2 : 1 } });
    pipeline.start();
    const frames = [1, 2, 3, 4, 5, 6, 7].map(() => camera.emit());
    assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
    camera.assertEachReleasedOnce();
    assert.deepEqual(sink.results.map((r) => r.frame.sequence), frames.map((f) => f.sequence));
    return sink.results.map((r) => r.raw!);
  });
  const [scoresOne, scoresTwo] = await Promise.all(runs);
  assert.equal(scoresTwo!.length, 7);
  for (const [i, raw] of scoresTwo!.entries()) assert.ok(Math.abs(raw - scoresOne![i]!) < 1e-4, `frame ${i}: ${raw} vs ${scoresOne![i]}`);
});

test('a failed batch (rejected or thrown) is counted and its frames released once; the loop goes on', async () => {
  const model = new FakeModel('a');
  model.failures.set(1, 'reject').set(2, 'throw');
  const { pipeline, camera, sink, lines } = pipelineWith(model);
  pipeline.start();
  const frames = [1, 2, 3].map(() => camera.emit());
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  assert.equal(pipeline.stats().failedBatches, 2);
  assert.deepEqual(sink.results.map((r) => r.frame.sequence), [frames[2]!.sequence]);
  assert.equal(lines().filter((l) => l.msg === 'inference failed; batch skipped').length, 2);
  camera.assertEachReleasedOnce();
});

test('a frame that fails post-processing is skipped and released once; the rest of its batch is published', async () => {
  const model = new FakeModel('a');
  const { pipeline, camera, sink, lines } = pipelineWith(model, { maxBatch: 3 });
  // Waiting before start: the first batch takes all three.
  const frames = [1, 2, 3].map(() => camera.emit());
  model.badMap.add(frames[1]!.sequence);
  pipeline.start();
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  assert.equal(model.runs, 1);
  assert.deepEqual(sink.results.map((r) => r.frame.sequence), [frames[0]!.sequence, frames[2]!.sequence]);
  assert.equal(pipeline.stats().failedBatches, 0);
  assert.equal(lines().filter((l) => l.msg === 'post-processing failed; frame skipped').length, 1);
  camera.assertEachReleasedOnce();
});

test('stop() that gives up on a batch stuck in the model still releases every frame once: the waiting ones at once, the stuck ones when the model lets go', async () => {
  const model = new FakeModel('a');
  const held = gate();
  model.hold = held.opened;
  const { pipeline, camera, sink } = pipelineWith(model);
  pipeline.start();
  const [stuck, ...waiting] = [1, 2, 3].map(() => camera.emit());
  await until('the first batch in the model', () => model.runs === 1);
  assert.equal(await pipeline.stop(50), false);
  for (const frame of waiting) assert.equal(camera.releases.get(frame.sequence), 1);
  assert.equal(camera.releases.get(stuck!.sequence), 0, 'the model still reads its pixels');
  assert.equal(model.releases, 1);
  held.open();
  await until('the stuck frame released', () => camera.releases.get(stuck!.sequence) === 1);
  camera.assertEachReleasedOnce();
  assert.equal(sink.results.length, 0, 'nothing published after stop');
});

test('replaceModel swaps between batches: the batch in flight finishes on the old model, which is released once and never run again', async () => {
  const old = new FakeModel('old');
  const held = gate();
  old.hold = held.opened;
  const next = new FakeModel('next');
  const { pipeline, camera, sink } = pipelineWith(old);
  pipeline.start();
  const first = camera.emit();
  await until('the first batch in the model', () => old.runs === 1);
  pipeline.replaceModel(next);
  const second = camera.emit();
  held.open();
  await until('both results', () => sink.results.length === 2);
  assert.deepEqual(sink.results.map((r) => [r.frame.sequence, r.model?.name]), [
    [first.sequence, 'old'],
    [second.sequence, 'next'],
  ]);
  assert.equal(pipeline.currentModel, next);
  assert.deepEqual(sink.models.map((m) => m.name), ['next']);
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  assert.deepEqual([old.runs, old.runsAfterRelease, old.releases], [1, 0, 1]);
  assert.deepEqual([next.runs, next.runsAfterRelease, next.releases], [1, 0, 1]);
  camera.assertEachReleasedOnce();
});

test('a uint8-form model replaces a float one between batches, and a float one replaces it: each batch is fed in its model\'s input form', async () => {
  const tiny = tinyModels();
  const load = (name: string) => loadModel(path.join(tiny, name), cpuOptions, capturingLogger().log);
  const { pipeline, camera, sink } = pipelineWith(await load('good.onnx'));
  pipeline.start();
  for (const [i, next] of ['good-uint8.onnx', 'good.onnx', null].entries()) {
    camera.emit();
    await until(`result ${i + 1}`, () => sink.results.length === i + 1);
    if (next) pipeline.replaceModel(await load(next));
  }
  assert.deepEqual(sink.results.map((r) => r.model?.input.form), ['float32-rgb-nchw', 'uint8-bgr-nhwc', 'float32-rgb-nchw']);
  // The frame's red spot at full level: the fixture model's score is 1 in either form.
  for (const result of sink.results) assert.ok(Math.abs(result.raw! - 1) < 1e-6, `raw ${result.raw}`);
  assert.deepEqual(sink.models.map((m) => m.input.form), ['uint8-bgr-nhwc', 'float32-rgb-nchw']);
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  camera.assertEachReleasedOnce();
});

test('a second replaceModel before the swap releases the stale model, which never runs', async () => {
  const old = new FakeModel('old');
  const held = gate();
  old.hold = held.opened;
  const stale = new FakeModel('stale');
  const newest = new FakeModel('newest');
  const { pipeline, camera, sink } = pipelineWith(old);
  pipeline.start();
  camera.emit();
  await until('the first batch in the model', () => old.runs === 1);
  pipeline.replaceModel(stale);
  pipeline.replaceModel(newest);
  assert.equal(stale.releases, 1);
  camera.emit();
  held.open();
  await until('both results', () => sink.results.length === 2);
  assert.deepEqual(sink.results.map((r) => r.model?.name), ['old', 'newest']);
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  assert.deepEqual([stale.runs, stale.releases], [0, 1]);
  assert.deepEqual([old.runsAfterRelease, old.releases], [0, 1]);
  assert.deepEqual([newest.runsAfterRelease, newest.releases], [0, 1]);
  camera.assertEachReleasedOnce();
});

test('stop() while a swap waits for the old model to let go: the frame already taken is released once, never run', async () => {
  const old = new FakeModel('old');
  const releasing = gate();
  old.releaseHold = releasing.opened;
  const next = new FakeModel('next');
  const { pipeline, camera, sink } = pipelineWith(old);
  pipeline.start();
  pipeline.replaceModel(next);
  const frame = camera.emit();
  await until('the swap under way', () => old.releases === 1);
  assert.equal(await pipeline.stop(50), false);
  releasing.open();
  await until('the frame released', () => camera.releases.get(frame.sequence)! > 0);
  camera.assertEachReleasedOnce();
  assert.deepEqual([old.runs, next.runs, next.releases, sink.results.length], [0, 0, 1, 0]);
});

test('a model handed over after stop() is released, not left loaded', async () => {
  const { pipeline } = pipelineWith(new FakeModel('a'));
  pipeline.start();
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
  const late = new FakeModel('late');
  pipeline.replaceModel(late);
  assert.deepEqual([late.runs, late.releases], [0, 1]);
});

test('trigger() reaches the camera; a trigger for an unknown camera is answered at once with code 11 and logged', async () => {
  const { pipeline, camera, lines, sink } = pipelineWith(new FakeModel('a'));
  pipeline.start();
  pipeline.trigger('cam1', 't-1');
  pipeline.trigger('cam9', 't-2');
  assert.deepEqual(camera.triggers, ['t-1']);
  assert.ok(lines().some((l) => l.msg === 'trigger for an unknown camera refused' && l.cameraId === 'cam9'));
  const answer = sink.results.find((r) => r.frame.triggerId === 't-2');
  assert.deepEqual([answer?.verdict, answer?.code, answer?.reason], ['ERROR', 11, 'no such camera running']);
  assert.ok(answer?.receivedAt && !Number.isNaN(Date.parse(answer.receivedAt)), 'the answer says when the trigger was received');
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
});

test('a batch taken before a recipe got a model of its own runs each frame on the model its recipe has after the swap, never on another recipe\'s', async () => {
  const base = new FakeModel('base');
  const tiles = new FakeModel('tiles');
  const tilesFile = path.join(tempDir('pipeline-recipe-swap'), 'tiles.onnx');
  fs.writeFileSync(tilesFile, 'a model file the fake loader stands for');
  const cameras = [
    { id: 'cam1', source: 'folder', path: samplesDir, recipe: 'tiles' },
    { id: 'cam2', source: 'folder', path: samplesDir },
  ];
  // Recipe "tiles" runs on the base model: cam1's and cam2's frames share batches.
  const config = loadConfig(undefined, { inference: { maxBatch: 2, maxWaitMs: 5000 }, cameras, recipes: { tiles: { inference: { sensitivity: 0.05 } } } });
  const { log } = capturingLogger();
  const sink = new RecordingSink();
  const pipeline = new Pipeline(config, base, sink, log, await RecipeModels.load(config, () => Promise.reject(new Error('none to load')), log));
  const [one, two] = [new FakeCamera('cam1'), new FakeCamera('cam2')];
  pipeline.addCamera(one, true);
  pipeline.addCamera(two, true);
  pipeline.start();
  one.emit();
  // While the batch fills, the recipe gets a model of its own (a promotion into the recipe).
  const promoted = loadConfig(undefined, { ...config, recipes: { tiles: { inference: { sensitivity: 0.05 }, model: { path: tilesFile } } } });
  pipeline.replaceRecipes(await RecipeModels.load(promoted, async () => tiles, log));
  two.emit();
  await until('both results', () => sink.results.length === 2);
  const modelOf = Object.fromEntries(sink.results.map((r) => [r.frame.cameraId, r.model?.name]));
  assert.deepEqual(modelOf, { cam1: 'tiles', cam2: 'base' });
  assert.equal(await pipeline.stop(STOP_TIMEOUT_MS), true);
});
