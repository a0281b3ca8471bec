// Production counters per camera, as a line engineer reads them: OK / NG / errors / trigger
// timeouts and the cycle time (capture to result) since the last reset. Reset from the console
// or by MQTT (<prefix>/counters/reset); published on the device status topic. Kept in the state
// dir (written at most once a second, and at stop) so a daemon restart does not zero a shift.
import fs from 'node:fs';
import path from 'node:path';
import type { Result } from '../inference/types.js';
import type { CameraCounters } from '../publish/payloads.js';
import { writeFileAtomicAsync } from '../shared/atomic-write.js';
import type { Logger } from '../shared/log.js';

const SAVE_INTERVAL_MS = 1000;

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
  /** Trigger timeouts counted before the daemon's last start. */
  timeoutsCarried: number;
  since: Date;
}

/** What the file keeps per camera. */
type SavedTally = Omit<Tally, 'timeoutsBase' | 'since'> & { since: string };

export class ProductionCounters {
  private readonly tallies = new Map<string, Tally>();
  private file: string | null = null;
  private log: Logger | null = null;
  private dirty = false;
  private saver: NodeJS.Timeout | null = null;
  private saving: Promise<void> | null = null;

  /** `triggerTimeouts(id)`: the camera's cumulative count (it restarts at 0 when the camera is rebuilt). */
  constructor(private readonly triggerTimeouts: (cameraId: string) => number) {}

  /**
   * Keep the counts in `file`: what it holds now is counted on from. A file that cannot be read
   * is logged and the counts start from zero (never a failed start).
   */
  persistTo(file: string, log: Logger): void {
    this.file = file;
    this.log = log;
    try {
      const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { cameras?: Record<string, SavedTally> };
      for (const [id, t] of Object.entries(saved.cameras ?? {})) {
        const since = new Date(t.since);
        const numbers = [t.ok, t.ng, t.unjudged, t.errors, t.cycles, t.cycleSum, t.timeoutsCarried];
        if (Number.isNaN(since.getTime()) || !numbers.every((n) => typeof n === 'number' && Number.isFinite(n) && n >= 0)) throw new Error(`camera ${id}: not counters`);
        this.tallies.set(id, {
          ok: t.ok, ng: t.ng, unjudged: t.unjudged, errors: t.errors, cycles: t.cycles, cycleSum: t.cycleSum,
          cycleMin: typeof t.cycleMin === 'number' ? t.cycleMin : Infinity, cycleMax: typeof t.cycleMax === 'number' ? t.cycleMax : 0,
          timeoutsBase: this.triggerTimeouts(id), timeoutsCarried: t.timeoutsCarried, since,
        });
      }
    } catch (err) {
      this.tallies.clear();
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: (err as Error).message, file }, 'saved production counters not usable; counting from zero');
    }
    this.saver = setInterval(() => void this.save(), SAVE_INTERVAL_MS);
    this.saver.unref();
  }

  /** Write the counts now (at stop), after a periodic write still in flight; no more periodic writes. */
  async close(): Promise<void> {
    if (this.saver) clearInterval(this.saver);
    this.saver = null;
    await this.saving;
    await this.save();
  }

  /** One write at a time (the last rename wins), off the main thread: its fsyncs would stall the frame loop. */
  private save(): Promise<void> {
    if (!this.file || !this.dirty || this.saving) return this.saving ?? Promise.resolve();
    this.dirty = false;
    const cameras: Record<string, SavedTally> = {};
    for (const [id, t] of this.tallies) {
      cameras[id] = {
        ok: t.ok, ng: t.ng, unjudged: t.unjudged, errors: t.errors, cycles: t.cycles, cycleSum: t.cycleSum,
        // JSON has no Infinity: a camera without cycles saves null and loads as none.
        cycleMin: Number.isFinite(t.cycleMin) ? t.cycleMin : (null as unknown as number), cycleMax: t.cycleMax,
        timeoutsCarried: this.timeouts(id, t), since: t.since.toISOString(),
      };
    }
    const file = this.file;
    this.saving = fs.promises.mkdir(path.dirname(file), { recursive: true })
      .then(() => writeFileAtomicAsync(file, JSON.stringify({ cameras })))
      .catch((err: Error) => {
        this.dirty = true;
        this.log?.warn({ err: err.message, file }, 'production counters not saved');
      })
      .finally(() => (this.saving = null));
    return this.saving;
  }

  countResult(result: Result, cycleMs: number): void {
    const tally = this.tally(result.frame.cameraId);
    if (result.verdict === 'OK') tally.ok++;
    else if (result.verdict === 'NG') tally.ng++;
    else tally.unjudged++;
    tally.cycles++;
    tally.cycleSum += cycleMs;
    tally.cycleMin = Math.min(tally.cycleMin, cycleMs);
    tally.cycleMax = Math.max(tally.cycleMax, cycleMs);
    this.dirty = true;
  }

  countError(cameraId: string): void {
    this.tally(cameraId).errors++;
    this.dirty = true;
  }

  /** Start these cameras' counts again from zero, now. */
  reset(cameraIds: string[]): void {
    for (const id of cameraIds) this.tallies.set(id, this.fresh(id));
    this.dirty = true;
    void this.save();
  }

  private timeouts(id: string, t: Tally): number {
    return t.timeoutsCarried + Math.max(0, this.triggerTimeouts(id) - t.timeoutsBase);
  }

  snapshot(cameraIds: string[]): Record<string, CameraCounters> {
    const out: Record<string, CameraCounters> = {};
    for (const id of cameraIds) {
      const t = this.tally(id);
      out[id] = {
        ok: t.ok,
        ng: t.ng,
        errors: t.errors,
        triggerTimeouts: this.timeouts(id, t),
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
      timeoutsBase: this.triggerTimeouts(cameraId), timeoutsCarried: 0, since: new Date(),
    };
  }
}

const round = (ms: number): number => Math.round(ms * 100) / 100;
