"""`crad eval` and `crad calibrate` end to end on synthetic data with a tiny random-backbone model."""

import argparse
import json

import pytest
import torch

from crad import calibrate, evaluate, export, synth
from crad.calibrate import CALIBRATION_KEY, read_model_metadata
from crad.model import build_detector, load_detector, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore")


def cli(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    synth.write_dataset(root / "data", ["washer", "label"], 2, 3, 3, size=72, seed=0)
    torch.manual_seed(0)
    detector = build_detector("mobilenet-v2", "crad-s", input_size=64, random_backbone=True)
    save_checkpoint(str(root / "model.pt"), detector, {"classes": ["washer", "label"]})
    return root


def test_eval_cli_writes_report(setup, capsys):
    out = setup / "eval"
    assert cli(evaluate, ["--model", setup / "model.pt", "--data", setup / "data", "--out", out, "--overlays", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["classes"]) == {"washer", "label"}
    assert results["classes"]["washer"]["good"] == 3 and results["classes"]["washer"]["defect"] == 3
    assert results["images"] == 12 and results["model"].endswith("model.pt")
    for metric in evaluate.METRICS:
        assert 0.0 <= results["mean"][metric] <= 1.0
    assert len(list((out / "overlays" / "washer").glob("*.png"))) == 2
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed and "Threshold trade-off" in printed
    assert {row["good"] for row in results["tradeoff"]} == {6} and {row["defect"] for row in results["tradeoff"]} == {6}


def test_calibrate_cli_all_targets(setup):
    data = setup / "data"
    # checkpoint -> sidecar JSON, normals only
    assert cli(calibrate, ["--model", setup / "model.pt", "--normal", data, "--out", setup / "cal.json"]) == 0
    cal = json.loads((setup / "cal.json").read_text())
    assert cal["images"] == 6 and cal["image"]["threshold"] > cal["image"]["max"]
    # 3 synthetic anomalies per normal image by default: too few normals (6) to balance, the frr rule
    assert cal["synthetic"]["anomalies"] == 18 and all(row["synthetic"] == 18 for row in cal["tradeoff"])
    assert "only 6 normals" in cal["source"]
    # with labelled defects: F1-optimal thresholds, min/max over defects too
    assert cli(calibrate, ["--model", setup / "model.pt", "--normal", data, "--defects", data,
                           "--out", setup / "cal2.json"]) == 0
    cal2 = json.loads((setup / "cal2.json").read_text())
    assert cal2["images"] == 12 and "6 defect" in cal2["source"] and "pixel: F1-optimal" in cal2["source"]
    # checkpoint copy carries the calibration, and export puts it into the ONNX metadata
    assert cli(calibrate, ["--model", setup / "model.pt", "--normal", data, "--out", setup / "calibrated.pt"]) == 0
    _, extra = load_detector(str(setup / "calibrated.pt"))
    assert extra["calibration"] == cal and extra["classes"] == ["washer", "label"]
    # an exported ONNX file: scores from the checkpoint, calibration written into a copy
    assert cli(export, [setup / "model.pt", "--out", setup / "model.onnx", "--no-reference"]) == 0
    assert CALIBRATION_KEY not in read_model_metadata(setup / "model.onnx")
    assert cli(calibrate, ["--model", setup / "model.onnx", "--checkpoint", setup / "model.pt", "--normal", data,
                           "--out", setup / "calibrated.onnx", "--checkpoint-out", setup / "also.pt"]) == 0
    meta = read_model_metadata(setup / "calibrated.onnx")
    assert json.loads(meta[CALIBRATION_KEY]) == cal and meta["crad.variant"] == "crad-s"
    assert load_detector(str(setup / "also.pt"))[1]["calibration"] == cal
    with pytest.raises(SystemExit, match="--checkpoint"):
        cli(calibrate, ["--model", setup / "model.onnx", "--normal", data, "--out", setup / "x.onnx"])
