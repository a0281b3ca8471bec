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
def test_bench_end_to_end(tmp_path, capsys, one_thread):
    make_tiles(tmp_path / "mt")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["magnetic-tile", "--data", str(tmp_path / "mt"), "--random-backbone", "--input-size", "64",
                              "--minutes", "0.05", "--holdout", "0.2", "--out", str(tmp_path / "out"),
                              "--overlays", "1", "--no-progress", "--backbone", "mobilenet-v2", "--neck-pool", "3"])
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
    assert "PatchCore (mobilenet-v2" in printed and "CRAD crad-s (mobilenet-v2, neck pool 3," in printed
    assert summary["neck_pool"] == 3


def bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


# A random MobileNetV2 at 64 px (X is 8x8) with a small decoder: a smoke test of the plumbing, fast on one core.
TINY = ("--random-backbone", "--backbone", "mobilenet-v2", "--input-size", "64", "--variant", "tiny", "--E", "16",
        "--batch-size", "4", "--no-progress")


@pytest.fixture
def one_thread(monkeypatch):
    """crad.device gives torch every core; these smoke tests are tiny, and on a busy machine a second
    thread only waits for the first (several times slower)."""
    import crad.device

    monkeypatch.setattr(crad.device, "usable_cpus", lambda: 1)


def test_few_shot_draws_are_seeded(tmp_path):
    from crad.bench_fewshot import few_shot_draw

    make_tiles(tmp_path, free=20)
    pool, _ = magnetic_tile_split(tmp_path, 0)
    draw = few_shot_draw(pool, 8, seed=0)
    assert len(draw) == 8 and {s.path for s in draw} <= {s.path for s in pool}
    assert [s.path for s in few_shot_draw(pool, 8, seed=0)] == [s.path for s in draw]
    assert [s.path for s in few_shot_draw(pool, 8, seed=1)] != [s.path for s in draw]
    with pytest.raises(ValueError):
        few_shot_draw(pool, len(pool) + 1, seed=0)


@pytest.mark.filterwarnings("ignore")
def test_few_shot_end_to_end(tmp_path, capsys, one_thread):
    make_tiles(tmp_path / "mt")
    args = bench_args("magnetic-tile", "--data", str(tmp_path / "mt"), "--few-shot", "4,8", "--seeds", "0,1",
                      "--epochs", "1", "--min-steps", "3", "--out", str(tmp_path / "out"), *TINY)
    assert bench.run(args) == 0
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert sorted((d["n"], d["seed"]) for d in report["draws"]) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert report["images"]["test"] == (12 - round(0.8 * 12)) + 6  # the protocol's whole test set
    by_key = {(d["n"], d["seed"]): d for d in report["draws"]}
    assert by_key[4, 0]["train"] != by_key[4, 1]["train"] and len(by_key[8, 1]["train"]) == 8
    for draw in report["draws"]:
        # the trainer's small-set defaults: nothing held out, epochs raised to reach --min-steps
        assert draw["holdout_rule"].startswith("auto: no hold-out")
        assert draw["crad"]["schedule"]["steps"] >= 3 and draw["crad"]["schedule"]["batch_size"] == 4
        for method in ("crad", "patchcore"):
            assert 0.0 <= draw[method]["metrics"]["image_auroc"] <= 1.0
    for size in ("4", "8"):
        for method in ("crad", "patchcore"):
            image = report["summary"][size][method]["image_auroc"]
            assert image["n"] == 2 and image["min"] <= image["mean"] <= image["max"] and image["std"] >= 0
    printed = capsys.readouterr().out
    assert "| 4 | CRAD tiny |" in printed and "| 8 | PatchCore |" in printed and " ± " in printed
    assert (tmp_path / "out" / "bench.md").read_text().count("| 8 |") == 2


