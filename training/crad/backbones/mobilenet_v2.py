"""MobileNetV2 1.0 (224 px) in PyTorch, loadable from two sources:

- "mobilenet-v2": Google's quantization-aware-trained ImageNet model from the Coral test data
  (shared data set, backbones/coral_mobilenet_v2/mobilenet_v2_1.0_224_quant.tflite). BatchNorm is
  folded into the convolutions (conv with bias), weights are dequantized to float32. Its input
  tensor is uint8 with scale 1/128 and zero point 128: float = (255*x - 128)/128 for x in [0, 1],
  i.e. mean = std = 128/255 per channel.
- "mobilenet-v2-nsfwjs" (see nsfwjs.py): the Keras MobileNetV2 inside the nsfwjs npm package,
  BatchNorm unfolded (gamma/beta/moving stats, eps 1e-3).

Both: TF "SAME" padding (stride-2 layers pad (0, 1) on even sizes), ReLU6. Block numbering is
Keras': block 0 = "expanded_conv" (no expansion), blocks 1..16. The stride-8 tap is the output
of block 5 (32 ch), the stride-16 tap the output of block 12 (96 ch) by default; no layer after
the last tap is built unless the classifier is asked for (tests only).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import Backbone, BackboneWeightsError, shared_data_dir
from .tf_conv import TfConv, _copy
from .tflite import TfliteModel, read_tflite
from .tfjs_layers import TfjsModel

NAME = "mobilenet-v2"
# (expansion t, output channels c, repeats n, first stride s) for blocks 1..16 (block 0 is t=1, c=16)
_STAGES = [(6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
DEFAULT_TAP_BLOCKS = (5, 12)
# The Coral model's input quantization (checked against the file when loading)
CORAL_INPUT_SCALE = 1.0 / 128.0
CORAL_INPUT_ZERO_POINT = 128


def block_specs() -> list[tuple[int, int, int, int]]:
    """(input channels, output channels, stride, expansion) for blocks 0..16."""
    specs = [(STEM_CHANNELS, 16, 1, 1)]
    cin = 16
    for t, c, n, s in _STAGES:
        for i in range(n):
            specs.append((cin, c, s if i == 0 else 1, t))
            cin = c
    return specs


def block_strides() -> list[int]:
    """Total stride of each block's output (block 0 .. 16)."""
    total, result = 2, []
    for _, _, stride, _ in block_specs():
        total *= stride
        result.append(total)
    return result


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, folded: bool):
        super().__init__()
        hidden = cin * expansion
        unit = dict(batch_norm=not folded, bias=folded)
        self.expand = TfConv(cin, hidden, 1, **unit) if expansion != 1 else None
        self.depthwise = TfConv(hidden, hidden, 3, stride=stride, depthwise=True, **unit)
        self.project = TfConv(hidden, cout, 1, relu6=False, **unit)
        self.residual = stride == 1 and cin == cout

    def units(self) -> list[tuple[str, TfConv]]:
        named = [("expand", self.expand)] if self.expand is not None else []
        return named + [("depthwise", self.depthwise), ("project", self.project)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand is not None:
            y = self.expand(y)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetV2(Backbone):
    """MobileNetV2 1.0 returning the outputs of `tap_blocks` (stride 8 and 16).

    folded: BatchNorm folded into conv biases (TFLite) or kept as BatchNorm layers (Keras).
    classifier: None, or the widths of the dense layers after Conv_1 + global average pooling,
    e.g. [1001] for the Coral ImageNet head, [256, 128, 5] for nsfwjs (ReLU between them).
    """

    def __init__(self, name: str = NAME, folded: bool = True, tap_blocks: tuple[int, int] = DEFAULT_TAP_BLOCKS,
                 classifier: list[int] | None = None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.name = name
        self.weights_origin = "random init (no weights loaded)"
        self.mean = tuple(mean)
        self.std = tuple(std)
        specs = block_specs()
        strides = block_strides()
        if len(tap_blocks) != 2 or not 0 <= tap_blocks[0] < tap_blocks[1] < len(specs):
            raise ValueError(f"tap_blocks must be two increasing block numbers in 0..{len(specs) - 1}, got {tap_blocks}")
        self.tap_blocks = tuple(tap_blocks)
        self.tap_channels = [specs[b][1] for b in tap_blocks]
        self.tap_strides = [strides[b] for b in tap_blocks]
        self.folded = folded
        unit = dict(batch_norm=not folded, bias=folded)
        self.stem = TfConv(3, STEM_CHANNELS, 3, stride=2, **unit)
        last = len(specs) - 1 if classifier else tap_blocks[-1]
        self.blocks = nn.ModuleList(InvertedResidual(*specs[i], folded=folded) for i in range(last + 1))
        if classifier:
            self.last_conv = TfConv(specs[-1][1], LAST_CHANNELS, 1, **unit)
            widths = [LAST_CHANNELS] + list(classifier)
            self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        else:
            self.last_conv = None
            self.dense = None
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        taps = []
        for i in range(self.tap_blocks[-1] + 1):
            x = self.blocks[i](x)
            if i in self.tap_blocks:
                taps.append(x)
        return taps

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier logits (before softmax); needs a model built with classifier widths."""
        if self.dense is None:
            raise RuntimeError(f"{self.name} was built without its classifier")
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = F.adaptive_avg_pool2d(self.last_conv(x), 1).flatten(1)
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < len(self.dense) - 1:
                x = F.relu(x)
        return x

    def conv_units(self) -> list[tuple[str, TfConv]]:
        """Every conv unit in execution order with its Keras layer name."""
        units = [("Conv1", self.stem)]
        for i, block in enumerate(self.blocks):
            prefix = "expanded_conv" if i == 0 else f"block_{i}"
            units += [(f"{prefix}_{kind}", unit) for kind, unit in block.units()]
        if self.last_conv is not None:
            units.append(("Conv_1", self.last_conv))
        return units

    # ---- TFLite (Coral) weights -------------------------------------------------------------
    def load_tflite(self, model: TfliteModel) -> None:
        """Copy the dequantized weights of the TFLite MobileNetV2, op by op in execution order,
        checking each op's kind, stride, padding and fused activation against this network."""
        if not self.folded:
            raise ValueError("TFLite weights have BatchNorm folded: build MobileNetV2(folded=True)")
        _check_coral_input(model)
        convs = [op for op in model.operators if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        units = self.conv_units()
        expected_convs = len(block_specs()) * 3 - 1 + 2 + 1  # blocks, stem, Conv_1, logits conv
        if len(convs) != expected_convs:
            raise ValueError(f"{model.source}: {len(convs)} conv ops, a MobileNetV2 1.0 has {expected_convs}")
        for (name, unit), op in zip(units, convs):
            where = f"{model.source} op {op.index} ({name})"
            depthwise = unit.conv.groups > 1
            if op.op != ("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"):
                raise ValueError(f"{where}: is {op.op}, expected {'depthwise ' if depthwise else ''}conv")
            if (op.options.get("stride_h"), op.options.get("stride_w")) != (unit.stride, unit.stride):
                raise ValueError(f"{where}: stride {op.options.get('stride_h')}, expected {unit.stride}")
            if op.options.get("padding") != "same":
                raise ValueError(f"{where}: padding {op.options.get('padding')}, expected same")
            if op.options.get("fused_activation_function") != ("relu6" if unit.relu6 else None):
                raise ValueError(f"{where}: activation {op.options.get('fused_activation_function')}, "
                                 f"expected {'relu6' if unit.relu6 else 'none'}")
            unit.load_tf(model.dequantize(op.inputs[1]), "1hwc" if depthwise else "ohwi", where,
                         bias=model.dequantize(op.inputs[2]))
        if self.dense is not None:
            logits = convs[len(units)]
            kernel = model.dequantize(logits.inputs[1])  # (1001, 1, 1, 1280)
            _copy(self.dense[0].weight, kernel.reshape(kernel.shape[0], -1), f"{model.source} logits kernel")
            _copy(self.dense[0].bias, model.dequantize(logits.inputs[2]), f"{model.source} logits bias")

    # ---- Keras (tfjs layers) weights ----------------------------------------------------------
    def load_keras(self, model: TfjsModel) -> None:
        """Copy weights from a Keras MobileNetV2 (tfjs layers model), layer names as Keras'."""
        if self.folded:
            raise ValueError("Keras weights carry BatchNorm layers: build MobileNetV2(folded=False)")
        layers = {layer["name"]: layer for layer in model.layers()}
        w = model.weights

        def get(name: str) -> np.ndarray:
            if name not in w:
                raise ValueError(f"{model.source}: weight {name!r} missing (not a Keras MobileNetV2 1.0?)")
            return w[name]

        for name, unit in self.conv_units():
            layer = layers.get(name)
            if layer is None:
                raise ValueError(f"{model.source}: layer {name!r} not in the topology (not a Keras MobileNetV2?)")
            strides = layer["config"].get("strides", [1, 1])
            if list(strides) != [unit.stride, unit.stride]:
                raise ValueError(f"{model.source}: layer {name} has strides {strides}, expected {unit.stride}")
            bn_name = "bn_Conv1" if name == "Conv1" else ("Conv_1_bn" if name == "Conv_1" else f"{name}_BN")
            bn = {k: get(f"{bn_name}/{k}") for k in ("gamma", "beta", "moving_mean", "moving_variance")}
            depthwise = unit.conv.groups > 1
            kernel = get(f"{name}/depthwise_kernel" if depthwise else f"{name}/kernel")
            unit.load_tf(kernel, "hwc1" if depthwise else "hwio", f"{model.source} {name}", bn=bn)
        if self.dense is not None:
            for i, layer in enumerate(self.dense, start=1):
                _copy(layer.weight, get(f"dense_{i}/kernel").T, f"{model.source} dense_{i} kernel")
                _copy(layer.bias, get(f"dense_{i}/bias"), f"{model.source} dense_{i} bias")


def _check_coral_input(model: TfliteModel) -> None:
    t = model.tensor(model.inputs[0])
    q = t.quantization
    if t.type != "uint8" or q is None or q.scale.size != 1 or \
            not np.isclose(q.scale[0], CORAL_INPUT_SCALE) or int(q.zero_point[0]) != CORAL_INPUT_ZERO_POINT:
        raise ValueError(f"{model.source}: input tensor {t.name} is {t.type} with quantization "
                         f"{None if q is None else (q.scale.tolist(), q.zero_point.tolist())}; expected uint8, "
                         f"scale 1/128, zero point 128 (the normalisation this backbone declares)")


def coral_input_normalisation() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """mean/std on [0,1] RGB equivalent to the Coral model's uint8 input quantization:
    float = (255*x - zp) * scale = (x - zp/255) / (1/(255*scale))."""
    mean = CORAL_INPUT_ZERO_POINT / 255.0
    std = 1.0 / (255.0 * CORAL_INPUT_SCALE)
    return (mean,) * 3, (std,) * 3


def default_weights_path() -> str:
    return str(shared_data_dir() / "backbones" / "coral_mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")


def build(weights: str | None = None, random: bool = False, classifier: bool = False) -> MobileNetV2:
    """MobileNetV2 1.0 with Coral's ImageNet weights (TFLite file `weights`, default: shared data
    set). random=True skips loading (tests only). classifier=True adds the 1001-class ImageNet head."""
    mean, std = coral_input_normalisation()
    net = MobileNetV2(NAME, folded=True, classifier=[1001] if classifier else None, mean=mean, std=std)
    if random:
        return net
    path = weights or default_weights_path()
    if os.path.isdir(path):
        path = os.path.join(path, "mobilenet_v2_1.0_224_quant.tflite")
    if not os.path.isfile(path):
        raise BackboneWeightsError(
            f"{NAME}: weights file {path!r} not found. Pass --backbone-weights <mobilenet_v2_1.0_224_quant.tflite>; "
            f"it is in the shared data set under backbones/coral_mobilenet_v2 (set CRAD_SHARED_DATA if the "
            f"data set is not at ../shared/data)."
        )
    net.load_tflite(read_tflite(path))
    net.weights_origin = "imagenet (Coral mobilenet_v2_1.0_224_quant.tflite, dequantized)"
    return net.freeze()
