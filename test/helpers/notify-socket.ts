// A stand-in for systemd's notification socket: a unix datagram socket (which Node cannot serve)
// bound by a tiny /usr/bin/python3 listener that prints every datagram as one JSON line.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { killOnExit, tempDir } from './cleanup.js';
import { until } from './publish-fixtures.js';

const LISTENER = `
import json, socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data = sock.recv(65536)
    print(json.dumps({"at": time.time() * 1000, "text": data.decode("utf-8", "replace")}), flush=True)
`;

export interface Notification {
  /** Epoch ms when the listener received it. */
  at: number;
  /** One assignment per line, e.g. "READY=1" or "STATUS=...". */
  lines: string[];
}

export class NotifySocket {
  readonly notifications: Notification[] = [];
  private output = '';
  private bound = false;

  private constructor(readonly socketPath: string, private readonly dir: string, private readonly child: ChildProcess) {
    let buffer = '';
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        const parsed = JSON.parse(line) as { bound?: boolean; at?: number; text?: string };
        if (parsed.bound) this.bound = true;
        else this.notifications.push({ at: parsed.at!, lines: parsed.text!.split('\n').filter(Boolean) });
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  static async start(): Promise<NotifySocket> {
    const dir = tempDir('notify');
    const socketPath = path.join(dir, 'notify.sock');
    const child = killOnExit(spawn('/usr/bin/python3', ['-c', LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const socket = new NotifySocket(socketPath, dir, child);
    await until('the notify listener to bind its socket', () => socket.bound || child.exitCode !== null, 10_000);
    if (!socket.bound) throw new Error(`notify listener failed:\n${socket.output}`);
    return socket;
  }

  /** Every line received so far, with its receive time. */
  lines(): { at: number; line: string }[] {
    return this.notifications.flatMap((n) => n.lines.map((line) => ({ at: n.at, line })));
  }

  count(line: string): number {
    return this.lines().filter((l) => l.line === line).length;
  }

  /** Receive time of the latest `line`, or 0. */
  lastAt(line: string): number {
    return this.lines().filter((l) => l.line === line).at(-1)?.at ?? 0;
  }

  statuses(): string[] {
    return this.lines().filter((l) => l.line.startsWith('STATUS=')).map((l) => l.line.slice('STATUS='.length));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
