// The trainer as a child process: `crad teach` (training/crad/teach.py) under the configured
// Python, niced below inference and held to training.threads cores, in a process group of its own
// so that a cancel ends it and everything it started. It reports JSON lines on stdout; its logs
// (stderr) are kept only as a tail, for the error a run ends with.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { AppConfig } from '../config/load.js';
import { projectRoot } from '../paths.js';
import type { Logger } from '../shared/log.js';
import type { TeachProgress } from '../shared/teach-status.js';

export interface TeachDone {
  onnx: string;
  figures: Record<string, unknown>;
  trainerVersion: string;
  datasetSha256: string;
  images: { train: number; calibration: number };
}

export interface TeachJob {
  data: string;
  work: string;
  out: string;
}

const TASKSET = ['/usr/bin/taskset', '/bin/taskset'].find((file) => fs.existsSync(file)) ?? null;
const NICE = ['/usr/bin/nice', '/bin/nice'].find((file) => fs.existsSync(file)) ?? null;
const STDERR_TAIL = 4000;
const KILL_AFTER_MS = 3000;

/** The command line of a run: [nice -n N] [taskset -c cores] python -m crad teach ... */
export function teachCommand(config: AppConfig, job: TeachJob, cores = os.availableParallelism()): { file: string; args: string[]; env: NodeJS.ProcessEnv } {
  const t = config.training;
  const teach = ['-m', 'crad', 'teach', '--data', job.data, '--work', job.work, '--out', job.out, '--threads', String(t.threads),
    '--min-free-mb', String(t.minFreeMb)];
  const optional: Array<[string, string | number, boolean]> = [
    ['--backbone', t.backbone, t.backbone !== ''], ['--backbone-weights', t.backboneWeights, t.backboneWeights !== ''],
    ['--input-size', t.inputSize, t.inputSize > 0], ['--epochs', t.epochs, t.epochs > 0], ['--min-steps', t.minSteps, t.minSteps >= 0],
    ['--batch-size', t.batchSize, t.batchSize > 0], ['--select-steps', t.selectSteps, t.selectSteps > 0],
    ['--rule', t.calibrationRule, t.calibrationRule !== ''],
  ];
  for (const [flag, value, given] of optional) if (given) teach.push(flag, String(value));
  if (t.randomBackbone) teach.push('--random-backbone');
  let command = [t.python, ...teach];
  // The last cores: the first ones are where the daemon's own threads start out.
  if (TASKSET && t.threads < cores) command = [TASKSET, '-c', `${cores - t.threads}-${cores - 1}`, ...command];
  if (NICE && t.nice > 0) command = [NICE, '-n', String(t.nice), ...command];
  const threads = String(t.threads);
  const env = {
    ...process.env, PYTHONPATH: t.trainerDir || path.join(projectRoot, 'training'), PYTHONUNBUFFERED: '1',
    OMP_NUM_THREADS: threads, MKL_NUM_THREADS: threads, OPENBLAS_NUM_THREADS: threads,
  };
  return { file: command[0]!, args: command.slice(1), env };
}

/** One trainer run. `done` resolves with its result or rejects with the reason in plain words. */
export class TeachProcess {
  readonly done: Promise<TeachDone>;
  private readonly child: ChildProcess;
  private cancelled = false;
  private killTimer: NodeJS.Timeout | null = null;

  constructor(config: AppConfig, job: TeachJob, onProgress: (progress: TeachProgress) => void, log: Logger) {
    const { file, args, env } = teachCommand(config, job);
    log.info({ command: [file, ...args].join(' ') }, 'trainer started');
    this.child = spawn(file, args, { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr = (stderr + text).slice(-STDERR_TAIL);
    });
    let result: TeachDone | null = null;
    let error: string | null = null;
    const lines = readline.createInterface({ input: this.child.stdout! });
    lines.on('line', (line) => {
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // a stray print is not progress
      }
      if (message.phase === 'done') result = message as unknown as TeachDone;
      else if (message.phase === 'error') error = String(message.error);
      else onProgress(progressOf(message));
    });
    const closed = new Promise<void>((resolve) => lines.once('close', resolve));
    this.done = new Promise<TeachDone>((resolve, reject) => {
      this.child.once('error', (err) => reject(new Error(`the trainer could not be started (${file}): ${err.message}; check training.python`)));
      this.child.once('exit', (code, signal) => {
        if (this.killTimer) clearTimeout(this.killTimer);
        void closed.then(() => {
          if (this.cancelled) return reject(new Error('cancelled'));
          if (code === 0 && result) return resolve(result);
          if (error) return reject(new Error(error));
          const last = stderr.trim().split('\n').pop() ?? '';
          reject(new Error(signal ? `the trainer was killed (${signal})${last ? `: ${last}` : ''}` : `the trainer failed (exit status ${code})${last ? `: ${last}` : ''}`));
        });
      });
    });
    this.done.catch(() => undefined);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** End the run and everything it started (its process group): TERM, then KILL. */
  cancel(): void {
    this.cancelled = true;
    this.signal('SIGTERM');
    this.killTimer = setTimeout(() => this.signal('SIGKILL'), KILL_AFTER_MS);
    this.killTimer.unref();
  }

  private signal(signal: NodeJS.Signals): void {
    if (this.child.pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      // already gone
    }
  }
}

function progressOf(message: Record<string, unknown>): TeachProgress {
  const number = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null);
  return {
    phase: String(message.phase), epoch: number(message.epoch) ?? 0, epochs: number(message.epochs) ?? 0,
    loss: number(message.loss), etaSec: number(message.etaSec), fraction: number(message.fraction) ?? 0,
  };
}
