"""MobileNet backbones: tap shapes, truncation, freezing, and sanity checks of the loaded weights.

No photos are available here, so the ImageNet checks are indirect and named for what they check:
- Coral MobileNetV2: the float PyTorch layers are compared with a numpy uint8 execution of the
  TFLite graph itself (tests/tflite_reference.py), op by op and end to end.
- MobileNetV1 and nsfwjs: the first BatchNorm's moving means, divided through the first conv's
  kernel sums, give the mean input the statistics were collected on: it must be a plausible
  photo mean under the declared normalisation; and on synthetic 1/f-noise colour images every
  BatchNorm's input must be roughly normalised by its stored statistics, outputs finite.
Tests on real weights skip, saying why, when the files are absent.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from crad.backbones import BackboneWeightsError, RandomBackboneWarning, build_backbone
from crad.backbones import mobilenet_v1, mobilenet_v2, nsfwjs
from crad.backbones.tf_conv import same_padding
from crad.backbones.tflite import read_tflite
from crad.backbones.tfjs_layers import load_tfjs_model

import tflite_reference

from shared_weights import CORAL_FILE, V1_DIR, needs_coral, needs_v1


def _has_nsfwjs() -> bool:
    try:
        nsfwjs.find_model_dir(None)
        return True
    except BackboneWeightsError:
        return False


needs_nsfwjs = pytest.mark.skipif(not _has_nsfwjs(), reason="nsfwjs package absent: run scripts/fetch-nsfwjs-weights.sh")

EXPECTED_TAPS = {
    "mobilenet-v1-0.75": [(192, 28), (384, 14)],
    "mobilenet-v2": [(32, 28), (96, 14)],
    "mobilenet-v2-nsfwjs": [(32, 28), (96, 14)],
}
BUILDERS = {"mobilenet-v1-0.75": mobilenet_v1.build, "mobilenet-v2": mobilenet_v2.build,
            "mobilenet-v2-nsfwjs": nsfwjs.build}


def _random(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        return build_backbone(name, random=True)


def _normalise(images01: torch.Tensor, mean, std) -> torch.Tensor:
    return (images01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def pink_noise_images(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """Colour images in [0, 1] with a natural-image-like 1/f spectrum and a shared luminance."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)

    def field():
        spectrum = amplitude * rng.standard_normal(amplitude.shape) * np.exp(2j * np.pi * rng.random(amplitude.shape))
        f = np.fft.irfft2(spectrum, s=(size, size))
        return (f - f.mean()) / f.std()

    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        luminance = field()
        base = rng.uniform(0.3, 0.6, 3)
        for c in range(3):
            out[i, c] = np.clip(base[c] + 0.2 * (0.8 * luminance + 0.45 * field()), 0, 1)
    return torch.from_numpy(out)


