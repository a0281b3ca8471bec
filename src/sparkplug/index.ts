// The Sparkplug B plane (sparkplug.*): an edge node beside the JSON topics, on its own connection.
//   edge-node.ts  the state machine: sessions, births and deaths, seq/bdSeq, commands, primary host
//                 (in layers: edge-node-{types,base,messages,replay,session,host}.ts)
//   metrics.ts    the metric map (names, datatypes, stable aliases) and command checks
//   proto.ts      the payload encoding (protobufjs), history.ts what waits for historical DDATA,
//   state.ts      bdSeq and device numbers across restarts, topics.ts the namespace
import path from 'node:path';
import type { AppConfig } from '../config/load.js';
import { connectionSettingsFrom, type ConnectionSettings } from '../publish/connection.js';
import type { Logger } from '../shared/log.js';
import { EdgeNode, type EdgeNodeHooks, type EdgeNodeSettings } from './edge-node.js';

export { EdgeNode, type EdgeNodeHooks, type EdgeNodeStats } from './edge-node.js';

export function edgeNodeSettings(config: AppConfig): EdgeNodeSettings {
  const spb = config.sparkplug;
  const jsonClientId = config.mqtt.clientId || `crad-edge-${config.device.id}`;
  // Without keepalive a half-open link is never noticed: no NDEATH Will, results never stored.
  if (config.mqtt.keepaliveSec === 0) throw new Error('mqtt.keepaliveSec: 0 (no keepalive) is not allowed with sparkplug.enabled: the broker would never publish the NDEATH Will of a dead link');
  const cameras = config.cameras.filter((c) => c.enabled).map((c) => c.id);
  // case-sensitivity-sparkplug-ids: device ids must differ in more than letter case.
  const seen = new Map<string, string>();
  for (const id of cameras) {
    const other = seen.get(id.toLowerCase());
    if (other !== undefined) throw new Error(`cameras: ids ${JSON.stringify(other)} and ${JSON.stringify(id)} differ only in letter case, which Sparkplug device ids must not (case-sensitivity-sparkplug-ids)`);
    seen.set(id.toLowerCase(), id);
  }
  return {
    groupId: spb.groupId,
    edgeNodeId: spb.edgeNodeId || config.device.id,
    primaryHostId: spb.primaryHostId,
    metrics: spb.metrics,
    connections: sparkplugServers(config, `${jsonClientId}-spb`),
    stateFile: path.join(config.service.stateDir, 'sparkplug-state.json'),
    historyFile: path.join(config.service.stateDir, 'sparkplug-history.sqlite'),
    historyMaxRows: spb.historyMaxRows,
    replayMessagesPerSec: spb.replayMessagesPerSec,
    legacyState: spb.legacyState,
    ndataIntervalMs: config.service.statusIntervalMs,
    cameras,
  };
}

/**
 * The servers the node walks: sparkplug.brokers with sparkplug.username/password/tls, or (empty)
 * the JSON plane's mqtt.url, credentials and TLS. Protocol, keepalive and backoff are mqtt.*'s.
 */
function sparkplugServers(config: AppConfig, clientId: string): ConnectionSettings[] {
  const base = connectionSettingsFrom(config, clientId);
  const spb = config.sparkplug;
  if (spb.brokers.length === 0) return [base];
  return spb.brokers.map((url) => ({ ...base, url, username: spb.username, password: spb.password, tls: spb.tls }));
}

/** The edge node for this configuration, or null when sparkplug.enabled is off. */
export function createEdgeNode(config: AppConfig, hooks: EdgeNodeHooks, log: Logger): EdgeNode | null {
  return config.sparkplug.enabled ? new EdgeNode(edgeNodeSettings(config), hooks, log) : null;
}
