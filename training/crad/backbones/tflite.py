"""A small hand-written reader for TFLite model files (FlatBuffers, schema tensorflow/lite/schema).

It reads what loading conv-net weights needs: the tensors (name, shape, type, buffer, quantization
parameters), the constant buffers, the operator codes and the operators with their inputs, outputs
and the options of the conv/pool/add ops. `dequantize` turns a tensor's data into float32 using
(q - zero_point) * scale, per channel along quantized_dimension where there are several scales.

FlatBuffer layout in brief: a table starts with an int32 offset back to its vtable; the vtable
lists (uint16) the byte position of each field inside the table, 0 for an absent field (the
schema default applies). Offsets to sub-tables, vectors and strings are uint32, relative to where
they are stored; a vector is a uint32 length followed by its elements.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# TensorType enum -> numpy dtype
TENSOR_TYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("<i4"), 3: np.dtype("u1"),
                4: np.dtype("<i8"), 6: np.dtype("?"), 7: np.dtype("<i2"), 9: np.dtype("i1"), 10: np.dtype("<f8")}
TENSOR_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                     7: "int16", 8: "complex64", 9: "int8", 10: "float64"}
BUILTIN_OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
               6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
               19: "RELU", 21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 40: "MEAN",
               43: "SQUEEZE", 114: "QUANTIZE"}
ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
PADDINGS = {0: "same", 1: "valid"}
# BuiltinOptions union member -> (option field names in schema order, scalar struct formats)
_OPTION_TABLES = {
    1: ("Conv2DOptions", [("padding", "b"), ("stride_w", "i"), ("stride_h", "i"),
                          ("fused_activation_function", "b"), ("dilation_w_factor", "i"), ("dilation_h_factor", "i")]),
    2: ("DepthwiseConv2DOptions", [("padding", "b"), ("stride_w", "i"), ("stride_h", "i"), ("depth_multiplier", "i"),
                                   ("fused_activation_function", "b"), ("dilation_w_factor", "i"),
                                   ("dilation_h_factor", "i")]),
    5: ("Pool2DOptions", [("padding", "b"), ("stride_w", "i"), ("stride_h", "i"), ("filter_width", "i"),
                          ("filter_height", "i"), ("fused_activation_function", "b")]),
    8: ("FullyConnectedOptions", [("fused_activation_function", "b")]),
    9: ("SoftmaxOptions", [("beta", "f")]),
    11: ("AddOptions", [("fused_activation_function", "b")]),
}
_OPTION_DEFAULTS = {"dilation_w_factor": 1, "dilation_h_factor": 1}


class TfliteFormatError(ValueError):
    pass


class _Table:
    """One FlatBuffer table: field access by schema index."""

    def __init__(self, buf: bytes, pos: int, source: str):
        self.buf = buf
        self.pos = pos
        self.source = source
        if pos < 0 or pos + 4 > len(buf):
            raise TfliteFormatError(f"{source}: table offset {pos} outside the file ({len(buf)} bytes)")
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        if vtable < 0 or vtable + 4 > len(buf):
            raise TfliteFormatError(f"{source}: vtable offset {vtable} outside the file")
        vtable_size = struct.unpack_from("<H", buf, vtable)[0]
        self.field_offsets = struct.unpack_from(f"<{(vtable_size - 4) // 2}H", buf, vtable + 4)

    def _field_pos(self, index: int) -> int | None:
        if index >= len(self.field_offsets) or self.field_offsets[index] == 0:
            return None
        return self.pos + self.field_offsets[index]

    def scalar(self, index: int, fmt: str, default=0):
        p = self._field_pos(index)
        return default if p is None else struct.unpack_from("<" + fmt, self.buf, p)[0]

    def _target(self, index: int) -> int | None:
        p = self._field_pos(index)
        return None if p is None else p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, index: int) -> "_Table | None":
        t = self._target(index)
        return None if t is None else _Table(self.buf, t, self.source)

    def string(self, index: int) -> str | None:
        t = self._target(index)
        if t is None:
            return None
        n = struct.unpack_from("<I", self.buf, t)[0]
        return self.buf[t + 4:t + 4 + n].decode("utf-8", errors="replace")

    def vector_span(self, index: int) -> tuple[int, int] | None:
        """(position of first element, length) of a vector field."""
        t = self._target(index)
        if t is None:
            return None
        return t + 4, struct.unpack_from("<I", self.buf, t)[0]

    def scalars(self, index: int, dtype: str) -> np.ndarray:
        span = self.vector_span(index)
        if span is None:
            return np.zeros(0, dtype=dtype)
        start, n = span
        dt = np.dtype(dtype)
        if start + n * dt.itemsize > len(self.buf):
            raise TfliteFormatError(f"{self.source}: vector at {start} ({n} x {dt}) runs past the end of the file")
        return np.frombuffer(self.buf, dtype=dt, count=n, offset=start)

    def tables(self, index: int) -> list["_Table"]:
        span = self.vector_span(index)
        if span is None:
            return []
        start, n = span
        result = []
        for i in range(n):
            p = start + 4 * i
            result.append(_Table(self.buf, p + struct.unpack_from("<I", self.buf, p)[0], self.source))
        return result


@dataclass
class Quantization:
    scale: np.ndarray  # float32, one per channel or a single value
    zero_point: np.ndarray  # int64, same length as scale
    quantized_dimension: int = 0
    min: np.ndarray | None = None
    max: np.ndarray | None = None


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type: str
    buffer: int
    quantization: Quantization | None
    data: bytes | None  # constant data, None for activations


@dataclass
class Operator:
    index: int
    op: str  # builtin name, e.g. "CONV_2D"
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class TfliteModel:
    source: str
    version: int
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    description: str | None = None

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def dequantize(self, index: int) -> np.ndarray:
        return dequantize(self.tensors[index], self.source)


def dequantize(t: Tensor, source: str = "tflite") -> np.ndarray:
    """Constant tensor data as float32: (q - zero_point) * scale, per channel when several scales."""
    if t.data is None:
        raise TfliteFormatError(f"{source}: tensor {t.index} ({t.name}) has no constant data")
    dtype = _dtype_of(t, source)
    count = int(np.prod(t.shape)) if t.shape else 1
    if len(t.data) != count * dtype.itemsize:
        raise TfliteFormatError(f"{source}: tensor {t.index} ({t.name}) shape {t.shape} {t.type} needs "
                                f"{count * dtype.itemsize} bytes, its buffer has {len(t.data)}")
    raw = np.frombuffer(t.data, dtype=dtype).reshape(t.shape)
    q = t.quantization
    if q is None or q.scale.size == 0 or t.type in ("float32", "float16", "float64"):
        return raw.astype(np.float32)
    values = raw.astype(np.float64)
    if q.scale.size == 1:
        out = (values - float(q.zero_point[0] if q.zero_point.size else 0)) * float(q.scale[0])
    else:
        axis = q.quantized_dimension
        if t.shape[axis] != q.scale.size:
            raise TfliteFormatError(f"{source}: tensor {t.name} has {q.scale.size} scales but dimension {axis} "
                                    f"of shape {t.shape} is {t.shape[axis]}")
        view = [1] * len(t.shape)
        view[axis] = -1
        zero = q.zero_point if q.zero_point.size == q.scale.size else np.zeros(q.scale.size, dtype=np.int64)
        out = (values - zero.reshape(view)) * q.scale.astype(np.float64).reshape(view)
    return out.astype(np.float32)


def _dtype_of(t: Tensor, source: str) -> np.dtype:
    for code, name in TENSOR_TYPE_NAMES.items():
        if name == t.type and code in TENSOR_TYPES:
            return TENSOR_TYPES[code]
    raise TfliteFormatError(f"{source}: tensor {t.name} has unsupported type {t.type}")


def read_tflite(path: str) -> TfliteModel:
    """Parse a .tflite file (main subgraph only)."""
    with open(path, "rb") as f:
        buf = f.read()
    return parse_tflite(buf, source=path)


def parse_tflite(buf: bytes, source: str = "tflite") -> TfliteModel:
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TfliteFormatError(f"{source}: not a TFLite file (file identifier {buf[4:8]!r}, expected b'TFL3')")
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0], source)
    version = model.scalar(0, "I")
    op_codes = []
    for code in model.tables(1):
        deprecated = code.scalar(0, "b")
        builtin = max(deprecated, code.scalar(3, "i"))  # newer files move codes > 127 to field 3
        op_codes.append(BUILTIN_OPS.get(builtin, f"BUILTIN_{builtin}") if builtin != 32 else
                        f"CUSTOM:{code.string(1)}")
    buffers = []
    for b in model.tables(4):
        span = b.vector_span(0)
        buffers.append(None if span is None or span[1] == 0 else bytes(buf[span[0]:span[0] + span[1]]))
    subgraphs = model.tables(2)
    if not subgraphs:
        raise TfliteFormatError(f"{source}: no subgraphs")
    graph = subgraphs[0]
    tensors = []
    for i, t in enumerate(graph.tables(0)):
        type_code = t.scalar(1, "b")
        buffer_index = t.scalar(2, "I")
        if buffer_index >= len(buffers):
            raise TfliteFormatError(f"{source}: tensor {i} names buffer {buffer_index} of {len(buffers)}")
        qt = t.table(4)
        quant = None
        if qt is not None:
            scale = qt.scalars(2, "<f4").copy()
            if scale.size:
                quant = Quantization(scale=scale, zero_point=qt.scalars(3, "<i8").copy(),
                                     quantized_dimension=qt.scalar(6, "i"),
                                     min=qt.scalars(0, "<f4").copy(), max=qt.scalars(1, "<f4").copy())
        tensors.append(Tensor(index=i, name=t.string(3) or "", shape=tuple(int(d) for d in t.scalars(0, "<i4")),
                              type=TENSOR_TYPE_NAMES.get(type_code, f"type{type_code}"), buffer=buffer_index,
                              quantization=quant, data=buffers[buffer_index]))
    operators = []
    for i, o in enumerate(graph.tables(3)):
        opcode_index = o.scalar(0, "I")
        if opcode_index >= len(op_codes):
            raise TfliteFormatError(f"{source}: operator {i} uses opcode {opcode_index} of {len(op_codes)}")
        options = {}
        option_type = o.scalar(3, "B")
        if option_type in _OPTION_TABLES:
            table = o.table(4)
            if table is not None:
                for fi, (name, fmt) in enumerate(_OPTION_TABLES[option_type][1]):
                    options[name] = table.scalar(fi, fmt, _OPTION_DEFAULTS.get(name, 0))
                if "padding" in options:
                    options["padding"] = PADDINGS.get(options["padding"], options["padding"])
                if "fused_activation_function" in options:
                    options["fused_activation_function"] = ACTIVATIONS.get(options["fused_activation_function"])
        operators.append(Operator(index=i, op=op_codes[opcode_index], inputs=[int(v) for v in o.scalars(1, "<i4")],
                                  outputs=[int(v) for v in o.scalars(2, "<i4")], options=options))
    return TfliteModel(source=source, version=version, tensors=tensors, operators=operators,
                       inputs=[int(v) for v in graph.scalars(1, "<i4")],
                       outputs=[int(v) for v in graph.scalars(2, "<i4")], description=model.string(3))
