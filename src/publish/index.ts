// The publish stage: results -> outbox -> MQTT, statuses, and the inbound trigger/config topics.
// See topics.ts for the layout and payloads.ts (+ schemas/) for what travels on each topic.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { IConnackPacket, IPublishPacket, MqttClient } from 'mqtt';
import { BehaviorSubject, distinctUntilChanged, type Observable } from 'rxjs';
import type { CameraStatus } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import type { ModelInfo, Result } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import { MqttConnection, type ProtocolVersion, type Will } from './connection.js';
import { Outbox, type OutboxEntry, type OutboxRow } from './outbox.js';
import {
  SCHEMA_VERSION, cameraStatusPayload, finishResult, modelSummary, parseTrigger, storedResult, uuidv7,
  type ConfigResponse, type DeviceStatusPayload, type ImageEnvelope, type OutboxStats, type StoredResult,
} from './payloads.js';
import { Topics } from './topics.js';

export { Topics } from './topics.js';
export { backoffDelay, backoffCeiling } from '../shared/backoff.js';
export type * from './payloads.js';

/** What the rest of the daemon tells the device status topic (merged into what it already has). */
export interface DeviceStatusInfo {
  version?: string;
  model?: ModelInfo | null;
  /** Revision of the running configuration (published as configRevision). */
  revision?: number | null;
  /** The last model load/swap error (the previous model keeps serving); null clears it. */
  modelError?: string | null;
  /** Free-form figures (health, pipeline counters) published under "extra". */
  extra?: Record<string, unknown>;
}

export type TriggerHandler = (cameraId: string, triggerId: string | undefined) => void;
/**
 * A config/set or config/get request; `reply` publishes the answer once on <prefix>/config/response
 * (verbatim as JSON, with the request's MQTT 5 correlation data).
 */
export type ConfigRequestHandler = (kind: 'set' | 'get', payload: Buffer, reply: (response: ConfigResponse) => void) => void;

export interface PublisherStats {
  connected: boolean;
  protocolVersion: ProtocolVersion;
  connects: number;
  /** Results handed over by publishResult, and messages acknowledged by the broker. */
  accepted: number;
  publishedResults: number;
  replayedResults: number;
  publishedImages: number;
  /** Outbox commits that failed (disk full, I/O error): their messages were lost. */
  storeFailures: number;
  outbox: OutboxStats;
}

type ImageKind = 'crop' | 'overlay';
interface ImageMeta {
  image: ImageKind;
  index: number | null;
  camera: string;
}
interface ResultMeta {
  bootId: string;
  capturedMono: number;
  camera: string;
  sequence: number;
}
/** A crop/overlay not kept in the outbox (outbox.includeImages false): sent right after its result. */
interface VolatileImage {
  topic: string;
  payload: Buffer;
  messageId: string;
  meta: ImageMeta;
}

const STATUS_DEBOUNCE_MS = 100;
/** Results whose images wait in memory for the result to be sent; beyond it the oldest images go. */
const MAX_VOLATILE_RESULTS = 256;

export class Publisher {
  readonly topics: Topics;
  readonly bootId = randomBytes(6).toString('hex');
  readonly connected$: Observable<boolean>;

  private config: AppConfig;
  private readonly log: Logger;
  private readonly device: string;
  private readonly startedAt = new Date();
  private readonly outbox: Outbox;
  private readonly connection: MqttConnection;
  private readonly connectedSubject = new BehaviorSubject<boolean>(false);

  private deviceInfo: DeviceStatusInfo = {};
  private readonly cameraStatuses = new Map<string, CameraStatus>();
  private triggerHandler: TriggerHandler | null = null;
  private configHandler: ConfigRequestHandler | null = null;
  private subscribed = new Set<string>();

