"""Smoothing and image score against a direct numpy computation (spec section "Scores")."""

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from crad.scores import image_score, smooth_map


def numpy_smooth(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 10)  # zero padding
    return sliding_window_view(padded, (21, 21)).sum(axis=(-1, -2)) / 441.0


def numpy_score(smoothed: np.ndarray) -> float:
    return float(sliding_window_view(smoothed, (32, 32)).mean(axis=(-1, -2)).max())


def test_smoothing_and_score_match_numpy_at_224():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 1, 224, 224)).astype(np.float64)
    maps[1, 0, 150:170, 30:60] += 5.0  # a bright defect near the border
    smoothed = smooth_map(torch.from_numpy(maps).float())
    scores = image_score(smoothed)
    for index in range(2):
        expected = numpy_smooth(maps[index, 0])
        np.testing.assert_allclose(smoothed[index, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
        # Border pixels are divided by 441 too, not by the number of pixels inside the image.
        assert smoothed[index, 0, 0, 0].item() == pytest.approx(maps[index, 0, :11, :11].sum() / 441.0, rel=1e-5)
        assert scores[index].item() == pytest.approx(numpy_score(expected), rel=1e-5)
    assert scores[1] > scores[0]


def test_score_of_a_small_map_is_rejected():
    with pytest.raises(ValueError, match="32x32"):
        image_score(torch.zeros(1, 1, 16, 16))
