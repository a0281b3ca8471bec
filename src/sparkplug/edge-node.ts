// The Sparkplug B 3.0 edge node: its own MQTT connection (one connection carries one Will, and the
// JSON plane's Will is its offline status), fed by the same results and camera statuses as the
// JSON plane. The state machine:
//   CONNECT (Will: NDEATH with the next bdSeq, QoS 1) -> subscribe NCMD, DCMD (and the primary
//   host's STATE) at QoS 1 -> [primary host online] -> NBIRTH (seq 0) -> DBIRTH per live camera ->
//   historical DDATA -> live NDATA/DDATA/DDEATH/DBIRTH; Rebirth replays the births in the session.
//   Host offline: NDEATH + DISCONNECT, then a new session that waits for the host again.
// A clean stop sends NDEATH: MQTT 5 by DISCONNECT reason 0x04 (the broker publishes the Will),
// MQTT 3.1.1 by publishing it before the DISCONNECT.
import type { MqttClient } from 'mqtt';
import type { CameraState, CameraStatus } from '../capture/frame.js';
import type { ModelInfo, Result } from '../inference/types.js';
import { MqttConnection, type ConnectionSettings, type ProtocolVersion, type Will } from '../publish/connection.js';
import type { Logger } from '../shared/log.js';
import { History } from './history.js';
import {
  BD_SEQ, DEVICE_METRICS, NODE_METRICS, REBIRTH, RESET_COUNTERS, RESULT_METRICS, TRIGGER,
  aliasOf, commandValue, metricMessage, resultValues, selectMetrics, type MetricDef, type MetricValue,
} from './metrics.js';
import { decodePayload, encodePayload, type MetricMessage, type PayloadMessage } from './proto.js';
import { NodeStateFile } from './state.js';
import { SparkplugTopics } from './topics.js';

export interface EdgeNodeSettings {
  groupId: string;
  edgeNodeId: string;
  /** '' = no primary host: births follow the connection at once. */
  primaryHostId: string;
  /** Optional metrics to publish (empty = all). */
  metrics: string[];
  connection: ConnectionSettings;
  /** The bdSeq/alias state file and the history database. */
  stateFile: string;
  historyFile: string;
  historyMaxRows: number;
  /** How often node metrics are checked for change (NDATA). */
  ndataIntervalMs: number;
  /** Cameras configured at start: each is a Sparkplug device from the first birth on. */
  cameras: string[];
}

export interface EdgeNodeHooks {
  /** Trigger a capture; returns why it cannot be done, or null when it was. */
  trigger(cameraId: string, triggerId: string): string | null;
  nodeInfo(): { outboxDepth: number; brokerReconnects: number; configRevision: number };
}

export interface EdgeNodeStats {
  connected: boolean;
  born: boolean;
  bdSeq: number;
  sessions: number;
  births: number;
  rejectedCommands: number;
  historyPending: number;
  historyDropped: number;
}

interface Device {
  id: string;
  number: number;
  state: CameraState | null;
  born: boolean;
  values: Map<string, MetricValue>;
  /** What the host was last told (birth or data): DDATA carries only what differs. */
  sent: Map<string, MetricValue>;
}

/** Historical results per DDATA message. */
const HISTORY_BATCH = 25;
const DEAD_STATES: ReadonlySet<CameraState> = new Set(['offline', 'stopped']);
const FAULT_STATES: ReadonlySet<CameraState> = new Set(['offline', 'error']);
/** MQTT 5 DISCONNECT reason "Disconnect with Will Message". */
const DISCONNECT_WITH_WILL = 0x04;

export class EdgeNode {
  readonly topics: SparkplugTopics;
  private readonly connection: MqttConnection;
  private readonly state: NodeStateFile;
  private readonly history: History;
  private readonly nodeMetrics: MetricDef[];
  private readonly deviceMetrics: MetricDef[];
  private readonly stateTopic: string | null;
  private client: MqttClient | null = null;
  private version: ProtocolVersion;
  /** bdSeq of the Will in the current (or latest) CONNECT. */
  private bdSeq = 0;
  private subscribed = false;
  private born = false;
  private seq = 0;
  private hostOnline = false;
  /** Timestamp of the last STATE accepted, and of the last online one. */
  private lastStateTimestamp = -Infinity;
  private lastOnlineTimestamp = -Infinity;
  private readonly nodeValues = new Map<string, MetricValue>();
  private nodeSent = new Map<string, MetricValue>();
  private readonly devices = new Map<string, Device>();
  private readonly counters = new Map<string, { ok: number; ng: number; errors: number }>();
  private timer: NodeJS.Timeout | null = null;
  private draining = false;
  private stopped = false;
  private triggers = 0;
  private readonly startedAt = Date.now();
  private readonly counts = { sessions: 0, births: 0, rejected: 0 };

