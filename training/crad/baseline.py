"""A PatchCore-style baseline on the SAME backbone features as CRAD.

PatchCore (Roth et al., CVPR 2022) in the form used here:
1. Features: the CRAD neck's X (stride 8: the stride-16 tap upsampled and concatenated), each
   location averaged over its 3x3 neighbourhood (PatchCore's locally aware patch features;
   borders average only the positions inside the map).
2. Memory bank: every training patch feature is a candidate; a greedy k-center coreset keeps
   `coreset_ratio` of them. Greedy selection runs on a seeded Gaussian random projection to
   `projection_dim` dimensions (Johnson-Lindenstrauss), as PatchCore does. Deviation, for CPU
   run times: when there are more than max_bank / coreset_ratio candidates, a seeded random
   subset of that many is drawn first, so the bank holds at most `max_bank` features.
3. Anomaly map: the L2 distance of each test patch to its nearest memory-bank feature
   (no PatchCore re-weighting), upsampled x8 exactly as CRAD's map (bilinear,
   align_corners=True), then smoothed and scored with the same scores.py functions.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F

from .scores import image_score, smooth_map

log = logging.getLogger("crad.baseline")


def aggregate_patches(features: torch.Tensor, neighbourhood: int = 3) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,H,W): mean over each location's neighbourhood inside the map."""
    if neighbourhood <= 1:
        return features
    return F.avg_pool2d(features, neighbourhood, stride=1, padding=neighbourhood // 2, count_include_pad=False)


def to_patches(features: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N*H*W, C)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def greedy_coreset(points: torch.Tensor, count: int, projection_dim: int | None = 128, seed: int = 0) -> torch.Tensor:
    """Indices of `count` points chosen by greedy k-center (farthest point first), seeded.

    The first point is drawn at random; each next one is the point farthest from all chosen.
    Distances are measured after a Gaussian random projection to projection_dim dimensions
    when the points have more (None: no projection).
    """
    total = points.shape[0]
    if count >= total:
        return torch.arange(total)
    if count < 1:
        raise ValueError(f"coreset size must be >= 1, got {count}")
    generator = torch.Generator().manual_seed(seed)
    points = points.float()
    if projection_dim is not None and points.shape[1] > projection_dim:
        projection = torch.randn(points.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        points = points @ projection.to(points.device)
    squared_norms = (points * points).sum(dim=1)
    first = int(torch.randint(total, (1,), generator=generator))
    chosen = torch.empty(count, dtype=torch.long)
    chosen[0] = first

    def squared_distance_to(index: int) -> torch.Tensor:
        centre = points[index]
        return (squared_norms - 2.0 * (points @ centre) + squared_norms[index]).clamp_min_(0.0)

    nearest = squared_distance_to(first)
    for i in range(1, count):
        index = int(torch.argmax(nearest))
        chosen[i] = index
        torch.minimum(nearest, squared_distance_to(index), out=nearest)
    return chosen


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """L2 distance of each query row to its nearest bank row, in chunks to bound memory."""
    bank_norms = (bank * bank).sum(dim=1)
    out = torch.empty(queries.shape[0], dtype=torch.float32, device=queries.device)
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        squared = (q * q).sum(dim=1, keepdim=True) - 2.0 * (q @ bank.T) + bank_norms
        out[start:start + chunk] = squared.min(dim=1).values.clamp_min_(0.0).sqrt_()
    return out


class PatchCoreBaseline(torch.nn.Module):
    """Callable like CradDetector: images (N,3,S,S) in [0,1] -> (smoothed map (N,1,S,S), score (N,)).

    `feature_extractor` maps images to the neck features X (e.g. CradDetector.features); it is
    not a sub-module, so the baseline owns only its memory bank.
    """

    def __init__(self, feature_extractor: Callable[[torch.Tensor], torch.Tensor] | None, input_size: int,
                 memory_bank: torch.Tensor, neighbourhood: int = 3):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.input_size = int(input_size)
        self.neighbourhood = neighbourhood
        self.register_buffer("memory_bank", memory_bank.float().contiguous())

    @classmethod
    def fit(cls, train_features: torch.Tensor, feature_extractor, input_size: int, coreset_ratio: float = 0.1,
            max_bank: int = 10000, projection_dim: int | None = 128, neighbourhood: int = 3, seed: int = 0,
            batch: int = 64) -> "PatchCoreBaseline":
        """Build the memory bank from training features X (N,C,H,W) (see the module docstring)."""
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        if len(train_features) == 0:
            raise ValueError("PatchCore needs at least one training image")
        patches = torch.cat([to_patches(aggregate_patches(train_features[i:i + batch].float(), neighbourhood))
                             for i in range(0, len(train_features), batch)])
        candidates = patches
        max_candidates = int(math.ceil(max_bank / coreset_ratio))
        if patches.shape[0] > max_candidates:
            generator = torch.Generator().manual_seed(seed)
            subset = torch.randperm(patches.shape[0], generator=generator)[:max_candidates]
            candidates = patches[subset.to(patches.device)]
            log.info("PatchCore: %d of %d patch features drawn as coreset candidates", max_candidates, patches.shape[0])
        count = max(1, int(round(coreset_ratio * candidates.shape[0])))
        chosen = greedy_coreset(candidates, count, projection_dim, seed)
        return cls(feature_extractor, input_size, candidates[chosen.to(candidates.device)].clone(), neighbourhood)

    def maps_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Neck features X (N,C,H,W) -> (smoothed map (N,1,S,S), image score (N,))."""
        n, _, h, w = features.shape
        patches = to_patches(aggregate_patches(features.float(), self.neighbourhood))
        distances = nearest_distances(patches, self.memory_bank.to(patches.device)).reshape(n, 1, h, w)
        full = F.interpolate(distances, size=(self.input_size, self.input_size), mode="bilinear", align_corners=True)
        smoothed = smooth_map(full)
        return smoothed, image_score(smoothed)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.feature_extractor is None:
            raise RuntimeError("this PatchCoreBaseline has no feature extractor: use maps_from_features(X)")
        with torch.no_grad():
            return self.maps_from_features(self.feature_extractor(images))