  // Outbox pump state. `cursor` is the last row id sent on the current connection; `inflight`
  // the rows sent and not yet acknowledged; acks and rejections are removed in the next commit.
  private pendingAppends: { entry: OutboxEntry; images: VolatileImage[] }[] = [];
  private acknowledged = new Set<number>();
  private rejected = new Set<number>();
  private readonly inflight = new Set<number>();
  private cursor = 0;
  private window = 1;
  private readonly volatileImages = new Map<number, VolatileImage[]>();
  private flushScheduled = false;
  private brokerReceiveMaximum: number | undefined;
  private outboxClosed = false;

  private statusTimer: NodeJS.Timeout | null = null;
  private statusDebounce: NodeJS.Timeout | null = null;
  private pruneTimer: NodeJS.Timeout | null = null;
  private started = false;
  private stopped = false;

  private counters = { accepted: 0, publishedResults: 0, replayedResults: 0, publishedImages: 0, imagesDiscarded: 0, storeFailures: 0 };

  constructor(config: AppConfig, log: Logger) {
    this.config = config;
    this.log = log;
    this.device = config.device.id;
    this.topics = new Topics(config.mqtt.topicPrefix, config.device.id);
    this.outbox = new Outbox(config.outbox.path, outboxLimits(config), log);
    this.connected$ = this.connectedSubject.pipe(distinctUntilChanged());
    try {
      this.connection = new MqttConnection(
        {
          url: config.mqtt.url,
          protocolVersion: config.mqtt.protocolVersion as ProtocolVersion,
          clientId: config.mqtt.clientId || `crad-edge-${config.device.id}`,
          username: config.mqtt.username,
          password: config.mqtt.password,
          keepaliveSec: config.mqtt.keepaliveSec,
          connectTimeoutMs: config.mqtt.connectTimeoutMs,
          tls: config.mqtt.tls,
          reconnectMinMs: config.mqtt.reconnectMinMs,
          reconnectMaxMs: config.mqtt.reconnectMaxMs,
        },
        {
          will: (version) => this.will(version),
          onConnect: (client, connack, version) => this.onConnect(client, connack, version),
          onDisconnect: () => this.onDisconnect(),
          onMessage: (topic, payload, packet) => this.onMessage(topic, payload, packet),
        },
        log,
      );
    } catch (err) {
      this.outbox.close();
      throw err;
    }
  }

  /**
   * Start connecting. Resolves once the first attempt has connected or failed; after a failure the
   * publisher keeps retrying in the background while results collect in the outbox.
   */
  async start(): Promise<void> {
    if (this.started) return;
    if (this.stopped) throw new Error('Publisher.start: this publisher was stopped; build a new one');
    this.started = true;
    const pruneEveryMs = Math.max(1000, Math.min(60_000, (this.config.outbox.maxAgeHours * 3_600_000) / 10));
    this.pruneTimer = setInterval(() => this.pruneByAge(), pruneEveryMs);
    this.statusTimer = setInterval(() => this.publishDeviceStatus(), Math.max(1000, this.config.service.statusIntervalMs));
    this.pruneByAge();
    await new Promise<void>((resolve) => this.connection.start(resolve));
  }

