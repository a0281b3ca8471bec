"""Test helper: executes a uint8 TFLite graph with integer arithmetic in numpy (NHWC, the file's
own weight layouts), independently of the PyTorch MobileNetV2, so that the float model built
from the dequantized weights can be checked against the quantized graph op by op.

Per op: int32 accumulation of (q_in - zp_in) * (q_w - zp_w) + bias, requantized to the output's
scale with float64 rounding (TFLite uses a fixed-point multiplier: it may differ by 1 step).
"""

from __future__ import annotations

import numpy as np

from crad.backbones.tflite import TfliteModel


def quant_params(model: TfliteModel, index: int) -> tuple[float, int]:
    q = model.tensors[index].quantization
    return float(q.scale[0]), int(q.zero_point[0])


def dequantized(model: TfliteModel, values: dict, index: int) -> np.ndarray:
    scale, zero = quant_params(model, index)
    return (values[index] - zero) * scale


def _raw(model: TfliteModel, index: int) -> np.ndarray:
    t = model.tensors[index]
    dtype = {"uint8": np.uint8, "int32": np.int32}[t.type]
    return np.frombuffer(t.data, dtype=dtype).reshape(t.shape).astype(np.int64)


def _same(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def _activation_range(activation, scale: float, zero: int) -> tuple[int, int]:
    low, high = 0, 255
    if activation in ("relu", "relu6"):
        low = max(low, zero)
    if activation == "relu6":
        high = min(high, zero + int(round(6.0 / scale)))
    return low, high


def run_uint8(model: TfliteModel, image_u8: np.ndarray) -> dict[int, np.ndarray]:
    """Run the graph on uint8 NHWC images; returns every tensor's quantized values by index."""
    values = {model.inputs[0]: image_u8.astype(np.int64)}
    for op in model.operators:
        opt = op.options
        out = op.outputs[0]
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            xi, wi, bi = op.inputs
            s_in, z_in = quant_params(model, xi)
            s_w, z_w = quant_params(model, wi)
            s_out, z_out = quant_params(model, out)
            w = _raw(model, wi) - z_w
            x = values[xi] - z_in
            n, h, width, c = x.shape
            kh, kw, stride = w.shape[1], w.shape[2], opt["stride_h"]
            top, bottom, oh = _same(h, kh, stride)
            left, right, ow = _same(width, kw, stride)
            x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # zero in real terms
            acc = np.zeros((n, oh, ow, w.shape[0] if op.op == "CONV_2D" else c), np.int64)
            for dy in range(kh):
                for dx in range(kw):
                    patch = x[:, dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride, :]
                    acc += patch @ w[:, dy, dx, :].T if op.op == "CONV_2D" else patch * w[0, dy, dx, :]
            acc += _raw(model, bi)
            low, high = _activation_range(opt["fused_activation_function"], s_out, z_out)
            values[out] = np.clip(np.round(acc * (s_in * s_w / s_out)) + z_out, low, high).astype(np.int64)
        elif op.op == "ADD":
            a, b = op.inputs
            s_out, z_out = quant_params(model, out)
            real = dequantized(model, values, a) + dequantized(model, values, b)
            low, high = _activation_range(opt["fused_activation_function"], s_out, z_out)
            values[out] = np.clip(np.round(real / s_out) + z_out, low, high).astype(np.int64)
        elif op.op == "AVERAGE_POOL_2D":
            s_out, z_out = quant_params(model, out)
            real = dequantized(model, values, op.inputs[0]).mean(axis=(1, 2), keepdims=True)
            values[out] = np.clip(np.round(real / s_out) + z_out, 0, 255).astype(np.int64)
        elif op.op == "RESHAPE":
            values[out] = values[op.inputs[0]].reshape(len(image_u8), -1)
        elif op.op == "SOFTMAX":
            continue
        else:
            raise ValueError(f"reference interpreter does not implement {op.op}")
    return values
