"""Choosing the settings from good images alone: the synthetic anomalies (crad.anomalies) and the
selection in `crad train` (crad.select), on small synthetic data with a random backbone."""

import argparse
import json

import numpy as np
import pytest
import torch

from crad.anomalies import KINDS, SIZES, make_anomalies
from crad.model import load_detector
from crad.train import add_arguments, run

INPUT = 64


def good_images(count: int, seed: int) -> np.ndarray:
    """Smooth, slightly noisy 'good' images (N, 3, S, S) in [0, 1]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.3, 0.6, 96, dtype=np.float32)
    base = np.broadcast_to(ramp[None, None, :], (count, 3, 96, 96))
    return np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1).astype(np.float32)


def test_anomalies_are_seeded_and_span_every_kind_and_size():
    images = good_images(4, 0)
    first, records = make_anomalies(images, 10, seed=3)
    again, _ = make_anomalies(images, 10, seed=3)
    other, _ = make_anomalies(images, 10, seed=4)
    assert first.shape == (40, 3, 96, 96) and first.dtype == np.float32
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert {r["kind"] for r in records} == set(KINDS) and {r["size"] for r in records} == set(SIZES)
    for k, record in enumerate(records):
        changed = np.abs(first[k] - images[record["image"]]).max(axis=0) > 1e-6
        assert changed.any(), f"anomaly {k} ({record['kind']}, {record['size']}) changed nothing"
        assert record["area"] > 0 and changed.mean() <= record["area"] + 1e-9  # only inside its region
    # sizes grow from tiny to large (scratches stay thin: compare the filled kinds)
    filled = [r for r in records if r["kind"] in ("cutpaste", "perlin", "spot")]
    mean_area = {size: np.mean([r["area"] for r in filled if r["size"] == size] or [np.nan]) for size in SIZES}
    known = [mean_area[s] for s in SIZES if not np.isnan(mean_area[s])]
    assert known == sorted(known) and known[-1] > 10 * known[0]
    with pytest.raises(ValueError, match="square RGB"):
        make_anomalies(images[:, :1], 1, seed=0)


def train_args(tmp_path, name: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([
        "--data", str(tmp_path / "data"), "--backbone", "mobilenet-v2", "--random-backbone",
        "--variant", "tiny", "--E", "16", "--input-size", str(INPUT), "--epochs", "1", "--batch-size", "4",
        "--min-steps", "0", "--select-steps", "4", "--select-anomalies", "2", "--out", str(tmp_path / name),
        "--no-progress", *extra,
    ])


@pytest.fixture
def synthetic_data(tmp_path):
    from crad.synth import write_dataset

    write_dataset(tmp_path / "data", ["weave", "label"], n_train=8, n_test_good=0, n_test_defect=0, size=80, seed=0)
    return tmp_path


def without_seconds(record: dict) -> dict:
    record = json.loads(json.dumps(record))
    for key in ("seconds", "seconds_with_anomalies"):
        record.pop(key, None)
    for candidate in record.get("candidates", []):
        candidate.pop("seconds", None)
    return record


def test_train_selects_by_default_records_it_and_is_seeded(synthetic_data):
    tmp_path = synthetic_data
    assert run(train_args(tmp_path, "a")) == 0
    detector, extra = load_detector(str(tmp_path / "a" / "best.pt"))
    record = extra["training"]["settings_selection"]
    assert record["mode"] == "on" and [c["neck_pool"] for c in record["candidates"]] == [1, 3]
    # 16 training images, none held out (too few): a seeded quarter is held out for the selection only
    assert record["good_images"] == 4 and record["synthetic_anomalies"] == 8 and "selection only" in record["good_source"]
    for candidate in record["candidates"]:
        assert 0.0 <= candidate["synthetic_auroc"] <= 1.0 and set(candidate["by_size"]) <= set(SIZES)
        assert set(candidate["by_kind"]) <= set(KINDS)
    best = max(record["candidates"], key=lambda c: c["synthetic_auroc"])
    assert record["chosen"]["neck_pool"] == detector.neck_pool
    assert record["candidates"][[c["neck_pool"] for c in record["candidates"]].index(detector.neck_pool)]["synthetic_auroc"] == best["synthetic_auroc"]
    assert record["schedule"]["steps"] >= 4

    # the same seed and images: the same choice and figures, and the same trained model
    assert run(train_args(tmp_path, "b")) == 0
    again, extra_b = load_detector(str(tmp_path / "b" / "best.pt"))
    assert without_seconds(extra_b["training"]["settings_selection"]) == without_seconds(record)
    assert all(torch.equal(a, b) for a, b in zip(detector.head.state_dict().values(), again.head.state_dict().values()))

    # the selection does not disturb the training that follows: the same as --select off with its choice
    chosen = str(record["chosen"]["neck_pool"])
    assert run(train_args(tmp_path, "c", "--select", "off", "--neck-pool", chosen)) == 0
    given, extra_c = load_detector(str(tmp_path / "c" / "best.pt"))
    assert all(torch.equal(a, b) for a, b in zip(detector.head.state_dict().values(), given.head.state_dict().values()))
    assert extra_c["training"]["settings_selection"] == {"mode": "off", "text": f"--select off: neck pool {chosen} as given"}

    # a resumed run keeps its choice and the record
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--resume", str(tmp_path / "a" / "last.pt"), "--epochs", "2", "--no-progress"])) == 0
    resumed, extra_r = load_detector(str(tmp_path / "a" / "last.pt"))
    assert resumed.neck_pool == detector.neck_pool
    assert without_seconds(extra_r["training"]["settings_selection"]) == without_seconds(record)


def test_select_off_keeps_the_given_settings_and_only_stops_after_choosing(synthetic_data, caplog):
    tmp_path = synthetic_data
    with caplog.at_level("INFO", logger="crad.select"):
        assert run(train_args(tmp_path, "off", "--select", "off", "--neck-pool", "3")) == 0
    assert not [r for r in caplog.records if r.name == "crad.select"]  # no candidate was trained
    detector, extra = load_detector(str(tmp_path / "off" / "best.pt"))
    assert detector.neck_pool == 3 and extra["training"]["settings_selection"]["mode"] == "off"

    assert run(train_args(tmp_path, "only", "--select", "only", "--select-neck-pools", "1,5")) == 0
    record = json.loads((tmp_path / "only" / "selection.json").read_text())
    assert [c["neck_pool"] for c in record["candidates"]] == [1, 5]
    assert not (tmp_path / "only" / "best.pt").exists()


def test_selection_arguments_are_checked(synthetic_data):
    for bad in ("2", "1,1", "x", "0"):
        with pytest.raises(SystemExit):
            train_args(synthetic_data, "bad", "--select-neck-pools", bad)
