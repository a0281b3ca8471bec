// The Sparkplug B payload on the wire, as protobufjs reflection. The official sparkplug_b.proto
// (Eclipse Tahu, EPL-2.0) is not shipped with the daemon: this descriptor states only the wire
// facts the edge node uses (message and field names, numbers and types) for Payload and Metric;
// test/sparkplug-proto.test.ts checks every field against the official file. Fields we do not
// declare (DataSet, Template, PropertySet, ...) are skipped when decoding a command.
import protobuf from 'protobufjs';

/** Sparkplug B data types (the proto's DataType enum), those the edge node uses. */
export const DataType = {
  Int32: 3,
  Int64: 4,
  UInt32: 7,
  UInt64: 8,
  Float: 9,
  Double: 10,
  Boolean: 11,
  String: 12,
  DateTime: 13,
} as const;
export type DataTypeName = keyof typeof DataType;

const descriptor = {
  nested: {
    org: { nested: { eclipse: { nested: { tahu: { nested: { protobuf: { nested: {
      Payload: {
        fields: {
          timestamp: { type: 'uint64', id: 1 },
          metrics: { rule: 'repeated', type: 'Metric', id: 2 },
          seq: { type: 'uint64', id: 3 },
          uuid: { type: 'string', id: 4 },
          body: { type: 'bytes', id: 5 },
        },
        nested: {
          Metric: {
            oneofs: { value: { oneof: ['int_value', 'long_value', 'float_value', 'double_value', 'boolean_value', 'string_value', 'bytes_value'] } },
            fields: {
              name: { type: 'string', id: 1 },
              alias: { type: 'uint64', id: 2 },
              timestamp: { type: 'uint64', id: 3 },
              datatype: { type: 'uint32', id: 4 },
              is_historical: { type: 'bool', id: 5 },
              is_transient: { type: 'bool', id: 6 },
              is_null: { type: 'bool', id: 7 },
              int_value: { type: 'uint32', id: 10 },
              long_value: { type: 'uint64', id: 11 },
              float_value: { type: 'float', id: 12 },
              double_value: { type: 'double', id: 13 },
              boolean_value: { type: 'bool', id: 14 },
              string_value: { type: 'string', id: 15 },
              bytes_value: { type: 'bytes', id: 16 },
            },
          },
        },
      },
    } } } } } } } } },
};

export const protoRoot = protobuf.Root.fromJSON(descriptor);
const PayloadType = protoRoot.lookupType('org.eclipse.tahu.protobuf.Payload');

export interface MetricMessage {
  name?: string;
  alias?: number;
  timestamp?: number;
  datatype?: number;
  is_historical?: boolean;
  is_transient?: boolean;
  is_null?: boolean;
  int_value?: number;
  long_value?: number;
  float_value?: number;
  double_value?: number;
  boolean_value?: boolean;
  string_value?: string;
  bytes_value?: Uint8Array;
}

export interface PayloadMessage {
  timestamp?: number;
  metrics: MetricMessage[];
  seq?: number;
}

export function encodePayload(payload: PayloadMessage): Buffer {
  return Buffer.from(PayloadType.encode(PayloadType.fromObject(payload)).finish());
}

/** Decode a payload; throws on bytes that are not a Sparkplug payload. 64-bit values come as numbers. */
export function decodePayload(bytes: Buffer): PayloadMessage {
  const message = PayloadType.decode(bytes);
  const plain = PayloadType.toObject(message, { longs: Number, arrays: true }) as PayloadMessage;
  return plain;
}
