// A simulated GigE Vision camera (aravis's arv-fake-gv-camera) on loopback, for tests that need a
// real camera protocol end to end. It listens on GVCP port 3956, so only one can run per machine:
// a lock file serialises users across test processes.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { gvcpDiscover } from '../../src/capture/gige.js';
import { killOnExit } from './cleanup.js';

const BINARY = 'arv-fake-gv-camera-0.8';
const LOCK = path.join(os.tmpdir(), 'crad-edge-fake-gige.lock');

export class FakeGigeCamera {
  /** Address it by IP: by name aravis discovers on every interface and picks the wrong one. */
  readonly address = '127.0.0.1';
  private child: ChildProcess | null = null;
  private output = '';
  private locked = false;

  /** Take the machine-wide lock, start the camera and wait until it answers GVCP discovery. */
  async start(timeoutMs = 10_000): Promise<void> {
    if (!this.locked) {
      await acquireLock(timeoutMs * 3);
      this.locked = true;
    }
    if (await gvcpDiscover(this.address, 200)) {
      throw new Error(`a GigE Vision device already answers on ${this.address}:3956 (a stray ${BINARY}?); cannot start another`);
    }
    await this.spawn(timeoutMs);
  }

  /** Kill the camera abruptly (SIGKILL), as a camera losing power would vanish. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    await new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  /** Freeze the camera (SIGSTOP): it neither streams nor answers, but its sockets stay open. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  /** Thaw a paused camera (SIGCONT). */
  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Start it again after kill(). */
  async restart(timeoutMs = 10_000): Promise<void> {
    await this.kill();
    await this.spawn(timeoutMs);
  }

  /** Kill the camera and give the lock back. */
  async stop(): Promise<void> {
    await this.kill();
    if (this.locked) {
      releaseLock();
      this.locked = false;
    }
  }

  private async spawn(timeoutMs: number): Promise<void> {
    this.output = '';
    const child = killOnExit(spawn(BINARY, ['-i', this.address], { stdio: ['ignore', 'pipe', 'pipe'] }));
    this.child = child;
    const collect = (chunk: Buffer) => {
      this.output = (this.output + chunk.toString()).slice(-4000);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    let spawnError: Error | null = null;
    child.once('error', (err) => {
      spawnError = err;
    });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`cannot run ${BINARY} (Debian package aravis-tools): ${(spawnError as Error).message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${BINARY} exited (${child.exitCode ?? child.signalCode}) before answering: ${this.output.trim()}`);
      }
      if (await gvcpDiscover(this.address, 200)) return;
      await delay(50);
    }
    await this.kill();
    throw new Error(`${BINARY} did not answer GVCP discovery on ${this.address}:3956 within ${timeoutMs} ms: ${this.output.trim()}`);
  }
}

async function acquireLock(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.writeFileSync(LOCK, String(process.pid), { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number(fs.readFileSync(LOCK, 'utf8').trim());
    if (!Number.isInteger(holder) || !processAlive(holder)) {
      // The holder died without cleaning up.
      fs.rmSync(LOCK, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`fake GigE camera lock ${LOCK} held by pid ${holder} for too long`);
    await delay(200);
  }
}

function releaseLock(): void {
  try {
    if (Number(fs.readFileSync(LOCK, 'utf8').trim()) === process.pid) fs.rmSync(LOCK, { force: true });
  } catch {
    // Already gone.
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
