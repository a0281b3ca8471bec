// The shadow check: a candidate model scores a share of one camera's live frames beside the
// serving model, off the serving path. It is a plane: it copies the frame it takes (the pipeline's
// Mat is only borrowed) and runs the candidate in its own session on a worker thread, one frame at
// a time; a frame that arrives while the candidate is busy is counted as dropped, never waited for.
// Frames whose verdict would change are kept (a few) as JPEGs for the page.
import fs from 'node:fs';
import path from 'node:path';
import cv, { type Mat } from '../cv.js';
import type { CradModel } from '../inference/model.js';
import { scoreVerdict, type PostprocessOptions } from '../inference/postprocess.js';
import type { FrameInference, InspectionResult } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import type { ShadowFigures } from '../shared/teach-status.js';
import type { Plane } from './fanout.js';

/** Frames whose verdict changed, kept for the page. */
export const SHADOW_EXAMPLES = 6;
export const SHADOW_IMAGE_PATTERN = '^[A-Za-z0-9_-]+\\.jpg$';

export interface ShadowOptions {
  cameraId: string;
  /** The recipe the candidate was trained for: frames inspected under another are not comparable. */
  recipe: string | null;
  share: number;
  /** Where example JPEGs go, and the URL prefix they are served under. */
  dir: string;
  urlPrefix: string;
  post: () => PostprocessOptions;
  /** Called after every scored frame with the figures so far. */
  changed: (figures: ShadowFigures) => void;
}

export class ShadowCheck {
  readonly figures: ShadowFigures = { frames: 0, changed: 0, servingNg: 0, candidateNg: 0, dropped: 0, examples: [] };
  private credit = 0;
  private busy = false;
  private stopped = false;

  constructor(private readonly candidate: CradModel, private readonly options: ShadowOptions, private readonly log: Logger) {
    fs.mkdirSync(options.dir, { recursive: true });
  }

  /** Take a share of the camera's frames (a copy of each, scored on the candidate's own session). */
  offer(result: InspectionResult, inspected: FrameInference): void {
    if (this.stopped || result.frame.cameraId !== this.options.cameraId || result.verdict === null) return;
    if ((result.recipe ?? null) !== this.options.recipe) return;
    this.credit += this.options.share;
    if (this.credit < 1) return;
    this.credit -= 1;
    if (this.busy) {
      this.figures.dropped = (this.figures.dropped ?? 0) + 1;
      return;
    }
    this.busy = true;
    const image = inspected.frame.image.copy();
    const { frame } = inspected;
    let released = false;
    const release = () => {
      if (!released) image.release();
      released = true;
    };
    const copy = { cameraId: frame.cameraId, sequence: frame.sequence, capturedAt: frame.capturedAt, capturedMono: frame.capturedMono, roi: frame.roi, image, release };
    void this.candidate.run([copy])
      .then((inference) => this.compare(result, inference.frames[0]!.raw, image))
      .catch((err: Error) => this.log.warn({ err: err.message }, 'shadow: the candidate could not score a frame'))
      .finally(() => {
        release();
        this.busy = false;
      });
  }

  private async compare(result: InspectionResult, raw: number, image: Mat): Promise<void> {
    if (this.stopped) return;
    const candidate = scoreVerdict(raw, this.candidate.info.calibration, this.options.post());
    const servingVerdict = result.verdict ?? 'none';
    const candidateVerdict = candidate.verdict ?? 'none';
    const f = this.figures;
    f.frames++;
    if (servingVerdict === 'NG') f.servingNg++;
    if (candidateVerdict === 'NG') f.candidateNg++;
    if (servingVerdict !== candidateVerdict) {
      f.changed++;
      if (f.examples.length < SHADOW_EXAMPLES) {
        const name = `${this.options.cameraId.replace(/[^A-Za-z0-9_-]/g, '_')}-${result.frame.sequence}.jpg`;
        await fs.promises.writeFile(path.join(this.options.dir, name), await cv.imencodeAsync('.jpg', image));
        f.examples.push({
          cameraId: result.frame.cameraId, sequence: result.frame.sequence, at: result.frame.capturedAt,
          serving: { verdict: servingVerdict, score: result.normalized ?? result.raw },
          candidate: { verdict: candidateVerdict, score: candidate.normalized ?? raw },
          image: `${this.options.urlPrefix}/${name}`,
        });
      }
    }
    this.options.changed(f);
  }

  stop(): void {
    this.stopped = true;
  }
}

/** The plane that hands results to the shadow check in progress, if any. */
export function shadowPlane(current: () => ShadowCheck | null): Plane {
  return { name: 'teach-shadow', result: (result, inspected) => current()?.offer(result, inspected) };
}
