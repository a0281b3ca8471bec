"""The evaluation post-processing of CRAD (spec section "Scores"), shared by the detector, the
ONNX export, evaluation and calibration so that every consumer computes the same numbers.

  pixel score = smooth_map(map): 21x21 box filter, stride 1, zero padding 10, always divided by 441
  image score = max over the 32x32 mean filter (stride 1, no padding) of the smoothed map
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH_KERNEL = 21
SCORE_WINDOW = 32


def smooth_map(anomaly_map: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) raw map -> (N,1,H,W) smoothed map (the pixel scores)."""
    if anomaly_map.dim() != 4 or anomaly_map.shape[1] != 1:
        raise ValueError(f"smooth_map expects an (N,1,H,W) map, got shape {tuple(anomaly_map.shape)}")
    # A box filter is separable: a 21x1 then a 1x21 mean equals the 21x21 mean (the zero-padded
    # sum / 441, border pixels included, as the reference does) at 2*21 instead of 441 adds per
    # pixel, which matters on CPUs. count_include_pad=True keeps the divisor fixed at the border.
    pad = SMOOTH_KERNEL // 2
    vertical = F.avg_pool2d(anomaly_map, (SMOOTH_KERNEL, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    return F.avg_pool2d(vertical, (1, SMOOTH_KERNEL), stride=1, padding=(0, pad), count_include_pad=True)


def image_score(smoothed: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) smoothed map -> (N,) image scores."""
    if smoothed.dim() != 4 or smoothed.shape[1] != 1:
        raise ValueError(f"image_score expects an (N,1,H,W) map, got shape {tuple(smoothed.shape)}")
    if smoothed.shape[2] < SCORE_WINDOW or smoothed.shape[3] < SCORE_WINDOW:
        raise ValueError(f"image_score needs maps of at least {SCORE_WINDOW}x{SCORE_WINDOW}, got {tuple(smoothed.shape[2:])}")
    # The 32x32 mean, separably (see smooth_map), over valid windows only.
    vertical = F.avg_pool2d(smoothed, (SCORE_WINDOW, 1), stride=1)
    pooled = F.avg_pool2d(vertical, (1, SCORE_WINDOW), stride=1)
    return pooled.amax(dim=(1, 2, 3))
