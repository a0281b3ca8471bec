// The NG archive: the full frame (JPEG), the overlay (JPEG) and a result JSON of chosen results,
// on disk, with retention by count, bytes, age and a free-disk floor (oldest deleted first, each
// deletion counted by reason). The pipeline only hands a frame copy to a bounded queue; a full
// queue, a full disk or an unwritable folder is counted and reported, never thrown.
import fs from 'node:fs';
import path from 'node:path';
import cv, { type Mat } from '../cv.js';
import type { AppConfig } from '../config/load.js';
import type { InspectionResult, Region } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import { DiskQueue } from './disk-queue.js';

export type ArchiveVerdict = AppConfig['archive']['verdicts'][number];

export interface ArchiveOptions {
  dir: string;
  verdicts: ArchiveVerdict[];
  maxCount: number;
  maxBytes: number;
  /** 0 = no age limit. */
  maxAgeHours: number;
  minFreeBytes: number;
  queue: number;
  quality: number;
}

export function archiveOptions(config: AppConfig): ArchiveOptions {
  return { ...config.archive, dir: config.archive.dir || path.join(config.service.stateDir, 'archive') };
}

/** What the archive keeps of a result (the .json file), and what the console lists. */
export interface ArchiveRecord {
  id: string;
  archivedAt: string;
  camera: string;
  sequence: number;
  triggerId: string | null;
  capturedAt: string;
  roi: InspectionResult['frame']['roi'];
  model: { name: string; version: string; variant: string; hash: string };
  raw: number;
  normalized: number | null;
  verdict: InspectionResult['verdict'];
  /** The recipe the frame was inspected under (null: the base configuration; absent in older entries). */
  recipe?: string | null;
  calibrated: boolean;
  regions: Region[];
  overlay: boolean;
  /** Set when an operator marked this NG as good (its frame went to the dataset). */
  markedGood: string | null;
}

export interface ArchiveEntry extends ArchiveRecord {
  bytes: number;
}

export type DeletionReason = 'count' | 'bytes' | 'age' | 'freeDisk';

export interface ArchiveStatus {
  dir: string;
  entries: number;
  bytes: number;
  queued: number;
  written: number;
  /** Results not archived: queue full, free disk below the floor, or the write failed. */
  dropped: { queueFull: number; diskFloor: number; failed: number };
  deleted: Record<DeletionReason, number>;
  /** null while writing works; else why it does not (a full or read-only disk). */
  problem: string | null;
}

/** What an archive listing keeps: every given field must match (recipe '' = the base configuration). */
export interface ArchiveFilter {
  camera?: string;
  verdict?: string;
  recipe?: string;
  /** Captured at or after / at or before (ISO 8601). */
  from?: string;
  to?: string;
}

export type ArchiveFile = 'frame' | 'overlay' | 'json';
const SUFFIX: Record<ArchiveFile, string> = { frame: '.frame.jpg', overlay: '.overlay.jpg', json: '.json' };

/** Archive ids: the archive time (sorts oldest first) and a sequence; never a path. */
export const ARCHIVE_ID_PATTERN = '^[0-9]{8}T[0-9]{9}Z-[0-9]{6}$';
const ID = new RegExp(ARCHIVE_ID_PATTERN);
const HOUR_MS = 3_600_000;

function idAt(at: number, sequence: number): string {
  return `${new Date(at).toISOString().replace(/[-:.]/g, '')}-${String(sequence % 1_000_000).padStart(6, '0')}`;
}

function timeOfId(id: string): number {
  const t = id.slice(0, 18);
  return Date.parse(`${t.slice(0, 4)}-${t.slice(4, 6)}-${t.slice(6, 8)}T${t.slice(9, 11)}:${t.slice(11, 13)}:${t.slice(13, 15)}.${t.slice(15, 18)}Z`);
}

function resultVerdict(result: InspectionResult): ArchiveVerdict {
  return result.verdict ?? 'uncalibrated';
}

export class Archive {
  /** Oldest first. */
  private readonly entries: ArchiveEntry[] = [];
  private readonly byId = new Map<string, ArchiveEntry>();
  private totalBytes = 0;
  private sequence = 0;
  private written = 0;
  private readonly dropped = { queueFull: 0, diskFloor: 0, failed: 0 };
  private readonly deleted: Record<DeletionReason, number> = { count: 0, bytes: 0, age: 0, freeDisk: 0 };
  private problem: string | null = null;
  private readonly queue: DiskQueue;
  private ageTimer: NodeJS.Timeout | null = null;

  constructor(
    private options: ArchiveOptions,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.queue = new DiskQueue(options.queue, log);
  }

