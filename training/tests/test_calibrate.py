"""Calibration: the documented rule, the normalised score, and metadata round-trips."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from crad.calibrate import (CALIBRATION_KEY, calibrate_scores, check_same_model, normalized_score, read_model_metadata,
                            sidecar_path, store_in_checkpoint, write_model_metadata, write_sidecar)


def maps_with_peaks(peaks, size=8):
    maps = np.zeros((len(peaks), size, size))
    for i, p in enumerate(peaks):
        maps[i, 0, 0] = p
    return maps


def test_max_margin_rule():
    scores = np.array([1.0, 2.0, 4.0, 3.0])
    maps = maps_with_peaks([0.5, 1.5, 2.5, 0.0])
    cal = calibrate_scores(maps, scores, margin=0.1, rule="max-margin")
    # threshold = max + 0.1 x (max - min); min/max over the normals
    assert cal["image"] == {"threshold": pytest.approx(4.0 + 0.1 * 3.0), "min": 1.0, "max": 4.0}
    assert cal["pixel"] == {"threshold": pytest.approx(2.5 + 0.1 * 2.5), "min": 0.0, "max": 2.5}
    assert cal["images"] == 4 and "4 normal images" in cal["source"]
    # the most anomalous normal lands at 0.5 - margin, the threshold at exactly 0.5
    assert normalized_score(4.0, cal) == pytest.approx(0.4)
    assert normalized_score(cal["image"]["threshold"], cal) == pytest.approx(0.5)
    assert normalized_score(100.0, cal) == 1.0 and normalized_score(-5.0, cal) == 0.0
    quantile = calibrate_scores(maps, scores, quantile=0.5, margin=0.0, rule="max-margin")
    assert quantile["image"]["threshold"] == pytest.approx(2.5)


def test_default_rule_bounds_the_false_reject_rate_and_records_itself():
    rng = np.random.default_rng(0)
    scores = np.exp(rng.normal(0.0, 0.3, 60))  # 60 good parts: too few for a distribution-free 1 % bound
    maps = maps_with_peaks(scores * 2)
    cal = calibrate_scores(maps, scores)
    log_scores = np.log(scores)
    k = cal["rule"]["image"]["k"]
    assert cal["rule"]["image"]["method"] == "log-normal tail" and 2.3 < k < 3.0  # z(0.99) = 2.33 plus the uncertainty
    assert cal["image"]["threshold"] == pytest.approx(np.exp(log_scores.mean() + k * log_scores.std(ddof=1)))
    assert cal["pixel"]["threshold"] == pytest.approx(2 * cal["image"]["threshold"])  # the same rule on image peaks
    assert "FRR <= 0.01 at 0.95 confidence" in cal["source"]
    chosen = next(r for r in cal["tradeoff"] if r["threshold_rule"] == "chosen")
    assert chosen["good"] == 60 and chosen["false_rejects"] == int((scores >= cal["image"]["threshold"]).sum())
    json.dumps(cal, allow_nan=False)  # the model's metadata must stay valid JSON for the daemon


def test_with_labelled_defects_f1_optimal():
    normal_scores = np.array([1.0, 2.0, 3.0])
    defect_scores = np.array([2.5, 5.0])
    normal_maps = np.zeros((3, 4, 4))
    defect_maps = np.zeros((2, 4, 4))
    defect_maps[0, 1, 1] = defect_maps[1, 2, 2] = 6.0
    defect_maps[1, 3, 3] = 0.5  # a defect pixel scored low
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 1, 1] = masks[1, 2, 2] = masks[1, 3, 3] = 1
    cal = calibrate_scores(normal_maps, normal_scores, defect_maps, defect_scores, masks)
    # image: t=5 -> F1 2/3; t=3 -> TP1 FP1 -> 1/2; t=2.5 -> TP2 FP1 -> 4/5 (best); t=2 -> TP2 FP2 -> 2/3
    assert cal["image"] == {"threshold": 2.5, "min": 1.0, "max": 5.0}
    # pixel: t=6 -> TP 2 of 3, FP 0 -> 0.8; t=0.5 -> TP 3, FP 0 -> 1.0 (best)
    assert cal["pixel"] == {"threshold": 0.5, "min": 0.0, "max": 6.0}
    assert cal["images"] == 5 and "F1-optimal" in cal["source"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2 normal images"):
        calibrate_scores(np.zeros((1, 4, 4)), np.array([1.0]))
    with pytest.raises(ValueError, match="all image scores are equal"):
        calibrate_scores(maps_with_peaks([1, 2]), np.array([1.0, 1.0]))


def tiny_onnx(path, metadata=None):
    node = helper.make_node("Identity", ["image"], ["score"])
    graph = helper.make_graph([node], "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))


def test_metadata_round_trip_keeps_other_keys_and_replaces(tmp_path):
    source = tmp_path / "model.onnx"
    tiny_onnx(source, {"crad.format": "1", "crad.variant": "crad-s", CALIBRATION_KEY: "old"})
    cal = calibrate_scores(maps_with_peaks([0.5, 1.5]), np.array([1.0, 2.0]))
    target = tmp_path / "out" / "calibrated.onnx"
    write_model_metadata(source, target, {CALIBRATION_KEY: json.dumps(cal), "crad.extra": "x"})
    meta = read_model_metadata(target)
    assert meta["crad.format"] == "1" and meta["crad.variant"] == "crad-s" and meta["crad.extra"] == "x"
    assert json.loads(meta[CALIBRATION_KEY]) == cal
    assert read_model_metadata(source)[CALIBRATION_KEY] == "old"  # the input is untouched
    onnx.checker.check_model(onnx.load(str(target)))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["calibrated.onnx"]  # no temporary left behind
    with pytest.raises(TypeError, match="crad.bad"):
        write_model_metadata(source, target, {"crad.bad": 1})


def test_sidecar_holds_the_same_object(tmp_path):
    cal = calibrate_scores(maps_with_peaks([0.5, 1.5]), np.array([1.0, 2.0]))
    path = sidecar_path(tmp_path / "m.onnx")
    assert path.endswith("m.onnx.calibration.json")
    write_sidecar(path, cal)
    assert json.loads(open(path).read()) == cal


def test_store_in_checkpoint(tmp_path):
    torch.save({"format": "crad-checkpoint/1", "head_state": {"w": torch.ones(2)}, "extra": {"classes": ["a"]}},
               tmp_path / "in.pt")
    cal = calibrate_scores(maps_with_peaks([0.5, 1.5]), np.array([1.0, 2.0]))
    store_in_checkpoint(tmp_path / "in.pt", tmp_path / "out.pt", cal)
    payload = torch.load(tmp_path / "out.pt")
    assert payload["extra"] == {"classes": ["a"], "calibration": cal}
    assert torch.equal(payload["head_state"]["w"], torch.ones(2))
    torch.save({"no": "extra"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        store_in_checkpoint(tmp_path / "bad.pt", tmp_path / "x.pt", cal)


def test_onnx_from_another_model_is_refused():
    build = {"input_size": 224, "variant": "crad-s"}
    check_same_model({"crad.input": json.dumps({"height": 224}), "crad.variant": "crad-s"}, build, "m.onnx", "c.pt")
    with pytest.raises(SystemExit, match="input size 256 vs 224"):
        check_same_model({"crad.input": json.dumps({"height": 256})}, build, "m.onnx", "c.pt")


def test_synthetic_anomalies_balance_the_default_and_warn_when_most_pass():
    rng = np.random.default_rng(2)
    scores = np.exp(rng.normal(0.0, 0.2, 40))
    maps = maps_with_peaks(scores * 2)
    separated = np.exp(rng.normal(1.2, 0.2, 80))
    cal = calibrate_scores(maps, scores, synthetic_scores=separated)
    assert cal["rule"]["image"]["rule"] == "balanced" and "balanced" in cal["source"]
    assert cal["synthetic"]["anomalies"] == 80 and "warning" not in cal
    assert (cal["image"]["min"], cal["image"]["max"]) == (scores.min(), scores.max())  # synthetic scores stay out
    assert all("synthetic_miss_rate" in row for row in cal["tradeoff"])
    # anomalies that score like good parts: even the balanced threshold passes most, and says so loudly
    alike = np.exp(rng.normal(0.05, 0.2, 80))
    frr_only = calibrate_scores(maps, scores, rule="frr", synthetic_scores=alike)
    assert frr_only["rule"]["image"]["rule"] == "frr" and frr_only["synthetic"]["miss_rate_at_threshold"] > 0.5
    assert "passes" in frr_only["warning"] and "synthetic anomalies" in frr_only["warning"]
    json.dumps(frr_only, allow_nan=False)
