"""ONNX export against the model contract: both sampling forms, both input forms (float, and
uint8 from a checkpoint or converted with --from-onnx), metadata, reference file, and (where
onnxruntime-node is installed) the exported graph run by onnxruntime."""

import argparse
import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from crad import export
from crad.backbones import construct_backbone
from crad.model import CradDetector, save_checkpoint

SIZE = 64
REPO_ROOT = Path(__file__).resolve().parents[2]
ORT_CHECK = Path(__file__).with_name("ort_reference_check.cjs")
CALIBRATION = {"image": {"threshold": 0.5, "min": 0.1, "max": 0.9}, "pixel": {"threshold": 0.6, "min": 0.0, "max": 1.2}, "source": "test", "images": 3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    detector = CradDetector(construct_backbone("efficientnet-b4", None, random=True), variant="tiny", E=16, input_size=SIZE).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking weights: maps well above zero, coordinates spread out
        for parameter in detector.head.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    extra = {"classes": ["washer", "weave"], "training": {"dataset": "synthetic", "epochs": 2, "seed": 0}, "selected_epoch": 2, "calibration": CALIBRATION}
    save_checkpoint(str(path), detector, extra)
    return path


def export_with(checkpoint, out, *options):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return export.run(parser.parse_args([str(checkpoint), "--out", str(out), "--reference-count", "3", *options]))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for sampling in ("gridsample", "tent"):
        paths[sampling] = folder / f"model-{sampling}.onnx"
        assert export_with(checkpoint, paths[sampling], "--sampling", sampling) == 0
    return paths


def test_forms_have_the_right_nodes_and_contract_shapes(exported):
    grid_ops = export.check_onnx(exported["gridsample"], "gridsample", SIZE)
    tent_ops = export.check_onnx(exported["tent"], "tent", SIZE)
    assert "GridSample" in grid_ops
    assert "GridSample" not in tent_ops and "MatMul" in tent_ops
    model = onnx.load(str(exported["tent"]))
    assert {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}["ai.onnx"] == 17
    # Mislabelled forms are caught.
    with pytest.raises(ValueError, match="GridSample"):
        export.check_onnx(exported["gridsample"], "tent", SIZE)


def test_metadata_follows_the_contract(exported):
    metadata = {entry.key: entry.value for entry in onnx.load(str(exported["tent"])).metadata_props}
    assert metadata["crad.format"] == "1"
    assert metadata["crad.variant"] == "tiny"
    assert metadata["crad.backbone"].startswith("efficientnet-b4 ")
    assert json.loads(metadata["crad.input"]) == {"height": SIZE, "width": SIZE, "color": "RGB", "range": [0, 1], "resize": "opencv-area"}
    assert json.loads(metadata["crad.classes"]) == ["washer", "weave"]
    assert json.loads(metadata["crad.calibration"]) == CALIBRATION
    training = json.loads(metadata["crad.training"])
    assert training["dataset"] == "synthetic" and training["seed"] == 0 and training["selected_epoch"] == 2
    assert training["sampling"] == "tent"


def test_uncalibrated_model_has_no_calibration_key():
    torch.manual_seed(0)
    detector = CradDetector(construct_backbone("efficientnet-b4", None, random=True), variant="tiny", E=16, input_size=SIZE)
    metadata = export.contract_metadata(detector, {"classes": ["a"], "training": {}})
    assert "crad.calibration" not in metadata and metadata["crad.format"] == "1"
    assert json.loads(metadata["crad.classes"]) == ["a"]


def test_reference_file_holds_torch_outputs_and_forms_agree(checkpoint, exported):
    from crad.model import load_detector

    reference = json.loads(export.reference_path_for(exported["tent"]).read_text())
    assert reference["format"] == "crad-reference/1" and reference["model"] == "model-tent.onnx"
    images = export.decode_b64_f32(reference["image"]["data"], reference["image"]["shape"])
    expected_map = export.decode_b64_f32(reference["anomaly_map"]["data"], reference["anomaly_map"]["shape"])
    assert images.shape == (3, 3, SIZE, SIZE) and expected_map.shape == (3, 1, SIZE, SIZE)
    detector, _ = load_detector(str(checkpoint))
    grid_map, grid_score = export.torch_outputs(detector, images.copy(), "gridsample")
    tent_map, tent_score = export.torch_outputs(detector, images.copy(), "tent")
    forms = export.compare_outputs({"anomaly_map": grid_map, "score": grid_score}, {"anomaly_map": tent_map, "score": tent_score},
                                   export.FORMS_TOLERANCE)
    assert export.breaches(forms) == [], forms
    assert reference["tolerance"] == export.REFERENCE_TOLERANCE and "max(1" in reference["tolerance_rule"]
    np.testing.assert_allclose(tent_map, expected_map, atol=1e-6)
    np.testing.assert_allclose(tent_score, reference["score"], atol=1e-6)
    assert min(reference["score"]) > 1e-3  # meaningful magnitudes, not a graph of zeros


# ---- the forms check at a real model's scale ---------------------------------------------------
# Trained models score in the tens (Magnetic Tile, customers' classes: 25-60), where float32
# rounding alone differs by more than 1e-5; the check is relative to each output's scale.

REAL_SCORE = 60.0


@pytest.fixture(scope="module")
def real_scale_checkpoint(checkpoint, tmp_path_factory):
    """The fixture's detector with its reconstruction scaled so that its largest score is about
    60: the same computation at a trained model's magnitude, noise of both forms included."""
    from crad.model import load_detector

    detector, extra = load_detector(str(checkpoint))
    images, _ = export.synthetic_reference_images(3, SIZE)
    _, scores = export.torch_outputs(detector, images, "gridsample")
    with torch.no_grad():
        detector.head.recover.weight.mul_(REAL_SCORE / float(scores.max()))
    path = tmp_path_factory.mktemp("real-scale") / "best.pt"
    save_checkpoint(str(path), detector, extra)
    return path


def test_forms_check_accepts_float32_noise_at_real_scores():
    # Outputs near 60 and the same outputs a few float32 steps away: noise, not another model.
    rng = np.random.default_rng(0)
    grid_map = rng.uniform(0.0, REAL_SCORE, (2, 1, SIZE, SIZE)).astype(np.float32)
    grid_score = np.array([REAL_SCORE - 2.5, REAL_SCORE], dtype=np.float32)
    nudged = {name: values.copy() for name, values in (("anomaly_map", grid_map), ("score", grid_score))}
    for _ in range(8):
        nudged = {name: np.nextafter(values, np.float32(np.inf)) for name, values in nudged.items()}
    forms = export.compare_outputs({"anomaly_map": grid_map, "score": grid_score}, nudged, export.FORMS_TOLERANCE)
    assert forms["score"]["difference"] > 2e-5  # what the absolute 1e-5 check refused
    assert export.breaches(forms) == [], forms
    # Below 1 the bound stays absolute: the same relative noise at small outputs is still tiny.
    assert export.output_tolerance(np.float32([0.2]), np.float32([0.2]), 1e-5) == 1e-5


def test_real_scale_model_exports_in_both_forms(real_scale_checkpoint, tmp_path, capsys):
    for sampling in ("gridsample", "tent"):
        model = tmp_path / f"real-{sampling}.onnx"
        assert export_with(real_scale_checkpoint, model, "--sampling", sampling) == 0, capsys.readouterr().err
        report = json.loads(capsys.readouterr().out)
        assert 0.5 * REAL_SCORE < max(report["reference_scores"]) < 1.5 * REAL_SCORE, report
        assert report["forms"]["score"]["allowed"] == pytest.approx(export.FORMS_TOLERANCE * max(report["reference_scores"]), rel=1e-3)
        if _onnxruntime_node_available():
            completed = subprocess.run(["node", str(ORT_CHECK), str(model), str(export.reference_path_for(model))],
                                       capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
            assert completed.returncode == 0, completed.stderr
            assert json.loads(completed.stdout)["agrees"], completed.stdout


@pytest.mark.parametrize("grid", ["local_grid", "global_grid"])
def test_forms_check_refuses_a_one_pixel_grid_shift_at_real_scores(real_scale_checkpoint, grid, tmp_path, monkeypatch, capsys):
    # The tent form reads its grid one pixel to the side: a real mismatch, to be refused by the
    # exporter's own check although the outputs are in the tens.
    sampled = export.torch_outputs

    def shifted_tent(detector, images, sampling):
        if sampling != "tent":
            return sampled(detector, images, sampling)
        parameter = getattr(detector.head, grid)
        original = parameter.data.clone()
        parameter.data = torch.roll(original, 1, dims=-1)
        try:
            return sampled(detector, images, sampling)
        finally:
            parameter.data = original

    monkeypatch.setattr(export, "torch_outputs", shifted_tent)
    model = tmp_path / "shifted.onnx"
    assert export_with(real_scale_checkpoint, model) == 1
    error = capsys.readouterr().err
    assert "gridsample and tent forms differ" in error and "allowed" in error, error
    assert not model.exists() and not export.reference_path_for(model).exists()


def _onnxruntime_node_available() -> bool:
    return shutil.which("node") is not None and (REPO_ROOT / "node_modules" / "onnxruntime-node").is_dir()


needs_onnxruntime_node = pytest.mark.skipif(not _onnxruntime_node_available(), reason="node or node_modules/onnxruntime-node not installed")


@pytest.mark.skipif(not _onnxruntime_node_available(), reason="node or node_modules/onnxruntime-node not installed")
@pytest.mark.parametrize("sampling", ["gridsample", "tent"])
def test_onnxruntime_node_reproduces_the_reference(exported, sampling):
    model = exported[sampling]
    for batch in ("1", "3"):  # the batch axis is dynamic
        completed = subprocess.run(
            ["node", str(ORT_CHECK), str(model), str(export.reference_path_for(model)), batch],
            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
        )
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout)
        assert result["inputNames"] == ["image"] and result["outputNames"] == ["anomaly_map", "score"]
        assert result["agrees"], result


@pytest.mark.skipif(not _onnxruntime_node_available(), reason="node or node_modules/onnxruntime-node not installed")
def test_neck_pooled_model_exports_and_onnxruntime_agrees(tmp_path):
    torch.manual_seed(0)
    detector = CradDetector(construct_backbone("efficientnet-b4", None, random=True), variant="tiny", E=16, input_size=SIZE,
                            neck_pool=3).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in detector.head.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    save_checkpoint(str(tmp_path / "best.pt"), detector, {"classes": ["a"], "training": {"dataset": "synthetic"}})
    model = tmp_path / "pooled.onnx"
    assert export_with(tmp_path / "best.pt", model, "--sampling", "tent") == 0
    metadata = {entry.key: entry.value for entry in onnx.load(str(model)).metadata_props}
    assert json.loads(metadata["crad.training"])["neck_pool"] == 3
    completed = subprocess.run(["node", str(ORT_CHECK), str(model), str(export.reference_path_for(model)), "3"],
                               capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["agrees"], result


DEMO_MODEL = REPO_ROOT / "models" / "demo" / "crad-demo.onnx"


@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="models/demo/crad-demo.onnx not in this checkout")
def test_committed_demo_model_meets_the_contract():
    assert DEMO_MODEL.stat().st_size < 40 * 1024 * 1024
    metadata = {e.key: e.value for e in onnx.load(str(DEMO_MODEL)).metadata_props}
    export.check_onnx(DEMO_MODEL, json.loads(metadata["crad.training"])["sampling"], 224)
    assert json.loads(metadata["crad.classes"]) == ["label", "washer", "weave"]
    calibration = json.loads(metadata["crad.calibration"])
    assert calibration["image"]["max"] > calibration["image"]["min"]
    assert metadata["crad.backbone"].startswith("mobilenet-v2-nsfwjs ")
    reference = json.loads(export.reference_path_for(DEMO_MODEL).read_text())
    assert reference["model"] == DEMO_MODEL.name and reference["image"]["shape"][1:] == [3, 224, 224]
    if _onnxruntime_node_available():
        completed = subprocess.run(
            ["node", str(ORT_CHECK), str(DEMO_MODEL), str(export.reference_path_for(DEMO_MODEL))],
            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
        )
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout)
        assert result["agrees"], result


