// What the host sends: its STATE (3.0, and 2.2's STATE/<id>), which starts and ends sessions, and
// the NCMD/DCMD commands, each checked whole before it is acted on.
import type { MqttClient } from 'mqtt';
import { REBIRTH, RESET_COUNTERS, TRIGGER, aliasOf, commandValue, type MetricDef, type MetricValue } from './metrics.js';
import { decodePayload, type PayloadMessage } from './proto.js';
import { DISCONNECT_WITH_WILL } from './edge-node-types.js';
import { EdgeNodeSession } from './edge-node-session.js';

export abstract class EdgeNodeHost extends EdgeNodeSession {
  protected onMessage(topic: string, payload: Buffer): void {
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
  protected onLegacyHostState(payload: Buffer): void {
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
  protected onHostState(payload: Buffer): void {
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
  protected hostStateChanged(online: boolean, timestamp: number): void {
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
  protected async leaveForHost(client: MqttClient): Promise<void> {
    this.log.warn({ host: this.settings.primaryHostId, born: this.born }, 'Sparkplug: primary host offline, node dies and reconnects');
    this.endSession();
    if (this.version !== 5) await this.publishDeath(client, 2000);
    client.end(false, this.version === 5 ? { reasonCode: DISCONNECT_WITH_WILL } : {});
    await this.walk('primary host offline');
  }

  protected onNodeCommand(payload: Buffer): void {
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

  protected onDeviceCommand(deviceId: string, payload: Buffer): void {
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
  protected parseCommand(kind: 'NCMD' | 'DCMD', payload: Buffer, table: MetricDef[], deviceNumber: number): { def: MetricDef; value: MetricValue }[] | null {
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
  protected reject(kind: string, reason: string): void {
    this.counts.rejected++;
    this.log.warn({ kind, reason, rejected: this.counts.rejected }, 'Sparkplug: command ignored');
    this.publishNodeData();
  }
}
