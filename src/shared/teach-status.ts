// What the on-device training reports (TeachStatus): the console page, GET /api/teach and the
// retained <prefix>/train/progress all carry it. The contract between the backend and the page.
import type { DatasetAdvice } from './dataset-advice.js';

export type TeachState = 'training' | 'calibrating' | 'exporting' | 'checking' | 'shadow' | 'ready'
  | 'promoted' | 'failed' | 'cancelled' | 'interrupted';

/** States a run ends in: nothing more happens to it (promoted: it serves; the others: nothing changed). */
export const ENDED_STATES: readonly TeachState[] = ['promoted', 'failed', 'cancelled', 'interrupted'];

export interface TeachProgress {
  phase: string;
  epoch: number;
  epochs: number;
  loss: number | null;
  etaSec: number | null;
  fraction: number;
}

export interface ShadowExample {
  cameraId: string;
  sequence: number;
  at: string;
  serving: { verdict: string; score: number };
  candidate: { verdict: string; score: number };
  /** URL of the frame's JPEG (GET, console read access). */
  image: string;
}

export interface ShadowFigures {
  frames: number;
  changed: number;
  servingNg: number;
  candidateNg: number;
  /** Frames left unscored because the candidate was still busy (the serving path never waits). */
  dropped?: number;
  examples: ShadowExample[];
}

export interface TeachCandidate {
  sha256: string;
  threshold: number;
  figures: Record<string, unknown>;
  golden?: { passed: number; total: number };
  /** The trainer's version and the hash of the images it learnt from (kept with the version). */
  trainerVersion?: string;
  datasetSha256?: string;
}

export interface TeachRun {
  id: string;
  cameraId: string;
  recipe: string | null;
  state: TeachState;
  startedAt: string;
  endedAt?: string;
  images: { train: number; calibration: number };
  progress: TeachProgress;
  error?: string;
  candidate?: TeachCandidate;
  shadow?: ShadowFigures;
}

export interface TeachModelVersion {
  sha256: string;
  /** The recipe it was promoted into; null: the base configuration (model.path). */
  recipe: string | null;
  promotedAt: string;
  datasetSha256: string;
  trainerVersion: string;
  figures: Record<string, unknown>;
  serving: boolean;
}

export interface TeachStatus {
  run: TeachRun | null;
  dataset: { cameraId: string | null } & Omit<DatasetAdvice, 'count'> & { count: number };
  /** Versions kept in the state dir, newest first. */
  models: TeachModelVersion[];
  /** sha256 a rollback would return to (in the place of the newest promoted version still serving). */
  previous: string | null;
}

/** A refused teach request: the HTTP status and MQTT answer say why in plain words. */
export class TeachRefused extends Error {
  constructor(readonly status: 400 | 409 | 422, message: string) {
    super(message);
  }
}