# ---- the uint8 input form (contract format 2) ----------------------------------------------------

def convert_with(source, out, *options):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return export.run(parser.parse_args(["--from-onnx", str(source), "--out", str(out), *options]))


def metadata_of(path) -> dict:
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def uint8_models(checkpoint, exported, tmp_path_factory):
    """{name: (uint8 model, its float-form twin)}: exported from the checkpoint, and converted
    from a float export whose reference images are 8-bit (PNG files, as a trainer's are)."""
    import cv2

    folder = tmp_path_factory.mktemp("uint8")
    from_checkpoint = folder / "model-u8.onnx"
    assert export_with(checkpoint, from_checkpoint, "--sampling", "tent", "--input-form", "uint8") == 0
    images, _ = export.synthetic_reference_images(3, SIZE + 16, seed=5)
    pngs = []
    for index, bgr in enumerate(export.to_uint8_bgr_nhwc(images)):
        pngs.append(folder / f"part-{index}.png")
        cv2.imwrite(str(pngs[-1]), bgr)
    float_source = folder / "model-f.onnx"
    assert export_with(checkpoint, float_source, "--sampling", "tent", "--reference-images", *map(str, pngs)) == 0
    converted = folder / "model-f-u8.onnx"
    assert convert_with(float_source, converted, "--input-form", "uint8") == 0
    return {"checkpoint": (from_checkpoint, exported["tent"]), "converted": (converted, float_source)}


