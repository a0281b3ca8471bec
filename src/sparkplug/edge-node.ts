// The Sparkplug B 3.0 edge node: its own MQTT connection (one connection carries one Will, and the
// JSON plane's Will is its offline status), fed by the same results and camera statuses as the
// JSON plane. The state machine:
//   CONNECT (Will: NDEATH with the next bdSeq, QoS 1) -> subscribe NCMD, DCMD (and the primary
//   host's STATE) at QoS 1 -> [primary host online] -> NBIRTH (seq 0) -> DBIRTH per live camera ->
//   historical DDATA -> live NDATA/DDATA/DDEATH; Rebirth replays the births in the session, and so
//   does a camera coming online (payloads-dbirth-order: every DBIRTH right after the NBIRTH).
//   Host offline: NDEATH + DISCONNECT, then a new session that waits for the host again (on the
//   next server when several are configured: the walk, also after two failed CONNECTs).
// A clean stop sends NDEATH: MQTT 5 by DISCONNECT reason 0x04 (the broker publishes the Will),
// MQTT 3.1.1 by publishing it before the DISCONNECT. A session that ends is detached at once
// (client, born, subscribed cleared) so nothing of it follows its NDEATH.
// Delivery: Sparkplug DATA is QoS 0, so a result counts as delivered only once the broker answered
// a round trip (UNSUBSCRIBE of a topic never subscribed -> UNSUBACK) sent after its DDATA on the
// same connection: the broker reads a connection's packets in order. Until then a live result is
// kept in memory and a historical one stays in the history table; whatever a session's end leaves
// unconfirmed goes (back) to the table and is sent again, as historical DDATA, by the next one.
import type { MqttClient } from 'mqtt';
import type { CameraState, CameraStatus } from '../capture/frame.js';
import type { ModelInfo, Result } from '../inference/types.js';
import { MqttConnection, type ConnectionSettings, type ProtocolVersion, type Will } from '../publish/connection.js';
import type { Logger } from '../shared/log.js';
import { backoffDelay } from '../shared/backoff.js';
import { redactUrls } from '../shared/redact.js';
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
  /** The MQTT servers, walked in order (one or more). */
  connections: ConnectionSettings[];
  /** The bdSeq/alias state file and the history database. */
  stateFile: string;
  historyFile: string;
  historyMaxRows: number;
  /** Pace of a history replay, DDATA messages per second. */
  replayMessagesPerSec: number;
  /** Accept a Sparkplug 2.2 host's STATE/<id> "ONLINE"/"OFFLINE" as its STATE. */
  legacyState: boolean;
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
  /** Results sent as historical DDATA, and of them confirmed by the broker (then deleted). */
  historySent: number;
  historyConfirmed: number;
  /** Live results sent and not yet confirmed. */
  liveUnconfirmed: number;
  /** Sessions whose subscriptions the broker refused (QoS 0 granted, ACL): no births on them. */
  subscribeRefusals: number;
  /** Why the node is not born, when it is something the operator must fix ('' = nothing). */
  problem: string;
}

/** One MQTT session: `end` settles when it ends, so nothing waits on a dead socket for good. */
interface Session {
  client: MqttClient;
  ended: boolean;
  end: Promise<void>;
  finish(): void;
}

/** A live result sent and not yet confirmed by a round trip; `n` counts them over the node's life. */
interface Unconfirmed {
  n: number;
  cameraId: string;
  capturedAt: number;
  values: Record<string, MetricValue>;
}

interface Device {
  id: string;
  number: number;
  state: CameraState | null;
  born: boolean;
  values: Map<string, MetricValue>;
  /** What the host was last told (birth or data): DDATA carries only what differs. */
  sent: Map<string, MetricValue>;
  /** Born only to replay its history (the camera is offline or no longer configured): DDEATH after. */
  replayOnly: boolean;
}

