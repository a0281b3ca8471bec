// What the edge node keeps across daemon restarts, in the state directory: the bdSeq of the last
// MQTT CONNECT (the next CONNECT uses the one after it, refused or timed-out ones included) and the number each camera got, which
// its metric aliases are built from. Written atomically (temp file, fsync, rename).
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../shared/atomic-write.js';
import type { Logger } from '../shared/log.js';

export interface NodeState {
  /** bdSeq of the last CONNECT sent, null before the first. */
  lastBdSeq: number | null;
  /** Camera id -> device number (1, 2, ...), never reused. */
  devices: Record<string, number>;
}

export class NodeStateFile {
  private state: NodeState;

  constructor(readonly file: string, private readonly log: Logger) {
    this.state = this.read();
  }

  /**
   * The bdSeq of a CONNECT about to be sent: one after the last CONNECT's, wrapping at 255, and
   * recorded at once (topics-nbirth-bdseq-increment: every new CONNECT, whether or not it succeeds).
   */
  takeBdSeq(): number {
    const bdSeq = this.state.lastBdSeq === null ? 0 : (this.state.lastBdSeq + 1) % 256;
    this.state.lastBdSeq = bdSeq;
    this.write();
    return bdSeq;
  }

  deviceNumber(cameraId: string): number {
    let n = this.state.devices[cameraId];
    if (n === undefined) {
      n = Math.max(0, ...Object.values(this.state.devices)) + 1;
      this.state.devices[cameraId] = n;
      this.write();
    }
    return n;
  }

  private read(): NodeState {
    try {
      const parsed = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Partial<NodeState>;
      const bd = parsed.lastBdSeq;
      const devices = Object.fromEntries(Object.entries(parsed.devices ?? {}).filter(([, n]) => Number.isSafeInteger(n) && n > 0));
      return { lastBdSeq: Number.isInteger(bd) && bd! >= 0 && bd! <= 255 ? bd! : null, devices };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.error({ err: (err as Error).message, file: this.file }, 'Sparkplug state file unreadable: bdSeq starts again at 0');
      return { lastBdSeq: null, devices: {} };
    }
  }

  private write(): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    writeFileAtomic(this.file, JSON.stringify(this.state));
  }
}
