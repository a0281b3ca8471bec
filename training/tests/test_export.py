"""ONNX export against the model contract: both sampling forms, metadata, reference file,
and (where onnxruntime-node is installed) the exported graph run by onnxruntime."""

import argparse
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
    assert np.abs(grid_map - tent_map).max() < 1e-5 and np.abs(grid_score - tent_score).max() < 1e-5
    np.testing.assert_allclose(tent_map, expected_map, atol=1e-6)
    np.testing.assert_allclose(tent_score, reference["score"], atol=1e-6)
    assert min(reference["score"]) > 1e-3  # meaningful magnitudes, not a graph of zeros


def _onnxruntime_node_available() -> bool:
    return shutil.which("node") is not None and (REPO_ROOT / "node_modules" / "onnxruntime-node").is_dir()


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
        assert result["mapDiff"] < 1e-4 and result["scoreDiff"] < 1e-4, result


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
    assert result["mapDiff"] < 1e-4 and result["scoreDiff"] < 1e-4, result


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
        assert result["mapDiff"] < 1e-4 and result["scoreDiff"] < 1e-4, result
