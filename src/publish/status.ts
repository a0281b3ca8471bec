// The status publisher: the retained device status (and its short form, the Last Will) and one
// retained status per camera. Restored on every connect: the broker may have lost them (no
// persistence) and the Will has replaced the device status with "offline".
import type { MqttClient } from 'mqtt';
import { Subject, auditTime, type Subscription } from 'rxjs';
import type { CameraStatus } from '../capture/frame.js';
import type { RecipeReport } from '../inference/recipes.js';
import type { ModelInfo } from '../inference/types.js';
import type { Logger } from '../shared/log.js';
import { jsonProperties, type MqttConnection, type ProtocolVersion, type Will } from './connection.js';
import { SCHEMA_VERSION, cameraStatusPayload, modelSummary, type CameraCounters, type ConfigLayerStatus, type DeviceStatusPayload, type GoldenStatus, type InspectionStatus, type OutboxStats } from './payloads.js';
import type { Topics } from './topics.js';

/** What the rest of the daemon tells the device status topic (merged into what it already has). */
export interface DeviceStatusInfo {
  version?: string | null;
  /** The git commit the daemon runs from (a checkout), null in an installed tree. */
  commit?: string | null;
  model?: ModelInfo | null;
  /** Revision of the running configuration (published as configRevision). */
  revision?: number | null;
  /** The last model load/swap error (the previous model keeps serving); null clears it. */
  modelError?: string | null;
  /** The pushed configuration layer: probation and the last rollback. */
  config?: ConfigLayerStatus;
  /** Read at each publish: the production counters per camera. */
  counters?: () => Record<string, CameraCounters>;
  /** Golden samples: readiness and the last run. */
  golden?: GoldenStatus;
  /** Read at each publish: failures per plane since start (results and the other planes went on). */
  planeFailures?: () => Record<string, number>;
  /** Whether the batch loop inspects (published as inspection). */
  inspection?: InspectionStatus;
  /** The recipes and their models (published as recipes). */
  recipes?: RecipeReport;
  /** Free-form figures (health, pipeline counters) published under "extra". */
  extra?: Record<string, unknown>;
}

export interface StatusContext {
  connection: MqttConnection;
  topics: Topics;
  device: string;
  bootId: string;
  log: Logger;
  outboxStats(): OutboxStats;
}

/** Changes that arrive together (cameras coming up, model and revision) go out as one status. */
const STATUS_DEBOUNCE_MS = 100;