  get dir(): string {
    return this.options.dir;
  }

  /** Read what an earlier run left, apply retention, and prune by age from now on. Never throws. */
  async open(): Promise<void> {
    await this.scan();
    await this.prune();
    this.ageTimer = setInterval(() => this.queue.push(() => this.prune()), 60_000);
    this.ageTimer.unref();
  }

  /** A pushed configuration: new limits apply now; dir and queue wait for a restart. */
  updateLive(options: ArchiveOptions): void {
    this.options = { ...options, dir: this.options.dir, queue: this.options.queue };
    this.queue.push(() => this.prune());
  }

  /**
   * Called by the daemon for every result while its frame is alive. Takes a copy of the frame when
   * the verdict is archived and the queue has room; everything else happens later. Never throws.
   */
  offer(result: InspectionResult, image: Mat): void {
    try {
      if (!this.options.verdicts.includes(resultVerdict(result))) return;
      if (!this.queue.pushFrame(image, (copy) => this.write(result, copy))) this.dropped.queueFull++;
    } catch (err) {
      this.dropped.failed++;
      this.log.error({ err }, 'archive could not take a result');
    }
  }

  /** Newest first; `total` counts the entries that pass the filter. */
  list(offset: number, limit: number, filter: ArchiveFilter = {}): { total: number; entries: ArchiveEntry[] } {
    const from = filter.from === undefined ? -Infinity : Date.parse(filter.from);
    const to = filter.to === undefined ? Infinity : Date.parse(filter.to);
    const newestFirst = this.entries.filter((e) => {
      const captured = Date.parse(e.capturedAt);
      return (filter.camera === undefined || e.camera === filter.camera)
        && (filter.verdict === undefined || (e.verdict ?? 'none') === filter.verdict)
        && (filter.recipe === undefined || (e.recipe ?? '') === filter.recipe)
        && captured >= from && captured <= to;
    }).reverse();
    return { total: newestFirst.length, entries: newestFirst.slice(offset, offset + limit) };
  }

  get(id: string): ArchiveEntry | undefined {
    return ID.test(id) ? this.byId.get(id) : undefined;
  }

  /** The file of an entry, or null when there is no such entry (or it has no overlay). */
  file(id: string, kind: ArchiveFile): string | null {
    const entry = this.get(id);
    if (!entry || (kind === 'overlay' && !entry.overlay)) return null;
    return this.pathOf(id, kind);
  }

  /** Note in the entry (memory and JSON) that an operator marked it good. */
  async markGood(id: string, datasetFile: string): Promise<void> {
    const entry = this.get(id);
    if (!entry) throw new Error(`no archive entry ${id}`);
    entry.markedGood = datasetFile;
    const { bytes: _bytes, ...record } = entry;
    await fs.promises.writeFile(this.pathOf(id, 'json'), JSON.stringify(record, null, 2));
  }

  status(): ArchiveStatus {
    return {
      dir: this.options.dir,
      entries: this.entries.length,
      bytes: this.totalBytes,
      queued: this.queue.size,
      written: this.written,
      dropped: { ...this.dropped },
      deleted: { ...this.deleted },
      problem: this.problem,
    };
  }

  /** Resolves once everything offered so far is written (or given up). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  async close(): Promise<void> {
    if (this.ageTimer) clearInterval(this.ageTimer);
    this.ageTimer = null;
    await this.queue.idle();
  }

  // ---- disk --------------------------------------------------------------------------------

  private pathOf(id: string, kind: ArchiveFile): string {
    return path.join(this.options.dir, id + SUFFIX[kind]);
  }

  /** One log line per change between writing and not: a disk that stays full is not logged at every frame. */
  private report(problem: string | null): void {
    if ((problem === null) !== (this.problem === null)) {
      if (problem) this.log.error({ dir: this.options.dir, problem }, 'archive cannot write');
      else this.log.info({ dir: this.options.dir }, 'archive writes again');
    }
    this.problem = problem;
  }