/** Historical results per DDATA message. */
const HISTORY_BATCH = 25;
/** Historical results sent per round trip: deleted together once the broker confirmed them. */
const REPLAY_WINDOW = HISTORY_BATCH * 10;
/** Failed CONNECTs in a row after which the node walks to the next server (when there are several). */
const WALK_AFTER_FAILURES = 2;
/** How often live results are confirmed (a round trip) while any wait. */
const CONFIRM_INTERVAL_MS = 1000;
const DEAD_STATES: ReadonlySet<CameraState> = new Set(['offline', 'stopped']);
const FAULT_STATES: ReadonlySet<CameraState> = new Set(['offline', 'error']);
/** MQTT 5 DISCONNECT reason "Disconnect with Will Message". */
const DISCONNECT_WITH_WILL = 0x04;

export class EdgeNode {
  readonly topics: SparkplugTopics;
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
  private readonly nodeValues = new Map<string, MetricValue>();
  private nodeSent = new Map<string, MetricValue>();
  private readonly devices = new Map<string, Device>();
  private readonly counters = new Map<string, { ok: number; ng: number; errors: number }>();
  private timer: NodeJS.Timeout | null = null;
  private session: Session | null = null;
  /** The session whose replay is running. */
  private replaying: Session | null = null;
  private unconfirmed: Unconfirmed[] = [];
  private liveSent = 0;
  private confirmTimer: NodeJS.Timeout | null = null;
  private refusalTimer: NodeJS.Timeout | null = null;
  private problem = '';
  private refusalStreak = 0;
  private serverIndex = 0;
  private readonly clocks: { lastState: number; lastOnline: number; lastOfflineActed: number }[] = [];
  private connection: MqttConnection;
  /** CONNECTs on the current server since it last connected, and servers walked since the last session. */
  private attemptsHere = 0;
  private walks = 0;
  private walking = false;
  private walkTimer: NodeJS.Timeout | null = null;
  private legacyWarned = false;
  private readonly confirmTopic: string;
  private stopped = false;
  private triggers = 0;
  private readonly startedAt = Date.now();
  private readonly counts = { sessions: 0, births: 0, rejected: 0, historySent: 0, historyConfirmed: 0, refusals: 0 };

  constructor(private readonly settings: EdgeNodeSettings, private readonly hooks: EdgeNodeHooks, private readonly log: Logger) {
    this.nodeMetrics = selectMetrics(NODE_METRICS, settings.metrics);
    this.deviceMetrics = selectMetrics(DEVICE_METRICS, settings.metrics);
    this.topics = new SparkplugTopics(settings.groupId, settings.edgeNodeId);
    this.stateTopic = settings.primaryHostId ? SparkplugTopics.hostState(settings.primaryHostId) : null;
    // Under our own NCMD topic, never subscribed: only its UNSUBACK matters.
    this.confirmTopic = `${this.topics.node('NCMD')}/confirm`;
    if (settings.connections.length === 0) throw new Error('Sparkplug: no MQTT server');
    this.version = settings.connections[0]!.protocolVersion;
    this.state = new NodeStateFile(settings.stateFile, log);
    this.history = new History(settings.historyFile, settings.historyMaxRows, log);
    this.connection = this.connectionTo(0);
    this.nodeValues.set(REBIRTH, false);
    this.nodeValues.set('Node Info/Rejected Commands', 0);
    for (const id of settings.cameras) this.device(id);
  }

  start(): void {
    this.timer = setInterval(() => this.publishNodeData(), this.settings.ndataIntervalMs);
    this.timer.unref();
    this.connection.start();
  }

  /**
   * What the node knows of the primary host's STATE on the server in use (each server has its own:
   * a host offline on one may be online, with an older STATE, on the next): the newest STATE, the
   * last online one, and the last offline one that ended a session (its retained copy must not
   * end the next session too).
   */
  private get clock(): { lastState: number; lastOnline: number; lastOfflineActed: number } {
    return (this.clocks[this.serverIndex] ??= { lastState: -Infinity, lastOnline: -Infinity, lastOfflineActed: -Infinity });
  }

  /** The server now in use. */
  private get server(): ConnectionSettings {
    return this.settings.connections[this.serverIndex]!;
  }