  constructor(private readonly settings: EdgeNodeSettings, private readonly hooks: EdgeNodeHooks, private readonly log: Logger) {
    this.nodeMetrics = selectMetrics(NODE_METRICS, settings.metrics);
    this.deviceMetrics = selectMetrics(DEVICE_METRICS, settings.metrics);
    this.topics = new SparkplugTopics(settings.groupId, settings.edgeNodeId);
    this.stateTopic = settings.primaryHostId ? SparkplugTopics.hostState(settings.primaryHostId) : null;
    this.version = settings.connection.protocolVersion;
    this.state = new NodeStateFile(settings.stateFile, log);
    this.history = new History(settings.historyFile, settings.historyMaxRows, log);
    this.connection = new MqttConnection(settings.connection, {
      will: (version) => this.will(version),
      onConnect: (client, _connack, version) => this.onConnect(client, version),
      onDisconnect: () => this.onDisconnect(),
      onMessage: (topic, payload) => this.onMessage(topic, payload),
    }, log);
    this.nodeValues.set(REBIRTH, false);
    this.nodeValues.set('Node Info/Rejected Commands', 0);
    for (const id of settings.cameras) this.device(id);
  }

  start(): void {
    this.timer = setInterval(() => this.publishNodeData(), this.settings.ndataIntervalMs);
    this.timer.unref();
    this.connection.start();
  }

  stats(): EdgeNodeStats {
    return {
      connected: this.client !== null, born: this.born, bdSeq: this.bdSeq, sessions: this.counts.sessions, births: this.counts.births,
      rejectedCommands: this.counts.rejected, historyPending: this.history.size, historyDropped: this.history.dropped,
    };
  }

  // ---- what the pipeline reports -------------------------------------------------------------

  onResult(result: Result): void {
    const device = this.device(result.frame.cameraId);
    const counters = this.countersOf(device.id);
    if (result.verdict === 'OK') counters.ok++;
    else if (result.verdict === 'NG') counters.ng++;
    const values: Record<string, MetricValue> = { ...resultValues(result), 'Counters/OK': counters.ok, 'Counters/NG': counters.ng };
    for (const [name, value] of Object.entries(values)) device.values.set(name, value);
    const capturedAt = Date.parse(result.frame.capturedAt);
    if (this.born && device.born) this.sendDeviceData(device, values, capturedAt);
    else this.history.append(device.id, capturedAt, values);
  }

  onCameraStatus(status: CameraStatus): void {
    const device = this.device(status.cameraId);
    const previous = device.state;
    device.state = status.state;
    const counters = this.countersOf(device.id);
    if (FAULT_STATES.has(status.state) && !FAULT_STATES.has(previous as CameraState)) counters.errors++;
    const values = { 'Camera/State': status.state, 'Counters/Errors': counters.errors };
    for (const [name, value] of Object.entries(values)) device.values.set(name, value);
    if (!this.born) return;
    if (DEAD_STATES.has(status.state)) {
      if (device.born) this.sendDeviceDeath(device);
    } else if (!device.born) {
      this.sendDeviceBirth(device);
      void this.drainHistory();
    } else {
      this.sendDeviceData(device, values, Date.now());
    }
  }

  setModel(model: ModelInfo): void {
    this.nodeValues.set('Node Info/Model Name', model.name);
    this.nodeValues.set('Node Info/Model Hash', model.hash);
    this.nodeValues.set('Node Info/Model Variant', model.variant);
    this.nodeValues.set('Node Info/Execution Provider', model.executionProvider);
    this.nodeValues.set('Node Info/Model Input Form', model.input.form);
    this.publishNodeData();
  }

