// Opening, failing and reopening with backoff: a source abandoned under a blocked read is closed
// when the read returns, and the next open waits for it to let go of the device.
import type { CameraSource } from './source.js';
import { CameraPacing } from './camera-pacing.js';

export abstract class CameraReopen extends CameraPacing {
  protected async openAndRun(): Promise<void> {
    const generation = ++this.generation;
    // A source abandoned under a blocked read still holds its device; wait for it to let go.
    if (this.abandoned) {
      this.log.warn('waiting for the previous capture handle to return from a blocked read before reopening');
      await this.abandoned;
    }
    if (generation !== this.generation) return;
    let source: CameraSource | null = null;
    try {
      source = this.makeSource(this.config, this.log);
      const opening = source.open();
      this.opening = opening;
      await opening;
    } catch (err) {
      source?.close();
      if (generation === this.generation) this.fail(err);
      return;
    }
    if (generation !== this.generation) {
      source.close();
      return;
    }
    this.source = source;
    this.aliveMono = performance.now();
    this.nextDueMono = 0;
    this.log.info({ source: source.description }, 'camera source open');
    // A recorded source is ready once open; a live one proves itself with its first frame
    // (GStreamer pipelines can open fine and then deliver nothing).
    if (!source.live) this.setOnline();
    void this.readLoop(generation, source);
  }

  protected fail(err: unknown): void {
    if (!this.running) return;
    const message = err instanceof Error ? err.message : String(err);
    this.counters.failures++;
    this.abandonSource();
    this.log.warn({ err: message }, 'camera offline');
    this.setState('offline', message);
    this.scheduleReopen();
  }

  /** Let go of the current source; if a read is in flight the handle closes once it returns. */
  protected abandonSource(): void {
    this.generation++;
    this.wakeAll();
    this.readStartedMono = null;
    const source = this.source;
    const reading = this.reading;
    this.source = null;
    this.reading = null;
    if (!source) return;
    this.counters.skipped += source.skipped;
    if (!reading) {
      source.close();
      return;
    }
    const closed: Promise<void> = reading.then(() => undefined, () => undefined).then(() => {
      void source.close();
      if (this.abandoned === closed) this.abandoned = null;
    });
    this.abandoned = closed;
  }

  protected scheduleReopen(): void {
    const { delayMs, ceilingMs } = this.backoff.next();
    this.counters.reconnects++;
    this.log.info({ delayMs, ceilingMs, attempt: this.backoff.attempts }, 'camera reopen scheduled');
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.running) void this.openAndRun();
    }, delayMs);
  }

}
