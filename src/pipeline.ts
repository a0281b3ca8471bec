// The whole data flow in one place, top to bottom:
//   cameras -> frame tagged with its recipe -> latest frame per camera -> batch across cameras (one
//   model per batch) -> model -> post-process (the recipe's options) -> publish
// Stages know nothing of each other; only this file knows the order. Errors are values at stage
// borders: a bad batch is logged and counted, and the stream goes on. Every accepted trigger is
// owed one answer (the trigger ledger): its result, or a failure result with a code and the reason.
// The batch loop is a plain async loop (runBatchLoop); only stop() ends it, and its liveness is a
// fact the daemon reads (liveness()).
import type { Subscription } from 'rxjs';
import type { AppConfig } from './config/load.js';
import { cameraWithRecipe, configuredRecipe, recipeExists, recipeNumber, withRecipe, type RecipeName } from './config/recipes.js';
import type { CameraConfig } from './config/schema.js';
import type { Camera } from './capture/index.js';
import { roiFitsFrame, roiMisfit, type CameraStatus, type Frame } from './capture/frame.js';
import { Received, TriggerLedger, type OwedTrigger, type TriggerCounts } from './capture/trigger-ledger.js';
import { FrameBatcher } from './inference/batcher.js';
import type { CradModel, RunHooks } from './inference/model.js';
import { batchesInFlight, resolveInferenceThread } from './inference/model-options.js';
import { postprocess, postprocessOptions, type PostprocessOptions } from './inference/postprocess.js';
import { RecipeModels } from './inference/recipes.js';
import type { FrameInference, Inference, InspectionResult, ModelInfo, Result } from './inference/types.js';
import { answerCode, failure, type Failure } from './shared/answer-codes.js';
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
  /** The batch loop ended outside stop(): nothing will be inspected until the daemon restarts. */
  pipelineFault?(reason: string): void;
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
  /** Settles once the batch loop has ended (only stop() ends it) and every batch taken is through. */
  private loopEnded: Promise<void> = Promise.resolve();
  /** Why inspection has stopped outside stop(), or null while the loop runs (or was stopped). */
  private fault: string | null = null;
  /** When a batch was last taken or finished (the loop's liveness while frames wait). */
  private progressMono = performance.now();
  /** When the running swap began waiting for the old model's batches, or null. */
  private swapBlockedSince: number | null = null;
  private statusRefresh: NodeJS.Timeout | null = null;
  private stallCheck: NodeJS.Timeout | null = null;
  /** Frames each camera delivered (its retained status's framesCaptured). */
  private readonly framesCaptured = new Map<string, number>();
  private model: CradModel;
  private nextModel: CradModel | null = null;
  private post: PostprocessOptions;
  private state: 'built' | 'running' | 'stopping' | 'stopped' = 'built';
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
  /** Batches taken and not yet through (at most batchesInFlight()); each settles, never rejects. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Settles when the last batch taken has published (or failed): the next one publishes after it. */
  private publishTurn: Promise<void> = Promise.resolve();
  /** Results counted per window of at least a second (rolled as results come, read by stats()). */
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
        if (ticket !== undefined) this.ledger.fail(ticket, failure('camera-refused', reason));
      }));
    }
    this.cameraSubscriptions.set(camera.id, subscription);
    if (this.state === 'running') camera.start();
  }

  /** A captured frame gets its recipe (and the recipe's ROI) and waits for a batch of its model. */
  private admit(frame: Frame): void {
    this.framesCaptured.set(frame.cameraId, (this.framesCaptured.get(frame.cameraId) ?? 0) + 1);
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
      if (owed) this.ledger.fail(owed.ticket, failure('recipe-refused', problem));
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
    this.ledger.failCamera(id, failure('camera-removed', 'camera removed'));
    this.cameraStatus.delete(id);
    this.publishedStatus.delete(id);
  }

  /**
   * A trigger (from whichever plane received it) for a camera in trigger mode: answered by the
   * result of its frame, or with a failure result (at once when it cannot be taken, else when
   * the camera's triggerDeadlineMs passes first).
   */
  trigger(cameraId: string, triggerId?: string, received = Received.now(), sentAt?: Date): void {
    const deadlineMs = this.cameraConfig(cameraId)?.triggerDeadlineMs ?? 5000;
    const lateMs = sentAt ? Date.parse(received.at) - sentAt.getTime() : 0;
    if (lateMs > deadlineMs) {
      // It waited at the broker (the daemon was reconnecting): its part has left the station.
      this.refuseTrigger(cameraId, triggerId, failure('expired-broker-outage', `expired while the broker was away: sent ${sentAt!.toISOString()}, received ${lateMs} ms later (triggerDeadlineMs ${deadlineMs})`), received);
      return;
    }
    const camera = this.cameras.get(cameraId);
    if (!camera) {
      this.log.warn({ cameraId }, 'trigger for an unknown camera refused');
      this.refuseTrigger(cameraId, triggerId, failure('camera-unknown', 'no such camera running'), received);
      return;
    }
    const recipe = this.activeRecipe(cameraId);
    const notReady = this.notReady(cameraId);
    if (notReady !== null) {
      this.refuseTrigger(cameraId, triggerId, notReady, received);
      return;
    }
    const owed = this.ledger.open(cameraId, triggerId, recipe, deadlineMs - Math.max(0, lateMs), received);
    const refused = camera.trigger(triggerId, owed.ticket);
    if (typeof refused === 'string') this.ledger.fail(owed.ticket, failure('camera-refused', refused), 'refused');
  }

  /** Answer a trigger that cannot be taken (e.g. it named a recipe that does not exist, or could not be read). */
  refuseTrigger(cameraId: string, triggerId: string | undefined, why: Failure, received = Received.now()): void {
    this.ledger.refuse(cameraId, triggerId, this.activeRecipe(cameraId), why, received);
  }

  /** Why a camera cannot take a trigger now, or null (its retained status says so as `ready`). */
  private notReady(cameraId: string): Failure | null {
    if (this.fault !== null) return failure('inspection-stopped', `inspection stopped: ${this.fault}`);
    const status = this.cameraStatus.get(cameraId);
    if (status && status.state !== 'online') return failure('camera-offline', `camera ${status.state}${status.error ? `: ${status.error}` : ''}`);
    const refusal = this.recipes.refusal(this.activeRecipe(cameraId));
    if (refusal !== null) return failure('recipe-refused', `recipe ${this.activeRecipe(cameraId)} refused: ${refusal}`);
    if (this.triggered.has(cameraId) && this.ledger.owedBy(cameraId) >= TRIGGER_QUEUE) return failure('queue-full', `queue full: ${TRIGGER_QUEUE} triggers wait for results`);
    if (this.swapBlockedSince !== null && performance.now() - this.swapBlockedSince > (this.cameraConfig(cameraId)?.triggerDeadlineMs ?? 5000)) {
      return failure('inspection-stopped', 'the model swap takes longer than the trigger deadline');
    }
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
  private answerFailure(trigger: OwedTrigger, { code, reason }: Failure): void {
    this.log.warn({ camera: trigger.cameraId, triggerId: trigger.triggerId, code, reason }, 'trigger answered without an inspection');
    const frame: Result['frame'] = { cameraId: trigger.cameraId, sequence: 0, capturedAt: trigger.receivedAt, capturedMono: trigger.receivedMono, roi: null };
    if (trigger.triggerId !== undefined) frame.triggerId = trigger.triggerId;
    this.sink.publishAnswer({
      frame, model: null, recipe: trigger.recipe, ...this.numberOf(trigger.recipe), raw: null, normalized: null,
      verdict: this.cameraConfig(trigger.cameraId)?.triggerFailVerdict ?? 'ERROR', reason, code: answerCode(code), receivedAt: trigger.receivedAt,
      calibrated: false, regions: [], crops: [], overlay: null,
      latency: { queueMs: performance.now() - trigger.receivedMono, preprocessMs: 0, inferenceMs: 0, postprocessMs: 0, batchSize: 0 },
    });
  }

  private numberOf(recipe: RecipeName): { recipeNumber?: number } {
    const number = recipeNumber(this.config, recipe);
    return number === undefined ? {} : { recipeNumber: number };
  }

  private cameraConfig(cameraId: string): CameraConfig | undefined {
    return this.config.cameras.find((c) => c.id === cameraId);
  }

  private noteCameraStatus(status: CameraStatus): void {
    this.cameraStatus.set(status.cameraId, status);
    // A lost camera will not capture what it was asked for: answer now, not at the deadline.
    if (status.state !== 'online' && status.state !== 'starting') {
      this.ledger.failCamera(status.cameraId, failure('camera-offline', `camera ${status.state}${status.error ? `: ${status.error}` : ''}`), true);
    }
    this.publishStatus(status.cameraId);
  }

  /** The camera's status with its ready flag and recipe, published when any of them changed. */
  private publishStatus(cameraId: string, countsToo = false): void {
    const status = this.cameraStatus.get(cameraId);
    if (!status) return;
    const why = this.notReady(cameraId);
    const next: CameraStatus = {
      ...status, framesCaptured: this.framesCaptured.get(cameraId) ?? status.framesCaptured,
      ready: why === null, recipe: this.activeRecipe(cameraId), ...(why ? { notReady: why.reason } : {}),
    };
    const last = this.publishedStatus.get(cameraId);
    const same = last && last.since === next.since && last.state === next.state && last.error === next.error && last.ready === next.ready
      && last.notReady === next.notReady && last.recipe === next.recipe && (!countsToo || last.framesCaptured === next.framesCaptured);
    if (same) return;
    this.publishedStatus.set(cameraId, next);
    this.sink.publishCameraStatus(next);
  }

  start(): void {
    this.state = 'running';
    this.progressMono = performance.now();
    // Retained statuses carry framesCaptured: refreshed with the device status, not per frame.
    this.statusRefresh = setInterval(() => {
      for (const cameraId of this.cameraStatus.keys()) this.publishStatus(cameraId, true);
    }, Math.max(1000, this.config.service.statusIntervalMs));
    this.statusRefresh.unref();
    // A stalled loop has no event of its own: looked for a few times per watchdogStallMs.
    this.stallCheck = setInterval(() => {
      const { alive, reason } = this.liveness();
      if (!alive && this.fault === null) this.declareFault(reason!);
    }, Math.min(1000, this.config.service.watchdogStallMs / 4));
    this.stallCheck.unref();
    this.loopEnded = this.runBatchLoop().then(
      () => {
        if (this.state === 'running') this.declareFault('the batch loop ended while the pipeline was running');
      },
      (err: unknown) => this.declareFault(`the batch loop failed: ${(err as Error).message}`),
    );
    for (const camera of this.cameras.values()) camera.start();
  }

  /**
   * The batch loop, a plain async loop: wait for a free slot (one batch per model session; one more
   * each with model.prepareAhead on workers), take a batch (frames of one model), swap in a waiting
   * model, and start the batch through model, post-processing and publishing. Batches publish in
   * the order they were taken. Frames wait in the batcher (latest frame wins), never in a queue.
   * Only stop() ends it: it closes the batcher, and take() answers null once nothing is left.
   */
  private async runBatchLoop(): Promise<void> {
    for (;;) {
      await this.freeSlot();
      const frames = await this.batcher.take(this.config.inference.maxBatch, this.config.inference.maxWaitMs, (frame) => this.modelFor(frame.recipe ?? null));
      if (frames === null) break;
      this.progressMono = performance.now();
      // Between batches, and after the wait: the batch just taken already runs on the new model.
      await this.swapModel();
      if (this.state === 'stopped') {
        // stop() ran out of time during the swap and released the models: these frames never run.
        releaseAll(frames);
        break;
      }
      this.inFlight.add(this.processBatch(frames));
    }
    await Promise.all(this.inFlight);
  }

  private async freeSlot(): Promise<void> {
    while (this.inFlight.size >= this.batchesInFlight()) await Promise.race(this.inFlight);
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
   * Never rejects. The frames end here, once, whatever happens: after publishing, or after a failed
   * run (counted, the loop goes on), and only once the model is done with their pixels.
   */
  private processBatch(frames: Frame[]): Promise<void> {
    const previousTurn = this.publishTurn;
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
    // async: a model that throws instead of rejecting still ends in the same catch.
    const run = (async () => this.modelFor(frames[0]!.recipe ?? null).run(frames, hooks))();
    if (!readAhead) void run.then(inferred, () => undefined);
    let done!: Promise<void>;
    done = (async () => {
      try {
        const inference = await run.finally(() => previousTurn);
        if (this.state !== 'stopped') this.publishAll(inference);
      } catch (err) {
        this.batchFailed(frames, err);
      } finally {
        releaseAll(frames);
        this.progressMono = performance.now();
        this.inFlight.delete(done);
      }
    })();
    this.publishTurn = done;
    return done;
  }

  private batchFailed(frames: Frame[], err: unknown): void {
    this.failedBatches++;
    for (const frame of frames) this.sink.frameFailed?.(frame.cameraId);
    this.log.error({ err, frames: frames.length }, 'inference failed; batch skipped');
    for (const frame of frames) if (frame.ticket !== undefined) this.ledger.fail(frame.ticket, failure('inference-failed', `inference failed: ${(err as Error).message}`));
  }

  /**
   * Whether a frame captured now will be inspected: not when the batch loop has ended outside
   * stop(), nor when frames wait or a batch runs with no batch taken or finished for longer than
   * service.watchdogStallMs (a hung model run, a loop that stopped taking). Reads only.
   */
  liveness(): { alive: boolean; reason: string | null } {
    if (this.fault !== null) return { alive: false, reason: this.fault };
    if (this.state !== 'running') return { alive: true, reason: null };
    const idleMs = performance.now() - this.progressMono;
    const busy = this.batcher.waiting > 0 || this.inFlight.size > 0;
    if (busy && idleMs > this.config.service.watchdogStallMs) {
      return { alive: false, reason: `the batch loop is stalled: ${this.inFlight.size} batches running, ${this.batcher.waiting} frames waiting, no batch taken or finished for ${Math.round(idleMs)} ms` };
    }
    return { alive: true, reason: null };
  }

  /** The loop is gone for good: every trigger owed is answered, every status says not ready, the owner is told. */
  private declareFault(reason: string): void {
    if (this.fault !== null) return;
    this.fault = reason;
    this.log.fatal({ reason }, 'inspection stopped: the batch loop is not running');
    this.ledger.failAll(failure('inspection-stopped', `inspection stopped: ${reason}`));
    for (const cameraId of this.cameraStatus.keys()) this.publishStatus(cameraId);
    this.sink.pipelineFault?.(reason);
  }

  /** A frame that fails post-processing or publishing is logged and skipped; the others go on. */
  private publishAll(inference: Inference): void {
    for (const frameInference of inference.frames) {
      const { ticket, cameraId } = frameInference.frame;
      try {
        const result: InspectionResult = { ...this.postprocessOne(inference, frameInference), ...this.numberOf(frameInference.frame.recipe ?? null) };
        // A trigger already answered (its deadline passed) keeps that one answer.
        if (ticket !== undefined && !this.ledger.inspected(ticket, cameraId)) continue;
        this.sink.publishResult(result, frameInference);
        this.processed++;
        this.lastResultMono = performance.now();
        if (this.lastResultMono - this.fpsWindow.at >= 1000) {
          this.fpsWindow = { at: this.lastResultMono, processed: this.processed, fps: (this.processed - this.fpsWindow.processed) / ((this.lastResultMono - this.fpsWindow.at) / 1000) };
        }
      } catch (err) {
        this.sink.frameFailed?.(cameraId);
        this.log.error({ err, camera: cameraId, sequence: frameInference.frame.sequence }, 'post-processing failed; frame skipped');
        if (ticket !== undefined) this.ledger.fail(ticket, failure('postprocess-failed', `post-processing failed: ${(err as Error).message}`));
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
    // Waits for batches still running on the old model (with more than one session); a wait
    // longer than a trigger's deadline makes the camera not ready (refreshed by the status timer).
    this.swapBlockedSince = performance.now();
    try {
      await old.release();
    } finally {
      this.swapBlockedSince = null;
      for (const cameraId of this.cameraStatus.keys()) this.publishStatus(cameraId);
    }
  }

  get currentModel(): CradModel {
    return this.model;
  }

  stats(): PipelineStats {
    // No result for over a second: the last window's rate no longer holds.
    const sinceWindow = performance.now() - this.fpsWindow.at;
    const fps = sinceWindow < 2000 ? this.fpsWindow.fps : (this.processed - this.fpsWindow.processed) / (sinceWindow / 1000);
    return {
      processed: this.processed,
      failedBatches: this.failedBatches,
      dropped: this.batcher.stats().dropped,
      lastResultMono: this.lastResultMono,
      fps,
      sourcesEnded: [...this.sourcesEnded],
      model: this.model.info.path,
      triggers: this.ledger.stats(),
      refusedFrames: this.refusedFrames,
    };
  }

  /**
   * Graceful stop: stop capture, finish frames already captured, then release the models.
   * The caller flushes the publisher afterwards. Bounded by timeoutMs; false when it ran out.
   */
  async stop(timeoutMs: number): Promise<boolean> {
    if (this.statusRefresh) clearInterval(this.statusRefresh);
    if (this.stallCheck) clearInterval(this.stallCheck);
    await Promise.allSettled([...this.cameras.values()].map((camera) => camera.stop()));
    this.state = 'stopping';
    this.batcher.close();
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.loopEnded.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    this.ledger.failAll(failure('shutting-down', 'the daemon is stopping'));
    this.state = 'stopped';
    // After a timeout: a batch still running releases its frames once the model lets go, and publishes nothing.
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
