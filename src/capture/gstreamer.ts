// A raw GStreamer pipeline ending in appsink, for anything the other kinds do not cover
// (hardware decoders, vendor elements). The pipeline must deliver BGR.
import cv from '../cv.js';
import { VideoCaptureSource } from './source.js';
import { redactUrls } from '../shared/redact.js';

export class GStreamerSource extends VideoCaptureSource {
  readonly live = true;
  readonly description: string;

  constructor(private readonly pipeline: string) {
    super();
    if (!/\bappsink\b/.test(pipeline)) {
      throw new Error(`gstreamer pipeline must end in appsink: "${redactUrls(pipeline)}"`);
    }
    this.description = `gstreamer pipeline "${redactUrls(pipeline)}"`;
  }

  protected target() {
    return { target: this.pipeline, api: cv.CAP_GSTREAMER };
  }
}