  private async scan(): Promise<void> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.options.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.report(`cannot read ${this.options.dir}: ${(err as Error).message}`);
      return;
    }
    const ids = new Set(names.map((name) => name.split('.')[0]!).filter((id) => ID.test(id)));
    for (const id of [...ids].sort()) {
      try {
        const record = JSON.parse(await fs.promises.readFile(this.pathOf(id, 'json'), 'utf8')) as ArchiveRecord;
        this.add({ ...record, id, bytes: await this.sizeOf(id) });
      } catch {
        // A write cut short (no JSON, or half of one): its files go.
        await this.removeFiles(id);
      }
    }
  }

  private async sizeOf(id: string): Promise<number> {
    let bytes = 0;
    for (const kind of Object.keys(SUFFIX) as ArchiveFile[]) {
      bytes += await fs.promises.stat(this.pathOf(id, kind)).then((s) => s.size, () => 0);
    }
    return bytes;
  }

  private add(entry: ArchiveEntry): void {
    this.entries.push(entry);
    this.byId.set(entry.id, entry);
    this.totalBytes += entry.bytes;
  }

  private async write(result: InspectionResult, image: Mat): Promise<void> {
    const at = this.now();
    const id = idAt(at, ++this.sequence);
    try {
      await fs.promises.mkdir(this.options.dir, { recursive: true });
      if (!(await this.makeRoom())) {
        this.dropped.diskFloor++;
        this.report(`free disk space is below archive.minFreeBytes (${this.options.minFreeBytes}) with nothing left to delete`);
        return;
      }
      const frame = await cv.imencodeAsync('.jpg', image, [cv.IMWRITE_JPEG_QUALITY, this.options.quality]);
      const record = this.record(id, at, result);
      const json = JSON.stringify(record, null, 2);
      await fs.promises.writeFile(this.pathOf(id, 'frame'), frame);
      if (result.overlay) await fs.promises.writeFile(this.pathOf(id, 'overlay'), result.overlay);
      // The JSON last: an entry is whole once its JSON is there (scan() removes the rest).
      await fs.promises.writeFile(this.pathOf(id, 'json'), json);
      this.add({ ...record, bytes: frame.length + (result.overlay?.length ?? 0) + Buffer.byteLength(json) });
      this.written++;
      this.report(null);
      await this.prune();
    } catch (err) {
      this.dropped.failed++;
      this.report(`cannot write to ${this.options.dir}: ${(err as Error).message}`);
      await this.removeFiles(id);
    }
  }

  private record(id: string, at: number, result: InspectionResult): ArchiveRecord {
    const { frame, model } = result;
    return {
      id,
      archivedAt: new Date(at).toISOString(),
      camera: frame.cameraId,
      sequence: frame.sequence,
      triggerId: frame.triggerId ?? null,
      capturedAt: frame.capturedAt,
      roi: frame.roi,
      model: { name: model.name, version: model.version, variant: model.variant, hash: model.hash },
      raw: result.raw,
      normalized: result.normalized,
      verdict: result.verdict,
      recipe: result.recipe ?? null,
      calibrated: result.calibrated,
      regions: result.regions,
      overlay: result.overlay !== null,
      markedGood: null,
    };
  }

  /** Free bytes for unprivileged writers on the archive's filesystem. */
  private async freeBytes(): Promise<number> {
    const stats = await fs.promises.statfs(this.options.dir);
    return stats.bavail * stats.bsize;
  }

  /** Delete the oldest entries until the free-disk floor holds; false when it cannot. */
  private async makeRoom(): Promise<boolean> {
    if (this.options.minFreeBytes <= 0) return true;
    while ((await this.freeBytes()) < this.options.minFreeBytes) {
      if (this.entries.length === 0) return false;
      await this.deleteOldest('freeDisk');
    }
    return true;
  }

  /** Retention, oldest first: age, count, bytes, then the free-disk floor. */
  private async prune(): Promise<void> {
    const { maxAgeHours, maxCount, maxBytes } = this.options;
    const oldestAllowed = this.now() - maxAgeHours * HOUR_MS;
    while (maxAgeHours > 0 && this.entries.length > 0 && timeOfId(this.entries[0]!.id) < oldestAllowed) await this.deleteOldest('age');
    while (this.entries.length > maxCount) await this.deleteOldest('count');
    while (this.totalBytes > maxBytes && this.entries.length > 0) await this.deleteOldest('bytes');
    try {
      if (this.entries.length > 0) await this.makeRoom();
    } catch (err) {
      this.report(`cannot read the free space of ${this.options.dir}: ${(err as Error).message}`);
    }
  }

  private async deleteOldest(reason: DeletionReason): Promise<void> {
    const entry = this.entries.shift()!;
    this.byId.delete(entry.id);
    this.totalBytes -= entry.bytes;
    this.deleted[reason]++;
    await this.removeFiles(entry.id);
    this.log.debug({ id: entry.id, reason }, 'archive entry deleted');
  }

  private async removeFiles(id: string): Promise<void> {
    // JSON first: a deletion cut short leaves no entry behind, only files scan() removes.
    for (const kind of ['json', 'frame', 'overlay'] as const) await fs.promises.rm(this.pathOf(id, kind), { force: true }).catch(() => undefined);
  }
}
