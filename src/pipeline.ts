// The whole data flow in one place, top to bottom:
//   cameras -> latest frame per camera -> batch across cameras -> model -> post-process -> publish
// Stages know nothing of each other; only this file knows the order. Errors are values at stage
// borders: a bad batch is logged and counted, and the stream goes on.
import { defer, from, Subject, Subscription, repeat, takeWhile, concatMap, filter, lastValueFrom, defaultIfEmpty } from 'rxjs';
import type { AppConfig } from './config/load.js';
import type { CameraConfig } from './config/schema.js';
import type { Camera } from './capture/index.js';
import type { Frame } from './capture/frame.js';
import { FrameBatcher } from './inference/batcher.js';
import type { CradModel } from './inference/model.js';
import { postprocess, postprocessOptions, type PostprocessOptions } from './inference/postprocess.js';
import type { Inference, Result } from './inference/types.js';
import type { Publisher } from './publish/index.js';
import type { Logger } from './shared/log.js';

/** Triggered cameras keep this many frames waiting (every trigger asked for an inspection). */
const TRIGGER_QUEUE = 16;
/** Inferences awaiting post-processing before the model waits (bounds memory if JPEG work lags). */
const MAX_POSTPROCESS_BACKLOG = 2;

export interface PipelineStats {
  processed: number;
  failedBatches: number;
  dropped: Record<string, number>;
  lastResultMono: number;
  /** Frames per second over the last status interval. */
  fps: number;
  /** Cameras whose source has ended (a folder or file without loop): idle by design, not stalled. */
  sourcesEnded: string[];
  model: string;
}

export class Pipeline {
  private readonly batcher = new FrameBatcher();
  private readonly cameras = new Map<string, Camera>();
  private readonly sourcesEnded = new Set<string>();
  private readonly subscriptions = new Subscription();
  private readonly inferences$ = new Subject<Inference>();
  private model: CradModel;
  private nextModel: CradModel | null = null;
  private post: PostprocessOptions;
  private running = false;
  private postBacklog = 0;
  private backlogShrunk: (() => void) | null = null;
  private done: Promise<unknown> = Promise.resolve();
  private processed = 0;
  private failedBatches = 0;
  private lastResultMono = 0;
  private fpsWindow = { at: performance.now(), processed: 0, fps: 0 };

  constructor(
    private config: AppConfig,
    model: CradModel,
    private readonly publisher: Publisher,
    private readonly log: Logger,
  ) {
    this.model = model;
    this.post = postprocessOptions(config);
  }

  addCamera(camera: Camera, triggered: boolean): void {
    this.cameras.set(camera.id, camera);
    this.batcher.setCapacity(camera.id, triggered ? TRIGGER_QUEUE : 1);
    this.sourcesEnded.delete(camera.id);
    this.subscriptions.add(
      camera.frames$.subscribe({
        next: (frame) => this.batcher.put(frame),
        // frames$ also completes on stop(); only a camera still in place has really ended.
        complete: () => {
          if (this.cameras.get(camera.id) === camera) this.sourcesEnded.add(camera.id);
        },
      }),
    );
    this.subscriptions.add(camera.status$.subscribe((status) => this.publisher.publishCameraStatus(status)));
    if (this.running) camera.start();
  }

  async removeCamera(id: string): Promise<void> {
    const camera = this.cameras.get(id);
    if (!camera) return;
    this.cameras.delete(id);
    this.sourcesEnded.delete(id);
    await camera.stop();
    this.batcher.forget(id);
  }

  start(): void {
    this.running = true;
    this.publisher.onTrigger((cameraId, triggerId) => {
      const camera = this.cameras.get(cameraId);
      if (camera) camera.trigger(triggerId);
      else this.log.warn({ cameraId }, 'trigger for an unknown camera ignored');
    });

    // Stage 1: take a batch (latest frames, across cameras), run the model. One batch at a time;
    // the chain repeats only when the model is free, so frames wait in the batcher, not in a queue.
    const inference$ = defer(() => this.takeBatch()).pipe(
      concatMap((frames) => from(this.infer(frames))),
      repeat(),
      takeWhile((inference) => inference !== null),
      filter((inference): inference is Inference => inference !== undefined),
    );

    // Stage 2: post-process and publish, overlapping with the next inference.
    const results$ = this.inferences$.pipe(concatMap((inference) => from(this.finish(inference))));

    this.done = Promise.all([
      lastValueFrom(results$.pipe(defaultIfEmpty(null))),
      lastValueFrom(inference$.pipe(defaultIfEmpty(null))).then(() => this.inferences$.complete()),
    ]);
    this.subscriptions.add(inference$.subscribe((inference) => this.inferences$.next(inference)));
    for (const camera of this.cameras.values()) camera.start();
  }

