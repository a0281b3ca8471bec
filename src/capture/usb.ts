// USB/UVC camera through V4L2: by index ("0") or device path ("/dev/video0").
import fs from 'node:fs/promises';
import cv from '../cv.js';
import type { Logger } from '../shared/log.js';
import { VideoCaptureSource } from './source.js';

export interface UsbOptions {
  device: string;
  width: number;
  height: number;
  fps: number;
  fourcc: string;
}

export class UsbSource extends VideoCaptureSource {
  readonly live = true;
  readonly description: string;
  private readonly devicePath: string;

  constructor(private readonly options: UsbOptions, private readonly log: Logger) {
    super();
    const device = options.device.trim();
    if (/^\d+$/.test(device)) this.devicePath = `/dev/video${device}`;
    else if (device.startsWith('/dev/')) this.devicePath = device;
    else throw new Error(`usb device must be an index ("0") or a /dev path ("/dev/video0"), got "${options.device}"`);
    if (options.fourcc !== '' && options.fourcc.length !== 4) {
      throw new Error(`usb fourcc must be 4 characters (e.g. MJPG, YUYV), got "${options.fourcc}"`);
    }
    this.description = `usb camera ${this.devicePath}`;
  }

  protected override async preflight(): Promise<void> {
    // A missing device fails here, with the OS's reason, instead of inside OpenCV.
    try {
      await fs.access(this.devicePath, fs.constants.R_OK | fs.constants.W_OK);
    } catch (err) {
      throw new Error(`cannot open ${this.description}: ${(err as Error).message}`);
    }
  }

  protected target() {
    return { target: this.devicePath, api: cv.CAP_V4L2 };
  }

  protected override configure(capture: import('@u4/opencv4nodejs').VideoCapture): void {
    const { width, height, fps, fourcc } = this.options;
    // FOURCC first: the sizes and rates a UVC camera offers depend on the pixel format.
    if (fourcc) capture.set(cv.CAP_PROP_FOURCC, cv.VideoWriter.fourcc(fourcc));
    if (width > 0) capture.set(cv.CAP_PROP_FRAME_WIDTH, width);
    if (height > 0) capture.set(cv.CAP_PROP_FRAME_HEIGHT, height);
    if (fps > 0) capture.set(cv.CAP_PROP_FPS, fps);
    const actual = {
      width: capture.get(cv.CAP_PROP_FRAME_WIDTH),
      height: capture.get(cv.CAP_PROP_FRAME_HEIGHT),
      fps: capture.get(cv.CAP_PROP_FPS),
      fourcc: fourccToString(capture.get(cv.CAP_PROP_FOURCC)),
    };
    const mismatch = (width > 0 && actual.width !== width) || (height > 0 && actual.height !== height)
      || (fourcc !== '' && actual.fourcc !== fourcc);
    // Drivers silently pick the nearest mode; say so rather than fail.
    if (mismatch) this.log.warn({ requested: { width, height, fps, fourcc }, actual }, 'usb camera chose a different mode');
    else this.log.info({ actual }, 'usb camera mode');
  }
}

function fourccToString(code: number): string {
  return String.fromCharCode(code & 0xff, (code >> 8) & 0xff, (code >> 16) & 0xff, (code >> 24) & 0xff);
}
