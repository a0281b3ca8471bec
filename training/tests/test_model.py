"""The CRAD module and detector against the spec (section 1) with random backbones."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crad.backbones import RandomBackboneWarning, build_backbone, construct_backbone
from crad.export import FORMS_TOLERANCE, output_tolerance
from crad.model import (
    CradDetector,
    CradModule,
    build_detector,
    count_parameters,
    load_detector,
    resolve_expansion,
    sample_global,
    sample_local,
    save_checkpoint,
)


def random_b4():
    return construct_backbone("efficientnet-b4", None, random=True)


def perturb(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Fresh CRAD weights are tiny (N(0, 0.01^2)): R would be ~0 and the fusion trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)


@pytest.mark.parametrize("variant, expansion, expected", [("crad", 864, 15_361_492), ("crad-s", 216, 5_261_116)])
def test_parameter_counts_with_b4_taps(variant, expansion, expected):
    # The spec's 15.36 M / 5.26 M count the CRAD module alone (grids, coordinate nets, decoder,
    # recover), with C, H, W from the B4 taps at 224: C = 56 + 160 = 216, H = W = 28.
    detector = CradDetector(random_b4(), variant=variant, input_size=224)
    head = detector.head
    assert (head.C, head.H, head.W, head.E) == (216, 28, 28, expansion)
    assert head.global_grid.shape == (1, 169344, 4, 4)
    assert count_parameters(head) == expected
    assert count_parameters(detector.backbone) == 3_635_984


def test_shapes_follow_backbone_and_input_size():
    detector = CradDetector(random_b4(), variant="crad-s", input_size=96)
    assert (detector.head.C, detector.head.H, detector.head.W) == (216, 12, 12)
    with torch.no_grad():
        X = detector.features(torch.rand(2, 3, 96, 96))
        smoothed, score = detector(torch.rand(2, 3, 96, 96))
    assert X.shape == (2, 216, 12, 12)
    assert smoothed.shape == (2, 1, 96, 96) and score.shape == (2,)


def test_variants_and_custom_expansion():
    assert resolve_expansion("crad", 216, None) == 864
    assert resolve_expansion("crad-s", 128, None) == 128
    assert resolve_expansion("crad-m", 128, 256) == 256
    with pytest.raises(ValueError, match="explicit E"):
        resolve_expansion("crad-m", 128, None)
    with pytest.raises(ValueError, match="custom variant"):
        resolve_expansion("crad", 216, 100)


def test_random_backbone_warns_loudly(capsys):
    with pytest.warns(RandomBackboneWarning):
        build_backbone("efficientnet-b4", random=True)
    assert "RANDOM weights" in capsys.readouterr().err


def test_tent_sampling_equals_gridsample_including_outside_coordinates():
    generator = torch.Generator().manual_seed(0)
    global_grid = torch.randn(1, 500, 4, 4, generator=generator)
    local_grid = torch.randn(1, 24, 8, 8, generator=generator)
    # Beyond +-1 the bilinear weights fade to zero by +-(1 + 2/S): cover all of it, plus exact
    # node and border positions.
    global_coords = torch.cat([
        torch.rand(64, 2, generator=generator) * 3.2 - 1.6,
        torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-0.75, 0.25], [1.5, -1.5], [0.0, 2.0], [1.25, 0.0]]),
    ])
    local_coords = torch.rand(3, 2, 10, 10, generator=generator) * 3.2 - 1.6
    local_coords[0, :, 0, 0] = torch.tensor([-1.0, 1.0])
    local_coords[0, :, 0, 1] = torch.tensor([1.125, -1.0625])
    for a, b in [
        (sample_global(global_grid, global_coords, "gridsample"), sample_global(global_grid, global_coords, "tent")),
        (sample_local(local_grid, local_coords, "gridsample"), sample_local(local_grid, local_coords, "tent")),
    ]:
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= output_tolerance(a.numpy(), b.numpy(), FORMS_TOLERANCE)
    # Far outside the grid both give exactly zero (zeros padding).
    far = torch.tensor([[2.0, 2.0]])
    assert sample_global(global_grid, far, "tent").abs().max().item() == 0.0


@pytest.mark.parametrize("map_scale", [None, 60.0])
def test_module_tent_and_gridsample_agree_end_to_end(map_scale):
    # map_scale: the reconstruction scaled so that the map reaches a trained model's magnitude.
    torch.manual_seed(0)
    head = CradModule(C=16, H=6, W=6, E=32).eval()
    perturb(head, seed=1)
    X = torch.randn(3, 16, 6, 6)
    with torch.no_grad():
        if map_scale is not None:
            head.recover.weight.mul_(map_scale / head(X)[2].max().item())
        outputs_grid = head(X)
        head.sampling = "tent"
        outputs_tent = head(X)
    if map_scale is not None:
        assert outputs_grid[2].max().item() == pytest.approx(map_scale, rel=0.2)
    for a, b in zip(outputs_grid, outputs_tent):
        assert (a - b).abs().max().item() <= output_tolerance(a.numpy(), b.numpy(), FORMS_TOLERANCE)


def test_fusion_and_map_follow_the_spec():
    torch.manual_seed(0)
    head = CradModule(C=16, H=6, W=6, E=32).eval()
    perturb(head, seed=3)
    X = torch.randn(4, 16, 6, 6) * 3.0
    with torch.no_grad():
        fused, R, anomaly_map = head(X)
        R_direct = head.reconstruct(X)
    assert torch.allclose(R, R_direct)

    r, x = R.numpy().astype(np.float64), X.numpy().astype(np.float64)
    mean_square = ((r - x) ** 2).mean(axis=1, keepdims=True)
    indicator = (mean_square <= 10.0).astype(np.float64)
    cosine = (r * x).sum(1, keepdims=True) / np.maximum(np.linalg.norm(r, axis=1, keepdims=True) * np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    s = 0.3 * indicator + 0.7 * cosine
    assert 0 < indicator.mean() < 1, "the test data must exercise both sides of the indicator"
    np.testing.assert_allclose(fused.numpy(), s * x + (1 - s) * r, rtol=1e-4, atol=1e-4)
    # map == (1 - s) * ||R - X||, per location
    expected_map = (1 - s) * np.linalg.norm(r - x, axis=1, keepdims=True)
    np.testing.assert_allclose(anomaly_map.numpy(), expected_map, rtol=1e-4, atol=1e-4)


def test_jitter_only_in_training_and_only_on_local_coordinates():
    torch.manual_seed(0)
    head = CradModule(C=8, H=4, W=4, E=16)
    perturb(head, seed=4)
    X = torch.randn(2, 8, 4, 4)
    head.eval()
    with torch.no_grad():
        g_eval, l_eval = head.coordinates(X)
        head.train()
        jittered = 0
        for _ in range(40):
            g_train, l_train = head.coordinates(X)
            assert torch.equal(g_train, g_eval)  # c_g is never jittered
            if not torch.equal(l_train, l_eval):
                jittered += 1
                assert (l_train - l_eval).std().item() == pytest.approx(0.05, rel=0.3)
    assert 8 <= jittered <= 32  # about half of the passes


def test_detector_map_is_upsampled_smoothed_and_scored():
    torch.manual_seed(0)
    detector = CradDetector(random_b4(), variant="crad-s", input_size=64).eval()
    perturb(detector.head, seed=5, std=0.05)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        X = detector.features(images)
        raw = detector.head_forward(X)[2]
        smoothed, score = detector(images)
    full = F.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=True)
    box = F.conv2d(full, torch.ones(1, 1, 21, 21) / 441.0, padding=10)
    assert torch.allclose(smoothed, box, atol=1e-6)
    windows = F.conv2d(box, torch.ones(1, 1, 32, 32) / 1024.0)
    assert torch.allclose(score, windows.flatten(1).max(dim=1).values, atol=1e-6)
    # Normalisation is inside: ImageNet mean/std on [0,1] RGB.
    manual = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fine, coarse = detector.backbone(manual)
    neck = torch.cat([fine, F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=True)], 1)
    assert torch.allclose(X, neck, atol=1e-6)


def test_checkpoint_round_trip_rebuilds_without_weight_file(tmp_path):
    torch.manual_seed(0)
    with pytest.warns(RandomBackboneWarning):
        detector = build_detector("efficientnet-b4", "crad-s", input_size=64, random_backbone=True).eval()
    perturb(detector.head, seed=6, std=0.05)
    path = tmp_path / "model.pt"
    save_checkpoint(str(path), detector, {"classes": ["a", "b"]})
    restored, extra = load_detector(str(path), sampling="tent")
    assert extra == {"classes": ["a", "b"]}
    assert restored.sampling == "tent" and restored.backbone.options == detector.backbone.options
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a_map, a_score = detector(images)
        b_map, b_score = restored(images)
    assert (a_map - b_map).abs().max().item() < 1e-5
    assert (a_score - b_score).abs().max().item() < 1e-5
    assert math.isfinite(a_score.sum().item())


def test_bad_input_shape_is_named():
    detector = CradDetector(random_b4(), variant="crad-s", input_size=64)
    with pytest.raises(ValueError, match=r"\(N,3,64,64\)"):
        detector(torch.rand(1, 3, 32, 32))


def test_neck_pool_averages_each_neighbourhood_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    with pytest.warns(RandomBackboneWarning):
        detector = build_detector("mobilenet-v2", "crad-s", input_size=64, random_backbone=True, neck_pool=3).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        raw, pooled = detector.unpooled_features(images), detector.features(images)
    assert pooled.shape == raw.shape
    # an inner position: the plain mean of its 3x3 neighbourhood; a corner: of its 2x2 real neighbours
    assert torch.allclose(pooled[:, :, 3, 4], raw[:, :, 2:5, 3:6].mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(pooled[:, :, 0, 0], raw[:, :, 0:2, 0:2].mean(dim=(2, 3)), atol=1e-6)
    path = tmp_path / "pooled.pt"
    save_checkpoint(str(path), detector, {})
    restored, _ = load_detector(str(path))
    assert restored.neck_pool == 3 and restored.build_arguments()["neck_pool"] == 3
    with torch.no_grad():
        assert torch.allclose(restored.features(images), pooled, atol=1e-6)
    with pytest.raises(ValueError, match="neck_pool must be an odd number"):
        CradDetector(random_b4(), variant="crad-s", input_size=64, neck_pool=2)
