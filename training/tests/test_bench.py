"""The Magnetic Tile bench end to end on a tiny fake tree (random backbone, small images)."""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from crad import bench
from crad.data import magnetic_tile_split


def make_tiles(root: Path, free: int = 12, defects: int = 3) -> None:
    rng = np.random.default_rng(0)
    for i in range(free):
        (root / "MT_Free" / "Imgs").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "MT_Free" / "Imgs" / f"f{i}.jpg"), rng.integers(90, 110, (70, 60), dtype=np.uint8))
        cv2.imwrite(str(root / "MT_Free" / "Imgs" / f"f{i}.png"), np.zeros((70, 60), np.uint8))
    for kind in ("Crack", "Break"):
        (root / f"MT_{kind}" / "Imgs").mkdir(parents=True, exist_ok=True)
        for i in range(defects):
            image = rng.integers(90, 110, (70, 60), dtype=np.uint8)
            image[20:30, 20:30] = 250
            mask = np.zeros((70, 60), np.uint8)
            mask[20:30, 20:30] = 255
            cv2.imwrite(str(root / f"MT_{kind}" / "Imgs" / f"{kind}{i}.jpg"), image)
            cv2.imwrite(str(root / f"MT_{kind}" / "Imgs" / f"{kind}{i}.png"), mask)


def test_split_follows_the_protocol(tmp_path):
    make_tiles(tmp_path, free=20)
    train, held, test = bench.bench_split(tmp_path, split_seed=0, seed=0, holdout=0.2, limit=None)
    all_train, _ = magnetic_tile_split(tmp_path, 0)
    assert len(all_train) == 16 and len(train) + len(held) == 16 and len(held) == 3
    assert sum(s.label == 0 for s in test) == 4 and sum(s.label == 1 for s in test) == 6
    assert not {s.path for s in train + held} & {s.path for s in test}


@pytest.mark.filterwarnings("ignore")
def test_bench_end_to_end(tmp_path, capsys):
    make_tiles(tmp_path / "mt")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["magnetic-tile", "--data", str(tmp_path / "mt"), "--random-backbone", "--input-size", "64",
                              "--minutes", "0.05", "--holdout", "0.2", "--out", str(tmp_path / "out"),
                              "--overlays", "1", "--no-progress", "--backbone", "mobilenet-v2"])
    assert bench.run(args) == 0
    summary = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert summary["images"]["test"] == (12 - round(0.8 * 12)) + 6 and summary["crad"]["epochs_completed"] >= 1
    # no --epochs: a timed trial epoch sized the run to the budget
    assert summary["timings"]["trial_epoch_seconds"] > 0
    assert not (tmp_path / "out" / "trial-epoch").exists()
    for method in ("crad", "patchcore"):
        for metric in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
            assert 0.0 <= summary[method]["metrics"][metric] <= 1.0
        assert (tmp_path / "out" / method / "results.md").is_file()
        assert list((tmp_path / "out" / method / "overlays" / "magnetic-tile").glob("*.png"))
    printed = capsys.readouterr().out
    assert "DifferNet (published) | 97.7" in printed and "CS-Flow (published) | 99.3" in printed
    assert "PatchCore (mobilenet-v2" in printed
