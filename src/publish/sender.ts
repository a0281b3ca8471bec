// The outbound sender: results and their images -> outbox -> MQTT. Everything is committed to the
// outbox first (one transaction for the results handed over together, its fsync on libuv's pool
// shared by the commits made meanwhile; nothing is sent before that fsync) and leaves it only
// when the broker acknowledges it; at most the inflight window is unacknowledged at a time, and
// whatever waited through an outage goes out again, marked replayed, on the next connection.
import type { IConnackPacket, MqttClient } from 'mqtt';
import type { AppConfig } from '../config/load.js';
import type { Result } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import type { MqttConnection, ProtocolVersion } from './connection.js';
import type { Outbox, OutboxEntry, OutboxRow } from './outbox.js';
import type { OutboxStats } from './payloads.js';
import { imageMessage, isBrokerRejection, resultEntries, resultMessage, type ImageMeta, type VolatileImage } from './sender-messages.js';
import type { Topics } from './topics.js';

/** Results whose images wait in memory for the result to be sent; beyond it the oldest images go. */
const MAX_VOLATILE_RESULTS = 256;

export interface SenderCounters {
  accepted: number;
  publishedResults: number;
  replayedResults: number;
  publishedImages: number;
  storeFailures: number;
}

export interface SenderContext {
  connection: MqttConnection;
  /** Opens the outbox when it is not open yet. */
  readonly outbox: Outbox;
  /** Whether the outbox has been opened: stopping or stats before any result or start open nothing. */
  outboxOpen(): boolean;
  topics: Topics;
  device: string;
  bootId: string;
  log: Logger;
  /** The outbox shrank without a send (age limit): the device status should say so. */
  onOutboxPruned(): void;
}

export class OutboxSender {
  // `cursor` is the last row id sent on the current connection; `inflight` the rows sent and not
  // yet acknowledged; acks and rejections are removed in the next commit.
  private pendingAppends: { entry: OutboxEntry; images: VolatileImage[] }[] = [];
  private readonly acknowledged = new Set<number>();
  private readonly rejected = new Set<number>();
  private readonly inflight = new Set<number>();
  private cursor = 0;
  private window = 1;
  private readonly volatileImages = new Map<number, VolatileImage[]>();
  private readonly flushQueued = { microtask: false, tick: false };
  private syncInFlight = false;
  /** sendPending calls waiting for the fsync that covers their rows (upTo: the last row id committed then). */
  private readonly durableWaiters = new Set<{ upTo: number; done: () => void }>();
  private brokerReceiveMaximum: number | undefined;
  private pruneTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private closed = false;
  private readonly counters = { accepted: 0, publishedResults: 0, replayedResults: 0, publishedImages: 0, imagesDiscarded: 0, storeFailures: 0 };

  constructor(private config: AppConfig, private readonly context: SenderContext) {}

  start(): void {
    const pruneEveryMs = Math.max(1000, Math.min(60_000, (this.config.outbox.maxAgeHours * 3_600_000) / 10));
    this.pruneTimer = setInterval(() => this.pruneByAge(), pruneEveryMs);
    this.pruneByAge();
  }

  /**
   * Queue a result (and its crops/overlay). Never blocks: the outbox write happens once the
   * caller's synchronous work is done (a microtask: one transaction for a batch's results, before
   * anything else the event loop would run first), and sending follows the broker's
   * acknowledgements.
   */
  publishResult(result: Result): void {
    if (this.stopped) {
      this.context.log.warn({ camera: result.frame.cameraId, sequence: result.frame.sequence }, 'publishResult after stop: result not published');
      return;
    }
    const { entry, images, imageEntries } = resultEntries(result, this.config, this.context);
    const resultAppend = { entry, images: [] as VolatileImage[] };
    this.pendingAppends.push(resultAppend);
    if (this.config.outbox.includeImages) {
      for (const imageEntry of imageEntries) this.pendingAppends.push({ entry: imageEntry, images: [] });
    } else {
      resultAppend.images = images;
    }
    this.counters.accepted += 1;
    this.scheduleFlush('microtask');
  }

  /** QoS/retain, outbox limits and the inflight window follow the new config. */
  updateLive(config: AppConfig): void {
    this.config = config;
    if (this.context.outboxOpen()) this.context.outbox.setLimits(outboxLimits(config));
    if (this.context.connection.client) this.window = this.inflightWindow();
    this.scheduleFlush();
  }

  onConnect(connack: IConnackPacket, version: ProtocolVersion): void {
    this.inflight.clear();
    this.cursor = 0;
    this.brokerReceiveMaximum = connack.properties?.receiveMaximum;
    this.window = this.inflightWindow();
    this.context.log.info({ protocolVersion: version, pending: this.context.outbox.counts().pending, window: this.window }, 'publishing: sending the outbox backlog');
    this.scheduleFlush();
  }

