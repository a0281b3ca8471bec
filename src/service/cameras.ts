// The cameras of the running configuration: built from their config, handed to the pipeline, rebuilt
// when a push changes them; what they last said (status) and when each last delivered a result.
import { createCamera, roiFitsFrame, roiMisfit, type Camera } from '../capture/index.js';
import type { CameraStatus } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import type { CameraConfig } from '../config/schema.js';
import type { Pipeline } from '../pipeline.js';
import type { Logger } from '../shared/log.js';
import type { Plane } from './fanout.js';

export class Cameras {
  private readonly handles = new Map<string, Camera>();
  private readonly statuses = new Map<string, CameraStatus>();
  /** Per camera: the capture time (monotonic) of the frame of its last result. */
  private readonly lastResultMono = new Map<string, number>();
  /** False while held back (a model failed its golden samples at start-up). */
  started = false;

  constructor(private readonly pipeline: () => Pipeline, private readonly log: Logger) {}

  /** Start every enabled camera of `config`. */
  startAll(config: AppConfig): void {
    this.started = true;
    for (const camera of config.cameras.filter((c) => c.enabled)) this.add(camera);
  }

  handle(id: string): Camera | undefined {
    return this.handles.get(id);
  }

  status(id: string): CameraStatus | undefined {
    return this.statuses.get(id);
  }

  /** The capture time of the frame of the camera's last result (0: none yet). */
  lastResultAt(id: string): number {
    return this.lastResultMono.get(id) ?? 0;
  }

  /** Rebuild a camera whose config a push changed (stopped if it is no longer enabled). */
  async rebuild(id: string, previous: AppConfig, next: AppConfig): Promise<void> {
    if (previous.cameras.some((c) => c.id === id && c.enabled)) await this.pipeline().removeCamera(id);
    this.handles.delete(id);
    this.lastResultMono.delete(id);
    const camera = next.cameras.find((c) => c.id === id);
    if (camera?.enabled) this.add(camera);
  }

  /** Why a pushed ROI cannot fit the frames its camera really delivers (known after the first frame). */
  roiMisfitIn(cameras: CameraConfig[]): string | null {
    for (const [index, camera] of cameras.entries()) {
      const size = this.handles.get(camera.id)?.frameSize;
      if (camera.roi && size && !roiFitsFrame(camera.roi, size)) return `cameras[${index}].roi: ${roiMisfit(camera.roi, size)}`;
    }
    return null;
  }

  /** What the cameras need to hear of the pipeline's output. */
  plane(): Plane {
    return {
      name: 'cameras',
      // Probation asks for a frame captured after the change, not one still in flight from before it.
      result: (result) => void this.lastResultMono.set(result.frame.cameraId, result.frame.capturedMono),
      cameraStatus: (status) => void this.statuses.set(status.cameraId, { ...status }),
    };
  }

  private add(config: CameraConfig): void {
    const camera = createCamera(config, this.log);
    this.handles.set(config.id, camera);
    this.pipeline().addCamera(camera, config.trigger === 'mqtt');
  }
}
