import { pino, type Logger } from 'pino';

export type { Logger };

/** The daemon's logger: JSON lines on stdout (journald keeps them), one child per stage. */
export function createLogger(level: string = 'info', destination?: NodeJS.WritableStream): Logger {
  return destination ? pino({ level, base: { name: 'crad-edge' } }, destination) : pino({ level, base: { name: 'crad-edge' } });
}
