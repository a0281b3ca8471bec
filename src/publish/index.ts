// The publish stage: one broker connection shared by its parts, and their lifecycle.
//   sender.ts  results and images -> outbox -> MQTT (inflight window, acks, replay)
//   status.ts  retained device and camera statuses, the Last Will
//   inbound    the connection's commands side, for src/control/'s router (`Publisher.inbound`)
// See topics.ts for the layout and payloads.ts (+ schemas/) for what travels on each topic.
import { randomBytes } from 'node:crypto';
import type { IConnackPacket, IPublishPacket, MqttClient } from 'mqtt';
import { BehaviorSubject, Subject, distinctUntilChanged, type Observable } from 'rxjs';
import type { CameraStatus } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import { partsToRebuild } from '../config/policy.js';
import type { Result } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import { MqttConnection, connectionSettingsFrom, isV5, jsonProperties, type ProtocolVersion } from './connection.js';
import { Outbox } from './outbox.js';
import type { OutboxStats } from './payloads.js';
import { OutboxSender, outboxLimits } from './sender.js';
import { StatusPublisher, type DeviceStatusInfo } from './status.js';
import { Topics } from './topics.js';

export { Topics } from './topics.js';
export type { DeviceStatusInfo } from './status.js';
export type * from './payloads.js';

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

export interface InboundMessage {
  topic: string;
  payload: Buffer;
  packet: IPublishPacket;
}

/** The connection as a command plane sees it: subscribe on each connection, receive, answer. */
export interface InboundChannel {
  /** The connected client, null while the broker is away. */
  readonly client: MqttClient | null;
  /** Each new connection (a clean session: its subscriptions must be made again). */
  readonly connects$: Observable<MqttClient>;
  /** Every message the broker delivers for this client's subscriptions. */
  readonly messages$: Observable<InboundMessage>;
  /** A JSON answer, not retained, at mqtt.qos.status; with MQTT 5 JSON properties and `correlationData`. */
  publishJson(topic: string, payload: Buffer, correlationData?: Buffer): Promise<void>;
}

export class Publisher {
  readonly topics: Topics;
  readonly bootId = randomBytes(6).toString('hex');
  readonly connected$: Observable<boolean>;
  readonly inbound: InboundChannel;

  private config: AppConfig;
  /** Opened by start() (or by a result handed over before it): the constructor touches no file. */
  private openedOutbox: Outbox | null = null;
  private limits: ReturnType<typeof outboxLimits>;
  private readonly connection: MqttConnection;
  private readonly sender: OutboxSender;
  private readonly status: StatusPublisher;
  private readonly connectedSubject = new BehaviorSubject<boolean>(false);
  private readonly connects = new Subject<MqttClient>();
  private readonly messages = new Subject<InboundMessage>();
  private started = false;
  private stopped = false;
  /** Retained states (topic -> payload): the latest is published now and again on every connection. */
  private readonly retained = new Map<string, Buffer>();

  constructor(config: AppConfig, private readonly log: Logger) {
    this.config = config;
    const device = config.device.id;
    this.topics = new Topics(config.mqtt.topicPrefix, device);
    this.limits = outboxLimits(config);
    this.connected$ = this.connectedSubject.pipe(distinctUntilChanged());
    this.connection = new MqttConnection(
      connectionSettingsFrom(config, undefined, true),
      {
        will: (version) => this.status.will(version),
        onConnect: (client, connack, version) => this.onConnect(client, connack, version),
        onDisconnect: () => this.onDisconnect(),
        onMessage: (topic, payload, packet) => this.messages.next({ topic, payload, packet }),
      },
      log,
    );
    const context = { connection: this.connection, topics: this.topics, device, bootId: this.bootId, log };
    this.status = new StatusPublisher(this.statusQos(), { ...context, outboxStats: () => this.sender.outboxStats() });
    const publisher = this;
    this.sender = new OutboxSender(config, {
      ...context,
      get outbox() {
        return publisher.outbox;
      },
      outboxOpen: () => this.openedOutbox !== null,
      onOutboxPruned: () => this.status.refresh(),
    });
    const connection = this.connection;
    this.inbound = {
      get client() {
        return connection.client;
      },
      connects$: this.connects.asObservable(),
      messages$: this.messages.asObservable(),
      publishJson: (topic, payload, correlationData) => this.publishJson(topic, payload, correlationData),
    };
  }

