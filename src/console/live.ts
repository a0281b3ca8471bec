// The live view: per camera, the latest inspected frame as JPEG (plain, and with the heatmap
// overlay), encoded only while someone watches and at most http.liveFps times a second, and
// served to each viewer as MJPEG at that rate, latest frame wins. A viewer that cannot keep up
// skips frames; one that stays backed up is dropped. Also keeps what the page shows beside the
// image: the last result, a rolling fps, and the recent scores for the threshold histogram.
import type { ServerResponse } from 'node:http';
import cv, { type Mat } from '../cv.js';
import { effectiveRoi } from '../inference/preprocess.js';
import { renderOverlay } from '../inference/postprocess.js';
import type { FrameInference, InspectionResult, Region, Verdict } from '../inference/types.js';

/** Longest side of live-view images, in pixels. */
const LIVE_MAX_SIDE = 640;
const LIVE_JPEG_QUALITY = 80;
/** Scores kept per camera for the histogram. */
const SCORE_HISTORY = 300;
/** A viewer with this much unsent is skipped; one that stays so for STALLED_VIEWER_MS is dropped. */
const MAX_BUFFERED_BYTES = 2 * 1024 * 1024;
const STALLED_VIEWER_MS = 10_000;
const FPS_WINDOW_MS = 3000;

export interface LastResult {
  sequence: number;
  capturedAt: string;
  raw: number;
  normalized: number | null;
  verdict: Verdict | null;
  regions: Region[];
  /** The part of the frame the model saw, in frame pixels. */
  roi: { x: number; y: number; width: number; height: number };
  frameSize: { width: number; height: number };
  latencyMs: InspectionResult['latency'];
}

interface Picture {
  sequence: number;
  plain: Buffer;
  overlay: Buffer | null;
}

interface CameraLive {
  viewers: number;
  overlayViewers: number;
  lastEncodeMono: number;
  picture: Picture | null;
  last: LastResult | null;
  scores: number[];
  resultTimes: number[];
}

export class LiveView {
  private readonly cameras = new Map<string, CameraLive>();

  constructor(private readonly options: { fps: number; maxViewers: number; overlayAlpha: () => number }) {}

  /** Called for every result while the frame's pixels are still alive; bounded work per call. */
  offer(result: InspectionResult, inspected: FrameInference | undefined): void {
    const live = this.camera(result.frame.cameraId);
    const now = performance.now();
    live.resultTimes.push(now);
    while (live.resultTimes.length > 0 && now - live.resultTimes[0]! > FPS_WINDOW_MS) live.resultTimes.shift();
    live.scores.push(result.normalized ?? result.raw);
    if (live.scores.length > SCORE_HISTORY) live.scores.shift();
    if (!inspected) return;
    const roi = effectiveRoi(inspected.frame);
    live.last = {
      sequence: result.frame.sequence,
      capturedAt: result.frame.capturedAt,
      raw: result.raw,
      normalized: result.normalized,
      verdict: result.verdict,
      regions: result.regions,
      roi,
      frameSize: { width: inspected.frame.image.cols, height: inspected.frame.image.rows },
      latencyMs: result.latency,
    };
    if (live.viewers === 0 || now - live.lastEncodeMono < 1000 / this.options.fps) return;
    live.lastEncodeMono = now;
    const overlay = live.overlayViewers > 0
      ? renderOverlay(inspected.frame.image, roi, inspected.map, inspected.mapHeight, inspected.mapWidth, result.model.calibration?.pixel ?? null, {
        enabled: true, onlyNG: false, alpha: this.options.overlayAlpha(), maxSize: LIVE_MAX_SIDE, quality: LIVE_JPEG_QUALITY,
      })
      : null;
    live.picture = { sequence: result.frame.sequence, plain: encodePlain(inspected.frame.image), overlay };
  }

  lastResult(cameraId: string): LastResult | null {
    return this.cameras.get(cameraId)?.last ?? null;
  }

  recentScores(cameraId: string): number[] {
    return [...(this.cameras.get(cameraId)?.scores ?? [])];
  }

  /** Results per second over the last few seconds. */
  fps(cameraId: string): number {
    const times = this.cameras.get(cameraId)?.resultTimes ?? [];
    if (times.length < 2) return 0;
    return (times.length - 1) / ((times[times.length - 1]! - times[0]!) / 1000);
  }

  /** Stream MJPEG to `res` until the viewer goes; false (nothing written) when the camera has its most viewers. */
  stream(cameraId: string, overlay: boolean, res: ServerResponse): boolean {
    const live = this.camera(cameraId);
    if (live.viewers >= this.options.maxViewers) return false;
    live.viewers++;
    if (overlay) live.overlayViewers++;
    res.writeHead(200, {
      'Content-Type': 'multipart/x-mixed-replace; boundary=frame',
      'Cache-Control': 'no-store',
      Connection: 'close',
    });
    let sent = -1;
    let backedUpSince: number | null = null;
    const timer = setInterval(() => {
      const picture = live.picture;
      const jpeg = picture && (overlay ? picture.overlay : picture.plain);
      if (!picture || !jpeg || picture.sequence === sent) return;
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        backedUpSince ??= performance.now();
        if (performance.now() - backedUpSince > STALLED_VIEWER_MS) res.destroy();
        return;
      }
      backedUpSince = null;
      sent = picture.sequence;
      res.write(`--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\nX-Sequence: ${picture.sequence}\r\n\r\n`);
      res.write(jpeg);
      res.write('\r\n');
    }, 1000 / this.options.fps);
    res.once('close', () => {
      clearInterval(timer);
      live.viewers--;
      if (overlay) live.overlayViewers--;
    });
    return true;
  }

  private camera(cameraId: string): CameraLive {
    let live = this.cameras.get(cameraId);
    if (!live) {
      live = { viewers: 0, overlayViewers: 0, lastEncodeMono: 0, picture: null, last: null, scores: [], resultTimes: [] };
      this.cameras.set(cameraId, live);
    }
    return live;
  }
}

/** The whole frame, longest side at most LIVE_MAX_SIDE, as JPEG. */
function encodePlain(image: Mat): Buffer {
  const scale = Math.min(1, LIVE_MAX_SIDE / Math.max(image.cols, image.rows));
  if (scale === 1) return cv.imencode('.jpg', image, [cv.IMWRITE_JPEG_QUALITY, LIVE_JPEG_QUALITY]);
  const small = image.resize(Math.max(1, Math.round(image.rows * scale)), Math.max(1, Math.round(image.cols * scale)), 0, 0, cv.INTER_AREA);
  try {
    return cv.imencode('.jpg', small, [cv.IMWRITE_JPEG_QUALITY, LIVE_JPEG_QUALITY]);
  } finally {
    small.release();
  }
}
