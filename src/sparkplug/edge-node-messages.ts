// The edge node's messages: NBIRTH/DBIRTH/DDATA/DDEATH/NDATA payloads assembled from the metric
// map and published with the session's seq, and the NDEATH (the Will's payload, or sent by hand).
import type { MqttClient } from 'mqtt';
import type { CameraState } from '../capture/frame.js';
import { BD_SEQ, NODE_METRICS, REBIRTH, RESET_COUNTERS, TRIGGER, aliasOf, metricMessage, type MetricValue } from './metrics.js';
import { encodePayload, type MetricMessage, type PayloadMessage } from './proto.js';
import { DEAD_STATES, type Device } from './edge-node-types.js';
import { EdgeNodeBase } from './edge-node-base.js';

export abstract class EdgeNodeMessages extends EdgeNodeBase {
  protected deathPayload(): Buffer {
    const now = Date.now();
    const bdSeq = NODE_METRICS.find((m) => m.name === BD_SEQ)!;
    return encodePayload({ timestamp: now, metrics: [metricMessage(bdSeq, this.bdSeq, { alias: aliasOf(this.nodeMetrics, BD_SEQ), birth: true, timestamp: now })] });
  }

  /**
   * NBIRTH (seq 0) and a DBIRTH per live camera, and per camera that is not live (offline, or no
   * longer configured) but has results waiting (DDEATH once they are replayed); then the replay.
   */
  protected birth(): void {
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

  protected sendDeviceBirth(device: Device): void {
    const now = Date.now();
    device.values.set(TRIGGER, false);
    device.values.set(RESET_COUNTERS, false);
    const metrics = this.deviceMetrics.map((def) => metricMessage(def, device.values.get(def.name) ?? null, { alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: true, timestamp: now }));
    this.send(this.topics.device('DBIRTH', device.id), { timestamp: now, metrics });
    device.born = true;
    device.sent = new Map(device.values);
  }

  protected sendDeviceDeath(device: Device): void {
    this.send(this.topics.device('DDEATH', device.id), { timestamp: Date.now(), metrics: [] });
    device.born = false;
  }

  /** DDATA with the metrics that changed since the host last heard of them; false if none went. */
  protected sendDeviceData(device: Device, values: Record<string, MetricValue>, timestamp: number): boolean {
    const metrics: MetricMessage[] = [];
    for (const def of this.deviceMetrics) {
      if (!(def.name in values) || device.sent.get(def.name) === values[def.name]) continue;
      metrics.push(metricMessage(def, values[def.name]!, { alias: aliasOf(this.deviceMetrics, def.name, device.number), birth: false, timestamp }));
      device.sent.set(def.name, values[def.name]!);
    }
    return metrics.length > 0 && this.send(this.topics.device('DDATA', device.id), { timestamp: Date.now(), metrics }) !== null;
  }

  protected publishNodeData(): void {
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

  protected refreshNodeValues(): void {
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
   * Publish at QoS 0, not retained (every Sparkplug message but NDEATH), with the next seq, on the
   * current session; null when there is none. The promise settles when the socket took the bytes
   * (never, on a socket that died: wait on it only with whileOpen).
   */
  protected send(topic: string, payload: PayloadMessage): Promise<void> | null {
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

  protected publishDeath(client: MqttClient, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      client.publish(this.topics.node('NDEATH'), this.deathPayload(), { qos: 1, retain: false }, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