  /** A connection loop on one server; what an old one reports after the walk left it is ignored. */
  private connectionTo(index: number): MqttConnection {
    const connection: MqttConnection = new MqttConnection(this.settings.connections[index]!, {
      will: (version) => this.will(version),
      onConnect: (client, _connack, version) => this.connection === connection && this.onConnect(client, version),
      onDisconnect: () => this.connection === connection && this.onDisconnect(),
      onMessage: (topic, payload) => this.connection === connection && this.onMessage(topic, payload),
    }, this.settings.connections.length > 1 ? this.log.child({ server: index }) : this.log);
    return connection;
  }

  /**
   * Multiple servers (operational-behavior-primary-application-state-with-multiple-servers-walk):
   * move to the next when the primary host goes offline on this one, or when this one failed
   * WALK_AFTER_FAILURES CONNECTs in a row. A whole round without a session backs off.
   */
  private async walk(why: string): Promise<void> {
    if (this.walking || this.stopped || this.settings.connections.length < 2) return;
    this.walking = true;
    try {
      const old = this.connection;
      this.endSession();
      await old.stop(1000);
      if (this.stopped) return;
      this.serverIndex = (this.serverIndex + 1) % this.settings.connections.length;
      this.attemptsHere = 0;
      this.walks++;
      const rounds = Math.floor(this.walks / this.settings.connections.length);
      const delayMs = rounds > 0 ? backoffDelay(Math.min(rounds - 1, 30), this.server.reconnectMinMs, this.server.reconnectMaxMs) : 0;
      this.log.warn({ why, server: this.serverIndex, url: redactUrls(this.server.url), delayMs }, 'Sparkplug: moving to the next MQTT server');
      this.connection = this.connectionTo(this.serverIndex);
      this.walkTimer = setTimeout(() => {
        this.walkTimer = null;
        if (!this.stopped) this.connection.start();
      }, delayMs);
    } finally {
      this.walking = false;
    }
  }

