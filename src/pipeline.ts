// The whole data flow in one place, top to bottom:
//   cameras -> frame tagged with its recipe -> latest frame per camera -> batch across cameras (one
//   model per batch) -> model -> post-process (the recipe's options) -> publish
// Stages know nothing of each other; only this file knows the order. Errors are values at stage
// borders: a bad batch is logged and counted, the loop goes on. Every trigger is owed one answer:
// its result, or a failure with a code. The batch loop is a plain async loop that only stop() ends.
import type { Subscription } from 'rxjs';
import type { AppConfig } from './config/load.js';
import type { RecipeName } from './config/recipes.js';
import type { CameraConfig } from './config/schema.js';
import type { CameraStatus, Frame } from './capture/frame.js';
import { CameraReadiness, TRIGGER_QUEUE } from './capture/readiness.js';
import { TriggerDesk } from './capture/trigger-desk.js';
import { Received, TriggerLedger, type OwedTrigger } from './capture/trigger-ledger.js';
import { failureAnswer } from './inference/answers.js';
import { FrameBatcher } from './inference/batcher.js';
import type { CradModel, RunHooks } from './inference/model.js';
import { batchesInFlight, resolveInferenceThread } from './inference/model-options.js';
import { LoopWatch } from './inference/loop-watch.js';
import { ModelSlot } from './inference/model-slot.js';
import { postprocessFrame } from './inference/postprocess.js';
import { RecipeChoice } from './inference/recipe-choice.js';
import { RecipeModels } from './inference/recipes.js';
import type { Inference, InspectionResult } from './inference/types.js';
import type { PipelineCamera, PipelineSink, PipelineStats } from './pipeline-types.js';
import { failure, type Failure } from './shared/answer-codes.js';
import type { Logger } from './shared/log.js';
import { RateWindow } from './shared/rate.js';

export type { PipelineCamera, PipelineSink, PipelineStats } from './pipeline-types.js';

const releaseAll = (frames: Frame[]): void => frames.forEach((frame) => frame.release());

export class Pipeline {
  private readonly batcher = new FrameBatcher();
  private readonly cameras = new Map<string, PipelineCamera>();
  private readonly cameraSubscriptions = new Map<string, Subscription>();
  private readonly sourcesEnded = new Set<string>();
  /** Settles once the batch loop has ended (only stop() ends it) and every batch taken is through. */
  private loopEnded: Promise<void> = Promise.resolve();
  private readonly watch: LoopWatch;
  private statusRefresh: NodeJS.Timeout | null = null;
  private readonly models: ModelSlot;
  private readonly readiness: CameraReadiness;
  private readonly recipes: RecipeChoice;
  private state: 'built' | 'running' | 'stopping' | 'stopped' = 'built';
  private readonly triggered = new Set<string>();
  private readonly ledger: TriggerLedger;
  private readonly desk: TriggerDesk;
  private refusedFrames = 0;
  private processed = 0;
  private failedBatches = 0;
  private lastResultMono = 0;
  /** Batches taken and not yet through (at most batchesInFlight()); each settles, never rejects. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Settles when the last batch taken has published (or failed): the next one publishes after it. */
  private publishTurn: Promise<void> = Promise.resolve();
  private readonly resultRate = new RateWindow();

