// The live view: per camera, the latest inspected frame and its result, delivered together as
// one server-sent event per shown frame, so the page draws image, boxes, verdict, score and
// sequence from one result and never mixes two frames. Frames are encoded only while someone
// watches, paced to http.liveFps (a token schedule, so a camera a little faster than the live rate
// still gives the full rate), once per shown frame for all viewers, and sent to each viewer as it is
// made; a viewer still busy with earlier ones skips it (never a queue). A state event every
// second (camera, broker, readiness) so the page knows at once when what it shows is not live.
// Also keeps the last result, a rolling fps and the recent scores for the threshold histogram.
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
/** How often each viewer is told the daemon's state, frames or not. */
export const STATE_INTERVAL_MS = 1000;
/** Verdicts kept per camera for the page's history strip. */
const HISTORY = 40;
/** How soon the browser reconnects a lost stream. */
const RETRY_MS = 1000;

type Rect = { x: number; y: number; width: number; height: number };

export interface LastResult {
  sequence: number;
  capturedAt: string;
  raw: number;
  normalized: number | null;
  verdict: Verdict | null;
  regions: Region[];
  recipe: string | null;
  /** The part of the frame the model saw, in frame pixels. */
  roi: Rect;
  frameSize: { width: number; height: number };
  latencyMs: InspectionResult['latency'];
  /** sha256 of the model that judged it (after a model change, the page shows which one did). */
  model: string;
}

/** One shown frame: its result and its images, the SSE message for each kind made once. */
interface Picture {
  /** Counts up per camera (frame sequences restart with the camera). */
  serial: number;
  plain: Buffer | null;
  overlay: Buffer | null;
}

interface CameraLive {
  viewers: number;
  overlayViewers: number;
  /** When the next frame may be encoded (performance.now()). */
  nextEncodeMono: number;
  picture: Picture | null;
  /** The last NG as an `ng` event (image and result), pinned on the page until acknowledged. */
  lastNg: { serial: number; message: Buffer } | null;
  serial: number;
  nextNgMono: number;
  /** NG results in a row, up to the last one. */
  ngStreak: number;
  /** The last HISTORY verdicts, oldest first. */
  history: Array<{ sequence: number; verdict: Verdict | null }>;
  last: LastResult | null;
  scores: number[];
  resultTimes: number[];
  /** Each viewer's send, called when a new frame is encoded. */
  senders: Set<() => void>;
}

export interface LiveOptions {
  fps: number;
  maxViewers: number;
  overlayAlpha: () => number;
  /** NG when the normalised score reaches this (the page draws it). */
  threshold: () => number;
  /** What each viewer is told every STATE_INTERVAL_MS about its camera and the daemon. */
  state: (cameraId: string) => object;
}

export class LiveView {
  private readonly cameras = new Map<string, CameraLive>();

  constructor(private readonly options: LiveOptions) {}