  /**
   * Queue a result (and its crops/overlay) for publishing. Never blocks: the outbox write happens
   * in one transaction per event-loop tick, and sending follows the broker's acknowledgements.
   */
  publishResult(result: Result): void {
    if (this.stopped) {
      this.log.warn({ camera: result.frame.cameraId, sequence: result.frame.sequence }, 'publishResult after stop: result not published');
      return;
    }
    const messageId = uuidv7();
    const camera = result.frame.cameraId;
    const stored = storedResult(result, this.device, messageId);
    const capturedAt = Date.parse(result.frame.capturedAt);
    const createdAt = Number.isFinite(capturedAt) ? capturedAt : Date.now();
    const meta: ResultMeta = { bootId: this.bootId, capturedMono: result.frame.capturedMono, camera, sequence: result.frame.sequence };
    const { qos, retain } = this.config.mqtt;
    const resultAppend = {
      entry: {
        kind: 'result' as const, messageId, topic: this.topics.result(camera), payload: Buffer.from(JSON.stringify(stored)),
        qos: qos.result as 0 | 1 | 2, retain: retain.result, meta: meta as unknown as Record<string, unknown>, createdAt, live: false,
      },
      images: [] as VolatileImage[],
    };
    this.pendingAppends.push(resultAppend);
    const images: VolatileImage[] = result.crops.map((payload, index) => ({
      topic: this.topics.crop(camera, index), payload, messageId, meta: { image: 'crop', index, camera },
    }));
    if (result.overlay) images.push({ topic: this.topics.overlay(camera), payload: result.overlay, messageId, meta: { image: 'overlay', index: null, camera } });
    if (this.config.outbox.includeImages) {
      for (const image of images) {
        this.pendingAppends.push({
          entry: {
            kind: 'image', messageId, topic: image.topic, payload: image.payload, qos: qos.image as 0 | 1 | 2, retain: retain.image,
            meta: image.meta as unknown as Record<string, unknown>, createdAt, live: false,
          },
          images: [],
        });
      }
    } else {
      resultAppend.images = images;
    }
    this.counters.accepted += 1;
    this.scheduleFlush();
  }

  /** Publish a camera's retained status (and refresh the device status that lists all cameras). */
  publishCameraStatus(status: CameraStatus): void {
    this.cameraStatuses.set(status.cameraId, { ...status });
    const client = this.connection.client;
    if (client) this.sendCameraStatus(client, status);
    this.scheduleDeviceStatus();
  }

  /** Merge version/model/config revision/extra into the retained device status and republish it. */
  setDeviceStatus(info: DeviceStatusInfo): void {
    this.deviceInfo = { ...this.deviceInfo, ...info };
    this.scheduleDeviceStatus();
  }

  /** Called for each message on <prefix>/<camera>/trigger of a trigger-mode camera. */
  onTrigger(cb: TriggerHandler): void {
    this.triggerHandler = cb;
  }

  /** Called for each message on <prefix>/config/set (when remoteConfig.enabled) and <prefix>/config/get. */
  onConfigRequest(cb: ConfigRequestHandler): void {
    this.configHandler = cb;
  }

  /**
   * Apply a new configuration. QoS/retain, outbox limits and pacing, cameras (trigger
   * subscriptions) and remoteConfig.enabled change live; anything about the connection, topics
   * or the outbox file needs a new Publisher ('restart').
   */
  updateLive(config: AppConfig): 'live' | 'restart' {
    const restartKeys = [
      (c: AppConfig) => c.device.id, (c: AppConfig) => c.mqtt.url, (c: AppConfig) => c.mqtt.protocolVersion,
      (c: AppConfig) => c.mqtt.clientId, (c: AppConfig) => c.mqtt.username, (c: AppConfig) => c.mqtt.password,
      (c: AppConfig) => c.mqtt.keepaliveSec, (c: AppConfig) => c.mqtt.connectTimeoutMs, (c: AppConfig) => c.mqtt.topicPrefix,
      (c: AppConfig) => JSON.stringify(c.mqtt.tls), (c: AppConfig) => c.mqtt.reconnectMinMs, (c: AppConfig) => c.mqtt.reconnectMaxMs,
      (c: AppConfig) => c.outbox.path, (c: AppConfig) => c.service.statusIntervalMs, (c: AppConfig) => c.outbox.maxAgeHours,
    ];
    if (restartKeys.some((key) => key(config) !== key(this.config))) return 'restart';
    this.config = config;
    this.outbox.setLimits(outboxLimits(config));
    const client = this.connection.client;
    if (client) {
      this.window = this.inflightWindow();
      this.syncSubscriptions(client);
    }
    this.scheduleFlush();
    return 'live';
  }

  stats(): PublisherStats {
    return {
      connected: this.connection.client !== null,
      protocolVersion: this.connection.protocolVersion,
      connects: this.connection.connects,
      accepted: this.counters.accepted,
      publishedResults: this.counters.publishedResults,
      replayedResults: this.counters.replayedResults,
      publishedImages: this.counters.publishedImages,
      storeFailures: this.counters.storeFailures,
      outbox: this.outboxStats(),
    };
  }

