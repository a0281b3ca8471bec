// systemd integration: READY when the pipeline runs, WATCHDOG only while frames really flow (or
// while idle by design), STATUS with fps and broker state. Outside systemd (no NOTIFY_SOCKET)
// every call is a no-op.
import { createRequire } from 'node:module';
import type { Logger } from '../shared/log.js';

interface SdNotify {
  ready(): void;
  stopping(pid?: number): void;
  watchdog(): void;
  watchdogInterval(): number;
  sendStatus(text: string): void;
}

export interface Health {
  /** True when the pipeline is doing its job, or idle by design (trigger mode, finished sources). */
  healthy: boolean;
  /** One line for `systemctl status`. */
  status: string;
}

export class SystemdNotifier {
  private readonly notify: SdNotify | null;
  private timer: NodeJS.Timeout | null = null;
  private lastStatus = '';

  constructor(private readonly log: Logger) {
    this.notify = process.env.NOTIFY_SOCKET ? loadBinding(log) : null;
  }

  get active(): boolean {
    return this.notify !== null;
  }

  /** Tell systemd the daemon is up, and start pinging the watchdog while `check` says healthy. */
  ready(check: () => Health): void {
    if (!this.notify) return;
    this.notify.ready();
    const intervalMs = this.notify.watchdogInterval();
    // Ping at half the watchdog period; refresh STATUS at least every 5 s without a watchdog.
    const periodMs = intervalMs > 0 ? Math.max(100, Math.floor(intervalMs / 2)) : 5000;
    this.timer = setInterval(() => this.tick(check, intervalMs > 0), periodMs);
    this.timer.unref();
    this.tick(check, intervalMs > 0);
  }

  private tick(check: () => Health, watchdog: boolean): void {
    const health = check();
    if (health.status !== this.lastStatus) {
      this.notify?.sendStatus(health.status);
      this.lastStatus = health.status;
    }
    if (watchdog && health.healthy) this.notify?.watchdog();
    else if (watchdog) this.log.warn({ status: health.status }, 'pipeline unhealthy: withholding the systemd watchdog ping');
  }

  stopping(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.notify?.stopping(process.pid);
  }
}

function loadBinding(log: Logger): SdNotify | null {
  try {
    return createRequire(import.meta.url)('sd-notify') as SdNotify;
  } catch (err) {
    log.error({ err }, 'NOTIFY_SOCKET is set but the sd-notify binding failed to load; systemd will not see READY');
    return null;
  }
}
