"""The synthetic generator: determinism, exact masks, the MVTec layout it writes."""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from crad import synth
from crad.data import load_samples, read_mask


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    return synth.run(parser.parse_args(argv))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = ["--train", "2", "--test-good", "1", "--test-defect", "3", "--size", "64"]
    assert run_cli(["--out", str(tmp_path / "a"), "--seed", "5", *args]) == 0
    assert run_cli(["--out", str(tmp_path / "b"), "--seed", "5", *args]) == 0
    assert run_cli(["--out", str(tmp_path / "c"), "--seed", "6", *args]) == 0
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_test_set_does_not_depend_on_train_count(tmp_path):
    synth.write_dataset(tmp_path / "a", ["label"], 1, 1, 2, size=64, seed=0)
    synth.write_dataset(tmp_path / "b", ["label"], 3, 1, 2, size=64, seed=0)
    a, b = tree_digest(tmp_path / "a" / "label" / "test"), tree_digest(tmp_path / "b" / "label" / "test")
    assert a == b


@pytest.mark.parametrize("class_name", synth.CLASSES)
def test_masks_are_exact(class_name):
    for i, defect in enumerate(synth.DEFECTS[class_name]):
        normal, defective, mask = synth.render_pair(class_name, defect, 96, np.random.SeedSequence([7, i]))
        changed = np.any(normal != defective, axis=2)
        assert mask.sum() >= synth.MIN_DEFECT_AREA * 96 * 96, defect
        assert not np.any(changed & (mask == 0)), f"{defect}: pixels changed outside the mask"
        # inside the mask nearly every pixel differs visibly (clipping at 0/255 may hide a few)
        diff = np.abs(normal.astype(int) - defective.astype(int)).max(axis=2)
        assert (diff[mask == 1] >= 5).mean() > 0.97, defect


def test_normal_images_vary_naturally():
    a, _ = synth.make_image("washer", "train", 0, 64, seed=0)
    b, _ = synth.make_image("washer", "train", 1, 64, seed=0)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 40  # same product, not a different picture


def test_written_layout_loads_as_mvtec(tmp_path):
    counts = synth.write_dataset(tmp_path, ["weave", "label"], 2, 2, 6, size=64, seed=1)
    assert counts["weave"]["train"] == 2 and sum(counts["weave"][k] for k in synth.DEFECTS["weave"] if k in counts["weave"]) == 6
    train = load_samples(tmp_path, split="train")
    test = load_samples(tmp_path, split="test")
    assert len(train) == 4 and len(test) == 16
    for s in test:
        if s.label == 1:
            mask = read_mask(s.mask_path, None)
            assert mask.shape == (64, 64) and mask.sum() > 0
    manifest = json.loads((tmp_path / "synth.json").read_text())
    assert manifest["seed"] == 1 and manifest["classes"] == ["weave", "label"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        synth.write_dataset(tmp_path, ["weave"], 1, 1, 1, size=64)


def test_samples_folder(tmp_path):
    assert run_cli(["--samples-out", str(tmp_path), "--samples-per-class", "4", "--size", "64"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == sorted(e["file"] for e in manifest["images"]) and len(names) == 12
    assert {e["expected"] for e in manifest["images"]} == {"OK", "NG"}


def test_unknown_class_is_named():
    with pytest.raises(ValueError, match="class\\(es\\) bottle;"):
        synth.write_dataset("/nonexistent", ["bottle"], 1, 1, 1)