  /**
   * Stop within `timeoutMs` (default: half of service.shutdownTimeoutMs): commit what is queued,
   * let the broker acknowledge as much of the outbox as time allows, publish the retained offline
   * status, disconnect cleanly and close the outbox. Anything unacknowledged stays on disk for the
   * next start.
   */
  async stop(timeoutMs = this.config.service.shutdownTimeoutMs / 2): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const deadline = Date.now() + Math.max(100, timeoutMs);
    const remaining = () => Math.max(50, deadline - Date.now());
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (this.statusDebounce) clearTimeout(this.statusDebounce);
    this.flush();
    // Keep a third of the time (at most a second) for the offline status and the DISCONNECT.
    const drainUntil = deadline - Math.min(1000, timeoutMs / 3);
    while (this.connection.client && this.outbox.counts().pending > 0 && Date.now() < drainUntil) {
      await new Promise((r) => setTimeout(r, 20));
      this.flush();
    }
    const client = this.connection.client;
    if (client) {
      const payload = Buffer.from(JSON.stringify(this.deviceStatus('offline', 'shutdown')));
      await new Promise<void>((resolve) => {
        const timeout = setTimeout(resolve, remaining() / 2);
        client.publish(this.topics.deviceStatus, payload, { qos: this.statusQos(), retain: true, properties: this.jsonProperties(client) }, () => {
          clearTimeout(timeout);
          resolve();
        });
      });
    }
    await this.connection.stop(remaining());
    this.flush();
    this.outboxClosed = true;
    this.outbox.close();
    this.connectedSubject.next(false);
    this.connectedSubject.complete();
  }

  // ---- connection events -------------------------------------------------------------------

  private onConnect(client: MqttClient, connack: IConnackPacket, version: ProtocolVersion): void {
    this.inflight.clear();
    this.cursor = 0;
    this.brokerReceiveMaximum = connack.properties?.receiveMaximum;
    this.window = this.inflightWindow();
    this.subscribed = new Set();
    this.syncSubscriptions(client);
    // The retained statuses are restored on every connect: the broker may have lost them (no
    // persistence) and the Will has replaced the device status with "offline".
    this.publishDeviceStatus();
    for (const status of this.cameraStatuses.values()) this.sendCameraStatus(client, status);
    if (connack.sessionPresent) this.log.debug('broker kept a session (clean start was requested)');
    this.log.info({ protocolVersion: version, pending: this.outbox.counts().pending, window: this.window }, 'publishing: sending the outbox backlog');
    this.connectedSubject.next(true);
    this.scheduleFlush();
  }

  private onDisconnect(): void {
    this.inflight.clear();
    this.cursor = 0;
    // Whatever is still in the outbox now waits for the broker: it goes out marked replayed.
    try {
      this.outbox.markAllReplayed();
    } catch (err) {
      if (!this.stopped) this.log.error({ err: (err as Error).message }, 'outbox: cannot mark pending messages as replays');
    }
    const lost = [...this.volatileImages.values()].reduce((n, images) => n + images.length, 0);
    this.counters.imagesDiscarded += lost;
    this.volatileImages.clear();
    this.connectedSubject.next(false);
  }

  private will(version: ProtocolVersion): Will {
    return {
      topic: this.topics.deviceStatus,
      payload: Buffer.from(JSON.stringify(this.willPayload())),
      qos: this.statusQos(),
      retain: true,
      ...(version === 5 ? { properties: { contentType: 'application/json', payloadFormatIndicator: true } } : {}),
    };
  }

  private willPayload(): DeviceStatusPayload {
    return {
      schemaVersion: SCHEMA_VERSION,
      device: this.device,
      state: 'offline',
      reason: 'connection-lost',
      version: this.deviceInfo.version ?? null,
      bootId: this.bootId,
      startedAt: this.startedAt.toISOString(),
    };
  }

  // ---- inbound ---------------------------------------------------------------------------

  private desiredSubscriptions(): Set<string> {
    const topics = new Set<string>([this.topics.configGet]);
    if (this.config.remoteConfig.enabled) topics.add(this.topics.configSet);
    for (const camera of this.config.cameras) {
      if (camera.enabled && camera.trigger === 'mqtt') topics.add(this.topics.trigger(camera.id));
    }
    return topics;
  }

  private syncSubscriptions(client: MqttClient): void {
    const wanted = this.desiredSubscriptions();
    const add = [...wanted].filter((t) => !this.subscribed.has(t));
    const remove = [...this.subscribed].filter((t) => !wanted.has(t));
    if (add.length > 0) {
      client.subscribe(add, { qos: 1 }, (err, granted) => {
        if (err) {
          this.log.error({ topics: add, err: err.message }, 'subscribe failed');
          return;
        }
        const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
        if (refused.length > 0) this.log.error({ topics: refused }, 'the broker refused these subscriptions (ACL?)');
      });
    }
    if (remove.length > 0) client.unsubscribe(remove);
    this.subscribed = wanted;
  }

  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    // A retained trigger or config push would fire again on every reconnect: never act on one.
    if (packet.retain) {
      this.log.warn({ topic }, 'ignoring a retained message on a command topic (publish commands without retain)');
      return;
    }
    if (topic === this.topics.configSet || topic === this.topics.configGet) {
      this.handleConfigRequest(topic === this.topics.configSet ? 'set' : 'get', payload, packet);
      return;
    }
    const camera = this.topics.triggerCamera(topic);
    if (camera === null) {
      this.log.warn({ topic }, 'message on an unexpected topic ignored');
      return;
    }
    const parsed = parseTrigger(payload);
    if (!parsed.ok) {
      this.log.warn({ topic, error: parsed.error }, 'bad trigger payload ignored');
      return;
    }
    if (!this.triggerHandler) {
      this.log.warn({ camera }, 'trigger received but no trigger handler is registered');
      return;
    }
    this.triggerHandler(camera, parsed.triggerId);
  }

  private handleConfigRequest(kind: 'set' | 'get', payload: Buffer, packet: IPublishPacket): void {
    const correlationData = packet.properties?.correlationData;
    const requestTransaction = transactionOf(payload);
    let replied = false;
    const reply = (response: ConfigResponse): void => {
      if (replied) {
        this.log.warn({ kind }, 'config request answered twice: second reply ignored');
        return;
      }
      replied = true;
      const client = this.connection.client;
      if (!client) {
        this.log.warn({ kind, transaction: response.transaction }, 'config response not sent: broker not connected');
        return;
      }
      const answer = 'transaction' in response && response.transaction !== undefined ? response : { ...response, transaction: requestTransaction };
      const body = Buffer.from(JSON.stringify(answer));
      const properties = { ...this.jsonProperties(client), ...(client.options.protocolVersion === 5 && correlationData ? { correlationData } : {}) };
      client.publish(this.topics.configResponse, body, { qos: this.statusQos(), retain: false, properties }, (err) => {
        if (err) this.log.warn({ err: err.message }, 'config response not delivered');
      });
    };
    const refuse = (error: string): void =>
      reply(kind === 'set'
        ? { transaction: null, status: 'error', error, revision: this.config.remoteConfig.revision, restartRequired: [], changed: [] }
        : { transaction: null, status: 'error', error, revision: this.config.remoteConfig.revision });
    if (!this.configHandler) {
      refuse('this device has no configuration handler');
      return;
    }
    try {
      this.configHandler(kind, payload, reply);
    } catch (err) {
      this.log.error({ kind, err: (err as Error).message }, 'config request handler threw');
      if (!replied) refuse(`internal error: ${(err as Error).message}`);
    }
  }

  // ---- outbox pump -------------------------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** One commit for everything queued this tick, then send what the inflight window allows. */
  private flush(): void {
    if (!!this.outboxClosed) return;
    const appends = this.pendingAppends;
    const acknowledged = [...this.acknowledged];
    const rejected = [...this.rejected];
    if (appends.length > 0 || acknowledged.length > 0 || rejected.length > 0) {
      this.pendingAppends = [];
      const live = this.connection.client !== null;
      try {
        const ids = this.outbox.commit(appends.map((a) => ({ ...a.entry, live })), acknowledged, rejected);
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
        this.log.error({ err: (err as Error).message, lostResults: lost }, 'outbox write failed: these results are lost');
      }
    }
    this.pump();
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
    const client = this.connection.client;
    if (!client || !!this.outboxClosed) return;
    while (this.inflight.size < this.window) {
      const rows = this.outbox.next(this.cursor, this.window - this.inflight.size);
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
    let payload: Buffer;
    let properties: IPublishPacket['properties'];
    if (row.kind === 'result') {
      const meta = row.meta as unknown as ResultMeta;
      const totalMs = meta.bootId === this.bootId ? performance.now() - meta.capturedMono : Date.now() - row.createdAt;
      const stored = JSON.parse(row.payload.toString('utf8')) as StoredResult;
      payload = Buffer.from(JSON.stringify(finishResult(stored, new Date(), totalMs, replayed)));
      properties = this.isV5(client)
        ? {
          contentType: 'application/json',
          payloadFormatIndicator: true,
          userProperties: { messageId: row.messageId, camera: meta.camera, sequence: String(meta.sequence), replayed: String(replayed) },
        }
        : undefined;
    } else {
      ({ payload, properties } = this.imageMessage(client, row.messageId, row.meta as unknown as ImageMeta, row.payload));
    }
    this.inflight.add(row.id);
    client.publish(row.topic, payload, { qos: row.qos, retain: row.retain, ...(properties ? { properties } : {}) }, (err) => {
      if (this.connection.client !== client) return; // a retired connection: the row is resent on the next one
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
        this.log.warn({ topic: row.topic, messageId: row.messageId, err: err.message }, 'the broker refused a message: removed from the outbox');
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
    const { payload, properties } = this.imageMessage(client, image.messageId, image.meta, image.payload);
    const { qos, retain } = this.config.mqtt;
    client.publish(image.topic, payload, { qos: qos.image as 0 | 1 | 2, retain: retain.image, ...(properties ? { properties } : {}) }, (err) => {
      if (err) this.counters.imagesDiscarded += 1;
      else this.counters.publishedImages += 1;
    });
  }

  /** MQTT 5: the JPEG itself with content type and correlation data; 3.1.1: a base64 JSON envelope. */
  private imageMessage(client: MqttClient, messageId: string, meta: ImageMeta, jpeg: Buffer): { payload: Buffer; properties?: IPublishPacket['properties'] } {
    if (this.isV5(client)) {
      return {
        payload: jpeg,
        properties: {
          contentType: 'image/jpeg',
          correlationData: Buffer.from(messageId),
          userProperties: { messageId, camera: meta.camera, kind: meta.image, ...(meta.index !== null ? { index: String(meta.index) } : {}) },
        },
      };
    }
    const envelope: ImageEnvelope = {
      schemaVersion: SCHEMA_VERSION, messageId, device: this.device, camera: meta.camera, kind: meta.image, index: meta.index,
      contentType: 'image/jpeg', data: jpeg.toString('base64'),
    };
    return { payload: Buffer.from(JSON.stringify(envelope)) };
  }

  // ---- status ------------------------------------------------------------------------------

  private scheduleDeviceStatus(): void {
    if (this.statusDebounce || this.stopped) return;
    this.statusDebounce = setTimeout(() => {
      this.statusDebounce = null;
      this.publishDeviceStatus();
    }, STATUS_DEBOUNCE_MS);
  }

  private publishDeviceStatus(): void {
    const client = this.connection.client;
    if (!client || this.stopped) return;
    const payload = Buffer.from(JSON.stringify(this.deviceStatus('online')));
    client.publish(this.topics.deviceStatus, payload, { qos: this.statusQos(), retain: true, properties: this.jsonProperties(client) }, (err) => {
      if (err && this.connection.client === client) this.log.warn({ err: err.message }, 'device status not delivered');
    });
  }

  private deviceStatus(state: 'online' | 'offline', reason?: 'shutdown'): DeviceStatusPayload {
    const cameras: NonNullable<DeviceStatusPayload['cameras']> = {};
    for (const [id, s] of this.cameraStatuses) cameras[id] = { state: s.state, since: s.since, ...(s.error !== undefined ? { error: s.error } : {}) };
    const payload: DeviceStatusPayload = {
      schemaVersion: SCHEMA_VERSION,
      device: this.device,
      state,
      ...(reason ? { reason } : {}),
      version: this.deviceInfo.version ?? null,
      bootId: this.bootId,
      startedAt: this.startedAt.toISOString(),
      publishedAt: new Date().toISOString(),
      model: this.deviceInfo.model ? modelSummary(this.deviceInfo.model) : null,
      configRevision: this.deviceInfo.revision ?? null,
      modelError: this.deviceInfo.modelError ?? null,
      cameras,
      broker: {
        protocolVersion: this.connection.protocolVersion,
        connects: this.connection.connects,
        connectedSince: this.connection.connectedSince?.toISOString() ?? null,
      },
      outbox: this.outboxStats(),
    };
    if (this.deviceInfo.extra) payload.extra = this.deviceInfo.extra;
    return payload;
  }

  private sendCameraStatus(client: MqttClient, status: CameraStatus): void {
    const payload = Buffer.from(JSON.stringify(cameraStatusPayload(status, this.device, new Date())));
    client.publish(this.topics.cameraStatus(status.cameraId), payload, { qos: this.statusQos(), retain: true, properties: this.jsonProperties(client) }, (err) => {
      if (err && this.connection.client === client) this.log.warn({ camera: status.cameraId, err: err.message }, 'camera status not delivered');
    });
  }

  private outboxStats(): OutboxStats {
    const counts = !this.outboxClosed
      ? this.outbox.counts()
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

  // ---- helpers -----------------------------------------------------------------------------

  private pruneByAge(): void {
    if (!!this.outboxClosed) return;
    try {
      if (this.outbox.pruneByAge() > 0) this.scheduleDeviceStatus();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'outbox age pruning failed');
    }
  }

  /** outbox.inflight, lowered to the broker's MQTT 5 Receive Maximum when it announced one. */
  private inflightWindow(): number {
    return Math.max(1, Math.min(this.config.outbox.inflight || 1, this.brokerReceiveMaximum ?? Number.POSITIVE_INFINITY));
  }

  private statusQos(): 0 | 1 | 2 {
    return this.config.mqtt.qos.status as 0 | 1 | 2;
  }

  private isV5(client: MqttClient): boolean {
    return client.options.protocolVersion === 5;
  }

  private jsonProperties(client: MqttClient): IPublishPacket['properties'] {
    return this.isV5(client) ? { contentType: 'application/json', payloadFormatIndicator: true } : {};
  }
}

/** An MQTT 5 PUBACK/PUBREC reason code >= 0x80: the broker refuses this message, resending won't help. */
function isBrokerRejection(err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' && code >= 0x80;
}

/** The request's "transaction" when it is a JSON object with a string one (the answer echoes it). */
function transactionOf(payload: Buffer): string | null {
  try {
    const parsed: unknown = JSON.parse(payload.toString('utf8'));
    const transaction = (parsed as { transaction?: unknown } | null)?.transaction;
    return typeof transaction === 'string' ? transaction : null;
  } catch {
    return null;
  }
}

function outboxLimits(config: AppConfig): { maxBytes: number; maxAgeMs: number } {
  return { maxBytes: config.outbox.maxBytes, maxAgeMs: config.outbox.maxAgeHours * 3_600_000 };
}
