"""EfficientNet-B4 up to block 21: the paper's backbone, with the reference's exact quirks.

Only the stem and blocks 0..21 are built (the reference computes the whole network and throws
the head away). Taps are the raw outputs of block 9 (56 channels, stride 8) and block 21
(160 channels, stride 16): after BatchNorm and the residual add, with no activation.

Two weight-file layouts are read, and each gets the architecture its weights were trained with:
  - EfficientNet-PyTorch (`efficientnet-b4-6ed6700e.pth`, the TensorFlow port the paper uses):
    TF "same" padding computed statically for a 380 px image, BatchNorm eps 1e-3. At 224 px this
    makes block 6 (k5, s2) pad (2,2) where true SAME would pad (1,2); we keep it on purpose so
    that features match the reference.
  - torchvision `efficientnet_b4` (weights trained in PyTorch): symmetric padding (k-1)/2 and
    BatchNorm eps 1e-5, exactly as torchvision defines the network. Using these weights is a
    deliberate deviation from the paper's backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    load_mapped_state,
    resolve_weights_file,
    shared_data_dir,
)

WIDTH_MULTIPLIER = 1.4
DEPTH_MULTIPLIER = 1.8
REFERENCE_IMAGE_SIZE = 380  # B4's native resolution: the reference's static pads are computed for it
TAP_BLOCKS = (9, 21)
LAST_BLOCK = TAP_BLOCKS[-1]

PADDING_REFERENCE = "tf-static-380"
PADDING_SYMMETRIC = "symmetric"

# EfficientNet-B0 stages before scaling: (expand ratio, kernel, stride, in, out, repeats).
_B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

CHECKPOINT_NAME = "efficientnet-b4-6ed6700e.pth"
HOW_TO_GET_WEIGHTS = (
    f"On a machine with internet, get {CHECKPOINT_NAME} (EfficientNet-PyTorch release 1.0: "
    f"https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/{CHECKPOINT_NAME}) "
    "or torchvision's efficientnet_b4 weights (efficientnet_b4_rwightman-7eb33cd5.pth from "
    "download.pytorch.org/models) and copy it here."
)


def round_filters(channels: int, divisor: int = 8) -> int:
    """Width scaling as EfficientNet defines it: scale, round to a multiple of 8, never lose >10%."""
    scaled = channels * WIDTH_MULTIPLIER
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int) -> int:
    return int(math.ceil(DEPTH_MULTIPLIER * repeats))


@dataclass(frozen=True)
class BlockSpec:
    index: int
    stage: int  # 0..6
    position: int  # index of the block inside its stage
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    se_channels: int  # squeeze width: a quarter of the block's *input* channels


def block_specs() -> list[BlockSpec]:
    """All 32 blocks of B4 (we build the first 22)."""
    specs: list[BlockSpec] = []
    for stage, (expand, kernel, stride, cin, cout, repeats) in enumerate(_B0_STAGES):
        cin, cout = round_filters(cin), round_filters(cout)
        for position in range(round_repeats(repeats)):
            block_in = cin if position == 0 else cout
            specs.append(
                BlockSpec(
                    index=len(specs),
                    stage=stage,
                    position=position,
                    expand_ratio=expand,
                    kernel=kernel,
                    stride=stride if position == 0 else 1,
                    in_channels=block_in,
                    out_channels=cout,
                    se_channels=max(1, int(block_in * 0.25)),
                )
            )
    return specs


def static_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after) for an input of `size` pixels."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class PaddedConv2d(nn.Conv2d):
    """Conv2d with a fixed, possibly asymmetric zero padding (left, right, top, bottom)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, pads: tuple[int, int, int, int], groups: int = 1, bias: bool = False):
        left, right, top, bottom = pads
        symmetric = left == right and top == bottom
        super().__init__(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=bias, padding=(top, left) if symmetric else 0)
        self.pads = tuple(pads)
        self._explicit_pad = None if symmetric else self.pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._explicit_pad is not None:
            x = F.pad(x, self._explicit_pad)
        return super().forward(x)


