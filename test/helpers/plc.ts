// A PLC on the line, played by a client we did not write: test/helpers/plc_client.py (Eclipse Paho,
// MQTT 5, persistent session) as a child process, told what to publish and reporting what it sees.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { killOnExit } from './cleanup.js';
import { until } from './publish-fixtures.js';

export interface PlcEvent {
  event: 'connected' | 'disconnected' | 'message' | 'sent';
  topic?: string;
  retain?: boolean;
  json?: any;
  sessionPresent?: boolean;
  /** When the test saw it (Date.now()). */
  at: number;
}

export class Plc {
  readonly events: PlcEvent[] = [];
  private readonly child: ChildProcess;

  private constructor(readonly prefix: string, brokerPort: number, clientId: string) {
    this.child = killOnExit(spawn('/usr/bin/python3', [path.join(import.meta.dirname, 'plc_client.py'), '127.0.0.1', String(brokerPort), prefix, clientId], {
      stdio: ['pipe', 'pipe', 'pipe'],
    }));
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.events.push({ ...(JSON.parse(line) as PlcEvent), at: Date.now() });
      } catch {
        // not an event line
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  stderr = '';

  /** Connects to the broker at `brokerPort` and subscribes to <prefix>/#. */
  static async connect(prefix: string, brokerPort: number, clientId = `plc-${process.pid}`): Promise<Plc> {
    const plc = new Plc(prefix, brokerPort, clientId);
    await until('the PLC connected', () => plc.connects() >= 1, 15_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${plc.stderr}`);
    });
    return plc;
  }

  connects(): number {
    return this.events.filter((e) => e.event === 'connected').length;
  }

  /** Publish `payload` (text, as is) on <prefix>/<camera>/trigger at QoS 1. */
  trigger(camera: string, payload: string | object): void {
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    this.child.stdin!.write(`${JSON.stringify({ op: 'trigger', camera, payload: text })}\n`);
  }

  /** Publish `payload` (an object as JSON, text as is) on <prefix>/<topic> at QoS 1. */
  publish(topic: string, payload: string | object): void {
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    this.child.stdin!.write(`${JSON.stringify({ op: 'publish', topic, payload: text })}\n`);
  }

  messages(topic: string): PlcEvent[] {
    return this.events.filter((e) => e.event === 'message' && e.topic === `${this.prefix}/${topic}`);
  }

  /** Results on <camera>/result (inspections and failure answers). */
  results(camera: string): any[] {
    return this.messages(`${camera}/result`).map((e) => e.json);
  }

  answersTo(camera: string, triggerId: string | null): any[] {
    return this.results(camera).filter((r) => r?.triggerId === triggerId);
  }

  lastStatus(camera?: string): any {
    return this.messages(camera ? `${camera}/status` : 'status').at(-1)?.json;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.stdin!.write(`${JSON.stringify({ op: 'quit' })}\n`);
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}
