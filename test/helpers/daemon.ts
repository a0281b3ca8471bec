// The daemon as a real process (`crad-edge run`), for tests that stop, kill and restart it.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { killOnExit, tempDir } from './cleanup.js';

export const repoRoot = path.resolve(import.meta.dirname, '../..');
/** The committed demo model; CRAD_TEST_MODEL runs the daemon tests against another model file. */
export const demoModel = process.env.CRAD_TEST_MODEL ?? path.join(repoRoot, 'models/demo/crad-demo.onnx');
export const samplesDir = path.join(repoRoot, 'samples');

export class DaemonProcess {
  output = '';
  private child: ChildProcess | null = null;
  private exit: Promise<number | null> = Promise.resolve(null);

  constructor(
    readonly configFile: string,
    private readonly env: Record<string, string> = {},
  ) {}

  start(): void {
    const child = killOnExit(spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/main.ts'), 'run', '--config', this.configFile], {
      cwd: repoRoot,
      env: { ...process.env, CRAD_LOG_LEVEL: 'info', ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exit = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    this.child = child;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Send a signal and wait for the process to end; resolves with its exit code (null if killed). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<number | null> {
    if (!this.child) return null;
    const child = this.child;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const code = await this.exit;
    clearTimeout(timer);
    return code;
  }

  /** Log lines (pino JSON) parsed, for assertions on what the daemon said. */
  logs(): Record<string, unknown>[] {
    return this.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  }
}

/** Write a config file into a fresh temp dir (with state and outbox inside it); returns its path. */
export function writeConfig(config: Record<string, unknown>, dir = tempDir('e2e')): string {
  const file = path.join(dir, 'config.json');
  const withState = {
    ...config,
    outbox: { path: path.join(dir, 'outbox.sqlite'), ...(config.outbox as object) },
    service: { stateDir: dir, shutdownTimeoutMs: 5000, ...(config.service as object) },
  };
  fs.writeFileSync(file, JSON.stringify(withState, null, 2));
  return file;
}
