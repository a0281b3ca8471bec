// The whole data flow in one place, top to bottom:
//   cameras -> frame tagged with its recipe -> latest frame per camera -> batch across cameras (one
//   model per batch) -> model -> post-process (the recipe's options) -> publish
// Stages know nothing of each other; only this file knows the order. Errors are values at stage
// borders: a bad batch is logged and counted, and the stream goes on. Every accepted trigger is
// owed one answer (the trigger ledger): its result, or a failure result with the reason.
import {
  catchError,
  connectable,
  defer,
  EMPTY,
  endWith,
  finalize,
  firstValueFrom,
  from,
  ignoreElements,
  mergeMap,
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
import { cameraWithRecipe, configuredRecipe, recipeExists, withRecipe, type RecipeName } from './config/recipes.js';
import type { CameraConfig } from './config/schema.js';
import type { Camera } from './capture/index.js';
import { roiFitsFrame, roiMisfit, type CameraStatus, type Frame } from './capture/frame.js';
import { TriggerLedger, type OwedTrigger, type TriggerCounts } from './capture/trigger-ledger.js';
import { FrameBatcher } from './inference/batcher.js';
import { batchesInFlight, resolveInferenceThread, type CradModel, type RunHooks } from './inference/model.js';
import { postprocess, postprocessOptions, type PostprocessOptions } from './inference/postprocess.js';
import { RecipeModels } from './inference/recipes.js';
import type { FrameInference, Inference, InspectionResult, ModelInfo, Result } from './inference/types.js';
import type { Logger } from './shared/log.js';

/** Triggered cameras owe at most this many answers (every trigger asked for an inspection); a
 * trigger beyond it is answered at once. Frames waiting in the batcher never exceed it. */
const TRIGGER_QUEUE = 16;

/** Where the pipeline's output goes: whatever plane publishes results and statuses. */
export interface PipelineSink {
  /**
   * `inspected` carries the frame's full-resolution Mat and the anomaly map, borrowed: valid only
   * during the call (the frame is released after); keep a copy to use them later.
   */
  publishResult(result: InspectionResult, inspected: FrameInference): void;
  /** A trigger's answer without an inspection (ERROR, or the configured verdict, with the reason). */
  publishAnswer(result: Result): void;
  /** A frame that produced no result (its batch failed, or its post-processing). */
  frameFailed?(cameraId: string): void;
  /** Send what was published so far, briefly waited for, before the model holds the main thread. */
  sendPending?(): Promise<void>;
  publishCameraStatus(status: CameraStatus): void;
  setDeviceStatus(info: { model: ModelInfo }): void;
}

/** The part of a Camera the pipeline drives (a camera that reports no dropped triggers leaves them to their deadline). */
export type PipelineCamera = Pick<Camera, 'id' | 'frames$' | 'status$' | 'start' | 'stop' | 'update'>
  & Partial<Pick<Camera, 'triggerDrops$' | 'cancelTrigger'>>
  & { trigger(triggerId?: string, ticket?: number): string | null | void };

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
  /** Per triggered camera: every trigger received, and how each was answered. */
  triggers: Record<string, TriggerCounts>;
  /** Frames not inspected because their recipe is refused (its model did not load). */
  refusedFrames: number;
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
  private recipes: RecipeModels;
  private nextRecipes: RecipeModels | null = null;
  /** The recipe each camera inspects under now (absent: its configured one). */
  private readonly selected = new Map<string, RecipeName>();
  private readonly postByRecipe = new Map<RecipeName, PostprocessOptions>();
  private readonly triggered = new Set<string>();
  private readonly cameraStatus = new Map<string, CameraStatus>();
  private readonly publishedStatus = new Map<string, CameraStatus>();
  private readonly ledger: TriggerLedger;
  private refusedFrames = 0;
  private processed = 0;
  private failedBatches = 0;
  private lastResultMono = 0;
  /** Batches taken and not yet through (at most model.sessions). */
  private inFlight = 0;
  private slotFreed: (() => void) | null = null;
  /** Settles when the last batch taken has published (or failed): the next one publishes after it. */
  private publishTurn: Promise<void> = Promise.resolve();
  private fpsWindow = { at: performance.now(), processed: 0, fps: 0 };

  constructor(
    private config: AppConfig,
    model: CradModel,
    private readonly sink: PipelineSink,
    private readonly log: Logger,
    recipes: RecipeModels = RecipeModels.none(),
  ) {
    this.model = model;
    this.recipes = recipes;
    this.post = postprocessOptions(config);
    this.ledger = new TriggerLedger({
      answer: (trigger, reason) => this.answerFailure(trigger, reason),
      abandoned: (trigger) => {
        if (!trigger.captured) this.cameras.get(trigger.cameraId)?.cancelTrigger?.(trigger.ticket);
        else this.batcher.discard((frame) => frame.ticket === trigger.ticket);
      },
      changed: (cameraId) => this.publishStatus(cameraId),
    });
  }

  addCamera(camera: PipelineCamera, triggered: boolean): void {
    this.cameras.set(camera.id, camera);
    this.batcher.setCapacity(camera.id, triggered ? TRIGGER_QUEUE : 1);
    if (triggered) this.triggered.add(camera.id);
    else this.triggered.delete(camera.id);
    this.sourcesEnded.delete(camera.id);
    const subscription = camera.frames$.subscribe({
      next: (frame) => this.admit(frame),
      // frames$ also completes on stop(); only a camera still in place has really ended.
      complete: () => {
        if (this.cameras.get(camera.id) === camera) this.sourcesEnded.add(camera.id);
      },
    });
    subscription.add(camera.status$.subscribe((status) => this.noteCameraStatus(status)));
    if (camera.triggerDrops$) {
      subscription.add(camera.triggerDrops$.subscribe(({ ticket, reason }) => {
        if (ticket !== undefined) this.ledger.fail(ticket, reason);
      }));
    }
    this.cameraSubscriptions.set(camera.id, subscription);
    if (this.state === 'running') camera.start();
  }

  /** A captured frame gets its recipe (and the recipe's ROI) and waits for a batch of its model. */
  private admit(frame: Frame): void {
    const owed = frame.ticket === undefined ? undefined : this.ledger.get(frame.ticket);
    if (frame.ticket !== undefined && !owed) {
      // Its trigger was answered already (deadline): the answer stands, the frame goes unused.
      frame.release();
      return;
    }
    if (owed) owed.captured = true;
    frame.recipe = owed ? owed.recipe : this.activeRecipe(frame.cameraId);
    const problem = this.recipes.refusal(frame.recipe) ?? this.applyRecipeRoi(frame);
    if (problem !== null) {
      this.refusedFrames++;
      if (owed) this.ledger.fail(owed.ticket, problem);
      frame.release();
      return;
    }
    this.batcher.put(frame);
  }

  /** A recipe's ROI for this frame; why it cannot be used, or null. */
  private applyRecipeRoi(frame: Frame): string | null {
    const camera = this.cameraConfig(frame.cameraId);
    if (!camera || frame.recipe === null || frame.recipe === undefined) return null;
    const roi = cameraWithRecipe(this.config, camera, frame.recipe).roi;
    const size = { width: frame.image.cols, height: frame.image.rows };
    if (roi && !roiFitsFrame(roi, size)) return `recipe ${frame.recipe}: ${roiMisfit(roi, size)}`;
    frame.roi = roi;
    return null;
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
    this.ledger.failCamera(id, 'camera removed');
    this.cameraStatus.delete(id);
    this.publishedStatus.delete(id);
  }

  /**
   * A trigger (from whichever plane received it) for a camera in trigger mode: answered by the
   * result of its frame, or with a failure result (at once when it cannot be taken, else when
   * the camera's triggerDeadlineMs passes first).
   */
  trigger(cameraId: string, triggerId?: string): void {
    const camera = this.cameras.get(cameraId);
    if (!camera) {
      this.log.warn({ cameraId }, 'trigger for an unknown camera ignored');
      this.refuseTrigger(cameraId, triggerId, 'no such camera running');
      return;
    }
    const recipe = this.activeRecipe(cameraId);
    const notReady = this.notReady(cameraId);
    if (notReady !== null) {
      this.refuseTrigger(cameraId, triggerId, notReady);
      return;
    }
    const owed = this.ledger.open(cameraId, triggerId, recipe, this.cameraConfig(cameraId)?.triggerDeadlineMs ?? 5000);
    const refused = camera.trigger(triggerId, owed.ticket);
    if (typeof refused === 'string') this.ledger.fail(owed.ticket, refused, 'refused');
  }

  /** Answer a trigger that cannot be taken (e.g. it named a recipe that does not exist). */
  refuseTrigger(cameraId: string, triggerId: string | undefined, reason: string): void {
    this.ledger.refuse(cameraId, triggerId, this.activeRecipe(cameraId), reason);
  }

  /** Why a camera cannot take a trigger now, or null (its retained status says so as `ready`). */
  private notReady(cameraId: string): string | null {
    const status = this.cameraStatus.get(cameraId);
    if (status && status.state !== 'online') return `camera ${status.state}${status.error ? `: ${status.error}` : ''}`;
    const refusal = this.recipes.refusal(this.activeRecipe(cameraId));
    if (refusal !== null) return `recipe ${this.activeRecipe(cameraId)} refused: ${refusal}`;
    if (this.triggered.has(cameraId) && this.ledger.owedBy(cameraId) >= TRIGGER_QUEUE) return `queue full: ${TRIGGER_QUEUE} triggers wait for results`;
    return null;
  }

  /** The recipe a camera inspects under now. */
  activeRecipe(cameraId: string): RecipeName {
    if (this.selected.has(cameraId)) return this.selected.get(cameraId)!;
    const camera = this.cameraConfig(cameraId);
    return camera ? configuredRecipe(camera) : null;
  }

  /** Switch a camera's recipe: frames captured from now on are inspected under it. Returns why not, or null. */
  selectRecipe(cameraId: string, recipe: RecipeName): string | null {
    if (!this.cameraConfig(cameraId)) return `no camera "${cameraId}" in the configuration`;
    if (!recipeExists(this.config, recipe)) return `no recipe named "${recipe}" (recipes: ${Object.keys(this.config.recipes).join(', ') || 'none'})`;
    const refusal = this.recipeModels.refusal(recipe);
    if (refusal !== null) return `recipe ${recipe} refused: ${refusal}`;
    this.selected.set(cameraId, recipe);
    this.publishStatus(cameraId);
    return null;
  }

  /** The failure answer of a trigger: a result without an inspection, with the reason. */
  private answerFailure(trigger: OwedTrigger, reason: string): void {
    this.log.warn({ camera: trigger.cameraId, triggerId: trigger.triggerId, reason }, 'trigger answered without an inspection');
    const frame: Result['frame'] = { cameraId: trigger.cameraId, sequence: 0, capturedAt: trigger.receivedAt, capturedMono: trigger.receivedMono, roi: null };
    if (trigger.triggerId !== undefined) frame.triggerId = trigger.triggerId;
    this.sink.publishAnswer({
      frame, model: null, recipe: trigger.recipe, raw: null, normalized: null,
      verdict: this.cameraConfig(trigger.cameraId)?.triggerFailVerdict ?? 'ERROR', reason,
      calibrated: false, regions: [], crops: [], overlay: null,
      latency: { queueMs: performance.now() - trigger.receivedMono, preprocessMs: 0, inferenceMs: 0, postprocessMs: 0, batchSize: 0 },
    });
  }

  private cameraConfig(cameraId: string): CameraConfig | undefined {
    return this.config.cameras.find((c) => c.id === cameraId);
  }

  private noteCameraStatus(status: CameraStatus): void {
    this.cameraStatus.set(status.cameraId, status);
    // A lost camera will not capture what it was asked for: answer now, not at the deadline.
    if (status.state !== 'online' && status.state !== 'starting') {
      this.ledger.failCamera(status.cameraId, `camera ${status.state}${status.error ? `: ${status.error}` : ''}`, true);
    }
    this.publishStatus(status.cameraId);
  }

  /** The camera's status with its ready flag and recipe, published when any of them changed. */
  private publishStatus(cameraId: string): void {
    const status = this.cameraStatus.get(cameraId);
    if (!status) return;
    const next: CameraStatus = { ...status, ready: this.notReady(cameraId) === null, recipe: this.activeRecipe(cameraId) };
    const last = this.publishedStatus.get(cameraId);
    if (last && last.since === next.since && last.state === next.state && last.error === next.error && last.ready === next.ready && last.recipe === next.recipe) return;
    this.publishedStatus.set(cameraId, next);
    this.sink.publishCameraStatus(next);
  }

  start(): void {
    this.state = 'running';
    // As many batches at a time as the model has sessions (one by default; one more per session
    // with model.prepareAhead on workers): take a batch, run the model, post-process and publish;
    // the loop takes the next batch only when a batch is through or, with more in flight, while
    // the others run. Frames wait in the batcher (latest frame wins), never in a queue, and
    // batches publish in the order they were taken. It ends when stop() has closed the batcher
    // and it is empty.
    const batches$ = this.nextBatch$.pipe(
      repeat(),
      takeWhile((frames) => frames.length > 0),
      mergeMap((frames) => this.process$(frames)),
    );
    // The loop has one subscriber (connect); stop() only watches for its end.
    const drained$ = connectable(batches$.pipe(endWith(true)), {
      connector: () => new ReplaySubject<boolean>(1),
      resetOnDisconnect: false,
    });
    this.drained$ = drained$;
    this.loop = drained$.connect();
    for (const camera of this.cameras.values()) camera.start();
  }

  /**
   * The next batch once a batch may start, with a waiting model swapped in; [] once the batcher is
   * closed and empty. Frames taken after an unsubscribe are released here: nothing downstream would.
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
    while (this.inFlight >= this.batchesInFlight()) await new Promise<void>((resolve) => (this.slotFreed = resolve));
    // One model per batch: frames of recipes on other models wait for the next one.
    const frames = await this.batcher.take(this.config.inference.maxBatch, this.config.inference.maxWaitMs, (frame) => this.modelFor(frame.recipe ?? null));
    // Between batches, and after the wait: the batch just taken already runs on the new model.
    await this.swapModel();
    return frames;
  }

  /** Batches the loop runs at once: one per session of the model, one more each with model.prepareAhead on workers. */
  private batchesInFlight(): number {
    const m = this.config.model;
    return batchesInFlight({ sessions: m.sessions, inferenceThread: resolveInferenceThread(m.inferenceThread), prepareAhead: m.prepareAhead });
  }

  private modelFor(recipe: RecipeName): CradModel {
    return this.recipes.model(recipe) ?? this.model;
  }

  /**
   * Run the model on a batch, then post-process and publish it after the batch taken before it.
   * The frames end here, once, whatever happens: after publishing, after a failed run (counted,
   * the loop goes on), or after an unsubscribe mid-run (once the model is done with their pixels).
   */
  private process$(frames: Frame[]): Observable<never> {
    return defer(() => {
      this.inFlight++;
      const previous = this.publishTurn;
      let turnDone!: () => void;
      this.publishTurn = new Promise<void>((resolve) => (turnDone = resolve));
      // The model is done with the pixels: a camera replaying a recording may read its next
      // image now. With one batch in flight, once it has run (read during the run, the next image
      // would take cores from it: bench/README.md); with more, once the batch is preprocessed, so
      // that the next batch can take the next image.
      const inferred = () => frames.forEach((frame) => frame.inferred?.());
      const readAhead = this.batchesInFlight() > 1;
      const hooks: RunHooks = {
        ...(readAhead ? { preprocessed: inferred } : {}),
        // The last batch's results are committed; a run on the main thread would hold back their
        // fsync's callback, and so their sending, until it ends (the paced row's tail: bench/README.md).
        beforeBlockingRun: async () => this.sink.sendPending?.(),
      };
      // async: a model that throws instead of rejecting still ends in the same catchError.
      const run = (async () => this.modelFor(frames[0]!.recipe ?? null).run(frames, hooks))();
      if (!readAhead) void run.then(inferred, () => undefined);
      const inOrder = run.finally(() => previous);
      return from(inOrder).pipe(
        tap((inference) => this.publishAll(inference)),
        ignoreElements(),
        catchError((err: unknown) => {
          this.failedBatches++;
          for (const frame of frames) this.sink.frameFailed?.(frame.cameraId);
          this.log.error({ err, frames: frames.length }, 'inference failed; batch skipped');
          for (const frame of frames) if (frame.ticket !== undefined) this.ledger.fail(frame.ticket, `inference failed: ${(err as Error).message}`);
          return EMPTY;
        }),
        finalize(() => {
          turnDone();
          void run.then(() => releaseAll(frames), () => releaseAll(frames));
          this.inFlight--;
          this.slotFreed?.();
          this.slotFreed = null;
        }),
      );
    });
  }

  /** A frame that fails post-processing or publishing is logged and skipped; the others go on. */
  private publishAll(inference: Inference): void {
    for (const frameInference of inference.frames) {
      const { ticket, cameraId } = frameInference.frame;
      try {
        const result = this.postprocessOne(inference, frameInference);
        // A trigger already answered (its deadline passed) keeps that one answer.
        if (ticket !== undefined && !this.ledger.inspected(ticket, cameraId)) continue;
        this.sink.publishResult(result, frameInference);
        this.processed++;
        this.lastResultMono = performance.now();
      } catch (err) {
        this.sink.frameFailed?.(cameraId);
        this.log.error({ err, camera: cameraId, sequence: frameInference.frame.sequence }, 'post-processing failed; frame skipped');
        if (ticket !== undefined) this.ledger.fail(ticket, `post-processing failed: ${(err as Error).message}`);
      }
    }
  }

  private postprocessOne(inference: Inference, frameInference: Inference['frames'][number]): InspectionResult {
    const queueMs = Math.max(0, performance.now() - frameInference.frame.capturedMono - inference.timings.inferenceMs - inference.timings.preprocessMs);
    return postprocess(frameInference, inference.model, this.postFor(frameInference.frame.recipe ?? null), {
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
    this.postByRecipe.clear();
    // A selection whose recipe is gone falls back to the camera's configured recipe.
    for (const [cameraId, recipe] of this.selected) if (!recipeExists(config, recipe)) this.selected.delete(cameraId);
    for (const cameraId of this.cameraStatus.keys()) this.publishStatus(cameraId);
  }

  /** Post-processing options under a recipe (the base options for none). */
  private postFor(recipe: RecipeName): PostprocessOptions {
    if (recipe === null) return this.post;
    let options = this.postByRecipe.get(recipe);
    if (!options) {
      options = postprocessOptions(withRecipe(this.config, recipe));
      this.postByRecipe.set(recipe, options);
    }
    return options;
  }

  /** Hand over the models of a new set of recipes; they replace the running ones between batches. */
  replaceRecipes(recipes: RecipeModels): void {
    if (this.state === 'stopped') {
      void recipes.release();
      return;
    }
    const stale = this.nextRecipes;
    this.nextRecipes = recipes;
    if (stale) void stale.release();
    if (this.state === 'built') void this.swapModel();
  }

  get recipeModels(): RecipeModels {
    return this.nextRecipes ?? this.recipes;
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
    const recipes = this.nextRecipes;
    if (recipes) {
      this.nextRecipes = null;
      const old = this.recipes;
      this.recipes = recipes;
      for (const cameraId of this.cameraStatus.keys()) this.publishStatus(cameraId);
      await old.release();
    }
    const next = this.nextModel;
    if (!next) return;
    this.nextModel = null;
    const old = this.model;
    this.model = next;
    this.sink.setDeviceStatus({ model: next.info });
    this.log.info({ model: next.info.path, hash: next.info.hash }, 'model swapped');
    // Waits for batches still running on the old model (with more than one session).
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
      triggers: this.ledger.stats(),
      refusedFrames: this.refusedFrames,
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
    this.ledger.failAll('the daemon is stopping');
    this.state = 'stopped';
    // After a timeout: frames of a batch still running are released once the model lets go.
    this.loop?.unsubscribe();
    for (const subscription of this.cameraSubscriptions.values()) subscription.unsubscribe();
    this.batcher.releaseAll();
    const pending = this.nextModel;
    this.nextModel = null;
    await pending?.release();
    await this.model.release();
    await this.nextRecipes?.release();
    await this.recipes.release();
    return drained;
  }
}
