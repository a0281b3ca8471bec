// Results and statuses from the pipeline to every plane (JSON MQTT, Sparkplug, console, archive,
// dataset, counters, ...). Each plane is shielded from the others: a plane that throws is counted
// and logged under its own name, and the result, the outbox and the other planes go on.
import type { CameraStatus } from '../capture/frame.js';
import type { FrameInference, InspectionResult, ModelInfo, Result } from '../inference/types.js';
import type { PipelineSink } from '../pipeline.js';
import type { Logger } from '../shared/log.js';

/**
 * One consumer of results and statuses. Its constructor only stores what it is given; I/O starts
 * in start() and ends in stop(). Every handler is optional.
 */
export interface Plane {
  readonly name: string;
  /** Open files, connect, listen. A plane that cannot start stops the daemon's start. */
  start?(): void | Promise<void>;
  /** Flush and close within `timeoutMs` (what is left of service.shutdownTimeoutMs). */
  stop?(timeoutMs: number): void | Promise<void>;
  /** `inspected` is borrowed: the frame's Mat and map are valid only during the call. */
  result?(result: InspectionResult, inspected: FrameInference, cycleMs: number): void;
  /** A trigger answered without an inspection. */
  answer?(result: Result): void;
  frameFailed?(cameraId: string): void;
  cameraStatus?(status: CameraStatus): void;
  model?(info: ModelInfo): void;
}

/** How often one plane's failures are logged at most (each is counted). */
const LOG_EVERY_MS = 10_000;

export class Fanout implements PipelineSink {
  private readonly planes: Plane[] = [];
  private readonly started: Plane[] = [];
  private readonly failures = new Map<string, number>();
  private readonly loggedAt = new Map<string, number>();

  constructor(
    private readonly log: Logger,
    private readonly hooks: { sendPending?(): Promise<void>; pipelineFault?(reason: string): void } = {},
  ) {}

  /** Planes are told in the order they were added (the JSON plane first: it owns the outbox). */
  add(...planes: Array<Plane | null | undefined>): void {
    for (const plane of planes) if (plane) this.planes.push(plane);
  }

  /** Start the planes in the order they were added; the first that fails ends the start (stop() stops those started). */
  async start(): Promise<void> {
    for (const plane of this.planes) {
      if (this.started.includes(plane)) continue;
      await plane.start?.();
      this.started.push(plane);
    }
  }

  /**
   * Stop the started planes in reverse order (the JSON plane, which owns the outbox, last: it gets
   * whatever time the others left). A plane that fails to stop is counted and logged under its
   * name; the others still stop.
   */
  async stop(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (const plane of this.started.splice(0).reverse()) {
      try {
        await plane.stop?.(Math.max(100, deadline - performance.now()));
      } catch (err) {
        this.failures.set(plane.name, (this.failures.get(plane.name) ?? 0) + 1);
        this.log.warn({ plane: plane.name, err }, 'a plane did not stop cleanly; the others still stop');
      }
    }
  }

  /** Failures per plane name since start. */
  failureCounts(): Record<string, number> {
    return Object.fromEntries(this.failures);
  }

  publishResult(result: InspectionResult, inspected: FrameInference): void {
    const cycleMs = performance.now() - result.frame.capturedMono;
    this.each('result', (plane) => plane.result?.(result, inspected, cycleMs));
  }

  publishAnswer(result: Result): void {
    this.each('answer', (plane) => plane.answer?.(result));
  }

  frameFailed(cameraId: string): void {
    this.each('frameFailed', (plane) => plane.frameFailed?.(cameraId));
  }

  publishCameraStatus(status: CameraStatus): void {
    this.each('cameraStatus', (plane) => plane.cameraStatus?.(status));
  }

  setDeviceStatus(info: { model: ModelInfo }): void {
    this.each('model', (plane) => plane.model?.(info.model));
  }

  sendPending(): Promise<void> {
    return this.hooks.sendPending?.() ?? Promise.resolve();
  }

  pipelineFault(reason: string): void {
    this.hooks.pipelineFault?.(reason);
  }

  private each(event: string, call: (plane: Plane) => void): void {
    for (const plane of this.planes) {
      try {
        call(plane);
      } catch (err) {
        this.failed(plane.name, event, err);
      }
    }
  }

  private failed(name: string, event: string, err: unknown): void {
    const count = (this.failures.get(name) ?? 0) + 1;
    this.failures.set(name, count);
    const now = performance.now();
    if (now - (this.loggedAt.get(name) ?? -Infinity) < LOG_EVERY_MS) return;
    this.loggedAt.set(name, now);
    this.log.error({ plane: name, event, failures: count, err }, 'a plane failed; the result and the other planes go on');
  }
}