  /** Frames for the next batch; null ends the stream (closed and drained). */
  private async takeBatch(): Promise<Frame[] | null> {
    while (this.postBacklog >= MAX_POSTPROCESS_BACKLOG) await new Promise<void>((resolve) => (this.backlogShrunk = resolve));
    if (this.nextModel) await this.swapModel();
    const frames = await this.batcher.take(this.config.inference.maxBatch, this.config.inference.maxWaitMs);
    return frames.length > 0 ? frames : null;
  }

  /** Run the model; a failure releases the batch and is counted, the stream goes on. */
  private async infer(frames: Frame[] | null): Promise<Inference | null | undefined> {
    if (frames === null) return null;
    try {
      const inference = await this.model.run(frames);
      // The model is done with the pixels: a camera replaying a recording may read its next image
      // now, while this batch is post-processed (read any earlier, it would wait in the slot).
      for (const frame of frames) frame.inferred?.();
      this.postBacklog++;
      return inference;
    } catch (err) {
      this.failedBatches++;
      this.log.error({ err, frames: frames.length }, 'inference failed; batch skipped');
      for (const frame of frames) frame.release();
      return undefined;
    }
  }

  private async finish(inference: Inference): Promise<void> {
    try {
      for (const frameInference of inference.frames) {
        const result = this.postprocessOne(inference, frameInference);
        if (result) this.publish(result);
      }
    } finally {
      for (const { frame } of inference.frames) frame.release();
      this.postBacklog--;
      this.backlogShrunk?.();
      this.backlogShrunk = null;
    }
  }

  private postprocessOne(inference: Inference, frameInference: Inference['frames'][number]): Result | null {
    try {
      const queueMs = Math.max(0, performance.now() - frameInference.frame.capturedMono - inference.timings.inferenceMs - inference.timings.preprocessMs);
      return postprocess(frameInference, inference.model, this.post, {
        queueMs,
        preprocessMs: inference.timings.preprocessMs,
        inferenceMs: inference.timings.inferenceMs,
        batchSize: inference.timings.batchSize,
      });
    } catch (err) {
      this.log.error({ err, camera: frameInference.frame.cameraId, sequence: frameInference.frame.sequence }, 'post-processing failed; frame skipped');
      return null;
    }
  }

  private publish(result: Result): void {
    this.publisher.publishResult(result);
    this.processed++;
    this.lastResultMono = performance.now();
  }

  /** Hand a camera the fields it applies live (fps, roi, stall timeout, reopen delays). */
  updateCamera(config: CameraConfig): void {
    this.cameras.get(config.id)?.update(config);
  }

  /** Apply config that needs no restart (thresholds, sensitivity, regions, crops, overlay, batching). */
  updateLive(config: AppConfig): void {
    this.config = config;
    this.post = postprocessOptions(config);
  }

  /** Hand over a loaded, warmed-up model; it replaces the running one between batches. */
  replaceModel(model: CradModel): void {
    const stale = this.nextModel;
    this.nextModel = model;
    if (stale) void stale.release();
    if (!this.running) void this.swapModel();
  }

  private async swapModel(): Promise<void> {
    const next = this.nextModel;
    if (!next) return;
    this.nextModel = null;
    const old = this.model;
    this.model = next;
    this.publisher.setDeviceStatus({ model: next.info });
    this.log.info({ model: next.info.path, hash: next.info.hash }, 'model swapped');
    // No batch of the old model is in flight here (swaps happen between batches).
    await old.release();
  }

  get currentModel(): CradModel {
    return this.model;
  }

  stats(): PipelineStats {
    const now = performance.now();
    const elapsed = (now - this.fpsWindow.at) / 1000;
    if (elapsed >= 1) {
      this.fpsWindow = { at: now, processed: this.processed, fps: (this.processed - this.fpsWindow.processed) / elapsed };
    }
    return {
      processed: this.processed,
      failedBatches: this.failedBatches,
      dropped: this.batcher.stats().dropped,
      lastResultMono: this.lastResultMono,
      fps: this.fpsWindow.fps,
      sourcesEnded: [...this.sourcesEnded],
      model: this.model.info.path,
    };
  }

  /**
   * Graceful stop: stop capture, finish frames already captured, then release the models.
   * The caller flushes the publisher afterwards. Bounded by timeoutMs.
   */
  async stop(timeoutMs: number): Promise<boolean> {
    const cameras = [...this.cameras.values()];
    await Promise.allSettled(cameras.map((camera) => camera.stop()));
    this.batcher.close();
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      this.done.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    this.running = false;
    this.subscriptions.unsubscribe();
    this.batcher.releaseAll();
    if (this.nextModel) await this.nextModel.release();
    await this.model.release();
    return finished;
  }
}
