// The pipeline's edges: the cameras it drives, where its output goes, and what it reports.
import type { Camera } from './capture/index.js';
import type { CameraStatus } from './capture/frame.js';
import type { TriggerCounts } from './capture/trigger-ledger.js';
import type { FrameInference, InspectionResult, ModelInfo, Result } from './inference/types.js';

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