@pytest.mark.filterwarnings("ignore")
def test_unified_end_to_end(tmp_path, capsys, one_thread):
    make_tiles(tmp_path / "mt")
    args = bench_args("unified", "--data", str(tmp_path / "mt"), "--mt-train", "5", "--synth-classes", "weave", "washer",
                      "--synth-train", "4", "--synth-test-good", "2", "--synth-test-defect", "2", "--synth-size", "64",
                      "--epochs", "1", "--overlays", "0", "--neck-pool", "3", "--out", str(tmp_path / "out"), *TINY)
    assert bench.run(args) == 0
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert "CRAD tiny (neck pool 3) unified" in (tmp_path / "out" / "bench.md").read_text()
    classes = ["magnetic-tile", "weave", "washer"]
    assert report["classes"] == classes
    assert report["images"]["magnetic-tile"]["train"] == 5 and report["images"]["weave"] == {
        "train": 4, "test": 4, "test_defective": 2}
    methods = report["methods"]
    assert set(methods) == {"crad-unified", "crad-separate", "patchcore-unified", "patchcore-separate"}
    for name, record in methods.items():
        assert record["models"] == (1 if name.endswith("unified") else 3)
        for class_name in classes:
            for metric in ("image_auroc", "pixel_auroc", "aupro"):
                assert 0.0 <= record["classes"][class_name][metric] <= 1.0
        assert record["ms_per_image_head"] > 0
    # three heads of one architecture; the checkpoints also hold the backbone
    crad_unified, crad_separate = methods["crad-unified"]["size"], methods["crad-separate"]["size"]
    assert crad_separate["parameters"] == 3 * crad_unified["parameters"]
    assert crad_unified["checkpoint_bytes"] > crad_unified["head_bytes"] > 0
    # every model trained the same epochs on its own images only
    details = methods["crad-separate"]["details"]
    assert [details[c]["images"] for c in classes] == [5, 4, 4] and methods["crad-unified"]["details"]["all"]["images"] == 13
    assert all(d["epochs_completed"] == 1 for d in details.values())
    assert methods["patchcore-unified"]["size"]["memory_bank"] > 0
    printed = capsys.readouterr().out
    assert "| CRAD tiny (neck pool 3) unified | 1 |" in printed and "| PatchCore separate | 3 |" in printed
    assert "- CRAD, unified vs separate" in printed
    assert (tmp_path / "out" / "synth" / "weave" / "train" / "good").is_dir()


@pytest.mark.filterwarnings("ignore")
def test_select_bench_end_to_end(tmp_path, capsys, one_thread):
    make_tiles(tmp_path / "mt")
    args = bench_args("select", "--data", str(tmp_path / "mt"), "--select-datasets", "label", "--synth-train", "80",
                      "--synth-test-good", "3", "--synth-test-defect", "3", "--synth-size", "64", "--epochs", "1",
                      "--min-steps", "0", "--select-steps", "2", "--select-anomalies", "1", "--out", str(tmp_path / "out"), *TINY)
    assert bench.run(args) == 0
    row = json.loads((tmp_path / "out" / "bench.json").read_text())["rows"][0]
    # as crad train sees it: 10 % of the good images held out; the test set only for the real figures
    assert row["images"] == {"train": 72, "holdout": 8, "test": 6, "test_defective": 3, "synthetic_anomalies": 8}
    assert [c["neck_pool"] for c in row["candidates"]] == [1, 3] and row["chosen"] in (1, 3)
    chosen = next(c for c in row["candidates"] if c["neck_pool"] == row["chosen"])
    assert chosen["synthetic_auroc"] == max(c["synthetic_auroc"] for c in row["candidates"])
    assert row["agrees"] == (chosen["image_auroc"] == max(c["image_auroc"] for c in row["candidates"]))
    for rule in ("threshold_auto", "threshold_frr"):
        assert chosen[rule]["defects"] == 3 and chosen[rule]["good"] == 3
    assert 0.0 <= row["patchcore"]["image_auroc"] <= 1.0
    assert "| label |" in capsys.readouterr().out
