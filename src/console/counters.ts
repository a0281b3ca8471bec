// Production counters per camera, as a line engineer reads them: OK / NG / errors / trigger
// timeouts and the cycle time (capture to result) since the last reset. Reset from the console
// or by MQTT (<prefix>/counters/reset); published on the device status topic.
import type { Result } from '../inference/types.js';
import type { CameraCounters } from '../publish/payloads.js';

export type { CameraCounters };

interface Tally {
  ok: number;
  ng: number;
  unjudged: number;
  errors: number;
  cycles: number;
  cycleSum: number;
  cycleMin: number;
  cycleMax: number;
  /** The camera's cumulative trigger timeouts at the reset. */
  timeoutsBase: number;
  since: Date;
}

export class ProductionCounters {
  private readonly tallies = new Map<string, Tally>();

  /** `triggerTimeouts(id)`: the camera's cumulative count (it restarts at 0 when the camera is rebuilt). */
  constructor(private readonly triggerTimeouts: (cameraId: string) => number) {}

  countResult(result: Result, cycleMs: number): void {
    const tally = this.tally(result.frame.cameraId);
    if (result.verdict === 'OK') tally.ok++;
    else if (result.verdict === 'NG') tally.ng++;
    else tally.unjudged++;
    tally.cycles++;
    tally.cycleSum += cycleMs;
    tally.cycleMin = Math.min(tally.cycleMin, cycleMs);
    tally.cycleMax = Math.max(tally.cycleMax, cycleMs);
  }

  countError(cameraId: string): void {
    this.tally(cameraId).errors++;
  }

  /** Start these cameras' counts again from zero, now. */
  reset(cameraIds: string[]): void {
    for (const id of cameraIds) this.tallies.set(id, this.fresh(id));
  }

  snapshot(cameraIds: string[]): Record<string, CameraCounters> {
    const out: Record<string, CameraCounters> = {};
    for (const id of cameraIds) {
      const t = this.tally(id);
      out[id] = {
        ok: t.ok,
        ng: t.ng,
        errors: t.errors,
        triggerTimeouts: Math.max(0, this.triggerTimeouts(id) - t.timeoutsBase),
        cycleMs: t.cycles > 0 ? { min: round(t.cycleMin), max: round(t.cycleMax), mean: round(t.cycleSum / t.cycles) } : null,
        unjudged: t.unjudged,
        since: t.since.toISOString(),
      };
    }
    return out;
  }

  private tally(cameraId: string): Tally {
    let tally = this.tallies.get(cameraId);
    if (!tally) this.tallies.set(cameraId, (tally = this.fresh(cameraId)));
    else if (this.triggerTimeouts(cameraId) < tally.timeoutsBase) tally.timeoutsBase = 0; // the camera was rebuilt
    return tally;
  }

  private fresh(cameraId: string): Tally {
    return {
      ok: 0, ng: 0, unjudged: 0, errors: 0, cycles: 0, cycleSum: 0, cycleMin: Infinity, cycleMax: 0,
      timeoutsBase: this.triggerTimeouts(cameraId), since: new Date(),
    };
  }
}

const round = (ms: number): number => Math.round(ms * 100) / 100;
