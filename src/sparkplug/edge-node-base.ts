// The edge node's state, shared by the layers of its class (edge-node.ts lists them): every field
// lives here, so each is set up once, in the order it always was, before any layer's code runs.
import type { MqttClient } from 'mqtt';
import type { CameraState } from '../capture/frame.js';
import { MqttConnection, type ConnectionSettings, type ProtocolVersion } from '../publish/connection.js';
import type { Logger } from '../shared/log.js';
import { History } from './history.js';
import { DEVICE_METRICS, NODE_METRICS, REBIRTH, selectMetrics, type MetricDef, type MetricValue } from './metrics.js';
import { NodeStateFile } from './state.js';
import { SparkplugTopics } from './topics.js';
import type { Device, EdgeNodeHooks, EdgeNodeSettings, Session, Unconfirmed } from './edge-node-types.js';

export abstract class EdgeNodeBase {
  readonly topics: SparkplugTopics;
  private stateFile: NodeStateFile | null = null;
  private historyTable: History | null = null;
  protected readonly nodeMetrics: MetricDef[];
  protected readonly deviceMetrics: MetricDef[];
  protected readonly stateTopic: string | null;
  protected client: MqttClient | null = null;
  protected version: ProtocolVersion;
  /** bdSeq of the Will in the current (or latest) CONNECT. */
  protected bdSeq = 0;
  protected subscribed = false;
  protected born = false;
  protected seq = 0;
  protected hostOnline = false;
  protected readonly nodeValues = new Map<string, MetricValue>();
  protected nodeSent = new Map<string, MetricValue>();
  protected readonly devices = new Map<string, Device>();
  protected readonly counters = new Map<string, { ok: number; ng: number; errors: number }>();
  protected timer: NodeJS.Timeout | null = null;
  protected session: Session | null = null;
  /** The session whose replay is running. */
  protected replaying: Session | null = null;
  protected unconfirmed: Unconfirmed[] = [];
  protected liveSent = 0;
  protected confirmTimer: NodeJS.Timeout | null = null;
  protected refusalTimer: NodeJS.Timeout | null = null;
  protected problem = '';
  protected refusalStreak = 0;
  protected serverIndex = 0;
  protected readonly clocks: { lastState: number; lastOnline: number; lastOfflineActed: number }[] = [];
  protected connection: MqttConnection;
  /** CONNECTs on the current server since it last connected, and servers walked since the last session. */
  protected attemptsHere = 0;
  protected walks = 0;
  protected walking = false;
  protected walkTimer: NodeJS.Timeout | null = null;
  protected legacyWarned = false;
  protected readonly confirmTopic: string;
  protected stopped = false;
  protected triggers = 0;
  protected readonly startedAt = Date.now();
  protected readonly counts = { sessions: 0, births: 0, rejected: 0, historySent: 0, historyConfirmed: 0, refusals: 0 };

  constructor(protected readonly settings: EdgeNodeSettings, protected readonly hooks: EdgeNodeHooks, protected readonly log: Logger) {
    this.nodeMetrics = selectMetrics(NODE_METRICS, settings.metrics);
    this.deviceMetrics = selectMetrics(DEVICE_METRICS, settings.metrics);
    this.topics = new SparkplugTopics(settings.groupId, settings.edgeNodeId);
    this.stateTopic = settings.primaryHostId ? SparkplugTopics.hostState(settings.primaryHostId) : null;
    // Under our own NCMD topic, never subscribed: only its UNSUBACK matters.
    this.confirmTopic = `${this.topics.node('NCMD')}/confirm`;
    if (settings.connections.length === 0) throw new Error('Sparkplug: no MQTT server');
    this.version = settings.connections[0]!.protocolVersion;
    this.connection = this.connectionTo(0);
    this.nodeValues.set(REBIRTH, false);
    this.nodeValues.set('Node Info/Rejected Commands', 0);
  }

  // The state file and the history table open at start() (or first use), never in the constructor.
  protected openFiles(): void {
    void this.state;
    void this.history;
  }

  protected get state(): NodeStateFile {
    return (this.stateFile ??= new NodeStateFile(this.settings.stateFile, this.log));
  }

  protected get history(): History {
    return (this.historyTable ??= new History(this.settings.historyFile, this.settings.historyMaxRows, this.log));
  }

  /** The history table, closed (at stop) only if it was ever opened. */
  protected closeHistory(): void {
    this.historyTable?.close();
  }

  /**
   * What the node knows of the primary host's STATE on the server in use (each server has its own:
   * a host offline on one may be online, with an older STATE, on the next): the newest STATE, the
   * last online one, and the last offline one that ended a session (its retained copy must not
   * end the next session too).
   */
  protected get clock(): { lastState: number; lastOnline: number; lastOfflineActed: number } {
    return (this.clocks[this.serverIndex] ??= { lastState: -Infinity, lastOnline: -Infinity, lastOfflineActed: -Infinity });
  }

  /** The server now in use. */
  protected get server(): ConnectionSettings {
    return this.settings.connections[this.serverIndex]!;
  }

  protected get legacyStateTopic(): string {
    return `STATE/${this.settings.primaryHostId}`;
  }

  /** The device of a camera; one first met in the history (no longer configured) starts `stopped`. */
  protected device(id: string, state: CameraState | null = null): Device {
    let device = this.devices.get(id);
    if (!device) {
      device = { id, number: this.state.deviceNumber(id), state, born: false, values: new Map(), sent: new Map(), replayOnly: false };
      this.devices.set(id, device);
      this.countersOf(id);
      for (const name of ['Counters/OK', 'Counters/NG', 'Counters/Errors']) device.values.set(name, 0);
    }
    return device;
  }

  protected countersOf(id: string): { ok: number; ng: number; errors: number } {
    let counters = this.counters.get(id);
    if (!counters) this.counters.set(id, (counters = { ok: 0, ng: 0, errors: 0 }));
    return counters;
  }

  /** A connection loop on one server (edge-node-session.ts). */
  protected abstract connectionTo(index: number): MqttConnection;
  /** The history replay of the session (edge-node-replay.ts). */
  protected abstract replay(): Promise<void>;
  /** A message from the host (edge-node-host.ts). */
  protected abstract onMessage(topic: string, payload: Buffer): void;
}
