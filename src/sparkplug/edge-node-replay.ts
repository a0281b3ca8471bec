// Delivery: the history replay (paced, confirmed by broker round trips) and the confirmation of
// live results (see edge-node.ts for why a round trip is the proof).
import { RESULT_METRICS, aliasOf, metricMessage, type MetricDef } from './metrics.js';
import { CONFIRM_INTERVAL_MS, HISTORY_BATCH, REPLAY_WINDOW, type Session } from './edge-node-types.js';
import { EdgeNodeMessages } from './edge-node-messages.js';

export abstract class EdgeNodeReplay extends EdgeNodeMessages {
  /** Resolves with `p`, or with `ended` once the session ends (a dead socket may never answer). */
  protected whileOpen<T>(session: Session, p: Promise<T>, ended: T): Promise<T> {
    return Promise.race([p, session.end.then(() => ended)]);
  }

  /**
   * True once the broker answered a round trip sent after everything sent so far on the session.
   * No answer within 1.5 keepalives: the link is dead (a steady stream of DDATA keeps MQTT.js from
   * ever sending PINGREQ, so keepalive alone would not notice), and the session is closed.
   */
  protected async roundTrip(session: Session): Promise<boolean> {
    if (session.ended) return false;
    let timer: NodeJS.Timeout | undefined;
    const ack = new Promise<boolean>((resolve) => {
      session.client.unsubscribe(this.confirmTopic, (err) => resolve(!err));
      const limitMs = Math.max(2000, this.server.keepaliveSec * 1500);
      timer = setTimeout(() => {
        if (session.ended) return;
        this.log.warn({ limitMs }, 'Sparkplug: the broker did not answer a round trip: link presumed dead, reconnecting');
        session.client.end(true);
        resolve(false);
      }, limitMs);
    });
    const ok = await this.whileOpen(session, ack, false);
    clearTimeout(timer);
    return ok && !session.ended;
  }

  protected scheduleConfirm(): void {
    const session = this.session;
    if (this.confirmTimer || !session || session.ended) return;
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = null;
      void this.confirmLive(session).then(() => {
        if (this.unconfirmed.length > 0 && this.session === session && !session.ended) this.scheduleConfirm();
      });
    }, CONFIRM_INTERVAL_MS);
  }

  protected async confirmLive(session: Session): Promise<void> {
    const upTo = this.liveSent;
    if (await this.roundTrip(session)) this.unconfirmed = this.unconfirmed.filter((u) => u.n > upTo);
  }

  /**
   * Results kept while the node or their camera was not born, oldest first per camera, as DDATA
   * with is_historical and the capture time on each metric, paced (replayMessagesPerSec, and each
   * message waits until the socket took it). After each window of rows a round trip; only what it
   * confirmed is deleted. One replay per session: the session's end ends it, whatever it waits on.
   */
  protected async replay(): Promise<void> {
    const session = this.session;
    if (!session || session.ended || this.replaying === session) return;
    this.replaying = session;
    const intervalMs = 1000 / this.settings.replayMessagesPerSec;
    let due = performance.now();
    try {
      for (;;) {
        const sent: number[] = [];
        for (const device of [...this.devices.values()]) {
          if (!device.born) continue;
          const rows = this.history.oldest(device.id, REPLAY_WINDOW);
          for (let i = 0; i < rows.length && device.born && !session.ended; i += HISTORY_BATCH) {
            const batch = rows.slice(i, i + HISTORY_BATCH);
            const metrics = batch.flatMap((row) => RESULT_METRICS
              .map((name) => this.deviceMetrics.find((d) => d.name === name))
              .filter((def): def is MetricDef => def !== undefined)
              .map((def) => metricMessage(def, row.values[def.name] ?? null, {
                alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: false, timestamp: row.capturedAt, historical: true,
              })));
            const written = this.send(this.topics.device('DDATA', device.id), { timestamp: Date.now(), metrics });
            if (!written) break;
            for (const row of batch) sent.push(row.id);
            this.counts.historySent += batch.length;
            await this.whileOpen(session, written, undefined);
            due += intervalMs;
            const wait = due - performance.now();
            if (wait > 0) await new Promise((r) => setTimeout(r, wait));
            else due = performance.now();
          }
        }
        if (session.ended) return;
        if (sent.length === 0) break;
        if (!(await this.roundTrip(session))) return;
        this.history.remove(sent);
        this.counts.historyConfirmed += sent.length;
        this.log.debug({ confirmed: sent.length, stored: this.history.size }, 'Sparkplug: historical DDATA confirmed');
      }
      // Cameras born only for their history: dead again now that it is out.
      for (const device of this.devices.values()) if (device.born && device.replayOnly) this.sendDeviceDeath(device);
      this.publishNodeData();
    } finally {
      if (this.replaying === session) this.replaying = null;
    }
  }
}
