// Readiness and the watchdog, from facts: the batch loop alive, results flowing (or idle by design),
// the golden gate, the broker. When inspection stops outside a shutdown the fault is said at once
// everywhere and the daemon asks to be restarted a moment later (service.faultExitDelayMs).
import type { AppConfig } from '../config/load.js';
import type { Pipeline } from '../pipeline.js';
import type { InspectionStatus } from '../publish/payloads.js';
import type { PublisherStats } from '../publish/index.js';
import type { Logger } from '../shared/log.js';
import type { Health } from './systemd.js';

export interface HealthFacts {
  config(): AppConfig;
  pipeline(): Pipeline;
  publisher(): PublisherStats;
  goldenReady(): boolean;
  /** The cameras run (false while held back by failed golden samples). */
  camerasStarted(): boolean;
  /** Publish the device status's `inspection`. */
  inspectionChanged(status: InspectionStatus): void;
  /** Inspection stopped for good: stop this daemon and exit non-zero. */
  onFault?(reason: string): void;
}

export class HealthWatch {
  private readonly startedMono = performance.now();
  private faultTimer: NodeJS.Timeout | null = null;

  constructor(private readonly facts: HealthFacts, private readonly log: Logger) {}

  inspection(): InspectionStatus {
    const { alive, reason } = this.facts.pipeline().liveness();
    return { ready: alive, reason };
  }

  /** Healthy while results flow, or while idle by design (triggered cameras, no cameras), and the loop lives. */
  health(): Health {
    const config = this.facts.config();
    const stats = this.facts.pipeline().stats();
    const publisher = this.facts.publisher();
    // A free-run camera whose finite source has ended waits for nothing: a restart would only
    // inspect the same folder or file again.
    const ended = new Set(stats.sourcesEnded);
    // Cameras held back by failed golden samples wait for an operator, not for a restart.
    const freeRunning = this.facts.camerasStarted() ? config.cameras.filter((c) => c.enabled && c.trigger === 'free' && !ended.has(c.id)).length : 0;
    const sinceResult = performance.now() - stats.lastResultMono;
    const flowing = stats.lastResultMono > 0 && sinceResult < config.service.watchdogStallMs;
    const startingUp = stats.lastResultMono === 0 && performance.now() < config.service.watchdogStallMs + this.startedMono;
    const inspection = this.inspection();
    const healthy = inspection.ready && (freeRunning === 0 || flowing || startingUp);
    const status = `${inspection.ready ? '' : `NOT READY (${inspection.reason}), `}${this.facts.goldenReady() ? '' : 'NOT READY (golden samples failed), '}`
      + `${stats.fps.toFixed(1)} fps, ${stats.processed} results, broker ${publisher.connected ? 'connected' : 'disconnected'}, outbox ${publisher.outbox.pending} pending`;
    return { healthy, status };
  }

  /** Nothing will be inspected until a restart: say so now, ask for the restart after the delay. */
  inspectionStopped(reason: string): void {
    if (this.faultTimer) return;
    const delayMs = this.facts.config().service.faultExitDelayMs;
    this.facts.inspectionChanged({ ready: false, reason });
    this.log.fatal({ reason, exitInMs: delayMs }, 'inspection stopped: exiting for a restart');
    this.faultTimer = setTimeout(() => this.facts.onFault?.(reason), delayMs);
  }

  stop(): void {
    if (this.faultTimer) clearTimeout(this.faultTimer);
  }
}
