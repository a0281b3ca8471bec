// Capture entry point: build a Camera for a configured camera entry.
import type { CameraConfig } from '../config/schema.js';
import type { Logger } from '../shared/log.js';
import { Camera } from './camera.js';
import { FileSource } from './file.js';
import { FolderSource } from './folder.js';
import { GigeSource } from './gige.js';
import { GStreamerSource } from './gstreamer.js';
import type { CameraSource } from './source.js';
import { StreamSource } from './stream.js';
import { UsbSource } from './usb.js';

export { Camera, type CameraStats, type SourceFactory } from './camera.js';
export type { CameraSource } from './source.js';
export { roiFitsFrame, roiMisfit, type Frame, type FrameSize, type Roi, type CameraStatus, type CameraState } from './frame.js';

/** The source for a camera entry; throws an Error naming the bad key for unusable settings. */
export function createSource(config: CameraConfig, log: Logger): CameraSource {
  switch (config.source) {
    case 'folder':
      return new FolderSource(config.path, config.loop, log);
    case 'file':
      return new FileSource(config.path, config.loop);
    case 'usb':
      return new UsbSource({ device: config.device, width: config.width, height: config.height, fps: config.fps, fourcc: config.fourcc }, log);
    case 'gige':
      return new GigeSource({ address: config.address, pixelFormat: config.pixelFormat, width: config.width, height: config.height }, log);
    case 'rtsp':
    case 'http':
      return new StreamSource(config.source, config.url);
    case 'gstreamer':
      return new GStreamerSource(config.pipeline);
    default: {
      const unknown: never = config.source;
      throw new Error(`camera ${config.id}: unknown source "${String(unknown)}"`);
    }
  }
}

/** Sources whose reads block a libuv pool thread for as long as the next frame takes. */
const LIVE_KINDS = new Set<CameraConfig['source']>(['usb', 'gige', 'rtsp', 'http', 'gstreamer']);
let liveCameras = 0;

export function createCamera(config: CameraConfig, log: Logger): Camera {
  const cameraLog = log.child({ camera: config.id });
  if (LIVE_KINDS.has(config.source)) {
    liveCameras++;
    // readAsync waits for the next frame on one of libuv's pool threads, which fs, dns and
    // native add-ons share: with too few, everything else queues behind the cameras.
    const poolSize = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    if (liveCameras + 2 > poolSize) {
      cameraLog.warn({ liveCameras, poolSize }, 'live cameras hold most of libuv\'s thread pool while reading; start the daemon with UV_THREADPOOL_SIZE of at least live cameras + 4');
    }
  }
  return new Camera(config, cameraLog, createSource);
}
