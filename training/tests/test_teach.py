"""`crad teach`: good images -> a calibrated ONNX file, with the JSON lines the daemon reads, and
plain-words errors (exit 2) for what an operator can fix. Tiny: random backbone, 64 px, 2 epochs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crad.teach import MIN_IMAGES, calibration_split

TRAINING = Path(__file__).resolve().parents[1]
FAST = ["--random-backbone", "--backbone", "mobilenet-v2", "--input-size", "64", "--epochs", "2", "--min-steps", "0",
        "--batch-size", "8", "--select-steps", "8", "--threads", "1"]


def good_images(folder: Path, count: int) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.full((80, 80, 3), 120, np.uint8) + rng.integers(0, 20, (80, 80, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"good-{i:03d}.png"), image)
    return folder


def teach(tmp_path: Path, data: Path, *extra: str) -> tuple[int, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(TRAINING)}
    done = subprocess.run([sys.executable, "-m", "crad", "teach", "--data", str(data), "--work", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out" / "model.onnx"), *FAST, *extra],
                          capture_output=True, text=True, timeout=600, env=env)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines


def test_split_keeps_most_images_for_training():
    assert calibration_split(MIN_IMAGES) == 10
    assert calibration_split(100) == 20
    assert calibration_split(2000) == 100
    for count in range(MIN_IMAGES, 300):
        assert 0 < calibration_split(count) < count


def test_teach_trains_calibrates_exports_with_progress(tmp_path):
    data = good_images(tmp_path / "good", 24)
    code, lines = teach(tmp_path, data)
    assert code == 0, lines
    phases = [line["phase"] for line in lines]
    assert phases[0] == "prepare" and phases[-1] == "done"
    assert phases.index("train") < phases.index("calibrate") < phases.index("export")
    epochs = [line for line in lines if line["phase"] == "train"]
    assert [line["epoch"] for line in epochs] == [1, 2] and all(line["epochs"] == 2 for line in epochs)
    assert all(line["loss"] > 0 for line in epochs)
    fractions = [line["fraction"] for line in lines[:-1]]
    assert fractions == sorted(fractions) and fractions[-1] < 1
    done = lines[-1]
    onnx = Path(done["onnx"])
    assert onnx.is_file() and onnx == (tmp_path / "out" / "model.onnx").resolve()
    assert done["figures"]["images"] == {"train": 14, "calibration": 10}
    assert done["figures"]["threshold"] is not None
    assert done["trainerVersion"].startswith("crad ")
    assert len(done["datasetSha256"]) == 64
    import onnx as onnx_lib

    metadata = {p.key: p.value for p in onnx_lib.load(str(onnx)).metadata_props}
    assert "crad.calibration" in metadata


def test_too_few_images_is_a_plain_error(tmp_path):
    data = good_images(tmp_path / "good", MIN_IMAGES - 1)
    code, lines = teach(tmp_path, data)
    assert code == 2
    assert lines[-1]["phase"] == "error"
    assert f"{MIN_IMAGES - 1} good images" in lines[-1]["error"] and f"at least {MIN_IMAGES}" in lines[-1]["error"]
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_unreadable_images_are_named(tmp_path):
    data = good_images(tmp_path / "good", 22)
    (data / "broken.png").write_bytes(b"not a png")
    code, lines = teach(tmp_path, data)
    assert code == 2
    assert "1 of 23 images cannot be read (broken.png)" in lines[-1]["error"]
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_no_room_on_disk_is_a_plain_error(tmp_path):
    data = good_images(tmp_path / "good", 22)
    code, lines = teach(tmp_path, data, "--min-free-mb", str(2**40))
    assert code == 2
    assert lines[-1]["error"].startswith("the disk is full")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_a_missing_folder_is_a_plain_error(tmp_path):
    code, lines = teach(tmp_path, tmp_path / "nowhere")
    assert code == 2 and "does not exist" in lines[-1]["error"]


def test_missing_backbone_weights_are_a_plain_error(tmp_path):
    data = good_images(tmp_path / "good", 22)
    env = {**os.environ, "PYTHONPATH": str(TRAINING)}
    done = subprocess.run([sys.executable, "-m", "crad", "teach", "--data", str(data), "--work", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out" / "model.onnx"), "--backbone", "mobilenet-v2",
                           "--backbone-weights", str(tmp_path / "absent.tflite"), "--epochs", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["phase"] == "error" and last["error"].startswith("train failed: ") and "absent.tflite" in last["error"]