def _conv_pads(mode: str, size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    if mode == PADDING_REFERENCE:
        before, after = static_same_padding(size, kernel, stride)
    elif mode == PADDING_SYMMETRIC:
        before = after = (kernel - 1) // 2
    else:
        raise ValueError(f"efficientnet-b4: unknown padding mode {mode!r} (use {PADDING_REFERENCE!r} or {PADDING_SYMMETRIC!r})")
    return before, after, before, after


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation. Attribute names follow the
    EfficientNet-PyTorch checkpoint so its keys load unchanged."""

    def __init__(self, spec: BlockSpec, padding: str, size: int, bn_eps: float):
        super().__init__()
        self.spec = spec
        hidden = spec.in_channels * spec.expand_ratio
        if spec.expand_ratio != 1:
            self._expand_conv = nn.Conv2d(spec.in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=bn_eps, momentum=0.01)
        self._depthwise_conv = PaddedConv2d(hidden, hidden, spec.kernel, spec.stride, _conv_pads(padding, size, spec.kernel, spec.stride), groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=bn_eps, momentum=0.01)
        self._se_reduce = nn.Conv2d(hidden, spec.se_channels, 1, bias=True)
        self._se_expand = nn.Conv2d(spec.se_channels, hidden, 1, bias=True)
        self._project_conv = nn.Conv2d(hidden, spec.out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, eps=bn_eps, momentum=0.01)
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.spec.expand_ratio != 1:
            x = _swish(self._bn0(self._expand_conv(x)))
        x = _swish(self._bn1(self._depthwise_conv(x)))
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self._se_expand(_swish(self._se_reduce(squeezed))))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetB4Taps(Backbone):
    """Stem + blocks 0..21 of EfficientNet-B4; forward returns [block 9 output, block 21 output]."""

    def __init__(self, padding: str = PADDING_REFERENCE, bn_eps: float = 1e-3, weights_origin: str = "random"):
        super().__init__()
        self.name = "efficientnet-b4"
        self.weights_origin = weights_origin
        self.options = {"padding": padding, "bn_eps": bn_eps}
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        specs = block_specs()[: LAST_BLOCK + 1]
        self.tap_channels = [specs[i].out_channels for i in TAP_BLOCKS]
        self.tap_strides = [8, 16]

        stem_channels = round_filters(32)
        self._conv_stem = PaddedConv2d(3, stem_channels, 3, 2, _conv_pads(padding, REFERENCE_IMAGE_SIZE, 3, 2))
        self._bn0 = nn.BatchNorm2d(stem_channels, eps=bn_eps, momentum=0.01)
        # Static pads depend on the feature size each block sees at the reference resolution.
        size = math.ceil(REFERENCE_IMAGE_SIZE / 2)
        blocks = []
        for spec in specs:
            blocks.append(MBConvBlock(spec, padding, size, bn_eps))
            size = math.ceil(size / spec.stride)
        self._blocks = nn.ModuleList(blocks)
        self.freeze()

    def depthwise_pads(self, block_index: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding of a block's depthwise convolution."""
        return self._blocks[block_index]._depthwise_conv.pads

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = _swish(self._bn0(self._conv_stem(x)))
        taps = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in TAP_BLOCKS:
                taps.append(x)
        return taps


# ---- weight files --------------------------------------------------------------------------

LAYOUT_EFFICIENTNET_PYTORCH = "efficientnet-pytorch"
LAYOUT_TORCHVISION = "torchvision"


def _unwrap_state(obj, source: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual wrappers ({"state_dict": ...}, {"model": ...})."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
        state = {}
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                state[key[len("module."):] if key.startswith("module.") else key] = value
        if state:
            return state
    raise ValueError(f"{source}: not a PyTorch state dict of EfficientNet-B4 weights")


def detect_layout(state: Mapping[str, torch.Tensor], source: str) -> str:
    if "_conv_stem.weight" in state:
        return LAYOUT_EFFICIENTNET_PYTORCH
    if "features.0.0.weight" in state:
        return LAYOUT_TORCHVISION
    sample = ", ".join(list(state)[:5])
    raise ValueError(
        f"{source}: unrecognised EfficientNet-B4 key layout (expected EfficientNet-PyTorch keys like "
        f"'_conv_stem.weight' or torchvision keys like 'features.0.0.weight'; file starts with: {sample})"
    )


def _torchvision_block_prefix(spec: BlockSpec) -> str:
    # torchvision: features.0 is the stem, features.1..7 the stages, each a list of MBConv.
    return f"features.{spec.stage + 1}.{spec.position}.block"


def torchvision_key_map(model: EfficientNetB4Taps) -> dict[str, str]:
    """Our key -> torchvision key, for every tensor of `model`."""
    bn_suffixes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    mapping = {"_conv_stem.weight": "features.0.0.weight"}
    mapping.update({f"_bn0.{s}": f"features.0.1.{s}" for s in bn_suffixes})
    for index, block in enumerate(model._blocks):
        spec = block.spec
        tv = _torchvision_block_prefix(spec)
        ours = f"_blocks.{index}"
        # Without an expansion conv, torchvision's sequence starts at the depthwise conv.
        offset = 1 if spec.expand_ratio != 1 else 0
        if spec.expand_ratio != 1:
            mapping[f"{ours}._expand_conv.weight"] = f"{tv}.0.0.weight"
            mapping.update({f"{ours}._bn0.{s}": f"{tv}.0.1.{s}" for s in bn_suffixes})
        mapping[f"{ours}._depthwise_conv.weight"] = f"{tv}.{offset}.0.weight"
        mapping.update({f"{ours}._bn1.{s}": f"{tv}.{offset}.1.{s}" for s in bn_suffixes})
        mapping[f"{ours}._se_reduce.weight"] = f"{tv}.{offset + 1}.fc1.weight"
        mapping[f"{ours}._se_reduce.bias"] = f"{tv}.{offset + 1}.fc1.bias"
        mapping[f"{ours}._se_expand.weight"] = f"{tv}.{offset + 1}.fc2.weight"
        mapping[f"{ours}._se_expand.bias"] = f"{tv}.{offset + 1}.fc2.bias"
        mapping[f"{ours}._project_conv.weight"] = f"{tv}.{offset + 2}.0.weight"
        mapping.update({f"{ours}._bn2.{s}": f"{tv}.{offset + 2}.1.{s}" for s in bn_suffixes})
    own = set(model.state_dict())
    return {key: value for key, value in mapping.items() if key in own}


def map_state(model: EfficientNetB4Taps, state: Mapping[str, torch.Tensor], layout: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename `state` into the model's own keys. Returns (mapped state, file keys left unused);
    the unused keys are the layers after block 21 and the classifier head."""
    if layout == LAYOUT_EFFICIENTNET_PYTORCH:
        key_map = {key: key for key in model.state_dict()}
    elif layout == LAYOUT_TORCHVISION:
        key_map = torchvision_key_map(model)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    mapped = {ours: state[theirs] for ours, theirs in key_map.items() if theirs in state}
    used = {key_map[ours] for ours in mapped}
    unused = [key for key in state if key not in used]
    return mapped, unused


def load_weights_file(path: str, padding: str | None = None, bn_eps: float | None = None) -> EfficientNetB4Taps:
    """Build the backbone for the weight file at `path`, in the architecture its layout implies
    unless padding / bn_eps are given explicitly."""
    source = str(path)
    try:
        raw = torch.load(path, map_location="cpu")
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{source}: cannot read as a PyTorch checkpoint ({error})") from error
    state = _unwrap_state(raw, source)
    layout = detect_layout(state, source)
    if layout == LAYOUT_EFFICIENTNET_PYTORCH:
        default_padding, default_eps, origin = PADDING_REFERENCE, 1e-3, "imagenet (EfficientNet-PyTorch TF port"
    else:
        default_padding, default_eps, origin = PADDING_SYMMETRIC, 1e-5, "imagenet (torchvision efficientnet_b4 layout"
    model = EfficientNetB4Taps(padding or default_padding, default_eps if bn_eps is None else bn_eps)
    mapped, _unused = map_state(model, state, layout)
    load_mapped_state(model, mapped, source)
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    model.weights_origin = f"{origin}, {name})"
    return model


def default_weights_path():
    return shared_data_dir() / "backbones" / "efficientnet-b4" / CHECKPOINT_NAME


def build(weights: str | None, random: bool, padding: str | None = None, bn_eps: float | None = None) -> EfficientNetB4Taps:
    if random:
        return EfficientNetB4Taps(padding or PADDING_REFERENCE, 1e-3 if bn_eps is None else bn_eps)
    path = resolve_weights_file("efficientnet-b4", weights, default_weights_path(), HOW_TO_GET_WEIGHTS)
    return load_weights_file(str(path), padding, bn_eps)
