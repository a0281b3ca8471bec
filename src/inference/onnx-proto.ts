// The parts of an ONNX ModelProto the CRAD model contract speaks about (../shared/design/model-contract.md).
// onnxruntime-node exposes neither metadata_props nor a way to read them, so the ModelProto is
// decoded here with protobufjs and a minimal schema: only the fields we read are declared, and
// protobufjs skips the rest (node lists, weight bytes) without copying them.
import protobuf from 'protobufjs';

// Field numbers as in onnx/onnx.proto (the ONNX IR definition).
const ONNX_SUBSET = `
syntax = "proto2";
package onnx;
message StringStringEntryProto { optional string key = 1; optional string value = 2; }
message OperatorSetIdProto { optional string domain = 1; optional int64 version = 2; }
message TensorShapeProto {
  message Dimension {
    oneof value { int64 dim_value = 1; string dim_param = 2; }
  }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor { optional int32 elem_type = 1; optional TensorShapeProto shape = 2; }
  oneof value { Tensor tensor_type = 1; }
}
message ValueInfoProto { optional string name = 1; optional TypeProto type = 2; }
message TensorProto { optional string name = 8; }
message GraphProto {
  optional string name = 2;
  repeated TensorProto initializer = 5;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
}
message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional int64 model_version = 5;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}
`;

const ModelProtoType = protobuf.parse(ONNX_SUBSET, { keepCase: true }).root.lookupType('onnx.ModelProto');

/** ONNX TensorProto.DataType values we name in messages. */
const ELEM_TYPE_NAMES: Record<number, string> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 5: 'int16', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64',
};
export const FLOAT32 = 1;
export const UINT8 = 2;

/** One dimension as the graph declares it: a fixed size, a named (symbolic) axis, or unknown. */
export type Dim = number | string | null;

export interface GraphValue {
  name: string;
  elemType: number | null;
  /** null when the graph declares no shape at all. */
  shape: Dim[] | null;
}

interface DecodedDim { dim_value?: number; dim_param?: string }
export interface DecodedValueInfo {
  name?: string;
  type?: { tensor_type?: { elem_type?: number; shape?: { dim?: DecodedDim[] } } };
}
export interface DecodedModel {
  ir_version?: number;
  producer_name?: string;
  producer_version?: string;
  model_version?: number;
  graph?: {
    name?: string;
    initializer?: { name?: string }[];
    input?: DecodedValueInfo[];
    output?: DecodedValueInfo[];
  };
  opset_import?: { domain?: string; version?: number }[];
  metadata_props?: { key?: string; value?: string }[];
}

/** Decode the ModelProto subset; throws what protobufjs throws when the bytes are not one. */
export function decodeModelSubset(bytes: Uint8Array): DecodedModel {
  return ModelProtoType.toObject(ModelProtoType.decode(bytes), { longs: Number, arrays: true }) as DecodedModel;
}

export function graphValue(v: DecodedValueInfo): GraphValue {
  const tensor = v.type?.tensor_type;
  const dims = tensor?.shape?.dim;
  return {
    name: v.name ?? '',
    elemType: tensor?.elem_type ?? null,
    shape: dims === undefined ? null : dims.map((d) => (d.dim_value !== undefined ? d.dim_value : d.dim_param !== undefined && d.dim_param !== '' ? d.dim_param : null)),
  };
}

export function describeShape(shape: Dim[] | null): string {
  return shape === null ? 'no shape' : `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

export function typeName(elemType: number | null): string {
  return elemType === null ? 'no type' : (ELEM_TYPE_NAMES[elemType] ?? `type ${elemType}`);
}

export const isDynamic = (d: Dim | undefined): boolean => d === null || typeof d === 'string';
export const isFixed = (d: Dim | undefined): d is number => typeof d === 'number' && d > 0;