def batchnorm_input_zscores(net: nn.Module, x: torch.Tensor, run) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each BatchNorm run by `run(x)`: per-channel mean and std of (input - running_mean) /
    sqrt(running_var + eps), i.e. how well the stored statistics normalise this input."""
    stats = []

    def hook(module, inputs, _):
        a = inputs[0].transpose(0, 1).flatten(1)
        z = (a - module.running_mean[:, None]) / torch.sqrt(module.running_var[:, None] + module.eps)
        stats.append((z.mean(1), z.std(1)))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            run(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def first_bn_implied_input_mean(kernel_hwio: np.ndarray, moving_mean: np.ndarray) -> np.ndarray:
    """Least-squares per-colour input mean m with moving_mean[c] ~ sum_k kernel[c, k] * m[colour(k)]
    (exact for the mean of a conv over an image away from its border)."""
    per_colour = kernel_hwio.sum(axis=(0, 1)).T  # (out, 3)
    solution, *_ = np.linalg.lstsq(per_colour, moving_mean, rcond=None)
    fit = np.corrcoef(per_colour @ solution, moving_mean)[0, 1]
    return solution, fit


# ---- architecture (random weights: always run) -----------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED_TAPS))
def test_tap_channels_strides_and_shapes_at_224(name):
    net = _random(name)
    assert net.name == name
    assert net.tap_strides == [8, 16]
    assert net.tap_channels == [c for c, _ in EXPECTED_TAPS[name]]
    with torch.no_grad():
        taps = net(torch.zeros(2, 3, 224, 224))
    assert [tuple(t.shape) for t in taps] == [(2, c, s, s) for c, s in EXPECTED_TAPS[name]]


@pytest.mark.parametrize("name", sorted(EXPECTED_TAPS))
def test_truncated_backbone_builds_nothing_after_its_last_tap_and_gives_the_same_taps(name):
    full = BUILDERS[name](None, True, classifier=True)
    truncated = BUILDERS[name](None, True)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in full.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    missing, unexpected = truncated.load_state_dict(full.state_dict(), strict=False)
    assert missing == []  # every truncated weight exists in the full network
    assert unexpected  # the layers after the last tap exist only in the full network
    assert sum(p.numel() for p in truncated.parameters()) < sum(p.numel() for p in full.parameters())
    if isinstance(truncated, mobilenet_v1.MobileNetV1):
        assert len(truncated.pw) == mobilenet_v1.TAP_BLOCKS[-1]
    else:
        assert len(truncated.blocks) == truncated.tap_blocks[-1] + 1 and truncated.last_conv is None
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(full(x), truncated(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", sorted(EXPECTED_TAPS))
def test_backbone_stays_frozen_in_eval_mode(name):
    net = _random(name)
    net.train()
    assert not net.training and not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())


def test_same_padding_follows_tensorflow():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(112, 3, 1) == (1, 1)
    assert same_padding(14, 1, 1) == (0, 0)


def test_missing_weights_name_the_flag(tmp_path):
    with pytest.raises(BackboneWeightsError, match="--backbone-weights"):
        build_backbone("mobilenet-v1-0.75", str(tmp_path))
    with pytest.raises(BackboneWeightsError, match="--backbone-weights"):
        build_backbone("mobilenet-v2", str(tmp_path / "absent.tflite"))
    with pytest.raises(BackboneWeightsError, match="--backbone-weights"):
        build_backbone("mobilenet-v2-nsfwjs", str(tmp_path))


# ---- MobileNetV1 0.75 (tfjs) ------------------------------------------------------------------

@needs_v1
def test_v1_full_network_holds_every_stored_value_and_the_truncated_one_only_up_to_block_11():
    def stored(net):
        buffers = sum(b.numel() for k, b in net.named_buffers() if not k.endswith("num_batches_tracked"))
        return sum(p.numel() for p in net.parameters()) + buffers

    weights = load_tfjs_model(str(V1_DIR)).weights
    assert stored(mobilenet_v1.build(str(V1_DIR), classifier=True)) == 2_601_976
    layer_number = {k: int(k.split("/")[0].split("_")[2]) for k in weights if k.startswith(("conv_dw_", "conv_pw_"))}
    needed = sum(v.size for k, v in weights.items()
                 if k.startswith("conv1") or layer_number.get(k, 99) <= mobilenet_v1.TAP_BLOCKS[-1])
    assert stored(mobilenet_v1.build(str(V1_DIR))) == needed


@needs_v1
def test_v1_bn_moving_means_imply_an_imagenet_mean_input_under_the_declared_normalisation():
    weights = load_tfjs_model(str(V1_DIR)).weights
    normalised_mean, fit = first_bn_implied_input_mean(weights["conv1/kernel"], weights["conv1_bn/moving_mean"])
    assert fit > 0.99
    net = mobilenet_v1.build(str(V1_DIR))
    in_unit_range = normalised_mean * np.array(net.std) + np.array(net.mean)
    np.testing.assert_allclose(in_unit_range, [0.485, 0.456, 0.406], atol=0.05)


@needs_v1
def test_v1_outputs_finite_and_bn_inputs_roughly_normalised_on_synthetic_images():
    net = mobilenet_v1.build(str(V1_DIR), classifier=True)
    x = _normalise(pink_noise_images(6), net.mean, net.std)
    stats = batchnorm_input_zscores(net, x, net.classify)
    assert len(stats) == 27
    for i, (mean_z, std_z) in enumerate(stats):
        assert mean_z.abs().median() < 1.5, f"BN {i}: inputs far from the stored means"
        assert 0.1 < std_z.median() < 3.0, f"BN {i}: input spread {std_z.median():.3f} x stored"
    with torch.no_grad():
        logits = net.classify(x)
        taps = net(x)
    assert logits.shape == (6, 1000) and torch.isfinite(logits).all()
    assert all(torch.isfinite(t).all() for t in taps)


@needs_v1
@needs_coral
def test_v1_imagenet_classifier_roughly_agrees_with_the_reference_checked_coral_v2_on_textures():
    # Two independently trained ImageNet classifiers share a view of what 1/f textures look like
    # (velvet, wool, paper towel...): a V1 with mis-mapped weights decorrelates from V2 (measured
    # ~0.46 log-probability correlation when right, ~0 with one layer's channels shuffled).
    v1 = mobilenet_v1.build(str(V1_DIR), classifier=True)
    v2 = mobilenet_v2.build(str(CORAL_FILE), classifier=True)
    x = pink_noise_images(6, seed=5)
    with torch.no_grad():
        log_p2 = v2.classify(_normalise(x, v2.mean, v2.std))[:, 1:].log_softmax(1)  # drop "background"
        log_p1 = v1.classify(_normalise(x, v1.mean, v1.std)).log_softmax(1)
    correlation = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(log_p1.numpy(), log_p2.numpy())])
    top5_shared = np.mean([len(set(a.topk(5).indices.tolist()) & set(b.topk(5).indices.tolist()))
                           for a, b in zip(log_p1, log_p2)])
    assert correlation > 0.25
    assert top5_shared >= 1.0


# ---- MobileNetV2, Coral TFLite ----------------------------------------------------------------

def _smooth_uint8_images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.integers(0, 256, (n, 3, 8, 8)).astype(np.float32))
    images = nn.functional.interpolate(low, size=224, mode="bicubic", align_corners=False).clamp(0, 255).round()
    return images.permute(0, 2, 3, 1).numpy().astype(np.uint8)


@needs_coral
def test_coral_declared_normalisation_equals_the_input_quantization():
    net = mobilenet_v2.build(str(CORAL_FILE))
    q = torch.arange(256, dtype=torch.float32)
    normalised = (q / 255 - net.mean[0]) / net.std[0]
    torch.testing.assert_close(normalised, (q - 128) / 128)


@needs_coral
def test_coral_float_layers_match_a_uint8_reference_of_the_tflite_graph_op_by_op():
    model = read_tflite(str(CORAL_FILE))
    net = mobilenet_v2.build(str(CORAL_FILE), classifier=True)
    values = tflite_reference.run_uint8(model, _smooth_uint8_images(2, seed=1))
    convs = [op for op in model.operators if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    units = net.conv_units()
    assert len(units) == len(convs) - 1  # the logits conv is the classifier's Linear
    for (name, unit), op in zip(units, convs):
        scale, zero = tflite_reference.quant_params(model, op.outputs[0])
        x = torch.from_numpy(tflite_reference.dequantized(model, values, op.inputs[0]).astype(np.float32))
        with torch.no_grad():
            ours = unit(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        ours = np.clip(ours, (0 - zero) * scale, (255 - zero) * scale)  # uint8 saturates
        error_steps = np.abs(ours - tflite_reference.dequantized(model, values, op.outputs[0])) / scale
        assert error_steps.max() <= 0.6, f"op {op.index} ({name}): off by {error_steps.max():.2f} quantization steps"


@needs_coral
def test_coral_float_taps_and_logits_track_the_uint8_reference_end_to_end():
    model = read_tflite(str(CORAL_FILE))
    net = mobilenet_v2.build(str(CORAL_FILE), classifier=True)
    images = (pink_noise_images(4, seed=2) * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
    values = tflite_reference.run_uint8(model, images)
    x = _normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, net.mean, net.std)
    with torch.no_grad():
        taps = net(x)
        logits = net.classify(x).numpy()
    for tap, block in zip(taps, net.tap_blocks):
        # the graph's tensor closing the tapped block: the residual add of TF-slim's expanded_conv_<block>
        (add,) = [op for op in model.operators
                  if op.op == "ADD" and model.tensor(op.outputs[0]).name.endswith(f"expanded_conv_{block}/add")]
        reference = tflite_reference.dequantized(model, values, add.outputs[0])
        ours = tap.permute(0, 2, 3, 1).numpy()
        assert ours.shape == reference.shape
        # the float model skips activation quantization, whose rounding accumulates with depth
        relative_rms = np.sqrt(np.mean((ours - reference) ** 2)) / reference.std()
        assert relative_rms < 0.25, f"block {block}: relative RMS difference {relative_rms:.3f}"
    logits_op = [op for op in model.operators if op.op == "CONV_2D"][-1]
    reference_logits = tflite_reference.dequantized(model, values, logits_op.outputs[0]).reshape(len(images), -1)
    for ours_row, reference_row in zip(logits, reference_logits):
        assert np.corrcoef(ours_row, reference_row)[0, 1] > 0.95
    assert (logits.argmax(1) == reference_logits.argmax(1)).sum() >= 3


# ---- MobileNetV2, nsfwjs ----------------------------------------------------------------------

@needs_nsfwjs
def test_nsfwjs_full_network_holds_every_stored_value():
    weights = nsfwjs.load_nsfwjs_model(None).weights
    net = nsfwjs.build(None, classifier=True)
    buffers = sum(b.numel() for k, b in net.named_buffers() if not k.endswith("num_batches_tracked"))
    assert sum(p.numel() for p in net.parameters()) + buffers == sum(v.size for v in weights.values())


@needs_nsfwjs
def test_nsfwjs_bn_moving_means_imply_a_photo_mean_input_in_0_1():
    weights = nsfwjs.load_nsfwjs_model(None).weights
    implied_mean, fit = first_bn_implied_input_mean(weights["Conv1/kernel"], weights["bn_Conv1/moving_mean"])
    assert fit > 0.99
    net = nsfwjs.build(None)
    assert net.mean == (0.0, 0.0, 0.0) and net.std == (1.0, 1.0, 1.0)
    # a [0,1] photo mean; had the statistics been gathered on x/127.5-1 input it would be near 0
    assert ((implied_mean > 0.3) & (implied_mean < 0.75)).all(), implied_mean


@needs_nsfwjs
def test_nsfwjs_bn_statistics_fit_0_1_input_better_than_minus1_1_or_imagenet_normalisation():
    net = nsfwjs.build(None)
    images = pink_noise_images(6, seed=3)

    def first_bn_offset(mean, std):
        mean_z, _ = batchnorm_input_zscores(net, _normalise(images, mean, std), net)[0]
        return mean_z.abs().median().item()

    declared = first_bn_offset(net.mean, net.std)
    assert declared < 0.6 * first_bn_offset((0.5,) * 3, (0.5,) * 3)
    assert declared < 0.6 * first_bn_offset((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@needs_nsfwjs
def test_nsfwjs_outputs_finite_and_bn_inputs_roughly_normalised_on_synthetic_images():
    net = nsfwjs.build(None)
    x = _normalise(pink_noise_images(6, seed=4), net.mean, net.std)
    stats = batchnorm_input_zscores(net, x, net)
    assert len(stats) == 1 + 2 + 3 * 10  # stem, block 0, blocks 1..10
    for i, (mean_z, std_z) in enumerate(stats):
        assert mean_z.abs().median() < 1.5, f"BN {i}: inputs far from the stored means"
        assert 0.1 < std_z.median() < 3.0, f"BN {i}: input spread {std_z.median():.3f} x stored"
    with torch.no_grad():
        assert all(torch.isfinite(t).all() for t in net(x))
