"""The CRAD model, in the order of the spec's section 1.

    image [N,3,S,S] RGB in [0,1]
      -> normalise (mean/std of the backbone)              CradDetector.features
      -> frozen backbone: stride-8 tap, stride-16 tap
      -> neck: stride-16 tap upsampled to the stride-8 size (bilinear, align_corners=True),
         concatenated -> X [N,C,H,W]; with neck_pool k > 1 (an option, off by default: the
         spec's X is unpooled) X is then averaged over each position's k x k neighbourhood
         (stride 1, the border averaging only real positions), PatchCore's local aggregation:
         each feature describes a patch a little larger than its receptive-field centre, so a
         texture shifted by a pixel or two reconstructs alike.
      -> CradModule: continuous grids sampled at predicted coordinates, decoder, fusion
         -> map [N,1,H,W] = (1-s) * ||R - X||                CradDetector.head_forward
      -> upsample to S x S (bilinear, align_corners=True), 21x21 box smoothing, image score
                                                             CradDetector.forward

C, H and W come from the backbone's taps at the chosen input size; nothing assumes B4 at 224.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, build_backbone, construct_backbone
from .files import atomic_open
from .scores import image_score, smooth_map

GLOBAL_GRID_SIZE = 4
LOCAL_GRID_SIZE = 8
DECODER_BLOCKS = 11
JITTER_PROBABILITY = 0.5
JITTER_SIGMA = 0.05
FUSION_INDICATOR_SCALE = 0.05  # ind = 1 - round(clamp(0.05 * m, 0, 1)): 1 where m <= 10
FUSION_INDICATOR_WEIGHT = 0.3
FUSION_COSINE_WEIGHT = 0.7
COSINE_EPS = 1e-8
INIT_STD = 0.01

# Named variants fix the decoder expansion E as a multiple of C (C = 216 for B4: 864 and 216).
VARIANT_EXPANSION_FACTOR = {"crad": 4, "crad-s": 1}
SAMPLING_MODES = ("gridsample", "tent")


def resolve_expansion(variant: str, channels: int, expansion: int | None) -> int:
    """E for a variant: "crad" -> 4C, "crad-s" -> C, any other name -> the explicit E."""
    if variant in VARIANT_EXPANSION_FACTOR:
        expected = VARIANT_EXPANSION_FACTOR[variant] * channels
        if expansion is not None and expansion != expected:
            raise ValueError(
                f"variant {variant!r} has E = {expected} with this backbone (C = {channels}); got E = {expansion}. "
                "Name a custom variant to use another E."
            )
        return expected
    if expansion is None or expansion < 4:
        raise ValueError(f"custom variant {variant!r} needs an explicit E >= 4 (got {expansion})")
    return int(expansion)


# ---- sampling of the continuous grids (spec section 1, steps 3-5) ---------------------------

def tent_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear interpolation weights of every node of a size x size grid for points `coords`
    (..., 2) in [-1,1] grid units (channel 0 = width, 1 = height; align_corners=False, zeros
    outside). Returns (..., size*size) ordered row-major (height, then width)."""
    positions = ((coords + 1.0) * size - 1.0) / 2.0
    nodes = torch.arange(size, dtype=coords.dtype, device=coords.device)
    weight_x = torch.relu(1.0 - torch.abs(positions[..., 0:1] - nodes))
    weight_y = torch.relu(1.0 - torch.abs(positions[..., 1:2] - nodes))
    return (weight_y.unsqueeze(-1) * weight_x.unsqueeze(-2)).flatten(-2)


def _grid_as_matrix(grid: torch.Tensor) -> torch.Tensor:
    """(1, K, S, S) grid -> (S*S, K) matrix, rows in the order of tent_weights."""
    channels = grid.shape[1]
    return grid.reshape(channels, -1).transpose(0, 1)


