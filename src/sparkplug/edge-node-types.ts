// What the edge node is given and reports, and the records of its sessions and devices.
import type { MqttClient } from 'mqtt';
import type { CameraState } from '../capture/frame.js';
import type { ConnectionSettings } from '../publish/connection.js';
import type { MetricValue } from './metrics.js';

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
export interface Session {
  client: MqttClient;
  ended: boolean;
  end: Promise<void>;
  finish(): void;
}

/** A live result sent and not yet confirmed by a round trip; `n` counts them over the node's life. */
export interface Unconfirmed {
  n: number;
  cameraId: string;
  capturedAt: number;
  values: Record<string, MetricValue>;
}

export interface Device {
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
export const HISTORY_BATCH = 25;
/** Historical results sent per round trip: deleted together once the broker confirmed them. */
export const REPLAY_WINDOW = HISTORY_BATCH * 10;
/** Failed CONNECTs in a row after which the node walks to the next server (when there are several). */
export const WALK_AFTER_FAILURES = 2;
/** How often live results are confirmed (a round trip) while any wait. */
export const CONFIRM_INTERVAL_MS = 1000;
export const DEAD_STATES: ReadonlySet<CameraState> = new Set(['offline', 'stopped']);
export const FAULT_STATES: ReadonlySet<CameraState> = new Set(['offline', 'error']);
/** MQTT 5 DISCONNECT reason "Disconnect with Will Message". */
export const DISCONNECT_WITH_WILL = 0x04;
