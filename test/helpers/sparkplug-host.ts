// The Python Sparkplug host (sparkplug_host.py) as a child process: what it saw, as events, and
// commands for it to publish. The official .proto is read in place from ../shared at test time.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { killOnExit, tempDir } from './cleanup.js';
import { repoRoot } from './daemon.js';
import { until } from './publish-fixtures.js';

export const OFFICIAL_PROTO = path.resolve(repoRoot, '../shared/data/sparkplug/sparkplug_b.proto');

export interface HostMetric {
  name: string | null;
  alias: number | null;
  datatype: number | null;
  value: unknown;
  is_null: boolean;
  is_historical: boolean;
  timestamp: number | null;
}

export interface HostEvent {
  event: 'message' | 'violation' | 'subscribed' | 'state-sent' | 'done';
  type?: string;
  topic?: string;
  device?: string | null;
  seq?: number | null;
  qos?: number;
  bdSeq?: number;
  matchesBirth?: boolean;
  metrics?: HostMetric[];
  rule?: string;
  detail?: string;
  online?: boolean;
  timestamp?: number;
  id?: number;
}

export class SparkplugHost {
  readonly events: HostEvent[] = [];
  private output = '';
  private commands = 0;

  private constructor(private readonly child: ChildProcess, readonly node: string) {
    let buffer = '';
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        try {
          this.events.push(JSON.parse(line) as HostEvent);
        } catch {
          this.output += `${line}\n`;
        }
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  static async start(options: { port: number; group: string; node: string; hostId: string; announce: boolean }): Promise<SparkplugHost> {
    const child = killOnExit(spawn('/usr/bin/python3', [
      path.join(import.meta.dirname, 'sparkplug_host.py'), '--port', String(options.port), '--group', options.group,
      '--host-id', options.hostId, '--proto', OFFICIAL_PROTO, '--work', tempDir('sparkplug-host'), ...(options.announce ? ['--announce'] : []),
    ], { stdio: ['pipe', 'pipe', 'pipe'] }));
    const host = new SparkplugHost(child, options.node);
    await until('the Sparkplug host subscribed', () => host.events.some((e) => e.event === 'subscribed'), 20_000)
      .catch(async (err: Error) => {
        await host.stop();
        throw new Error(`${err.message}\n${host.output}`);
      });
    return host;
  }

  messages(type?: string, device?: string): HostEvent[] {
    return this.events.filter((e) => e.event === 'message' && (!type || e.type === type) && (device === undefined || e.device === device));
  }

  violations(): HostEvent[] {
    return this.events.filter((e) => e.event === 'violation');
  }

  /** Have the host publish; resolves once it has. */
  async send(command: Record<string, unknown>): Promise<void> {
    const id = ++this.commands;
    this.child.stdin!.write(`${JSON.stringify({ ...command, node: this.node, id })}\n`);
    await until(`host command ${String(command.cmd)} sent`, () => this.events.some((e) => e.event === 'done' && e.id === id), 20_000)
      .catch((err: Error) => { throw new Error(`${err.message}\n${this.output}`); });
  }

  /** Wait for the count'th message matching, counted from index `from` of the event list. */
  async next(what: string, match: (e: HostEvent) => boolean, from = 0, timeoutMs = 60_000): Promise<HostEvent> {
    let found: HostEvent | undefined;
    await until(what, () => (found = this.events.slice(from).find((e) => e.event === 'message' && match(e))) !== undefined, timeoutMs)
      .catch((err: Error) => { throw new Error(`${err.message}\nhost saw: ${this.summary(from)}\n${this.output}`); });
    return found!;
  }

  /** One line per message, for failure messages. */
  summary(from = 0): string {
    return this.events.slice(from).filter((e) => e.event !== 'done')
      .map((e) => (e.event === 'message' ? `${e.type}${e.device ? `/${e.device}` : ''} seq=${e.seq ?? '-'}${e.bdSeq !== undefined ? ` bdSeq=${e.bdSeq}` : ''}` : `${e.event}${e.rule ? ` ${e.rule}: ${e.detail}` : ''}`))
      .join('; ');
  }

  /** Closing stdin lets the host stop its mosquitto_sub (which also dies with it if it is killed). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export function metricNamed(event: HostEvent, name: string): HostMetric | undefined {
  return event.metrics?.find((m) => m.name === name);
}

/** The rows waiting in a node's history table (its state directory), oldest first. */
export function historyRows(stateDir: string): { camera: string; captured_at: number }[] {
  const file = path.join(stateDir, 'sparkplug-history.sqlite');
  if (!fs.existsSync(file)) return [];
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT camera, captured_at FROM history ORDER BY id').all() as { camera: string; captured_at: number }[];
  } finally {
    db.close();
  }
}

/** Capture times (metric timestamps) of the historical DDATA of a camera, in arrival order, one per result. */
export function historicalTimes(events: HostEvent[], device: string): number[] {
  return events
    .filter((e) => e.event === 'message' && e.type === 'DDATA' && e.device === device)
    .flatMap((e) => (e.metrics ?? []).filter((m) => m.is_historical && m.name === 'Inspection/Raw Score').map((m) => m.timestamp!));
}