  constructor(
    private config: AppConfig,
    model: CradModel,
    private readonly sink: PipelineSink,
    private readonly log: Logger,
    recipes: RecipeModels = RecipeModels.none(),
  ) {
    const deadlineMs = (cameraId: string): number => this.cameraConfig(cameraId)?.triggerDeadlineMs ?? 5000;
    this.watch = new LoopWatch(() => ({ waiting: this.batcher.waiting, running: this.inFlight.size }), () => this.config.service.watchdogStallMs, (reason) => {
      // Gone for good: every trigger owed is answered, every status says not ready, the owner is told.
      this.log.fatal({ reason }, 'inspection stopped: the batch loop is not running');
      this.ledger.failAll(failure('inspection-stopped', `inspection stopped: ${reason}`));
      this.readiness.publishAll();
      this.sink.pipelineFault?.(reason);
    });
    this.models = new ModelSlot(model, recipes, {
      swapped: (info) => this.sink.setDeviceStatus({ model: info }),
      changed: () => this.readiness.publishAll(),
    }, log);
    this.readiness = new CameraReadiness({
      fault: () => this.watch.faultReason,
      recipeRefusal: (recipe) => this.models.refusal(recipe),
      activeRecipe: (cameraId) => this.activeRecipe(cameraId),
      triggered: (cameraId) => this.triggered.has(cameraId),
      owedBy: (cameraId) => this.ledger.owedBy(cameraId),
      swapBlockedMs: () => this.models.blockedMs(), deadlineMs, publish: (status) => this.sink.publishCameraStatus(status),
    });
    this.recipes = new RecipeChoice(config);
    this.ledger = new TriggerLedger({
      answer: (trigger, reason) => this.answerFailure(trigger, reason),
      abandoned: (trigger) => {
        if (!trigger.captured) this.cameras.get(trigger.cameraId)?.cancelTrigger?.(trigger.ticket);
        else this.batcher.discard((frame) => frame.ticket === trigger.ticket);
      },
      changed: (cameraId) => this.readiness.publish(cameraId),
    });
    this.desk = new TriggerDesk(this.ledger, {
      camera: (cameraId) => this.cameras.get(cameraId),
      notReady: (cameraId) => this.readiness.notReady(cameraId),
      activeRecipe: (cameraId) => this.activeRecipe(cameraId),
      deadlineMs,
    }, log);
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
    this.readiness.countFrame(frame.cameraId);
    const owed = frame.ticket === undefined ? undefined : this.ledger.get(frame.ticket);
    if (frame.ticket !== undefined && !owed) {
      // Its trigger was answered already (deadline): the answer stands, the frame goes unused.
      frame.release();
      return;
    }
    if (owed) owed.captured = true;
    frame.recipe = owed ? owed.recipe : this.activeRecipe(frame.cameraId);
    const problem = this.models.refusal(frame.recipe) ?? this.recipes.applyRoi(frame);
    if (problem !== null) {
      this.refusedFrames++;
      if (owed) this.ledger.fail(owed.ticket, failure('recipe-refused', problem));
      frame.release();
      return;
    }
    this.batcher.put(frame);
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
    this.readiness.forget(id);
  }

  /** A trigger (from whichever plane received it) for a camera in trigger mode: exactly one answer, always. */
  trigger(cameraId: string, triggerId?: string, received = Received.now(), sentAt?: Date): void {
    this.desk.take(cameraId, triggerId, received, sentAt);
  }

  /** Answer a trigger that cannot be taken (e.g. it named a recipe that does not exist, or could not be read). */
  refuseTrigger(cameraId: string, triggerId: string | undefined, why: Failure, received = Received.now()): void {
    this.desk.refuse(cameraId, triggerId, why, received);
  }

  /** The recipe a camera inspects under now. */
  activeRecipe(cameraId: string): RecipeName {
    return this.recipes.active(cameraId);
  }

  /** Switch a camera's recipe: frames captured from now on are inspected under it. Returns why not, or null. */
  selectRecipe(cameraId: string, recipe: RecipeName): string | null {
    const problem = this.recipes.select(cameraId, recipe, (name) => this.recipeModels.refusal(name));
    if (problem === null) this.readiness.publish(cameraId);
    return problem;
  }

  private answerFailure(trigger: OwedTrigger, why: Failure): void {
    this.log.warn({ camera: trigger.cameraId, triggerId: trigger.triggerId, code: why.code, reason: why.reason }, 'trigger answered without an inspection');
    const verdict = this.cameraConfig(trigger.cameraId)?.triggerFailVerdict ?? 'ERROR';
    this.sink.publishAnswer(failureAnswer(trigger, why, verdict, this.recipes.number(trigger.recipe)));
  }

  private cameraConfig(cameraId: string): CameraConfig | undefined {
    return this.config.cameras.find((c) => c.id === cameraId);
  }

  private noteCameraStatus(status: CameraStatus): void {
    this.readiness.note(status);
    // A lost camera will not capture what it was asked for: answer now, not at the deadline.
    if (status.state !== 'online' && status.state !== 'starting') {
      this.ledger.failCamera(status.cameraId, failure('camera-offline', `camera ${status.state}${status.error ? `: ${status.error}` : ''}`), true);
    }
    this.readiness.publish(status.cameraId);
  }

