// The metric map: every metric the edge node and its devices (the cameras) will ever report, with
// its Sparkplug datatype and alias. Aliases are stable: node metrics are numbered in this table's
// order, and a device's metrics are offset by a device number kept in the state directory, so
// they stay unique across the node and the same across restarts (append new metrics at the end).
import type { Result } from '../inference/types.js';
import { DataType, type DataTypeName, type MetricMessage } from './proto.js';

export type MetricValue = number | boolean | string | null;

export interface MetricDef {
  name: string;
  type: DataTypeName;
  /** Always published (bdSeq, control metrics); the others can be left out with sparkplug.metrics. */
  required?: boolean;
  /** A host may write it with NCMD/DCMD. */
  writable?: boolean;
  /** Published without an alias (Node Control/Rebirth, as the specification requires). */
  noAlias?: boolean;
}

export const BD_SEQ = 'bdSeq';
export const REBIRTH = 'Node Control/Rebirth';
export const TRIGGER = 'Device Control/Trigger';
export const RESET_COUNTERS = 'Device Control/Reset Counters';

export const NODE_METRICS: readonly MetricDef[] = [
  { name: BD_SEQ, type: 'Int64', required: true },
  { name: REBIRTH, type: 'Boolean', required: true, writable: true, noAlias: true },
  { name: 'Node Info/Outbox Depth', type: 'UInt64' },
  { name: 'Node Info/Broker Reconnects', type: 'UInt64' },
  { name: 'Node Info/Config Revision', type: 'Int64' },
  { name: 'Node Info/Model Name', type: 'String' },
  { name: 'Node Info/Model Hash', type: 'String' },
  { name: 'Node Info/Model Variant', type: 'String' },
  { name: 'Node Info/Execution Provider', type: 'String' },
  { name: 'Node Info/Model Input Form', type: 'String' },
  { name: 'Node Info/Uptime Seconds', type: 'UInt64' },
  { name: 'Node Info/Rejected Commands', type: 'UInt64', required: true },
  { name: 'Node Info/History Stored', type: 'UInt64' },
  { name: 'Node Info/History Sent', type: 'UInt64' },
  { name: 'Node Info/History Confirmed', type: 'UInt64' },
  { name: 'Node Info/History Dropped', type: 'UInt64' },
];

export const DEVICE_METRICS: readonly MetricDef[] = [
  { name: 'Inspection/Raw Score', type: 'Double' },
  { name: 'Inspection/Normalized Score', type: 'Double' },
  { name: 'Inspection/Verdict', type: 'String' },
  { name: 'Inspection/Region Count', type: 'UInt32' },
  { name: 'Inspection/Latency Ms', type: 'Double' },
  { name: 'Inspection/Trigger Id', type: 'String' },
  { name: 'Camera/State', type: 'String' },
  { name: 'Counters/OK', type: 'UInt64' },
  { name: 'Counters/NG', type: 'UInt64' },
  { name: 'Counters/Errors', type: 'UInt64' },
  { name: TRIGGER, type: 'Boolean', required: true, writable: true },
  { name: RESET_COUNTERS, type: 'Boolean', required: true, writable: true },
];

/** The metrics a result sets (and a historical DDATA carries). */
export const RESULT_METRICS = [
  'Inspection/Raw Score', 'Inspection/Normalized Score', 'Inspection/Verdict', 'Inspection/Region Count',
  'Inspection/Latency Ms', 'Inspection/Trigger Id', 'Counters/OK', 'Counters/NG',
] as const;

/** Device numbers multiply this: device n's metrics have aliases n*DEVICE_ALIAS_STRIDE + 1.... */
export const DEVICE_ALIAS_STRIDE = 65536;

/** Names sparkplug.metrics may list. */
export const OPTIONAL_METRIC_NAMES = [...NODE_METRICS, ...DEVICE_METRICS].filter((m) => !m.required).map((m) => m.name);

/** The published metrics of a table under sparkplug.metrics (empty = all); throws on an unknown name. */
export function selectMetrics(table: readonly MetricDef[], selected: readonly string[]): MetricDef[] {
  const unknown = selected.filter((name) => !OPTIONAL_METRIC_NAMES.includes(name));
  if (unknown.length > 0) {
    throw new Error(`sparkplug.metrics: unknown metric ${unknown.map((n) => JSON.stringify(n)).join(', ')} (known: ${OPTIONAL_METRIC_NAMES.join(', ')})`);
  }
  return table.filter((m) => m.required || selected.length === 0 || selected.includes(m.name));
}

/** Alias of a metric: its place in its table (from 1), offset by the device number (0: the node). */
export function aliasOf(table: readonly MetricDef[], name: string, deviceNumber = 0): number {
  const index = table.findIndex((m) => m.name === name);
  if (index < 0) throw new Error(`no metric ${name}`);
  return deviceNumber * DEVICE_ALIAS_STRIDE + index + 1;
}

/** A metric as it goes on the wire: the birth form (name, alias, datatype) or the data form (alias only). */
export function metricMessage(
  def: MetricDef,
  value: MetricValue,
  options: { alias: number; birth: boolean; timestamp: number; historical?: boolean },
): MetricMessage {
  const message: MetricMessage = { timestamp: options.timestamp };
  if (options.birth) {
    message.name = def.name;
    message.datatype = DataType[def.type];
    if (!def.noAlias) message.alias = options.alias;
  } else if (def.noAlias) {
    message.name = def.name;
  } else {
    message.alias = options.alias;
  }
  if (options.historical) message.is_historical = true;
  if (value === null) {
    message.is_null = true;
    return message;
  }
  switch (def.type) {
    case 'Int32':
    case 'UInt32':
      message.int_value = value as number;
      break;
    case 'Int64':
    case 'UInt64':
    case 'DateTime':
      message.long_value = value as number;
      break;
    case 'Float':
      message.float_value = value as number;
      break;
    case 'Double':
      message.double_value = value as number;
      break;
    case 'Boolean':
      message.boolean_value = value as boolean;
      break;
    case 'String':
      message.string_value = value as string;
      break;
  }
  return message;
}

/** The value a command metric carries, when its datatype and value field fit the metric's; else why not. */
export function commandValue(def: MetricDef, metric: MetricMessage): { value: MetricValue } | { error: string } {
  if (metric.datatype !== undefined && metric.datatype !== DataType[def.type]) {
    return { error: `${def.name}: datatype ${metric.datatype}, expected ${DataType[def.type]} (${def.type})` };
  }
  if (def.type === 'Boolean') {
    if (typeof metric.boolean_value !== 'boolean') return { error: `${def.name}: expected a boolean value` };
    return { value: metric.boolean_value };
  }
  return { error: `${def.name}: not writable` };
}

/** What one result sets on its camera's metrics (the counters are the device's to add). */
export function resultValues(result: Result): Pick<Record<(typeof RESULT_METRICS)[number], MetricValue>, Exclude<(typeof RESULT_METRICS)[number], 'Counters/OK' | 'Counters/NG'>> {
  const l = result.latency;
  return {
    'Inspection/Raw Score': result.raw,
    'Inspection/Normalized Score': result.normalized,
    'Inspection/Verdict': result.verdict,
    'Inspection/Region Count': result.regions.length,
    'Inspection/Latency Ms': round3(l.queueMs + l.preprocessMs + l.inferenceMs + l.postprocessMs),
    'Inspection/Trigger Id': result.frame.triggerId ?? null,
  };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