@pytest.mark.parametrize("name", ["checkpoint", "converted"])
def test_uint8_form_graph_and_metadata(uint8_models, name):
    model_path, float_path = uint8_models[name]
    export.check_onnx(model_path, "tent", SIZE, "uint8")  # onnx.checker (full) included
    model = onnx.load(str(model_path))
    (image,) = model.graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["N", SIZE, SIZE, 3]
    float_metadata, metadata = metadata_of(float_path), metadata_of(model_path)
    assert metadata["crad.format"] == "2"
    assert json.loads(metadata["crad.input"]) == {"height": SIZE, "width": SIZE, "color": "BGR", "range": [0, 255], "resize": "opencv-area",
                                                  "dtype": "uint8", "layout": "NHWC"}
    # Every other key as the float form has it (the converted file: as its source had it).
    assert {k: v for k, v in metadata.items() if k not in ("crad.format", "crad.input")} == \
           {k: v for k, v in float_metadata.items() if k not in ("crad.format", "crad.input")}
    # Behind the prefix, the float form's graph unchanged (its input renamed).
    float_nodes = onnx.load(str(float_path)).graph.node
    nodes = [node for node in model.graph.node if not node.name.startswith(export.PREFIX_NAME + "/")]
    assert len(model.graph.node) == len(float_nodes) + 4
    for node, float_node in zip(nodes, float_nodes):
        renamed = [export.FLOAT_IMAGE if name == "image" else name for name in float_node.input]
        assert (node.op_type, list(node.input), list(node.output)) == (float_node.op_type, renamed, list(float_node.output))
    # A form checked as the other is refused.
    with pytest.raises(ValueError, match="input must be image"):
        export.check_onnx(model_path, "tent", SIZE)
    with pytest.raises(ValueError, match="input must be image"):
        export.check_onnx(float_path, "tent", SIZE, "uint8")


