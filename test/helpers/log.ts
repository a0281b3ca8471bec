// A logger whose lines a test can read (what the daemon reports, not only what it does).
import { Writable } from 'node:stream';
import { createLogger } from '../../src/shared/log.js';

export type Logger = ReturnType<typeof createLogger>;

/** A logger at `level` writing JSON lines the test reads back with lines(). */
export function capturingLogger(level: string): { log: Logger; lines: () => Record<string, any>[] } {
  const raw: string[] = [];
  const log = createLogger(level, new Writable({
    write(chunk: Buffer, _encoding, done) {
      raw.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  }));
  return { log, lines: () => raw.map((line) => JSON.parse(line) as Record<string, any>) };
}