  /**
   * Start connecting. Resolves once the first attempt has connected or failed; after a failure the
   * publisher keeps retrying in the background while results collect in the outbox.
   */
  async start(): Promise<void> {
    if (this.started) return;
    if (this.stopped) throw new Error('Publisher.start: this publisher was stopped; build a new one');
    let firstOutcome!: () => void;
    const connectedOrFailed = new Promise<void>((resolve) => (firstOutcome = resolve));
    // Both throw (an outbox in use or unwritable, unreadable TLS files) before anything else has started.
    void this.outbox;
    try {
      this.connection.start(firstOutcome);
    } catch (err) {
      this.closeOutbox();
      throw err;
    }
    this.started = true;
    this.sender.start();
    this.status.start(this.config.service.statusIntervalMs);
    await connectedOrFailed;
  }

  /** Queue a result (and its crops/overlay) for publishing; never blocks (see OutboxSender). */
  publishResult(result: Result): void {
    this.sender.publishResult(result);
  }

  /** Send the results handed over so far before the caller holds the main thread (OutboxSender.sendPending, bounded by outbox.sendBeforeRunMs). */
  sendPending(): Promise<void> {
    return this.sender.sendPending(this.config.outbox.sendBeforeRunMs);
  }

  /** Publish a camera's retained status (and refresh the device status that lists all cameras). */
  publishCameraStatus(status: CameraStatus): void {
    this.status.publishCameraStatus(status);
  }

  /** Merge version/model/config revision/extra into the retained device status and republish it. */
  setDeviceStatus(info: DeviceStatusInfo): void {
    this.status.setDeviceStatus(info);
  }

  /**
   * Take a new configuration: QoS/retain, outbox limits and pacing apply at once. 'restart' when it
   * also changes what this publisher was built with (schema policy `mqtt`/`outbox`: the broker
   * connection, topics, the outbox file): those wait for a new Publisher.
   */
  updateLive(config: AppConfig): 'live' | 'restart' {
    const rebuild = partsToRebuild(this.config, config).filter((part) => part === 'mqtt' || part === 'outbox');
    if (rebuild.length === 0) this.config = config;
    this.limits = outboxLimits(config);
    this.status.setQos(config.mqtt.qos.status as 0 | 1 | 2);
    this.sender.updateLive(config);
    return rebuild.length > 0 ? 'restart' : 'live';
  }

  stats(): PublisherStats {
    return {
      connected: this.connection.client !== null,
      protocolVersion: this.connection.protocolVersion,
      connects: this.connection.connects,
      ...this.sender.counts(),
      outbox: this.sender.outboxStats(),
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
    this.status.stop();
    // Keep a third of the time (at most a second) for the offline status and the DISCONNECT.
    await this.sender.drain(deadline - Math.min(1000, timeoutMs / 3));
    await this.status.publishOffline(remaining() / 2);
    await this.connection.stop(remaining());
    this.sender.close();
    this.closeOutbox();
    this.connectedSubject.next(false);
    for (const subject of [this.connectedSubject, this.connects, this.messages]) subject.complete();
  }

  /** The outbox, opened on first use (start, or a result handed over before start). */
  private get outbox(): Outbox {
    this.openedOutbox ??= new Outbox(this.config.outbox.path, this.limits, this.log);
    return this.openedOutbox;
  }

  private closeOutbox(): void {
    this.openedOutbox?.close();
  }

  private onConnect(client: MqttClient, connack: IConnackPacket, version: ProtocolVersion): void {
    if (connack.sessionPresent) this.log.debug('broker kept a session (clean start was requested)');
    this.connects.next(client);
    this.status.onConnect(client);
    this.sender.onConnect(connack, version);
    this.connectedSubject.next(true);
    for (const topic of this.retained.keys()) this.sendRetained(topic);
  }

  /** Publish `state` retained on `topic`; the latest is sent again after a reconnect (a lost one is not queued). */
  publishRetainedState(topic: string, state: unknown): void {
    this.retained.set(topic, Buffer.from(JSON.stringify(state)));
    this.sendRetained(topic);
  }

  private sendRetained(topic: string): void {
    const client = this.connection.client;
    const payload = this.retained.get(topic);
    if (!client?.connected || !payload) return;
    client.publish(topic, payload, { qos: this.statusQos(), retain: true, properties: jsonProperties(client) }, (err) => {
      if (err) this.log.debug({ topic, err: err.message }, 'retained state not published; sent again on the next connection');
    });
  }

  private onDisconnect(): void {
    this.sender.onDisconnect();
    this.connectedSubject.next(false);
  }

  private publishJson(topic: string, payload: Buffer, correlationData?: Buffer): Promise<void> {
    const client = this.connection.client;
    if (!client) return Promise.reject(new Error('broker not connected'));
    const properties = { ...jsonProperties(client), ...(isV5(client) && correlationData ? { correlationData } : {}) };
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, { qos: this.statusQos(), retain: false, properties }, (err) => (err ? reject(err) : resolve()));
    });
  }

  private statusQos(): 0 | 1 | 2 {
    return this.config.mqtt.qos.status as 0 | 1 | 2;
  }
}
