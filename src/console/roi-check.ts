// Before an ROI change is applied, the page asks what it would do: the camera's recent frames
// (full-frame copies, at most one a second, a few per camera, kept in memory) are scored with the
// proposed ROI by the model serving that camera, and the NG share with it is compared with the
// verdicts those frames got. An ROI that turns every part NG is seen before it reaches the line.
// Off the serving path: frames are copied only once a second, one check runs at a time, and it
// scores one frame per model run, so the pipeline's batches go between them.
import type { Frame, Roi } from '../capture/frame.js';
import { roiFitsFrame, roiMisfit } from '../capture/frame.js';
import type { Mat } from '../cv.js';
import type { FrameInference, InspectionResult, Verdict } from '../inference/types.js';

/** Frames kept per camera for a check. */
export const RECENT_FRAMES = 8;
/** At most one frame copied per camera this often. */
const RECENT_INTERVAL_MS = 1000;

/** Scores frames (their `roi` set) with the model and options serving `cameraId`; the caller releases them. */
export type FrameScorer = (cameraId: string, frames: Frame[]) => Promise<Array<Pick<InspectionResult, 'verdict' | 'normalized' | 'raw'>>>;

interface Kept {
  image: Mat;
  sequence: number;
  capturedAt: string;
  verdict: Verdict | null;
}

export interface RoiCheck {
  cameraId: string;
  roi: Roi | null;
  /** Recent frames scored (0: none seen yet). */
  frames: number;
  /** NG with the proposed ROI, and as they were inspected. */
  ng: number;
  ngNow: number;
  /** ng / frames (null without frames). */
  ngShare: number | null;
  results: Array<{ sequence: number; capturedAt: string; now: Verdict | null; proposed: Verdict | null; score: number }>;
}

export class RoiCheckError extends Error {
  constructor(message: string, readonly statusCode: number) {
    super(message);
  }
}

export class RecentFrames {
  private readonly kept = new Map<string, Kept[]>();
  private readonly lastCopy = new Map<string, number>();
  private checking = false;

  /** Called for every result while its frame is alive: a copy now and then. Never throws. */
  offer(result: InspectionResult, inspected: FrameInference | undefined): void {
    if (!inspected) return;
    const cameraId = result.frame.cameraId;
    const now = performance.now();
    if (now - (this.lastCopy.get(cameraId) ?? -Infinity) < RECENT_INTERVAL_MS) return;
    this.lastCopy.set(cameraId, now);
    let image: Mat;
    try {
      image = inspected.frame.image.copy();
    } catch {
      return;
    }
    const list = this.kept.get(cameraId) ?? [];
    list.push({ image, sequence: result.frame.sequence, capturedAt: result.frame.capturedAt, verdict: result.verdict });
    while (list.length > RECENT_FRAMES) list.shift()!.image.release();
    this.kept.set(cameraId, list);
  }

  /** Score the camera's recent frames with `roi` (null: the whole frame). */
  async check(cameraId: string, roi: Roi | null, score: FrameScorer): Promise<RoiCheck> {
    if (this.checking) throw new RoiCheckError('an ROI check is running; try again in a moment', 409);
    const list = this.kept.get(cameraId) ?? [];
    const last = list.at(-1);
    if (roi && last) {
      const size = { width: last.image.cols, height: last.image.rows };
      if (!roiFitsFrame(roi, size)) throw new RoiCheckError(roiMisfit(roi, size), 400);
    }
    this.checking = true;
    // Copies of the copies: the ring may drop a frame while the model still reads it.
    const frames: Frame[] = list.map((k) => {
      const image = k.image.copy();
      return { cameraId, sequence: k.sequence, capturedAt: k.capturedAt, capturedMono: performance.now(), image, roi, release: () => image.release() };
    });
    try {
      const results: RoiCheck['results'] = [];
      for (const [i, frame] of frames.entries()) {
        const [scored] = await score(cameraId, [frame]);
        const kept = list[i]!;
        results.push({ sequence: kept.sequence, capturedAt: kept.capturedAt, now: kept.verdict, proposed: scored?.verdict ?? null, score: scored?.normalized ?? scored?.raw ?? 0 });
      }
      const ng = results.filter((r) => r.proposed === 'NG').length;
      return {
        cameraId, roi, frames: results.length, ng,
        ngNow: results.filter((r) => r.now === 'NG').length,
        ngShare: results.length > 0 ? ng / results.length : null,
        results,
      };
    } finally {
      for (const frame of frames) frame.release();
      this.checking = false;
    }
  }

  forget(cameraId: string): void {
    for (const k of this.kept.get(cameraId) ?? []) k.image.release();
    this.kept.delete(cameraId);
  }

  close(): void {
    for (const id of [...this.kept.keys()]) this.forget(id);
  }
}
