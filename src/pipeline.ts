// The whole data flow in one place, top to bottom:
//   cameras -> latest frame per camera -> batch across cameras -> model -> post-process -> publish
// Stages know nothing of each other; only this file knows the order. Errors are values at stage
// borders: a bad batch is logged and counted, and the stream goes on.
import {
  catchError,
  concatMap,
  connectable,
  defer,
  EMPTY,
  endWith,
  finalize,
  firstValueFrom,
  from,
  ignoreElements,
  Observable,
  of,
  repeat,
  ReplaySubject,
  Subscription,
  takeWhile,
  tap,
  timeout,
} from 'rxjs';
import type { AppConfig } from './config/load.js';
import type { CameraConfig } from './config/schema.js';
import type { Camera } from './capture/index.js';
import type { CameraStatus, Frame } from './capture/frame.js';
import { FrameBatcher } from './inference/batcher.js';
import type { CradModel } from './inference/model.js';
import { postprocess, postprocessOptions, type PostprocessOptions } from './inference/postprocess.js';
import type { FrameInference, Inference, ModelInfo, Result } from './inference/types.js';
import type { Logger } from './shared/log.js';

/** Triggered cameras keep this many frames waiting (every trigger asked for an inspection). */
const TRIGGER_QUEUE = 16;

/** Where the pipeline's output goes: whatever plane publishes results and statuses. */
export interface PipelineSink {
  /**
   * `inspected` carries the frame's full-resolution Mat and the anomaly map, borrowed: valid only
   * during the call (the frame is released after); keep a copy to use them later.
   */
  publishResult(result: Result, inspected: FrameInference): void;
  /** A frame that produced no result (its batch failed, or its post-processing). */
  frameFailed?(cameraId: string): void;
  publishCameraStatus(status: CameraStatus): void;
  setDeviceStatus(info: { model: ModelInfo }): void;
}

/** The part of a Camera the pipeline drives. */
export type PipelineCamera = Pick<Camera, 'id' | 'frames$' | 'status$' | 'start' | 'stop' | 'trigger' | 'update'>;

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

function releaseAll(frames: Frame[]): void {
  for (const frame of frames) frame.release();
}

export class Pipeline {
  private readonly batcher = new FrameBatcher();
  private readonly cameras = new Map<string, PipelineCamera>();
  private readonly cameraSubscriptions = new Map<string, Subscription>();
  private readonly sourcesEnded = new Set<string>();
  /** Emits true once the batch loop has ended: stop() closed the batcher and every frame is through. */
  private drained$: Observable<boolean> = of(true);
  private loop: Subscription | null = null;
  private model: CradModel;
  private nextModel: CradModel | null = null;
  private post: PostprocessOptions;
  private state: 'built' | 'running' | 'stopped' = 'built';
  private processed = 0;
  private failedBatches = 0;
  private lastResultMono = 0;
  private fpsWindow = { at: performance.now(), processed: 0, fps: 0 };

  constructor(
    private config: AppConfig,
    model: CradModel,
    private readonly sink: PipelineSink,
    private readonly log: Logger,
  ) {
    this.model = model;
    this.post = postprocessOptions(config);
  }

  addCamera(camera: PipelineCamera, triggered: boolean): void {
    this.cameras.set(camera.id, camera);
    this.batcher.setCapacity(camera.id, triggered ? TRIGGER_QUEUE : 1);
    this.sourcesEnded.delete(camera.id);
    const subscription = camera.frames$.subscribe({
      next: (frame) => this.batcher.put(frame),
      // frames$ also completes on stop(); only a camera still in place has really ended.
      complete: () => {
        if (this.cameras.get(camera.id) === camera) this.sourcesEnded.add(camera.id);
      },
    });
    subscription.add(camera.status$.subscribe((status) => this.sink.publishCameraStatus(status)));
    this.cameraSubscriptions.set(camera.id, subscription);
    if (this.state === 'running') camera.start();
  }

  async removeCamera(id: string): Promise<void> {
    const camera = this.cameras.get(id);
    if (!camera) return;
    this.cameras.delete(id);
    this.sourcesEnded.delete(id);
    await camera.stop();
    this.cameraSubscriptions.get(id)?.unsubscribe();
    this.cameraSubscriptions.delete(id);
    this.batcher.forget(id);
  }

  /** A trigger (from whichever plane received it) for a camera in trigger mode. */
  trigger(cameraId: string, triggerId?: string): void {
    const camera = this.cameras.get(cameraId);
    if (camera) camera.trigger(triggerId);
    else this.log.warn({ cameraId }, 'trigger for an unknown camera ignored');
  }