def sample_global(global_grid: torch.Tensor, coords: torch.Tensor, sampling: str) -> torch.Tensor:
    """One bilinear blend of the global grid per image: (1,K,S,S) at (B,2) -> (B,K)."""
    channels = global_grid.shape[1]
    if sampling == "gridsample":
        sampled = F.grid_sample(global_grid, coords.unsqueeze(0).unsqueeze(2), mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.reshape(channels, -1).transpose(0, 1)  # (1,K,B,1) -> (B,K)
    if sampling == "tent":
        return torch.matmul(tent_weights(coords, global_grid.shape[-1]), _grid_as_matrix(global_grid))
    raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLING_MODES}")


def sample_local(local_grid: torch.Tensor, coords: torch.Tensor, sampling: str) -> torch.Tensor:
    """The local grid (1,C,S,S) sampled at every location's coordinates (B,2,H,W) -> (B,C,H,W)."""
    points = coords.permute(0, 2, 3, 1)  # (B,H,W,2)
    if sampling == "gridsample":
        grid = local_grid.expand(coords.shape[0], -1, -1, -1)
        return F.grid_sample(grid, points, mode="bilinear", padding_mode="zeros", align_corners=False)
    if sampling == "tent":
        sampled = torch.matmul(tent_weights(points, local_grid.shape[-1]), _grid_as_matrix(local_grid))
        return sampled.permute(0, 3, 1, 2)
    raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLING_MODES}")