@pytest.mark.parametrize("name", ["checkpoint", "converted"])
def test_uint8_reference_holds_uint8_images_and_the_outputs_of_their_exact_float_values(checkpoint, uint8_models, name):
    from crad.model import load_detector

    model_path, _ = uint8_models[name]
    reference = json.loads(export.reference_path_for(model_path).read_text())
    assert reference["format"] == "crad-reference/2" and reference["model"] == model_path.name
    assert {k: reference["image"][k] for k in ("dtype", "layout", "color")} == {"dtype": "uint8", "layout": "NHWC", "color": "BGR"}
    images = export.decode_reference_image(reference["image"])
    assert images.dtype == np.uint8 and images.shape == (3, SIZE, SIZE, 3)
    assert len(np.unique(images)) > 50  # real pictures, not a constant
    float_images = export.from_uint8_bgr_nhwc(images)
    # The graph's own prefix turns them into exactly those float images (no onnxruntime needed).
    np.testing.assert_array_equal(export.run_uint8_prefix(onnx.load(str(model_path)), images), float_images)
    detector, _ = load_detector(str(checkpoint))
    torch_map, torch_score = export.torch_outputs(detector, float_images, "tent")
    expected_map = export.decode_b64_f32(reference["anomaly_map"]["data"], reference["anomaly_map"]["shape"])
    np.testing.assert_allclose(torch_map, expected_map, atol=1e-6)
    np.testing.assert_allclose(torch_score, reference["score"], atol=1e-6)


def test_uint8_prefix_check_catches_a_wrong_channel_order(uint8_models):
    model_path, _ = uint8_models["checkpoint"]
    images = export.decode_reference_image(json.loads(export.reference_path_for(model_path).read_text())["image"])
    rgb_read_as_bgr = export.from_uint8_bgr_nhwc(images[..., ::-1].copy())
    with pytest.raises(export.ExportError, match="does not reproduce"):
        export.check_uint8_prefix(model_path, images, rgb_read_as_bgr)


