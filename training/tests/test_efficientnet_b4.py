"""EfficientNet-B4 backbone: architecture, the reference's static padding, both weight layouts."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from crad.backbones import BackboneWeightsError, build_backbone
from crad.backbones.efficientnet_b4 import (
    LAYOUT_EFFICIENTNET_PYTORCH,
    LAYOUT_TORCHVISION,
    PADDING_REFERENCE,
    PADDING_SYMMETRIC,
    EfficientNetB4Taps,
    load_weights_file,
    map_state,
    static_same_padding,
)


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Fresh BatchNorm is the identity; random statistics make weight-mapping mistakes visible."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0.0, 0.1, generator=generator)


def test_architecture_taps_and_size():
    model = EfficientNetB4Taps()
    # Stem + blocks 0..21 only: the spec's 3.64 M parameters.
    assert sum(p.numel() for p in model.parameters()) == 3_635_984
    assert len(model._blocks) == 22
    assert model.tap_channels == [56, 160] and model.tap_strides == [8, 16]
    with torch.no_grad():
        fine, coarse = model(torch.randn(1, 3, 224, 224))
    assert fine.shape == (1, 56, 28, 28) and coarse.shape == (1, 160, 14, 14)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training  # frozen: BatchNorm keeps its statistics


def test_block6_static_padding_is_the_reference_not_true_same():
    model = EfficientNetB4Taps(padding=PADDING_REFERENCE)
    spec = model._blocks[6].spec
    assert (spec.kernel, spec.stride) == (5, 2)
    # Computed for the 95 px map a 380 px image gives: (2, 2); true SAME at 224 (56 px) is (1, 2).
    assert model.depthwise_pads(6) == (2, 2, 2, 2)
    assert static_same_padding(56, 5, 2) == (1, 2)
    # The stride-2 3x3 convs pad only after (0, 1), as TF's SAME does at the reference size.
    assert model._conv_stem.pads == (0, 1, 0, 1)
    assert model.depthwise_pads(2) == (0, 1, 0, 1)
    assert model.depthwise_pads(10) == (0, 1, 0, 1)
    # The pads are really applied: the depthwise conv equals an explicit pad + valid conv.
    conv = model._blocks[6]._depthwise_conv
    x = torch.randn(1, conv.in_channels, 56, 56)
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2)), conv.weight, stride=2, groups=conv.groups)
    with torch.no_grad():
        assert torch.equal(conv(x), expected)
    assert conv(x).shape[-2:] == (28, 28)


def test_torchvision_layout_loads_every_key_and_matches_torchvision(tmp_path):
    reference = torchvision.models.efficientnet_b4(weights=None).eval()
    _randomise_batchnorm(reference, seed=1)
    path = tmp_path / "tv_b4.pth"
    torch.save(reference.state_dict(), path)

    model = load_weights_file(str(path))
    assert model.options == {"padding": PADDING_SYMMETRIC, "bn_eps": 1e-5}
    mapped, unused = map_state(model, reference.state_dict(), LAYOUT_TORCHVISION)
    assert set(mapped) == set(model.state_dict())  # every key of ours matched
    # What is left over is exactly the network after block 21 and the classifier.
    assert {key.split(".")[0] + "." + key.split(".")[1] for key in unused} == {"features.6", "features.7", "features.8", "classifier.1"}

    # Same weights, same architecture: the taps equal torchvision's block 9 and 21 outputs.
    blocks = [block for stage in reference.features[1:8] for block in stage]
    captured = {}
    blocks[9].register_forward_hook(lambda _m, _i, out: captured.__setitem__(9, out))
    blocks[21].register_forward_hook(lambda _m, _i, out: captured.__setitem__(21, out))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        reference(x)
        fine, coarse = model(x)
    assert torch.allclose(fine, captured[9], atol=1e-5)
    assert torch.allclose(coarse, captured[21], atol=1e-5)


def test_efficientnet_pytorch_layout_loads_every_key(tmp_path):
    source = EfficientNetB4Taps()
    _randomise_batchnorm(source, seed=2)
    state = {key: torch.randn_like(value) if value.is_floating_point() else value for key, value in source.state_dict().items()}
    state = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    # The real checkpoint also holds blocks 22..31 and the head, which we must leave unused.
    extra = {
        "_blocks.22._expand_conv.weight": torch.randn(960, 160, 1, 1),
        "_blocks.31._project_conv.weight": torch.randn(448, 2688, 1, 1),
        "_conv_head.weight": torch.randn(1792, 448, 1, 1),
        "_bn1.weight": torch.randn(1792),
        "_bn1.bias": torch.randn(1792),
        "_bn1.running_mean": torch.randn(1792),
        "_bn1.running_var": torch.rand(1792),
        "_fc.weight": torch.randn(1000, 1792),
        "_fc.bias": torch.randn(1000),
    }
    path = tmp_path / "efficientnet-b4-6ed6700e.pth"
    torch.save({**state, **extra}, path)

    model = build_backbone("efficientnet-b4", str(path))
    assert model.options == {"padding": PADDING_REFERENCE, "bn_eps": 1e-3}
    assert "EfficientNet-PyTorch" in model.weights_origin and "efficientnet-b4-6ed6700e.pth" in model.weights_origin
    mapped, unused = map_state(model, {**state, **extra}, LAYOUT_EFFICIENTNET_PYTORCH)
    assert set(mapped) == {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}
    assert sorted(unused) == sorted(extra)
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert model._bn0.eps == 1e-3


def test_missing_weights_file_names_the_flag_and_the_source(tmp_path):
    with pytest.raises(BackboneWeightsError) as error:
        build_backbone("efficientnet-b4", str(tmp_path / "nope.pth"))
    message = str(error.value)
    assert "--backbone-weights" in message and "efficientnet-b4-6ed6700e.pth" in message and "nope.pth" in message


def test_foreign_state_dict_is_rejected_with_its_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match="conv1.weight"):
        load_weights_file(str(path))