# ---- decoder -------------------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Linear(channels, channels // 4, bias=False)
        self.expand = nn.Linear(channels // 4, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.hardsigmoid(self.expand(F.relu(self.reduce(x.mean(dim=(2, 3))))))
        return x * weights.unsqueeze(-1).unsqueeze(-1)


class MobileBottleneck(nn.Module):
    """1x1 expand -> BN -> hard-swish -> depthwise 3x3 -> BN -> SE -> hard-swish -> 1x1 -> BN, + input."""

    def __init__(self, channels: int, expansion: int):
        super().__init__()
        self.expand = nn.Conv2d(channels, expansion, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(expansion)
        self.depthwise = nn.Conv2d(expansion, expansion, 3, padding=1, groups=expansion, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(expansion)
        self.squeeze_excite = SqueezeExcite(expansion)
        self.project = nn.Conv2d(expansion, channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.hardswish(self.expand_bn(self.expand(x)))
        h = self.depthwise_bn(self.depthwise(h))
        h = F.hardswish(self.squeeze_excite(h))
        return x + self.project_bn(self.project(h))


# ---- the CRAD module -------------------------------------------------------------------------

class CradModule(nn.Module):
    """Continuous memory: grids sampled at coordinates predicted from X, decoded into a
    reconstruction R, fused with X. forward(X) -> (F fused, R, map (B,1,H,W))."""

    def __init__(self, C: int, H: int, W: int, E: int, sampling: str = "gridsample"):
        super().__init__()
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLING_MODES}")
        self.C, self.H, self.W, self.E = C, H, W, E
        self.sampling = sampling
        self.jitter_probability = JITTER_PROBABILITY
        self.jitter_sigma = JITTER_SIGMA
        self.local_grid = nn.Parameter(torch.empty(1, C, LOCAL_GRID_SIZE, LOCAL_GRID_SIZE))
        self.global_grid = nn.Parameter(torch.empty(1, C * H * W, GLOBAL_GRID_SIZE, GLOBAL_GRID_SIZE))
        self.coord_global = nn.Sequential(nn.Linear(C, C), nn.Tanh(), nn.Linear(C, 2), nn.Tanh())
        self.coord_local = nn.Sequential(nn.Conv2d(C, C, 1), nn.Tanh(), nn.Conv2d(C, 2, 1), nn.Tanh())
        self.decoder = nn.Sequential(*[MobileBottleneck(2 * C, E) for _ in range(DECODER_BLOCKS)])
        self.recover = nn.Conv2d(2 * C, C, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.local_grid)
        nn.init.xavier_normal_(self.global_grid)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, 0.0, INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def grid_parameters(self) -> list[nn.Parameter]:
        return [self.local_grid, self.global_grid]

    def non_grid_parameters(self) -> list[nn.Parameter]:
        grids = {id(p) for p in self.grid_parameters()}
        return [p for p in self.parameters() if id(p) not in grids]

    def coordinates(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_g (B,2), c_l (B,2,H,W)); in training, c_l is jittered with probability 0.5."""
        c_global = self.coord_global(X.mean(dim=(2, 3)))
        c_local = self.coord_local(X)
        if self.training and self.jitter_sigma > 0 and torch.rand(()) < self.jitter_probability:
            c_local = c_local + torch.randn_like(c_local) * self.jitter_sigma
        return c_global, c_local

    def reconstruct(self, X: torch.Tensor) -> torch.Tensor:
        c_global, c_local = self.coordinates(X)
        global_sample = sample_global(self.global_grid, c_global, self.sampling).reshape(-1, self.C, self.H, self.W)
        local_sample = sample_local(self.local_grid, c_local, self.sampling)
        return self.recover(self.decoder(torch.cat([global_sample, local_sample], dim=1)))

    @staticmethod
    def fusion_weight(R: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """s = 0.3 * [mean (R-X)^2 <= 10] + 0.7 * cos(R, X), per location (B,1,H,W)."""
        mean_square = (R - X).pow(2).mean(dim=1, keepdim=True)
        indicator = 1.0 - torch.round(torch.clamp(FUSION_INDICATOR_SCALE * mean_square, 0.0, 1.0))
        dot = (R * X).sum(dim=1, keepdim=True)
        norms = (R * R).sum(dim=1, keepdim=True) * (X * X).sum(dim=1, keepdim=True)
        cosine = dot / torch.sqrt(torch.clamp(norms, min=COSINE_EPS * COSINE_EPS))
        return FUSION_INDICATOR_WEIGHT * indicator + FUSION_COSINE_WEIGHT * cosine

    def forward(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if X.dim() != 4 or tuple(X.shape[1:]) != (self.C, self.H, self.W):
            raise ValueError(f"CradModule expects features (B,{self.C},{self.H},{self.W}), got {tuple(X.shape)}")
        R = self.reconstruct(X)
        s = self.fusion_weight(R, X)
        fused = s * X + (1.0 - s) * R
        anomaly_map = torch.sqrt((fused - X).pow(2).sum(dim=1, keepdim=True))
        return fused, R, anomaly_map


# ---- the detector: normalisation, backbone, neck, CRAD, post-processing ------------------------

class CradDetector(nn.Module):
    """forward(images (N,3,S,S) RGB in [0,1]) -> (smoothed anomaly map (N,1,S,S), score (N,))."""

    def __init__(self, backbone: Backbone, variant: str = "crad-s", E: int | None = None, input_size: int = 224,
                 sampling: str = "gridsample", neck_pool: int = 1):
        super().__init__()
        if neck_pool < 1 or neck_pool % 2 == 0:
            raise ValueError(f"neck_pool must be an odd number >= 1 (1 = off), got {neck_pool}")
        self.backbone = backbone
        self.variant = variant
        self.input_size = int(input_size)
        self.neck_pool = int(neck_pool)
        self.register_buffer("mean", torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1))
        with torch.no_grad():
            taps = backbone(torch.zeros(1, 3, self.input_size, self.input_size))
        if len(taps) != 2 or [t.shape[1] for t in taps] != list(backbone.tap_channels):
            raise ValueError(
                f"backbone {backbone.name!r} returned taps {[tuple(t.shape) for t in taps]}, "
                f"declared channels {backbone.tap_channels}"
            )
        C = sum(backbone.tap_channels)
        H, W = (int(v) for v in taps[0].shape[2:])
        self.head = CradModule(C, H, W, resolve_expansion(variant, C, E), sampling)

    @property
    def sampling(self) -> str:
        return self.head.sampling

    def set_sampling(self, sampling: str) -> None:
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLING_MODES}")
        self.head.sampling = sampling

    def build_arguments(self) -> dict[str, Any]:
        """Everything needed to rebuild this detector's architecture (stored in checkpoints)."""
        return {
            "backbone": self.backbone.name,
            "backbone_options": dict(self.backbone.options),
            "weights_origin": self.backbone.weights_origin,
            "variant": self.variant,
            "E": self.head.E,
            "input_size": self.input_size,
            "sampling": self.head.sampling,
            "neck_pool": self.neck_pool,
        }

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """X (N,C,H,W): normalised images through the frozen backbone and the neck."""
        return self.pool_features(self.unpooled_features(images))

    def unpooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """The spec's X, before any neck pooling (what the PatchCore baseline compares on)."""
        size = self.input_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images must be (N,3,{size},{size}) RGB in [0,1], got {tuple(images.shape)}")
        fine, coarse = self.backbone((images - self.mean) / self.std)
        upsampled = F.interpolate(coarse, size=(self.head.H, self.head.W), mode="bilinear", align_corners=True)
        return torch.cat([fine, upsampled], dim=1)

    def pool_features(self, X: torch.Tensor) -> torch.Tensor:
        if self.neck_pool == 1:
            return X
        return F.avg_pool2d(X, self.neck_pool, stride=1, padding=self.neck_pool // 2, count_include_pad=False)

    def head_forward(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F, R, map at feature resolution) from cached features: what training needs."""
        return self.head(X)

    def maps_from_features(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(smoothed map (N,1,S,S), image score (N,)) from features X."""
        raw = self.head(X)[2]
        full = F.interpolate(raw, size=(self.input_size, self.input_size), mode="bilinear", align_corners=True)
        smoothed = smooth_map(full)
        return smoothed, image_score(smoothed)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maps_from_features(self.features(images))


def build_detector(
    backbone: str,
    variant: str = "crad-s",
    E: int | None = None,
    input_size: int = 224,
    backbone_weights: str | None = None,
    random_backbone: bool = False,
    sampling: str = "gridsample",
    neck_pool: int = 1,
) -> CradDetector:
    """A new detector (head freshly initialised from torch's RNG: seed before calling)."""
    return CradDetector(build_backbone(backbone, backbone_weights, random=random_backbone), variant, E, input_size, sampling,
                        neck_pool)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "crad-checkpoint/1"


def checkpoint_payload(detector: CradDetector, extra: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "build": detector.build_arguments(),
        # The backbone's weights travel too, so a checkpoint rebuilds without the weight file.
        "backbone_state": detector.backbone.state_dict(),
        "head_state": detector.head.state_dict(),
        "extra": extra,
    }


def atomic_torch_save(obj: Any, path: str) -> None:
    with atomic_open(path) as file:
        torch.save(obj, file)


def save_checkpoint(path: str, detector: CradDetector, extra: dict) -> None:
    """Write a self-contained checkpoint (build arguments, backbone and head weights, extra)."""
    atomic_torch_save(checkpoint_payload(detector, extra), path)


def detector_from_payload(payload: dict, source: str, sampling: str | None = None) -> CradDetector:
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{source}: not a CRAD checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    build = payload["build"]
    backbone = construct_backbone(build["backbone"], None, random=True, options=build.get("backbone_options"))
    backbone.load_state_dict(payload["backbone_state"], strict=True)
    backbone.weights_origin = build["weights_origin"]
    detector = CradDetector(backbone, build["variant"], build["E"], build["input_size"], sampling or build["sampling"],
                            build.get("neck_pool", 1))
    detector.head.load_state_dict(payload["head_state"], strict=True)
    return detector.eval()


def load_detector(path: str, sampling: str | None = None) -> tuple[CradDetector, dict]:
    """(detector in eval mode, extra) from a checkpoint written by save_checkpoint or train."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    payload = torch.load(path, map_location="cpu")
    return detector_from_payload(payload, path, sampling), dict(payload.get("extra") or {})