def test_conversion_refusals(exported, uint8_models, tmp_path, capsys):
    model_path, _ = uint8_models["checkpoint"]
    with pytest.raises(export.ExportError, match="uint8 input form already"):
        export.to_uint8_form(onnx.load(str(model_path)))
    anonymous = onnx.load(str(exported["tent"]))
    del anonymous.metadata_props[:]
    with pytest.raises(export.ExportError, match="not a CRAD model"):
        export.to_uint8_form(anonymous)
    assert convert_with(exported["tent"], tmp_path / "x.onnx") == 2
    assert "give --input-form uint8" in capsys.readouterr().err
    assert convert_with(exported["tent"], tmp_path / "x.onnx", "--input-form", "uint8", "--sampling", "tent") == 2
    assert "--sampling belong to a checkpoint export" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    # The synthetic float reference has no 8-bit images: the model converts, the reference does not.
    assert convert_with(exported["tent"], tmp_path / "x.onnx", "--input-form", "uint8") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"] is None and "not 8-bit values" in report["reference_skipped"]
    assert not export.reference_path_for(tmp_path / "x.onnx").exists()
    export.check_onnx(tmp_path / "x.onnx", "tent", SIZE, "uint8")


def ort_run(model, reference, batch: str):
    """onnxruntime-node on a reference file: the check's result and the outputs themselves."""
    completed = subprocess.run(["node", str(ORT_CHECK), str(model), str(reference), batch, "--print-outputs"],
                               capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    maps = np.frombuffer(base64.b64decode(result["outputs"]["anomaly_map"]), dtype="<f4")
    return result, maps, np.array(result["outputs"]["score"], dtype=np.float32)


def assert_uint8_form_equals_float_form(uint8_model, float_model, folder, tolerance=1e-5):
    """The uint8 model on its reference's uint8 images against the float model on their exact /255
    values (RGB NCHW): both within the reference's tolerance of torch, and within `tolerance` of
    each other (both relative to the outputs' scale, as export.output_tolerance says)."""
    uint8_reference = export.reference_path_for(uint8_model)
    reference = json.loads(uint8_reference.read_text())
    float_images = export.from_uint8_bgr_nhwc(export.decode_reference_image(reference["image"]))
    float_reference = folder / "float-twin.reference.json"
    export.write_reference(float_reference, Path(float_model).name, float_images, reference["sources"],
                           export.decode_b64_f32(reference["anomaly_map"]["data"], reference["anomaly_map"]["shape"]),
                           reference["score"], reference["sampling"])
    for batch in ("1", str(len(reference["score"]))):  # the batch axis is dynamic
        uint8_result, uint8_maps, uint8_scores = ort_run(uint8_model, uint8_reference, batch)
        float_result, float_maps, float_scores = ort_run(float_model, float_reference, batch)
        for result in (uint8_result, float_result):
            assert result["agrees"], result
        forms = export.compare_outputs({"anomaly_map": float_maps, "score": float_scores},
                                       {"anomaly_map": uint8_maps, "score": uint8_scores}, tolerance)
        assert export.breaches(forms) == [], forms


@needs_onnxruntime_node
@pytest.mark.parametrize("name", ["checkpoint", "converted"])
def test_onnxruntime_node_runs_the_uint8_form_as_the_float_form(uint8_models, name, tmp_path):
    assert_uint8_form_equals_float_form(*uint8_models[name], tmp_path)


@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="models/demo/crad-demo.onnx not in this checkout")
def test_committed_demo_model_converts_to_the_uint8_form(tmp_path, capsys):
    converted = tmp_path / "crad-demo-u8.onnx"
    assert convert_with(DEMO_MODEL, converted, "--input-form", "uint8") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"] == str(export.reference_path_for(converted))  # the demo's reference images are 8-bit
    metadata = metadata_of(converted)
    assert metadata["crad.format"] == "2" and json.loads(metadata["crad.input"])["dtype"] == "uint8"
    assert {k: v for k, v in metadata.items() if k not in ("crad.format", "crad.input")} == \
           {k: v for k, v in metadata_of(DEMO_MODEL).items() if k not in ("crad.format", "crad.input")}
    if _onnxruntime_node_available():
        assert_uint8_form_equals_float_form(converted, DEMO_MODEL, tmp_path)
