"""The PatchCore-style baseline: coreset selection, nearest distances, maps on fake features."""

import numpy as np
import torch

from crad.baseline import PatchCoreBaseline, aggregate_patches, greedy_coreset, nearest_distances
from crad.evaluate import predict
from crad.data import Sample


def brute_force_k_center(points: np.ndarray, first: int, count: int) -> list[int]:
    chosen = [first]
    for _ in range(count - 1):
        d = np.min(((points[:, None, :] - points[None, chosen, :]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def test_greedy_coreset_is_farthest_point_first_and_seeded():
    points = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    chosen = greedy_coreset(points, 12, projection_dim=None, seed=3)
    assert chosen.tolist() == brute_force_k_center(points.numpy().astype(np.float64), int(chosen[0]), 12)
    assert torch.equal(chosen, greedy_coreset(points, 12, projection_dim=None, seed=3))
    assert len(set(chosen.tolist())) == 12
    assert greedy_coreset(points, 500).tolist() == list(range(200))


def test_coreset_covers_clusters():
    # three tight clusters far apart: a 3-point coreset takes one from each
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(centres)])
    chosen = greedy_coreset(points, 3, projection_dim=None, seed=0)
    assert sorted(int(i) // 50 for i in chosen) == [0, 1, 2]


def test_nearest_distances_match_cdist():
    generator = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(300, 5, generator=generator), torch.randn(40, 5, generator=generator)
    expected = torch.cdist(queries, bank).min(dim=1).values
    assert torch.allclose(nearest_distances(queries, bank, chunk=64), expected, atol=1e-4)


def test_aggregation_averages_inside_the_map():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 9.0
    out = aggregate_patches(x, 3)
    assert out[0, 0, 0, 0] == 9.0 / 4 and out[0, 0, 1, 1] == 1.0 and out[0, 0, 3, 3] == 0.0


def fake_features(images: torch.Tensor) -> torch.Tensor:
    """Stride-8 'features': the mean colour of each 8x8 cell, 3 channels."""
    return torch.nn.functional.avg_pool2d(images, 8)


def test_patchcore_flags_the_odd_patch(tmp_path):
    import cv2

    size = 64
    rng = np.random.default_rng(0)
    train = torch.from_numpy(0.5 + 0.02 * rng.standard_normal((6, 3, size, size)).astype(np.float32))
    model = PatchCoreBaseline.fit(fake_features(train), fake_features, size, coreset_ratio=0.5, projection_dim=None)
    assert model.memory_bank.shape == (6 * 8 * 8 // 2, 3)
    good = np.full((size, size, 3), 128, np.uint8)
    bad = good.copy()
    bad[24:40, 24:40] = 250
    for name, image in (("good.png", good), ("bad.png", bad)):
        cv2.imwrite(str(tmp_path / name), image)
    samples = [Sample(str(tmp_path / "good.png"), 0, "x", "good", None), Sample(str(tmp_path / "bad.png"), 1, "x", "spot", None)]
    maps, scores = predict(model, samples, size)
    assert maps.shape == (2, size, size)
    assert scores[1] > 5 * scores[0]
    peak = np.unravel_index(np.argmax(maps[1]), maps[1].shape)
    assert 24 <= peak[0] < 40 and 24 <= peak[1] < 40


def test_bank_is_capped_by_max_bank():
    features = torch.randn(10, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    model = PatchCoreBaseline.fit(features, None, 64, coreset_ratio=0.1, max_bank=20, projection_dim=None)
    assert model.memory_bank.shape == (20, 4)