  onDisconnect(): void {
    this.inflight.clear();
    this.cursor = 0;
    // Whatever is still in the outbox now waits for the broker: it goes out marked replayed.
    try {
      this.context.outbox.markAllReplayed();
    } catch (err) {
      if (!this.stopped) this.context.log.error({ err: (err as Error).message }, 'outbox: cannot mark pending messages as replays');
    }
    const lost = [...this.volatileImages.values()].reduce((n, images) => n + images.length, 0);
    this.counters.imagesDiscarded += lost;
    this.volatileImages.clear();
  }

  /** Refuse new results, commit what is queued, and let the broker acknowledge the backlog until `until` (epoch ms). */
  async drain(until: number): Promise<void> {
    this.stopped = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.flush();
    while (this.context.connection.client && this.context.outbox.counts().pending > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
      this.flush();
    }
  }

  /**
   * Commit what is queued now (not at the end of the tick) and wait, at most maxWaitMs, until its
   * fsync is done and the inflight window has taken it: for the caller about to hold the main
   * thread (a session.run), which would otherwise keep the finished results from the socket.
   */
  sendPending(maxWaitMs: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.pendingAppends.length > 0) this.flush();
    const upTo = this.context.outbox.lastCommittedId;
    if (maxWaitMs <= 0 || this.context.outbox.durableId >= upTo || !this.context.connection.client) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter = {
        upTo,
        done: () => {
          clearTimeout(timer);
          this.durableWaiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.done, maxWaitMs);
      this.durableWaiters.add(waiter);
    });
  }

  /** Waiters whose rows an fsync now covers (all of them when the fsync failed or the sender closed). */
  private wakeDurableWaiters(all = false): void {
    if (this.durableWaiters.size === 0) return;
    const durable = this.context.outbox.durableId;
    for (const waiter of [...this.durableWaiters]) if (all || waiter.upTo <= durable) waiter.done();
  }

  /** Commit the last acknowledgements; the outbox may be closed after this. */
  close(): void {
    this.stopped = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.flush();
    this.closed = true;
    this.wakeDurableWaiters(true);
  }

  counts(): SenderCounters {
    const { accepted, publishedResults, replayedResults, publishedImages, storeFailures } = this.counters;
    return { accepted, publishedResults, replayedResults, publishedImages, storeFailures };
  }

  outboxStats(): OutboxStats {
    const counts = !this.closed && this.context.outboxOpen()
      ? this.context.outbox.counts()
      : { pending: 0, pendingResults: 0, pendingBytes: 0, oldestCreatedAt: null, droppedResults: 0, droppedImages: 0, rejected: 0 };
    return {
      pending: counts.pending,
      pendingResults: counts.pendingResults,
      pendingBytes: counts.pendingBytes,
      inflight: this.inflight.size,
      oldestAt: counts.oldestCreatedAt === null ? null : new Date(counts.oldestCreatedAt).toISOString(),
      droppedResults: counts.droppedResults,
      droppedImages: counts.droppedImages,
      rejected: counts.rejected,
      imagesDiscarded: this.counters.imagesDiscarded,
    };
  }

  /**
   * A commit soon: results at the end of the code handing them over (a microtask), not at the end
   * of the tick, where whatever the loop ran first (the next batch's preprocessing, socket reads)
   * delayed them 5-25 ms (bench/README.md, the paced row's tail); acknowledgements and the rest
   * once per event-loop tick. A tick's flush queued first does not hold back the results'.
   */
  private scheduleFlush(when: 'microtask' | 'tick' = 'tick'): void {
    if (this.flushQueued[when]) return;
    this.flushQueued[when] = true;
    (when === 'microtask' ? queueMicrotask : setImmediate)(() => {
      this.flushQueued[when] = false;
      this.flush();
    });
  }

  /** One commit for everything queued this tick, then send what the inflight window allows. */
  private flush(): void {
    if (this.closed) return;
    // Nothing was ever handed over and the publisher never started: nothing to open.
    if (!this.context.outboxOpen() && this.pendingAppends.length === 0) return;
    const appends = this.pendingAppends;
    const acknowledged = [...this.acknowledged];
    const rejected = [...this.rejected];
    if (appends.length > 0 || acknowledged.length > 0 || rejected.length > 0) {
      this.pendingAppends = [];
      const live = this.context.connection.client !== null;
      try {
        const ids = this.context.outbox.commit(appends.map((a) => ({ ...a.entry, live })), acknowledged, rejected);
        this.acknowledged.clear();
        this.rejected.clear();
        appends.forEach((a, i) => {
          if (a.images.length === 0) return;
          if (live) this.holdImages(ids[i]!, a.images);
          else this.counters.imagesDiscarded += a.images.length;
        });
      } catch (err) {
        const lost = appends.filter((a) => a.entry.kind === 'result').length;
        this.counters.storeFailures += 1;
        this.context.log.error({ err: (err as Error).message, lostResults: lost }, 'outbox write failed: these results are lost');
      }
    }
    this.syncOutbox();
    this.pump();
  }

  /**
   * One fsync of the outbox at a time, off the main thread; commits made while it runs wait for
   * the next one. The rows it covers become sendable (Outbox.next), so pump after it.
   */
  private syncOutbox(): void {
    if (this.syncInFlight || this.closed || !this.context.outbox.unsynced) return;
    this.syncInFlight = true;
    this.context.outbox.sync().then(
      () => {
        this.syncInFlight = false;
        this.syncOutbox();
        this.pump();
        this.wakeDurableWaiters();
      },
      (err: unknown) => {
        this.syncInFlight = false;
        this.wakeDurableWaiters(true);
        if (this.closed) return;
        // The rows stay unsent (not lost: a later fsync or the next start makes them durable).
        this.counters.storeFailures += 1;
        this.context.log.error({ err: (err as Error).message }, 'outbox fsync failed: results held back, retrying');
        setTimeout(() => this.syncOutbox(), 1000).unref();
      },
    );
  }

  private holdImages(resultRowId: number, images: VolatileImage[]): void {
    this.volatileImages.set(resultRowId, images);
    if (this.volatileImages.size > MAX_VOLATILE_RESULTS) {
      const oldest = this.volatileImages.keys().next().value as number;
      this.counters.imagesDiscarded += this.volatileImages.get(oldest)?.length ?? 0;
      this.volatileImages.delete(oldest);
    }
  }

  private pump(): void {
    const client = this.context.connection.client;
    if (!client || this.closed) return;
    while (this.inflight.size < this.window) {
      // Only what an fsync has covered: a result counts as made once it is on disk.
      const rows = this.context.outbox.next(this.cursor, this.window - this.inflight.size, this.context.outbox.durableId);
      if (rows.length === 0) return;
      for (const row of rows) {
        this.cursor = row.id;
        if (this.acknowledged.has(row.id) || this.rejected.has(row.id)) continue;
        this.send(client, row);
      }
    }
  }

  private send(client: MqttClient, row: OutboxRow): void {
    const replayed = !row.live;
    const { payload, properties } = row.kind === 'result'
      ? resultMessage(client, row, this.context.bootId, replayed)
      : imageMessage(client, this.context.device, row.messageId, row.meta as unknown as ImageMeta, row.payload);
    this.inflight.add(row.id);
    client.publish(row.topic, payload, { qos: row.qos, retain: row.retain, ...(properties ? { properties } : {}) }, (err) => {
      if (this.context.connection.client !== client) return; // a retired connection: the row is resent on the next one
      this.inflight.delete(row.id);
      if (!err) {
        this.acknowledged.add(row.id);
        if (row.kind === 'result') {
          this.counters.publishedResults += 1;
          if (replayed) this.counters.replayedResults += 1;
        } else {
          this.counters.publishedImages += 1;
        }
      } else if (isBrokerRejection(err)) {
        this.rejected.add(row.id);
        this.context.log.warn({ topic: row.topic, messageId: row.messageId, err: err.message }, 'the broker refused a message: removed from the outbox');
      } else {
        return; // connection trouble: the row stays and goes out again after reconnect
      }
      this.scheduleFlush();
    });
    if (row.kind === 'result') {
      const images = this.volatileImages.get(row.id);
      if (images) {
        this.volatileImages.delete(row.id);
        for (const image of images) this.sendVolatileImage(client, image);
      }
    }
  }

  private sendVolatileImage(client: MqttClient, image: VolatileImage): void {
    const { payload, properties } = imageMessage(client, this.context.device, image.messageId, image.meta, image.payload);
    const { qos, retain } = this.config.mqtt;
    client.publish(image.topic, payload, { qos: qos.image as 0 | 1 | 2, retain: retain.image, ...(properties ? { properties } : {}) }, (err) => {
      if (err) this.counters.imagesDiscarded += 1;
      else this.counters.publishedImages += 1;
    });
  }

  private pruneByAge(): void {
    if (this.closed) return;
    try {
      if (this.context.outbox.pruneByAge() > 0) this.context.onOutboxPruned();
    } catch (err) {
      this.context.log.error({ err: (err as Error).message }, 'outbox age pruning failed');
    }
  }

  /** outbox.inflight, lowered to the broker's MQTT 5 Receive Maximum when it announced one. */
  private inflightWindow(): number {
    return Math.max(1, Math.min(this.config.outbox.inflight || 1, this.brokerReceiveMaximum ?? Number.POSITIVE_INFINITY));
  }
}

export function outboxLimits(config: AppConfig): { maxBytes: number; maxAgeMs: number } {
  return { maxBytes: config.outbox.maxBytes, maxAgeMs: config.outbox.maxAgeHours * 3_600_000 };
}