  stats(): EdgeNodeStats {
    return {
      connected: this.client !== null, born: this.born, bdSeq: this.bdSeq, sessions: this.counts.sessions, births: this.counts.births,
      rejectedCommands: this.counts.rejected, historyPending: this.history.size, historyDropped: this.history.dropped,
      historySent: this.counts.historySent, historyConfirmed: this.counts.historyConfirmed, liveUnconfirmed: this.unconfirmed.length,
      subscribeRefusals: this.counts.refusals, problem: this.problem,
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
    if (!this.born || !device.born || device.replayOnly) {
      this.history.append(device.id, capturedAt, values);
      return;
    }
    // Sent live (only what changed; nothing when nothing did): kept until a round trip confirms it.
    if (this.sendDeviceData(device, values, capturedAt)) {
      this.unconfirmed.push({ n: ++this.liveSent, cameraId: device.id, capturedAt, values });
      this.scheduleConfirm();
    }
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
      if (device.born && !device.replayOnly) this.sendDeviceDeath(device);
    } else if (!device.born) {
      // payloads-dbirth-order: a DBIRTH only right after an NBIRTH, so a camera that comes online
      // during a session is a rebirth (same bdSeq) rather than a DBIRTH after other DATA.
      this.log.info({ camera: device.id }, 'Sparkplug: camera online, rebirth');
      this.birth();
    } else {
      device.replayOnly = false;
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

  /**
   * Clean stop: the live results confirmed if the broker answers soon (else kept in the history),
   * the session detached, NDEATH (see the file comment), DISCONNECT, history closed.
   */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.refusalTimer) clearTimeout(this.refusalTimer);
    if (this.walkTimer) clearTimeout(this.walkTimer);
    const deadline = Date.now() + timeoutMs;
    const client = this.client;
    const session = this.session;
    if (client && session && this.unconfirmed.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.confirmLive(session), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs / 4)))]);
      clearTimeout(timer);
    }
    this.endSession();
    if (client && this.version !== 5) await this.publishDeath(client, Math.max(50, (deadline - Date.now()) / 2));
    await this.connection.stop(Math.max(50, deadline - Date.now()), { reasonCode: DISCONNECT_WITH_WILL });
    this.history.close();
  }

  // ---- the session ---------------------------------------------------------------------------

  /** Each CONNECT carries the bdSeq one after the last CONNECT's (refused and timed-out ones too). */
  private will(version: ProtocolVersion): Will {
    this.version = version;
    this.bdSeq = this.state.takeBdSeq();
    if (++this.attemptsHere > WALK_AFTER_FAILURES && this.settings.connections.length > 1) setImmediate(() => void this.walk('server unreachable'));
    return { topic: this.topics.node('NDEATH'), payload: this.deathPayload(), qos: 1, retain: false };
  }

  private deathPayload(): Buffer {
    const now = Date.now();
    const bdSeq = NODE_METRICS.find((m) => m.name === BD_SEQ)!;
    return encodePayload({ timestamp: now, metrics: [metricMessage(bdSeq, this.bdSeq, { alias: aliasOf(this.nodeMetrics, BD_SEQ), birth: true, timestamp: now })] });
  }

  private onConnect(client: MqttClient, version: ProtocolVersion): void {
    this.endSession();
    this.attemptsHere = 0;
    this.walks = 0;
    this.client = client;
    this.version = version;
    this.born = false;
    this.subscribed = false;
    this.hostOnline = false;
    this.counts.sessions++;
    let finish!: () => void;
    const end = new Promise<void>((resolve) => (finish = resolve));
    const session: Session = { client, ended: false, end, finish };
    this.session = session;
    const subscriptions: Record<string, { qos: 1 }> = { [this.topics.node('NCMD')]: { qos: 1 }, [this.topics.deviceCommands]: { qos: 1 } };
    if (this.stateTopic) subscriptions[this.stateTopic] = { qos: 1 };
    // A 2.2-era primary host announces itself on STATE/<id>: listened to, to say so (or to use it).
    if (this.stateTopic) subscriptions[this.legacyStateTopic] = { qos: 1 };
    client.subscribe(subscriptions, (err, granted) => {
      if (this.session !== session || session.ended) return;
      const refused = granted?.filter((g) => g.qos !== 1 && g.qos !== 2 && g.topic !== this.legacyStateTopic).map((g) => g.topic) ?? [];
      if (err || refused.length > 0) this.subscriptionsRefused(session, refused, err ?? undefined);
      else this.subscribed = true;
      if (!this.subscribed) return;
      this.refusalStreak = 0;
      this.problem = '';
      if (!this.stateTopic) this.birth();
      else if (this.hostOnline) this.birth();
      else this.log.info({ host: this.settings.primaryHostId }, 'Sparkplug: waiting for the primary host to be online');
    });
  }

  /**
   * Without its command topics (or the STATE) at QoS 1 the node cannot be told to rebirth: no
   * births on this session. Said (log, stats().problem) and retried with backoff, so a broker that
   * grants QoS 0 or an ACL that refuses a topic is not an endless silent reconnect loop.
   */
  private subscriptionsRefused(session: Session, refused: string[], err: Error | undefined): void {
    this.counts.refusals++;
    const { reconnectMinMs, reconnectMaxMs } = this.server;
    const delayMs = backoffDelay(Math.min(this.refusalStreak++, 30), Math.max(1000, reconnectMinMs), Math.max(1000, reconnectMaxMs));
    this.problem = `the broker refused QoS 1 subscriptions${refused.length > 0 ? ` for ${refused.join(', ')}` : ''} (${err ? err.message : 'granted QoS 0'}): check its ACL and maximum QoS`;
    this.log.error({ err: err?.message, refused, refusals: this.counts.refusals, retryInMs: delayMs },
      'Sparkplug: the broker refused the node\'s subscriptions: no births on this session; reconnecting after a pause (check the broker\'s ACL and maximum QoS)');
    this.endSession();
    this.refusalTimer = setTimeout(() => {
      this.refusalTimer = null;
      session.client.end(false, {});
    }, delayMs);
  }

  private onDisconnect(): void {
    this.endSession();
  }

  /**
   * The session is over (link lost, host offline, stop): detached at once so nothing more goes out
   * on it, its replay and round trips released, and the live results the broker did not confirm
   * kept in the history for the next session (some may have arrived: a duplicate, never a hole).
   */
  private endSession(): void {
    this.born = false;
    this.subscribed = false;
    this.client = null;
    for (const device of this.devices.values()) device.born = false;
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.confirmTimer = null;
    const session = this.session;
    if (!session || session.ended) return;
    session.ended = true;
    session.finish();
    if (this.unconfirmed.length > 0) {
      this.history.appendMany(this.unconfirmed);
      this.log.info({ results: this.unconfirmed.length }, 'Sparkplug: session ended with live results unconfirmed: kept for historical DDATA');
      this.unconfirmed = [];
    }
  }

  private get legacyStateTopic(): string {
    return `STATE/${this.settings.primaryHostId}`;
  }

  /** Resolves with `p`, or with `ended` once the session ends (a dead socket may never answer). */
  private whileOpen<T>(session: Session, p: Promise<T>, ended: T): Promise<T> {
    return Promise.race([p, session.end.then(() => ended)]);
  }

  /**
   * True once the broker answered a round trip sent after everything sent so far on the session.
   * No answer within 1.5 keepalives: the link is dead (a steady stream of DDATA keeps MQTT.js from
   * ever sending PINGREQ, so keepalive alone would not notice), and the session is closed.
   */
  private async roundTrip(session: Session): Promise<boolean> {
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

  private scheduleConfirm(): void {
    const session = this.session;
    if (this.confirmTimer || !session || session.ended) return;
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = null;
      void this.confirmLive(session).then(() => {
        if (this.unconfirmed.length > 0 && this.session === session && !session.ended) this.scheduleConfirm();
      });
    }, CONFIRM_INTERVAL_MS);
  }

  private async confirmLive(session: Session): Promise<void> {
    const upTo = this.liveSent;
    if (await this.roundTrip(session)) this.unconfirmed = this.unconfirmed.filter((u) => u.n > upTo);
  }

  /**
   * NBIRTH (seq 0) and a DBIRTH per live camera, and per camera that is not live (offline, or no
   * longer configured) but has results waiting (DDEATH once they are replayed); then the replay.
   */
  private birth(): void {
    if (!this.client || this.stopped) return;
    const waiting = new Set(this.history.cameras());
    for (const id of waiting) this.device(id, 'stopped');
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
      device.replayOnly = DEAD_STATES.has(device.state as CameraState);
      if (!device.replayOnly || waiting.has(device.id)) this.sendDeviceBirth(device);
    }
    this.log.info({ bdSeq: this.bdSeq, devices: [...this.devices.values()].filter((d) => d.born).map((d) => d.id) }, 'Sparkplug: node born');
    void this.replay();
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

  /** DDATA with the metrics that changed since the host last heard of them; false if none went. */
  private sendDeviceData(device: Device, values: Record<string, MetricValue>, timestamp: number): boolean {
    const metrics: MetricMessage[] = [];
    for (const def of this.deviceMetrics) {
      if (!(def.name in values) || device.sent.get(def.name) === values[def.name]) continue;
      metrics.push(metricMessage(def, values[def.name]!, { alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: false, timestamp }));
      device.sent.set(def.name, values[def.name]!);
    }
    return metrics.length > 0 && this.send(this.topics.device('DDATA', device.id), { timestamp: Date.now(), metrics }) !== null;
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
    this.nodeValues.set('Node Info/History Stored', this.history.size);
    this.nodeValues.set('Node Info/History Sent', this.counts.historySent);
    this.nodeValues.set('Node Info/History Confirmed', this.counts.historyConfirmed);
    this.nodeValues.set('Node Info/History Dropped', this.history.dropped);
  }

  /**
   * Results kept while the node or their camera was not born, oldest first per camera, as DDATA
   * with is_historical and the capture time on each metric, paced (replayMessagesPerSec, and each
   * message waits until the socket took it). After each window of rows a round trip; only what it
   * confirmed is deleted. One replay per session: the session's end ends it, whatever it waits on.
   */
  private async replay(): Promise<void> {
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

  /**
   * Publish at QoS 0, not retained (every Sparkplug message but NDEATH), with the next seq, on the
   * current session; null when there is none. The promise settles when the socket took the bytes
   * (never, on a socket that died: wait on it only with whileOpen).
   */
  private send(topic: string, payload: PayloadMessage): Promise<void> | null {
    const client = this.client;
    if (!client || !this.session || this.session.ended) return null;
    payload.seq = this.seq;
    this.seq = (this.seq + 1) % 256;
    const bytes = encodePayload(payload);
    return new Promise((resolve) => {
      client.publish(topic, bytes, { qos: 0, retain: false }, (err) => {
        if (err) this.log.debug({ topic, err: err.message }, 'Sparkplug message not sent');
        resolve();
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
    if (!this.client) return; // a session being left: its messages no longer count
    if (topic === this.stateTopic) this.onHostState(payload);
    else if (this.stateTopic && topic === this.legacyStateTopic) this.onLegacyHostState(payload);
    else if (topic === this.topics.node('NCMD')) this.onNodeCommand(payload);
    else {
      const deviceId = this.topics.commandDevice(topic);
      if (deviceId !== null) this.onDeviceCommand(deviceId, payload);
    }
  }

  /**
   * A Sparkplug 2.2 host's STATE/<id>, "ONLINE" or "OFFLINE" without a timestamp: with
   * sparkplug.legacyState taken in arrival order; without it, said as an error (the node waits
   * for a 3.0 STATE that such a host never sends).
   */
  private onLegacyHostState(payload: Buffer): void {
    const word = payload.toString('utf8').trim().toUpperCase();
    if (word !== 'ONLINE' && word !== 'OFFLINE') return;
    if (!this.settings.legacyState) {
      this.problem = `primary host ${this.settings.primaryHostId} speaks Sparkplug 2.2 (STATE/${this.settings.primaryHostId} ${word}); set sparkplug.legacyState or upgrade the host`;
      if (!this.legacyWarned) this.log.error({ host: this.settings.primaryHostId, payload: word }, `Sparkplug: ${this.problem}`);
      this.legacyWarned = true;
      return;
    }
    this.hostStateChanged(word === 'ONLINE', Math.max(Date.now(), this.clock.lastState));
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
    this.hostStateChanged(state.online, state.timestamp);
  }

  /**
   * phid-wait-timestamp: online counts when not older than every STATE before it (the newest is
   * kept). phid-offline: offline, not older than the last online, ends a connected session, born
   * or not; a retained offline STATE already acted on does not end the next session again.
   */
  private hostStateChanged(online: boolean, timestamp: number): void {
    if (online) {
      if (timestamp < this.clock.lastState) return this.log.info({ timestamp }, 'Sparkplug: stale online STATE ignored');
      this.clock.lastState = timestamp;
      this.clock.lastOnline = timestamp;
      this.hostOnline = true;
      if (this.subscribed && !this.born) this.birth();
      return;
    }
    if (timestamp < this.clock.lastOnline) return this.log.info({ timestamp }, 'Sparkplug: offline STATE older than the last online one ignored');
    this.clock.lastState = Math.max(this.clock.lastState, timestamp);
    const wasOnline = this.hostOnline || this.born;
    this.hostOnline = false;
    const fresh = Number.isFinite(this.clock.lastOnline) && timestamp > this.clock.lastOfflineActed;
    if (this.client && (wasOnline || fresh)) {
      this.clock.lastOfflineActed = Math.max(this.clock.lastOfflineActed, timestamp);
      void this.leaveForHost(this.client);
    }
  }

  /** The primary host went offline: NDEATH, DISCONNECT; the connection loop starts a new session. */
  private async leaveForHost(client: MqttClient): Promise<void> {
    this.log.warn({ host: this.settings.primaryHostId, born: this.born }, 'Sparkplug: primary host offline, node dies and reconnects');
    this.endSession();
    if (this.version !== 5) await this.publishDeath(client, 2000);
    client.end(false, this.version === 5 ? { reasonCode: DISCONNECT_WITH_WILL } : {});
    await this.walk('primary host offline');
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

  /** The device of a camera; one first met in the history (no longer configured) starts `stopped`. */
  private device(id: string, state: CameraState | null = null): Device {
    let device = this.devices.get(id);
    if (!device) {
      device = { id, number: this.state.deviceNumber(id), state, born: false, values: new Map(), sent: new Map(), replayOnly: false };
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
