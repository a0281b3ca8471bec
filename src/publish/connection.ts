// The broker connection: one MQTT.js client per attempt, MQTT.js's own reconnect switched off
// (reconnectPeriod 0: it retries on a fixed period, the whole fleet in step), and our loop with
// exponential backoff and full jitter instead. MQTT 5 falls back to 3.1.1 when the broker refuses
// the protocol version.
import mqtt, { ErrorWithReasonCode, type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import { readKeyFile, type AppConfig } from '../config/load.js';
import type { Logger } from '../shared/log.js';
import { backoffDelay } from '../shared/backoff.js';
import { redactUrls } from '../shared/redact.js';

export type ProtocolVersion = 4 | 5;

export interface ConnectionSettings {
  url: string;
  protocolVersion: ProtocolVersion;
  clientId: string;
  username: string;
  password: string;
  keepaliveSec: number;
  connectTimeoutMs: number;
  tls: { ca: string; cert: string; key: string; rejectUnauthorized: boolean };
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** How long the broker keeps the session after a drop (seconds); 0 = a clean session on every connect. */
  sessionExpirySec: number;
}

/**
 * The broker settings of mqtt.*; each plane (JSON, Sparkplug) connects with its own client id.
 * Only the command plane keeps a session (mqtt.sessionExpirySec): Sparkplug requires clean ones.
 */
export function connectionSettingsFrom(config: AppConfig, clientId = config.mqtt.clientId || `crad-edge-${config.device.id}`, keepSession = false): ConnectionSettings {
  const mqtt = config.mqtt;
  return {
    url: mqtt.url,
    protocolVersion: mqtt.protocolVersion as ProtocolVersion,
    clientId,
    username: mqtt.username,
    password: mqtt.password,
    keepaliveSec: mqtt.keepaliveSec,
    connectTimeoutMs: mqtt.connectTimeoutMs,
    tls: mqtt.tls,
    reconnectMinMs: mqtt.reconnectMinMs,
    reconnectMaxMs: mqtt.reconnectMaxMs,
    sessionExpirySec: keepSession ? mqtt.sessionExpirySec : 0,
  };
}

export interface Will {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  properties?: { contentType?: string; payloadFormatIndicator?: boolean };
}

export interface ConnectionHandlers {
  /** Built for every attempt, so it can follow the protocol version and the current status. */
  will(protocolVersion: ProtocolVersion): Will;
  onConnect(client: MqttClient, connack: IConnackPacket, protocolVersion: ProtocolVersion): void;
  onDisconnect(): void;
  onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void;
}

/** CONNACK codes that mean "this protocol version, no": 3.1.1's 1 and MQTT 5's 0x84. */
const UNSUPPORTED_PROTOCOL = new Set([1, 0x84]);

export function isUnsupportedProtocol(err: unknown): boolean {
  if (err instanceof ErrorWithReasonCode && UNSUPPORTED_PROTOCOL.has(err.code)) return true;
  return /unacceptable protocol version|unsupported protocol version/i.test((err as Error)?.message ?? '');
}

export class MqttConnection {
  private current: MqttClient | null = null;
  private connectedClient: MqttClient | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private stopped = true;
  private failures = 0;
  private version: ProtocolVersion;
  /** Read at start(), never in the constructor. */
  private tlsFiles: Pick<IClientOptions, 'ca' | 'cert' | 'key'> = {};
  /** Successful connections since start. */
  connects = 0;
  connectedSince: Date | null = null;

  constructor(
    private readonly settings: ConnectionSettings,
    private readonly handlers: ConnectionHandlers,
    private readonly log: Logger,
  ) {
    this.version = settings.protocolVersion;
  }

  get client(): MqttClient | null {
    return this.connectedClient;
  }

  get protocolVersion(): ProtocolVersion {
    return this.version;
  }

  /**
   * Start the connect loop; `onFirstOutcome` fires once, after the first attempt connects or fails.
   * Throws, naming the key, when a TLS file cannot be read.
   */
  start(onFirstOutcome?: () => void): void {
    if (!this.stopped) return;
    this.tlsFiles = readTlsFiles(this.settings.tls);
    if (Object.keys(this.tlsFiles).length > 0 && !/^(mqtts|ssl|wss):/.test(this.settings.url)) {
      this.log.warn({ url: redactUrls(this.settings.url) }, 'mqtt.tls files are set but mqtt.url is not a TLS URL (mqtts://): they are not used');
    }
    this.stopped = false;
    this.firstOutcome = onFirstOutcome ?? null;
    this.attempt();
  }

  /**
   * Stop retrying and close the connection (a clean DISCONNECT when connected; `disconnect` sets
   * its MQTT 5 reason code, e.g. 0x04 to have the broker publish the Will).
   */
  async stop(timeoutMs = 2000, disconnect?: { reasonCode: number }): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const client = this.current;
    if (!client) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => client.end(true, () => resolve()), timeoutMs);
      client.end(false, this.version === 5 && disconnect ? disconnect : {}, () => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private firstOutcome: (() => void) | null = null;

  private reportFirstOutcome(): void {
    const cb = this.firstOutcome;
    this.firstOutcome = null;
    cb?.();
  }

  private attempt(): void {
    this.retryTimer = null;
    if (this.stopped) return;
    const version = this.version;
    const will = this.handlers.will(version);
    // A kept session: the broker queues triggers and commands (QoS 1) while we reconnect.
    const expiry = this.settings.sessionExpirySec;
    const options: IClientOptions = {
      protocolVersion: version,
      clientId: this.settings.clientId,
      keepalive: this.settings.keepaliveSec,
      connectTimeout: this.settings.connectTimeoutMs,
      reconnectPeriod: 0,
      // Never a clean start with a kept session: mosquitto persists no session that began clean
      // (a broker restart would lose it). MQTT 5 bounds it by its expiry; 3.1.1 has none of its
      // own (the broker's persistent_client_expiration applies).
      clean: expiry === 0,
      ...(version === 5 && expiry > 0 ? { properties: { sessionExpiryInterval: expiry } } : {}),
      will: {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        ...(version === 5 && will.properties ? { properties: will.properties } : {}),
      },
      ...this.tlsFiles,
      rejectUnauthorized: this.settings.tls.rejectUnauthorized,
    };
    if (this.settings.username) options.username = this.settings.username;
    if (this.settings.password) options.password = this.settings.password;

    const client = mqtt.connect(this.settings.url, options);
    this.current = client;
    let lastError: Error | null = null;
    let refusedVersion = false;

    client.on('connect', (connack) => {
      if (this.current !== client) return;
      this.failures = 0;
      this.connects += 1;
      this.connectedSince = new Date();
      this.connectedClient = client;
      this.log.info({ url: redactUrls(this.settings.url), protocolVersion: version, connects: this.connects, sessionPresent: connack.sessionPresent }, 'connected to the MQTT broker');
      this.handlers.onConnect(client, connack, version);
      this.reportFirstOutcome();
    });
    client.on('message', (topic, payload, packet) => {
      if (this.current === client) this.handlers.onMessage(topic, payload, packet);
    });
    client.on('disconnect', (packet) => {
      this.log.warn({ reasonCode: packet.reasonCode, reason: packet.properties?.reasonString }, 'broker sent DISCONNECT');
    });
    client.on('error', (err) => {
      lastError = err;
      if (version === 5 && isUnsupportedProtocol(err)) refusedVersion = true;
    });
    client.once('close', () => {
      // One client per attempt: retire this one completely (its queued callbacks fail with
      // "Connection closed"; the outbox still holds every unacknowledged result).
      client.removeAllListeners('connect');
      client.removeAllListeners('message');
      client.end(true);
      if (this.current !== client) return;
      this.current = null;
      if (this.connectedClient === client) {
        this.connectedClient = null;
        this.connectedSince = null;
        if (this.stopped) this.log.info('disconnected from the MQTT broker');
        else this.log.warn({ err: lastError?.message }, 'lost the MQTT broker connection');
        this.handlers.onDisconnect();
      }
      this.reportFirstOutcome();
      if (this.stopped) return;
      if (refusedVersion) {
        this.version = 4;
        this.log.warn({ err: lastError?.message }, 'the broker refused MQTT 5: falling back to MQTT 3.1.1 (crops and overlays go as base64 JSON)');
        this.retryTimer = setTimeout(() => this.attempt(), 0);
        return;
      }
      const delay = backoffDelay(this.failures, this.settings.reconnectMinMs, this.settings.reconnectMaxMs);
      this.failures += 1;
      this.log.info({ err: lastError?.message, attempt: this.failures, delayMs: delay }, 'MQTT broker unreachable: retrying');
      this.retryTimer = setTimeout(() => this.attempt(), delay);
    });
  }
}

function readTlsFiles(tls: ConnectionSettings['tls']): Pick<IClientOptions, 'ca' | 'cert' | 'key'> {
  const out: Pick<IClientOptions, 'ca' | 'cert' | 'key'> = {};
  for (const key of ['ca', 'cert', 'key'] as const) {
    if (tls[key]) out[key] = readKeyFile(`mqtt.tls.${key}`, tls[key]);
  }
  if (Boolean(out.cert) !== Boolean(out.key)) throw new Error('mqtt.tls.cert and mqtt.tls.key must be set together');
  return out;
}

export function isV5(client: MqttClient): boolean {
  return client.options.protocolVersion === 5;
}

/** MQTT 5 properties of a JSON payload (none on 3.1.1). */
export function jsonProperties(client: MqttClient): IPublishPacket['properties'] {
  return isV5(client) ? { contentType: 'application/json', payloadFormatIndicator: true } : {};
}