  start(): void {
    this.state = 'running';
    this.watch.start();
    // Retained statuses carry framesCaptured: refreshed with the device status, not per frame.
    this.statusRefresh = setInterval(() => this.readiness.publishAll(true), Math.max(1000, this.config.service.statusIntervalMs));
    this.statusRefresh.unref();
    this.loopEnded = this.runBatchLoop().then(
      () => {
        if (this.state === 'running') this.watch.declare('the batch loop ended while the pipeline was running');
      },
      (err: unknown) => this.watch.declare(`the batch loop failed: ${(err as Error).message}`),
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
      const frames = await this.batcher.take(this.config.inference.maxBatch, this.config.inference.maxWaitMs, (frame) => this.models.modelFor(frame.recipe ?? null));
      if (frames === null) break;
      this.watch.progress();
      // Between batches, and after the wait: the batch just taken already runs on the new model.
      await this.models.swap();
      if (this.state === 'stopped') {
        // stop() ran out of time during the swap and released the models: these frames never run.
        releaseAll(frames);
        break;
      }
      // A swap may have given the batch's recipes different models (a recipe got a model of its
      // own): each frame runs on the model its recipe has now, never on another recipe's.
      for (const [model, group] of this.models.byModel(frames)) this.inFlight.add(this.processBatch(group, model));
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

  /**
   * Run the model on a batch, then post-process and publish it after the batch taken before it.
   * Never rejects. The frames end here, once, whatever happens: after publishing, or after a failed
   * run (counted, the loop goes on), and only once the model is done with their pixels.
   */
  private processBatch(frames: Frame[], model: CradModel): Promise<void> {
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
    const run = (async () => model.run(frames, hooks))();
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
        this.watch.progress();
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

  /** Whether a frame captured now will be inspected (the loop runs and is not stalled). Reads only. */
  liveness(): { alive: boolean; reason: string | null } {
    return this.watch.liveness();
  }

  /** A frame that fails post-processing or publishing is logged and skipped; the others go on. */
  private publishAll(inference: Inference): void {
    for (const frameInference of inference.frames) {
      const { ticket, cameraId } = frameInference.frame;
      try {
        const recipe = frameInference.frame.recipe ?? null;
        const result: InspectionResult = { ...postprocessFrame(inference, frameInference, this.recipes.postprocess(recipe)), ...this.recipes.number(recipe) };
        // A trigger already answered (its deadline passed) keeps that one answer.
        if (ticket !== undefined && !this.ledger.inspected(ticket, cameraId)) continue;
        this.sink.publishResult(result, frameInference);
        this.processed++;
        this.lastResultMono = performance.now();
        this.resultRate.add(this.lastResultMono);
      } catch (err) {
        this.sink.frameFailed?.(cameraId);
        this.log.error({ err, camera: cameraId, sequence: frameInference.frame.sequence }, 'post-processing failed; frame skipped');
        if (ticket !== undefined) this.ledger.fail(ticket, failure('postprocess-failed', `post-processing failed: ${(err as Error).message}`));
      }
    }
  }

  /** Hand a camera the fields it applies live (fps, roi, stall timeout, reopen delays). */
  updateCamera(config: CameraConfig): void {
    this.cameras.get(config.id)?.update(config);
  }

  /** Apply config that needs no restart (thresholds, sensitivity, regions, crops, overlay, batching). */
  updateLive(config: AppConfig): void {
    this.config = config;
    this.recipes.update(config);
    this.readiness.publishAll();
  }

  /** Hand over the models of a new set of recipes; they replace the running ones between batches. */
  replaceRecipes(recipes: RecipeModels): void {
    this.models.replaceRecipes(recipes, this.state === 'built');
  }

  get recipeModels(): RecipeModels {
    return this.models.latestRecipes;
  }

  /** Hand over a loaded, warmed-up model; it replaces the running one between batches. */
  replaceModel(model: CradModel): void {
    this.models.replaceModel(model, this.state === 'built');
  }

  get currentModel(): CradModel {
    return this.models.current;
  }

  /** The model the next batch runs on: one handed over and not yet swapped in, else the current one. */
  get latestModel(): CradModel {
    return this.models.latest;
  }

  stats(): PipelineStats {
    return {
      processed: this.processed,
      failedBatches: this.failedBatches,
      dropped: this.batcher.stats().dropped,
      lastResultMono: this.lastResultMono,
      fps: this.resultRate.rate(),
      sourcesEnded: [...this.sourcesEnded],
      model: this.models.current.info.path,
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
    this.watch.stop();
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
    await this.models.close();
    return drained;
  }
}