  /** Called for every result while the frame's pixels are still alive; bounded work per call. */
  offer(result: InspectionResult, inspected: FrameInference | undefined): void {
    const live = this.camera(result.frame.cameraId);
    const now = performance.now();
    live.resultTimes.push(now);
    while (live.resultTimes.length > 0 && now - live.resultTimes[0]! > FPS_WINDOW_MS) live.resultTimes.shift();
    live.scores.push(result.normalized ?? result.raw);
    if (live.scores.length > SCORE_HISTORY) live.scores.shift();
    live.ngStreak = result.verdict === 'NG' ? live.ngStreak + 1 : 0;
    live.history.push({ sequence: result.frame.sequence, verdict: result.verdict });
    if (live.history.length > HISTORY) live.history.shift();
    if (!inspected) return;
    const roi = effectiveRoi(inspected.frame);
    const frameSize = { width: inspected.frame.image.cols, height: inspected.frame.image.rows };
    live.last = {
      sequence: result.frame.sequence,
      capturedAt: result.frame.capturedAt,
      raw: result.raw,
      normalized: result.normalized,
      verdict: result.verdict,
      regions: result.regions,
      recipe: result.recipe ?? null,
      roi,
      frameSize,
      latencyMs: result.latency,
      model: result.model.hash,
    };
    if (live.viewers === 0) return;
    const interval = 1000 / this.options.fps;
    const shown = now >= live.nextEncodeMono;
    // An NG is pinned even when it is not a shown frame; at most at the live rate too.
    const pinned = result.verdict === 'NG' && now >= live.nextNgMono;
    if (!shown && !pinned) return;
    const data = (jpeg: Buffer, area: Rect, overlay: boolean) => ({
      ...live.last,
      threshold: this.options.threshold(),
      overlay,
      /** The frame pixels the image shows, for drawing regions on it. */
      area,
      jpeg: jpeg.toString('base64'),
    });
    const whole = { x: 0, y: 0, ...frameSize };
    // Only overlay viewers and no NG to pin: no plain image needed.
    const plain = pinned || live.viewers > live.overlayViewers ? data(encodePlain(inspected.frame.image), whole, false) : null;
    if (pinned) {
      live.nextNgMono = now + interval;
      live.lastNg = { serial: ++live.serial, message: sseMessage('ng', plain!) };
    }
    if (!shown) {
      for (const send of live.senders) send();
      return;
    }
    // On a schedule that never runs ahead of now (no bursts), so results at 5/s give 4 shown at liveFps 4.
    live.nextEncodeMono = Math.max(live.nextEncodeMono + interval, now);
    const overlay = live.overlayViewers > 0
      ? renderOverlay(inspected.frame.image, roi, inspected.map, inspected.mapHeight, inspected.mapWidth, result.model.calibration?.pixel ?? null, {
        enabled: true, onlyNG: false, alpha: this.options.overlayAlpha(), maxSize: LIVE_MAX_SIDE, quality: LIVE_JPEG_QUALITY,
      })
      : null;
    live.picture = {
      serial: ++live.serial,
      plain: plain && sseMessage('frame', plain),
      overlay: overlay && sseMessage('frame', data(overlay, roi, true)),
    };
    for (const send of live.senders) send();
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

  /**
   * Stream server-sent events to `res` until the viewer goes: `frame` (one shown frame: result and
   * JPEG together) and `state`. False (nothing written) when the camera has its most viewers.
   */
  stream(cameraId: string, overlay: boolean, res: ServerResponse): boolean {
    const live = this.camera(cameraId);
    if (live.viewers >= this.options.maxViewers) return false;
    live.viewers++;
    if (overlay) live.overlayViewers++;
    live.nextEncodeMono = 0; // a new viewer gets the next frame at once
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
      Connection: 'close',
    });
    res.write(`retry: ${RETRY_MS}\n\n`);
    let sent = -1;
    let sentNg = -1;
    let backedUpSince: number | null = null;
    const sendState = () => {
      if (res.writableLength <= MAX_BUFFERED_BYTES) res.write(sseMessage('state', { ...this.options.state(cameraId), history: live.history, ngStreak: live.ngStreak }));
    };
    sendState();
    // Sent as encoded (encoding is paced to the live rate), so the viewer gets the full rate.
    const sendFrame = () => {
      const ng = live.lastNg;
      if (ng && ng.serial !== sentNg && res.writableLength <= MAX_BUFFERED_BYTES) {
        sentNg = ng.serial;
        res.write(ng.message);
      }
      const picture = live.picture;
      const message = picture && (overlay ? picture.overlay : picture.plain);
      if (!picture || !message || picture.serial === sent) return;
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        backedUpSince ??= performance.now();
        if (performance.now() - backedUpSince > STALLED_VIEWER_MS) res.destroy();
        return;
      }
      backedUpSince = null;
      sent = picture.serial;
      res.write(message);
    };
    live.senders.add(sendFrame);
    sendFrame();
    const states = setInterval(sendState, STATE_INTERVAL_MS);
    res.once('close', () => {
      live.senders.delete(sendFrame);
      clearInterval(states);
      live.viewers--;
      if (overlay) live.overlayViewers--;
    });
    return true;
  }

  private camera(cameraId: string): CameraLive {
    let live = this.cameras.get(cameraId);
    if (!live) {
      live = { viewers: 0, overlayViewers: 0, nextEncodeMono: 0, picture: null, lastNg: null, nextNgMono: 0, serial: 0, ngStreak: 0, history: [], last: null, scores: [], resultTimes: [], senders: new Set() };
      this.cameras.set(cameraId, live);
    }
    return live;
  }
}

/** One event, as bytes once: every viewer is written the same buffer. */
function sseMessage(event: string, data: object): Buffer {
  return Buffer.from(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
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