  start(): void {
    this.state = 'running';
    // One batch at a time: take it, run the model, post-process and publish; the loop takes the
    // next batch only when this one is through, so frames wait in the batcher (latest frame
    // wins), never in a queue. It ends when stop() has closed the batcher and it is empty.
    const batches$ = this.nextBatch$.pipe(
      concatMap((frames) => (frames.length > 0 ? this.process$(frames).pipe(endWith(true)) : of(false))),
      repeat(),
      takeWhile(Boolean),
    );
    // The loop has one subscriber (connect); stop() only watches for its end.
    const drained$ = connectable(batches$.pipe(ignoreElements(), endWith(true)), {
      connector: () => new ReplaySubject<boolean>(1),
      resetOnDisconnect: false,
    });
    this.drained$ = drained$;
    this.loop = drained$.connect();
    for (const camera of this.cameras.values()) camera.start();
  }

  /**
   * The next batch, with a waiting model swapped in; [] once the batcher is closed and empty. Frames
   * taken after an unsubscribe are released here: nothing downstream would.
   */
  private readonly nextBatch$ = new Observable<Frame[]>((subscriber) => {
    this.takeBatch().then(
      (frames) => {
        if (subscriber.closed) return releaseAll(frames);
        subscriber.next(frames);
        subscriber.complete();
      },
      (err: unknown) => subscriber.error(err),
    );
  });

  private async takeBatch(): Promise<Frame[]> {
    const frames = await this.batcher.take(this.config.inference.maxBatch, this.config.inference.maxWaitMs);
    // Between batches, and after the wait: the batch just taken already runs on the new model.
    await this.swapModel();
    return frames;
  }

  /**
   * Run the model on a batch, then post-process and publish it. The frames end here, once,
   * whatever happens: after publishing, after a failed run (counted, the loop goes on), or after
   * an unsubscribe mid-run (once the model is done with their pixels).
   */
  private process$(frames: Frame[]): Observable<never> {
    return defer(() => {
      // async: a model that throws instead of rejecting still ends in the same catchError.
      const run = (async () => this.model.run(frames))();
      return from(run).pipe(
        // The model is done with the pixels: a camera replaying a recording may read its next
        // image now, while this batch is post-processed.
        tap(() => frames.forEach((frame) => frame.inferred?.())),
        tap((inference) => this.publishAll(inference)),
        ignoreElements(),
        catchError((err: unknown) => {
          this.failedBatches++;
          for (const frame of frames) this.sink.frameFailed?.(frame.cameraId);
          this.log.error({ err, frames: frames.length }, 'inference failed; batch skipped');
          return EMPTY;
        }),
        finalize(() => void run.then(() => releaseAll(frames), () => releaseAll(frames))),
      );
    });
  }

  /** A frame that fails post-processing or publishing is logged and skipped; the others go on. */
  private publishAll(inference: Inference): void {
    for (const frameInference of inference.frames) {
      try {
        const result = this.postprocessOne(inference, frameInference);
        this.sink.publishResult(result, frameInference);
        this.processed++;
        this.lastResultMono = performance.now();
      } catch (err) {
        this.sink.frameFailed?.(frameInference.frame.cameraId);
        this.log.error({ err, camera: frameInference.frame.cameraId, sequence: frameInference.frame.sequence }, 'post-processing failed; frame skipped');
      }
    }
  }

  private postprocessOne(inference: Inference, frameInference: Inference['frames'][number]): Result {
    const queueMs = Math.max(0, performance.now() - frameInference.frame.capturedMono - inference.timings.inferenceMs - inference.timings.preprocessMs);
    return postprocess(frameInference, inference.model, this.post, {
      queueMs,
      preprocessMs: inference.timings.preprocessMs,
      inferenceMs: inference.timings.inferenceMs,
      batchSize: inference.timings.batchSize,
    });
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
    if (this.state === 'stopped') {
      void model.release();
      return;
    }
    const stale = this.nextModel;
    this.nextModel = model;
    if (stale) void stale.release();
    if (this.state === 'built') void this.swapModel();
  }

  private async swapModel(): Promise<void> {
    const next = this.nextModel;
    if (!next) return;
    this.nextModel = null;
    const old = this.model;
    this.model = next;
    this.sink.setDeviceStatus({ model: next.info });
    this.log.info({ model: next.info.path, hash: next.info.hash }, 'model swapped');
    // No batch is in flight here: the loop runs one batch at a time.
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
    await Promise.allSettled([...this.cameras.values()].map((camera) => camera.stop()));
    this.batcher.close();
    const drained = await firstValueFrom(this.drained$.pipe(timeout({ first: timeoutMs, with: () => of(false) })));
    this.state = 'stopped';
    // After a timeout: frames of a batch still running are released once the model lets go.
    this.loop?.unsubscribe();
    for (const subscription of this.cameraSubscriptions.values()) subscription.unsubscribe();
    this.batcher.releaseAll();
    const pending = this.nextModel;
    this.nextModel = null;
    await pending?.release();
    await this.model.release();
    return drained;
  }
}
