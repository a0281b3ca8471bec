"""Frozen feature extractors ("backbones") and the registry that builds them by name.

Every backbone returns exactly two taps: a stride-8 map and a stride-16 map. The CRAD neck
upsamples the second to the first and concatenates them, so C = sum(tap_channels) and H, W are
the stride-8 tap's size. A backbone never trains: it is always in eval mode with requires_grad
False, whatever `.train()` is called with.

Builders are registered by dotted path ("module:function") so that importing this package does
not import every backbone family (and a family whose file is broken only fails when used).
A builder is called as `builder(weights, random, **options)` and returns a frozen Backbone:
  - weights: path to a weight file, or None for the family's documented default location;
  - random: True builds the architecture with random weights and reads no file (tests only);
  - options: whatever the backbone put in `backbone.options` (architecture choices that a
    checkpoint must reproduce); most backbones have none.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

# training/crad/backbones/__init__.py -> the repository root is three folders up.
REPO_ROOT = Path(__file__).resolve().parents[3]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def shared_data_dir() -> Path:
    """Where the read-only shared data lives: $CRAD_SHARED_DATA, else ../shared/data from the repo root."""
    configured = os.environ.get("CRAD_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


class Backbone(nn.Module):
    """Base class of the frozen feature extractors.

    Subclasses set the attributes below in __init__, implement forward(x) -> [stride-8 tap,
    stride-16 tap] on input already normalised with (mean, std), and call `self.freeze()` once
    their weights are loaded.
    """

    name: str
    weights_origin: str
    tap_channels: list[int]
    tap_strides: list[int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.weights_origin = ""
        self.tap_channels = []
        self.tap_strides = []
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        # JSON-able architecture choices passed back to the builder when a checkpoint rebuilds it.
        self.options: dict = {}

    def freeze(self) -> "Backbone":
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen by contract: BatchNorm must keep its ImageNet statistics even inside a
        # detector that is put in training mode.
        return super().train(False)


class RandomBackboneWarning(UserWarning):
    """A backbone was built with random weights: its features are meaningless (tests only)."""


class BackboneWeightsError(FileNotFoundError):
    """A backbone's weight file is missing or unreadable; the message says where to get it."""


# name -> "module:function". Each family's owner adds its own line here.
_REGISTRY: dict[str, str] = {
    "efficientnet-b4": "crad.backbones.efficientnet_b4:build",
    "mobilenet-v1-0.75": "crad.backbones.mobilenet_v1:build",
    "mobilenet-v2": "crad.backbones.mobilenet_v2:build",
    "mobilenet-v2-nsfwjs": "crad.backbones.nsfwjs:build",
}


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., Backbone]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    module_name, function_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def construct_backbone(name: str, weights: str | None, random: bool, options: Mapping | None = None) -> Backbone:
    """Build without the random-weights warning: for callers that load weights right after
    (a checkpoint holds the backbone's state). Everyone else uses build_backbone."""
    backbone = _builder(name)(weights, random, **dict(options or {}))
    if not isinstance(backbone, Backbone):
        raise TypeError(f"builder of backbone {name!r} returned {type(backbone).__name__}, not a Backbone")
    if len(backbone.tap_channels) != 2 or list(backbone.tap_strides) != [8, 16]:
        raise ValueError(
            f"backbone {name!r} must declare two taps with strides [8, 16], "
            f"got channels {backbone.tap_channels} strides {backbone.tap_strides}"
        )
    return backbone.freeze()


def build_backbone(name: str, weights: str | None = None, random: bool = False, **options) -> Backbone:
    """Build backbone `name` from `weights` (None: its default location), or with random
    weights when random=True, which is for tests only and says so loudly."""
    if random:
        message = (
            f"backbone {name!r} built with RANDOM weights: its features carry no ImageNet knowledge, "
            "so a detector on it is only good for tests"
        )
        print(f"\n*** WARNING: {message} ***\n", file=sys.stderr)
        warnings.warn(message, RandomBackboneWarning, stacklevel=2)
    return construct_backbone(name, weights, random, options)


def resolve_weights_file(backbone: str, explicit: str | None, default: Path | str | None, how_to_get: str) -> Path:
    """The weight file to read: the explicit path if given, else the default location.
    A missing file raises BackboneWeightsError naming the path, where to get it, and the flag."""
    path = Path(explicit) if explicit else (Path(default) if default else None)
    if path is None or not path.is_file():
        where = f"{str(path)!r} does not exist" if path is not None else "no path was given and there is no default"
        raise BackboneWeightsError(
            f"weights for backbone {backbone!r}: {where}. {how_to_get} "
            "Pass the file's path with --backbone-weights (no weights are ever downloaded)."
        )
    return path


def load_mapped_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` (already in the module's own key names) into `module`, requiring every key of
    the module to be present with the right shape. BatchNorm's num_batches_tracked counters are
    optional (converted checkpoints often lack them and eval mode never reads them)."""
    own = module.state_dict()
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    wrong_shape = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and tuple(state[key].shape) != tuple(own[key].shape)
    ]
    if missing or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (first: {', '.join(missing[:5])})")
        if wrong_shape:
            details.append(f"{len(wrong_shape)} with the wrong shape (first: {'; '.join(wrong_shape[:5])})")
        raise ValueError(f"{source}: weights do not fit the model: " + "; ".join(details))
    merged = {key: (state[key] if key in state else value) for key, value in own.items()}
    module.load_state_dict(merged, strict=True)
