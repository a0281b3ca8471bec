// What the console reads from and asks of the running daemon. The daemon implements it; the
// console never reaches into the daemon's parts itself.
import type { CameraStats } from '../capture/camera.js';
import type { CameraStatus, FrameSize } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import type { ConfigPushResponse } from '../config/remote.js';
import type { RecipeResponse, RecipeSetRequest } from '../control/recipes.js';
import type { ModelInfo } from '../inference/types.js';
import type { PipelineStats } from '../pipeline.js';
import type { PublisherStats } from '../publish/index.js';
import type { CameraCounters } from './counters.js';
import type { FrameScorer } from './roi-check.js';

export interface ConsoleHost {
  config(): AppConfig;
  revision(): number;
  /** The same validated, recorded, revisioned path as an MQTT config/set. */
  configPush(payload: Buffer): Promise<ConfigPushResponse>;
  model(): ModelInfo;
  pipelineStats(): PipelineStats;
  publisherStats(): PublisherStats;
  /** The enabled cameras of the running configuration, as they are now. */
  cameras(): CameraView[];
  counters(): Record<string, CameraCounters>;
  resetCounters(cameraIds: string[]): void;
  /** Whether a frame captured now will be inspected (the batch loop runs), and why not. */
  inspection?(): { ready: boolean; reason: string | null };
  /** The configured recipe names and each enabled camera's active one (null: the base configuration). */
  recipes(): { names: string[]; active: Record<string, string | null> };
  /** The same checked, kept and audited path as an MQTT recipe/set. */
  selectRecipe(request: RecipeSetRequest): RecipeResponse;
  /** Score frames with the model and options serving the camera now (an ROI check); absent: no checks. */
  scoreFrames?: FrameScorer;
}

export interface CameraView {
  id: string;
  /** Its last reported status, null before the first. */
  status: CameraStatus | null;
  stats: CameraStats | null;
  frameSize: FrameSize | null;
}