  /** Clean stop: NDEATH (see the file comment), DISCONNECT, history closed. */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const deadline = Date.now() + timeoutMs;
    const client = this.client;
    if (client && this.version !== 5) await this.publishDeath(client, timeoutMs / 2);
    this.born = false;
    await this.connection.stop(Math.max(50, deadline - Date.now()), { reasonCode: DISCONNECT_WITH_WILL });
    this.history.close();
  }

  // ---- the session ---------------------------------------------------------------------------

  /** Each CONNECT carries the bdSeq one after the last established session's. */
  private will(version: ProtocolVersion): Will {
    this.version = version;
    this.bdSeq = this.state.nextBdSeq();
    return { topic: this.topics.node('NDEATH'), payload: this.deathPayload(), qos: 1, retain: false };
  }

  private deathPayload(): Buffer {
    const now = Date.now();
    const bdSeq = NODE_METRICS.find((m) => m.name === BD_SEQ)!;
    return encodePayload({ timestamp: now, metrics: [metricMessage(bdSeq, this.bdSeq, { alias: aliasOf(this.nodeMetrics, BD_SEQ), birth: true, timestamp: now })] });
  }

  private onConnect(client: MqttClient, version: ProtocolVersion): void {
    this.client = client;
    this.version = version;
    this.born = false;
    this.subscribed = false;
    this.hostOnline = false;
    this.counts.sessions++;
    this.state.recordSession(this.bdSeq);
    const subscriptions: Record<string, { qos: 1 }> = { [this.topics.node('NCMD')]: { qos: 1 }, [this.topics.deviceCommands]: { qos: 1 } };
    if (this.stateTopic) subscriptions[this.stateTopic] = { qos: 1 };
    client.subscribe(subscriptions, (err, granted) => {
      if (this.client !== client) return;
      const refused = granted?.filter((g) => g.qos !== 1 && g.qos !== 2).map((g) => g.topic) ?? [];
      if (err || refused.length > 0) {
        // Without its command topics the node cannot be told to rebirth: no births on this session.
        this.log.error({ err: err?.message, refused }, 'Sparkplug command subscriptions failed: reconnecting');
        client.end(false, this.version === 5 ? { reasonCode: DISCONNECT_WITH_WILL } : {});
        return;
      }
      this.subscribed = true;
      if (!this.stateTopic) this.birth();
      else if (this.hostOnline) this.birth();
      else this.log.info({ host: this.settings.primaryHostId }, 'Sparkplug: waiting for the primary host to be online');
    });
  }

  private onDisconnect(): void {
    this.client = null;
    this.subscribed = false;
    this.endSession();
  }

  private endSession(): void {
    this.born = false;
    for (const device of this.devices.values()) device.born = false;
  }

  /** NBIRTH (seq 0) and a DBIRTH per live camera; then what waited in the history. */
  private birth(): void {
    if (!this.client || this.stopped) return;
    this.seq = 0;
    this.refreshNodeValues();
    this.nodeValues.set(BD_SEQ, this.bdSeq);
    const now = Date.now();
    const metrics = this.nodeMetrics.map((def) => metricMessage(def, this.nodeValues.get(def.name) ?? null, { alias: aliasOf(this.nodeMetrics, def.name), birth: true, timestamp: now }));
    this.send(this.topics.node('NBIRTH'), { timestamp: now, metrics });
    this.born = true;
    this.counts.births++;
    this.nodeSent = new Map(this.nodeValues);
    for (const device of this.devices.values()) {
      device.born = false;
      if (!DEAD_STATES.has(device.state as CameraState)) this.sendDeviceBirth(device);
    }
    this.log.info({ bdSeq: this.bdSeq, devices: [...this.devices.values()].filter((d) => d.born).map((d) => d.id) }, 'Sparkplug: node born');
    void this.drainHistory();
  }

  private sendDeviceBirth(device: Device): void {
    const now = Date.now();
    device.values.set(TRIGGER, false);
    device.values.set(RESET_COUNTERS, false);
    const metrics = this.deviceMetrics.map((def) => metricMessage(def, device.values.get(def.name) ?? null, { alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: true, timestamp: now }));
    this.send(this.topics.device('DBIRTH', device.id), { timestamp: now, metrics });
    device.born = true;
    device.sent = new Map(device.values);
  }

  private sendDeviceDeath(device: Device): void {
    this.send(this.topics.device('DDEATH', device.id), { timestamp: Date.now(), metrics: [] });
    device.born = false;
  }

  /** DDATA with the metrics that changed since the host last heard of them. */
  private sendDeviceData(device: Device, values: Record<string, MetricValue>, timestamp: number): void {
    const metrics: MetricMessage[] = [];
    for (const def of this.deviceMetrics) {
      if (!(def.name in values) || device.sent.get(def.name) === values[def.name]) continue;
      metrics.push(metricMessage(def, values[def.name]!, { alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: false, timestamp }));
      device.sent.set(def.name, values[def.name]!);
    }
    if (metrics.length > 0) this.send(this.topics.device('DDATA', device.id), { timestamp: Date.now(), metrics });
  }

  private publishNodeData(): void {
    if (!this.born || !this.client) return;
    this.refreshNodeValues();
    const now = Date.now();
    const metrics: MetricMessage[] = [];
    for (const def of this.nodeMetrics) {
      const value = this.nodeValues.get(def.name) ?? null;
      if (def.name === BD_SEQ || def.name === REBIRTH || this.nodeSent.get(def.name) === value) continue;
      metrics.push(metricMessage(def, value, { alias: aliasOf(this.nodeMetrics, def.name), birth: false, timestamp: now }));
      this.nodeSent.set(def.name, value);
    }
    if (metrics.length > 0) this.send(this.topics.node('NDATA'), { timestamp: now, metrics });
  }

  private refreshNodeValues(): void {
    const info = this.hooks.nodeInfo();
    this.nodeValues.set('Node Info/Outbox Depth', info.outboxDepth);
    this.nodeValues.set('Node Info/Broker Reconnects', info.brokerReconnects);
    this.nodeValues.set('Node Info/Config Revision', info.configRevision);
    this.nodeValues.set('Node Info/Uptime Seconds', Math.floor((Date.now() - this.startedAt) / 1000));
    this.nodeValues.set('Node Info/Rejected Commands', this.counts.rejected);
  }

  /**
   * Results kept while the node or their camera was not born, oldest first, as DDATA with
   * is_historical and the capture time on each metric. A row goes once its message was handed to
   * the connection; a session lost midway leaves the rest for the next birth.
   */
  private async drainHistory(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let progressed = true; progressed;) {
        progressed = false;
        for (const device of this.devices.values()) {
          if (!this.born || !device.born) continue;
          const rows = this.history.oldest(device.id, HISTORY_BATCH);
          if (rows.length === 0) continue;
          const metrics = rows.flatMap((row) => RESULT_METRICS
            .map((name) => this.deviceMetrics.find((d) => d.name === name))
            .filter((def): def is MetricDef => def !== undefined)
            .map((def) => metricMessage(def, row.values[def.name] ?? null, {
              alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: false, timestamp: row.capturedAt, historical: true,
            })));
          const sent = await this.send(this.topics.device('DDATA', device.id), { timestamp: Date.now(), metrics });
          if (!sent) return;
          this.history.remove(rows.map((r) => r.id));
          progressed = true;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Publish at QoS 0, not retained (every Sparkplug message but NDEATH), with the next seq. */
  private send(topic: string, payload: PayloadMessage): Promise<boolean> {
    const client = this.client;
    if (!client) return Promise.resolve(false);
    payload.seq = this.seq;
    this.seq = (this.seq + 1) % 256;
    const bytes = encodePayload(payload);
    return new Promise((resolve) => {
      client.publish(topic, bytes, { qos: 0, retain: false }, (err) => {
        if (err) this.log.debug({ topic, err: err.message }, 'Sparkplug message not sent');
        resolve(!err);
      });
    });
  }

  private publishDeath(client: MqttClient, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      client.publish(this.topics.node('NDEATH'), this.deathPayload(), { qos: 1, retain: false }, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // ---- what the host sends -------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === this.stateTopic) this.onHostState(payload);
    else if (topic === this.topics.node('NCMD')) this.onNodeCommand(payload);
    else {
      const deviceId = this.topics.commandDevice(topic);
      if (deviceId !== null) this.onDeviceCommand(deviceId, payload);
    }
  }

  /** STATE (Sparkplug 3.0): JSON {online, timestamp}; a message older than the last one is stale. */
  private onHostState(payload: Buffer): void {
    let state: { online?: unknown; timestamp?: unknown };
    try {
      state = JSON.parse(payload.toString('utf8')) as typeof state;
    } catch {
      state = {};
    }
    if (typeof state?.online !== 'boolean' || typeof state.timestamp !== 'number' || !Number.isFinite(state.timestamp)) {
      this.reject('STATE', `malformed STATE payload ${JSON.stringify(payload.toString('utf8').slice(0, 100))}`);
      return;
    }
    const timestamp = state.timestamp;
    if (state.online) {
      if (timestamp < this.lastStateTimestamp) return this.log.info({ timestamp }, 'Sparkplug: stale online STATE ignored');
      this.lastStateTimestamp = timestamp;
      this.lastOnlineTimestamp = timestamp;
      this.hostOnline = true;
      if (this.subscribed && !this.born) this.birth();
      return;
    }
    if (timestamp < this.lastOnlineTimestamp) return this.log.info({ timestamp }, 'Sparkplug: offline STATE older than the last online one ignored');
    this.lastStateTimestamp = timestamp;
    const wasBorn = this.born;
    this.hostOnline = false;
    if (wasBorn && this.client) void this.leaveForHost(this.client);
  }

  /** The primary host went offline: NDEATH, DISCONNECT; the connection loop starts a new session. */
  private async leaveForHost(client: MqttClient): Promise<void> {
    this.log.warn({ host: this.settings.primaryHostId }, 'Sparkplug: primary host offline, node dies and reconnects');
    this.endSession();
    if (this.version !== 5) await this.publishDeath(client, 2000);
    client.end(false, this.version === 5 ? { reasonCode: DISCONNECT_WITH_WILL } : {});
  }

  private onNodeCommand(payload: Buffer): void {
    const commands = this.parseCommand('NCMD', payload, this.nodeMetrics, 0);
    if (!commands) return;
    for (const { def, value } of commands) {
      if (def.name !== REBIRTH || value !== true) continue;
      if (!this.born) {
        this.log.info('Sparkplug: rebirth asked before the node was born; the birth follows the session');
        continue;
      }
      this.log.info({ bdSeq: this.bdSeq }, 'Sparkplug: rebirth');
      this.birth();
    }
  }

  private onDeviceCommand(deviceId: string, payload: Buffer): void {
    const device = this.devices.get(deviceId);
    if (!device) return this.reject('DCMD', `unknown device ${JSON.stringify(deviceId)}`);
    const commands = this.parseCommand('DCMD', payload, this.deviceMetrics, device.number);
    if (!commands) return;
    for (const { def, value } of commands) {
      if (value !== true) continue;
      if (def.name === TRIGGER) {
        const why = this.hooks.trigger(device.id, `spb-${this.startedAt.toString(36)}-${++this.triggers}`);
        if (why) this.reject('DCMD', `${device.id}: trigger refused: ${why}`);
      } else if (def.name === RESET_COUNTERS) {
        this.counters.set(device.id, { ok: 0, ng: 0, errors: 0 });
        const values = { 'Counters/OK': 0, 'Counters/NG': 0, 'Counters/Errors': 0 };
        for (const [name, v] of Object.entries(values)) device.values.set(name, v);
        if (this.born && device.born) this.sendDeviceData(device, values, Date.now());
      }
    }
  }

  /** The metrics a command writes, all checked before any is acted on; null (rejected) if any is bad. */
  private parseCommand(kind: 'NCMD' | 'DCMD', payload: Buffer, table: MetricDef[], deviceNumber: number): { def: MetricDef; value: MetricValue }[] | null {
    let message: PayloadMessage;
    try {
      message = decodePayload(payload);
    } catch (err) {
      this.reject(kind, `malformed payload: ${(err as Error).message}`);
      return null;
    }
    if (!message.metrics?.length) {
      this.reject(kind, 'no metrics');
      return null;
    }
    const commands: { def: MetricDef; value: MetricValue }[] = [];
    for (const metric of message.metrics) {
      const def = metric.name !== undefined
        ? table.find((d) => d.name === metric.name)
        : table.find((d) => !d.noAlias && aliasOf(table, d.name, deviceNumber) === metric.alias);
      if (!def) {
        this.reject(kind, `unknown metric ${metric.name !== undefined ? JSON.stringify(metric.name) : `alias ${metric.alias}`}`);
        return null;
      }
      if (!def.writable) {
        this.reject(kind, `${def.name} is not writable`);
        return null;
      }
      const checked = commandValue(def, metric);
      if ('error' in checked) {
        this.reject(kind, checked.error);
        return null;
      }
      commands.push({ def, value: checked.value });
    }
    return commands;
  }

  /** Bad input from the host: logged and counted (a node metric), nothing else changes. */
  private reject(kind: string, reason: string): void {
    this.counts.rejected++;
    this.log.warn({ kind, reason, rejected: this.counts.rejected }, 'Sparkplug: command ignored');
    this.publishNodeData();
  }

  private device(id: string): Device {
    let device = this.devices.get(id);
    if (!device) {
      device = { id, number: this.state.deviceNumber(id), state: null, born: false, values: new Map(), sent: new Map() };
      this.devices.set(id, device);
      this.countersOf(id);
      for (const name of ['Counters/OK', 'Counters/NG', 'Counters/Errors']) device.values.set(name, 0);
    }
    return device;
  }

  private countersOf(id: string): { ok: number; ng: number; errors: number } {
    let counters = this.counters.get(id);
    if (!counters) this.counters.set(id, (counters = { ok: 0, ng: 0, errors: 0 }));
    return counters;
  }
}
