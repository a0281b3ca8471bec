"""MobileNetV1, width 0.75, 224 px, ImageNet weights from the TensorFlow.js layers model in the
shared data set (backbones/mobilenet_v1_0.75_224: model.json + 55 float32 shards).

Input: RGB scaled as x/127.5 - 1, i.e. mean = std = (0.5, 0.5, 0.5) on [0, 1] input.
Taps: conv_pw_5_relu (stride 8, 192 ch) and conv_pw_11_relu (stride 16, 384 ch). Layers after
the last tap are not built unless the ImageNet classifier is asked for (tests only).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import Backbone, BackboneWeightsError, shared_data_dir
from .tf_conv import TfConv
from .tfjs_layers import TfjsModel, load_tfjs_model

NAME = "mobilenet-v1-0.75"
ALPHA = 0.75
# (pointwise output channels at alpha 1.0, depthwise stride) for conv_dw_i / conv_pw_i, i = 1..13
_BLOCKS_ALPHA1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                  (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
_STEM_ALPHA1 = 32
TAP_BLOCKS = (5, 11)  # conv_pw_5_relu, conv_pw_11_relu
IMAGENET_CLASSES = 1000


def default_weights_dir() -> str:
    return str(shared_data_dir() / "backbones" / "mobilenet_v1_0.75_224")


class MobileNetV1(Backbone):
    """MobileNetV1 (TF-slim / Keras layout) returning the stride-8 and stride-16 taps."""

    def __init__(self, alpha: float = ALPHA, classifier: bool = False):
        super().__init__()
        self.name = NAME
        self.weights_origin = "random init (no weights loaded)"
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.5, 0.5, 0.5)
        self.tap_strides = [8, 16]
        stem = int(_STEM_ALPHA1 * alpha)
        self.conv1 = TfConv(3, stem, 3, stride=2)
        last_block = len(_BLOCKS_ALPHA1) if classifier else TAP_BLOCKS[-1]
        self.dw = nn.ModuleList()
        self.pw = nn.ModuleList()
        cin = stem
        channels = []
        for filters, stride in _BLOCKS_ALPHA1[:last_block]:
            cout = int(filters * alpha)
            self.dw.append(TfConv(cin, cin, 3, stride=stride, depthwise=True))
            self.pw.append(TfConv(cin, cout, 1))
            channels.append(cout)
            cin = cout
        self.tap_channels = [channels[i - 1] for i in TAP_BLOCKS]
        # ImageNet head (Keras: global average pool -> 1x1 conv_preds with bias); tests only.
        self.classifier = nn.Conv2d(cin, IMAGENET_CLASSES, 1) if classifier else None
        self.freeze()

    def _blocks(self, x: torch.Tensor, last: int):
        x = self.conv1(x)
        for i in range(last):
            x = self.pw[i](self.dw[i](x))
            yield i + 1, x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for block, out in self._blocks(x, TAP_BLOCKS[-1]):
            if block in TAP_BLOCKS:
                taps.append(out)
        return taps

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000); needs classifier=True."""
        if self.classifier is None:
            raise RuntimeError("MobileNetV1 was built without its classifier (classifier=False)")
        for _, out in self._blocks(x, len(self.pw)):
            x = out
        x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(x).flatten(1)

    def load_tfjs(self, model: TfjsModel) -> None:
        """Copy weights from the Keras-converted tfjs model, checking its topology agrees."""
        _check_topology(model, self)
        w = model.weights

        def bn(prefix: str) -> dict[str, np.ndarray]:
            return {k: _get(w, f"{prefix}/{k}", model.source) for k in ("gamma", "beta", "moving_mean", "moving_variance")}

        self.conv1.load_tf(_get(w, "conv1/kernel", model.source), "hwio", "conv1", bn=bn("conv1_bn"))
        for i, (dw, pw) in enumerate(zip(self.dw, self.pw), start=1):
            dw.load_tf(_get(w, f"conv_dw_{i}/depthwise_kernel", model.source), "hwc1", f"conv_dw_{i}", bn=bn(f"conv_dw_{i}_bn"))
            pw.load_tf(_get(w, f"conv_pw_{i}/kernel", model.source), "hwio", f"conv_pw_{i}", bn=bn(f"conv_pw_{i}_bn"))
        if self.classifier is not None:
            kernel = _get(w, "conv_preds/kernel", model.source)
            bias = _get(w, "conv_preds/bias", model.source)
            with torch.no_grad():
                self.classifier.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                self.classifier.bias.copy_(torch.from_numpy(bias))
        self.weights_origin = "imagenet (tfjs mobilenet_v1_0.75_224)"


def _get(weights: dict[str, np.ndarray], name: str, source: str) -> np.ndarray:
    if name not in weights:
        raise ValueError(f"{source}: weight {name!r} is missing (not a MobileNetV1 0.75 tfjs model?)")
    return weights[name]


def _check_topology(model: TfjsModel, net: MobileNetV1) -> None:
    """The weights file describes its own layers: refuse one whose widths or strides differ."""
    layers = {layer["name"]: layer for layer in model.layers()}
    expected = [("conv1", net.conv1)] + [(f"conv_dw_{i}", m) for i, m in enumerate(net.dw, 1)] + \
               [(f"conv_pw_{i}", m) for i, m in enumerate(net.pw, 1)]
    for name, unit in expected:
        layer = layers.get(name)
        if layer is None:
            raise ValueError(f"{model.source}: layer {name!r} not in the topology (not a MobileNetV1?)")
        config = layer["config"]
        if list(config.get("strides", [1, 1])) != [unit.stride, unit.stride]:
            raise ValueError(f"{model.source}: layer {name} has strides {config.get('strides')}, expected {unit.stride}")
        if "filters" in config and config["filters"] != unit.conv.out_channels:
            raise ValueError(f"{model.source}: layer {name} has {config['filters']} filters, expected "
                             f"{unit.conv.out_channels} (only alpha {ALPHA} is supported)")
        if config.get("padding") != "same":
            raise ValueError(f"{model.source}: layer {name} uses padding {config.get('padding')!r}, expected 'same'")


def build(weights: str | None = None, random: bool = False, classifier: bool = False) -> MobileNetV1:
    """MobileNetV1 0.75 with ImageNet weights from `weights` (the folder holding model.json),
    default: the shared data set. random=True skips loading (tests only; the registry warns)."""
    net = MobileNetV1(classifier=classifier)
    if random:
        return net
    folder = weights or default_weights_dir()
    if os.path.isfile(folder) and os.path.basename(folder) == "model.json":
        folder = os.path.dirname(folder)
    if not os.path.isfile(os.path.join(folder, "model.json")):
        raise BackboneWeightsError(
            f"{NAME}: no model.json in {folder!r}. Pass --backbone-weights <folder with model.json and its "
            f"group*-shard* files>; the weights are the shared data set's backbones/mobilenet_v1_0.75_224 "
            f"(set CRAD_SHARED_DATA if it is not at ../shared/data)."
        )
    net.load_tfjs(load_tfjs_model(folder))
    return net.freeze()