export class StatusPublisher {
  private readonly startedAt = new Date();
  private deviceInfo: DeviceStatusInfo = {};
  private readonly cameraStatuses = new Map<string, CameraStatus>();
  private readonly changes = new Subject<void>();
  private readonly debounced: Subscription;
  private statusTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private qos: 0 | 1 | 2, private readonly context: StatusContext) {
    this.debounced = this.changes.pipe(auditTime(STATUS_DEBOUNCE_MS)).subscribe(() => this.publishDeviceStatus());
  }

  /** Republish the device status every `intervalMs` (its outbox and broker figures move). */
  start(intervalMs: number): void {
    this.statusTimer = setInterval(() => this.publishDeviceStatus(), Math.max(1000, intervalMs));
  }

  setQos(qos: 0 | 1 | 2): void {
    this.qos = qos;
  }

  /** Publish a camera's retained status (and refresh the device status that lists all cameras). */
  publishCameraStatus(status: CameraStatus): void {
    this.cameraStatuses.set(status.cameraId, { ...status });
    const client = this.context.connection.client;
    if (client) this.sendCameraStatus(client, status);
    this.refresh();
  }

  /** Merge version/model/config revision/extra into the retained device status and republish it. */
  setDeviceStatus(info: DeviceStatusInfo): void {
    this.deviceInfo = { ...this.deviceInfo, ...info };
    this.refresh();
  }

  /** Republish the device status soon (changes within the debounce go out together). */
  refresh(): void {
    if (!this.stopped) this.changes.next();
  }

  onConnect(client: MqttClient): void {
    this.publishDeviceStatus();
    for (const status of this.cameraStatuses.values()) this.sendCameraStatus(client, status);
  }

  /** The Last Will, built for every connection attempt. */
  will(version: ProtocolVersion): Will {
    const payload: DeviceStatusPayload = {
      schemaVersion: SCHEMA_VERSION,
      device: this.context.device,
      state: 'offline',
      reason: 'connection-lost',
      ...this.identity(),
      bootId: this.context.bootId,
      startedAt: this.startedAt.toISOString(),
    };
    return {
      topic: this.context.topics.deviceStatus,
      payload: Buffer.from(JSON.stringify(payload)),
      qos: this.qos,
      retain: true,
      ...(version === 5 ? { properties: { contentType: 'application/json', payloadFormatIndicator: true } } : {}),
    };
  }

  /** No more status updates: the daemon is going away. */
  stop(): void {
    this.stopped = true;
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.debounced.unsubscribe();
  }

  /** The retained offline status of a clean stop; resolves when acknowledged or after `timeoutMs`. */
  async publishOffline(timeoutMs: number): Promise<void> {
    const client = this.context.connection.client;
    if (!client) return;
    const payload = Buffer.from(JSON.stringify(this.deviceStatus('offline', 'shutdown')));
    await new Promise<void>((resolve) => {
      const timeout = setTimeout(resolve, timeoutMs);
      client.publish(this.context.topics.deviceStatus, payload, { qos: this.qos, retain: true, properties: jsonProperties(client) }, () => {
        clearTimeout(timeout);
        resolve();
      });
    });
  }

  private publishDeviceStatus(): void {
    const client = this.context.connection.client;
    if (!client || this.stopped) return;
    const payload = Buffer.from(JSON.stringify(this.deviceStatus('online')));
    client.publish(this.context.topics.deviceStatus, payload, { qos: this.qos, retain: true, properties: jsonProperties(client) }, (err) => {
      if (err && this.context.connection.client === client) this.context.log.warn({ err: err.message }, 'device status not delivered');
    });
  }

  private identity(): Pick<DeviceStatusPayload, 'version' | 'commit'> {
    return { version: this.deviceInfo.version ?? null, commit: this.deviceInfo.commit ?? null };
  }

  private deviceStatus(state: 'online' | 'offline', reason?: 'shutdown'): DeviceStatusPayload {
    const { connection } = this.context;
    const cameras: NonNullable<DeviceStatusPayload['cameras']> = {};
    for (const [id, s] of this.cameraStatuses) cameras[id] = { state: s.state, since: s.since, ...(s.error !== undefined ? { error: s.error } : {}) };
    const payload: DeviceStatusPayload = {
      schemaVersion: SCHEMA_VERSION,
      device: this.context.device,
      state,
      ...(reason ? { reason } : {}),
      ...this.identity(),
      bootId: this.context.bootId,
      startedAt: this.startedAt.toISOString(),
      publishedAt: new Date().toISOString(),
      model: this.deviceInfo.model ? modelSummary(this.deviceInfo.model) : null,
      configRevision: this.deviceInfo.revision ?? null,
      modelError: this.deviceInfo.modelError ?? null,
      cameras,
      broker: {
        protocolVersion: connection.protocolVersion,
        connects: connection.connects,
        connectedSince: connection.connectedSince?.toISOString() ?? null,
      },
      outbox: this.context.outboxStats(),
    };
    if (this.deviceInfo.config) payload.config = this.deviceInfo.config;
    if (this.deviceInfo.counters) payload.counters = this.deviceInfo.counters();
    if (this.deviceInfo.golden) payload.golden = this.deviceInfo.golden;
    if (this.deviceInfo.inspection) payload.inspection = this.deviceInfo.inspection;
    if (this.deviceInfo.planeFailures) payload.planeFailures = this.deviceInfo.planeFailures();
    if (this.deviceInfo.recipes) payload.recipes = this.deviceInfo.recipes;
    if (this.deviceInfo.extra) payload.extra = this.deviceInfo.extra;
    return payload;
  }

  private sendCameraStatus(client: MqttClient, status: CameraStatus): void {
    const payload = Buffer.from(JSON.stringify(cameraStatusPayload(status, this.context.device, new Date())));
    client.publish(this.context.topics.cameraStatus(status.cameraId), payload, { qos: this.qos, retain: true, properties: jsonProperties(client) }, (err) => {
      if (err && this.context.connection.client === client) this.context.log.warn({ camera: status.cameraId, err: err.message }, 'camera status not delivered');
    });
  }
}
