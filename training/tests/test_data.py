"""Dataset layouts, image reading and splits, on tiny fake trees built in tmp_path."""

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from crad.data import (DataError, ImageDataset, Sample, binarize_mask, detect_layout, limit_samples, load_images,
                       load_samples, read_image, read_mask, resize_image, split_samples)

SHARED_MT = Path(os.environ.get("CRAD_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "magnetic-tile"


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def gray(value: int, shape=(20, 24)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def make_mvtec(root: Path) -> None:
    for cls in ("bolt", "cloth"):
        for i in range(3):
            write_png(root / cls / "train" / "good" / f"{i:03d}.png", gray(100 + i))
        write_png(root / cls / "test" / "good" / "000.png", gray(90))
        for defect in ("crack", "spot"):
            write_png(root / cls / "test" / defect / "000.png", gray(50))
            mask = np.zeros((20, 24), np.uint8)
            mask[2:5, 3:7] = 255
            write_png(root / cls / "ground_truth" / defect / "000_mask.png", mask)


def test_mvtec_layout(tmp_path):
    make_mvtec(tmp_path)
    assert detect_layout(tmp_path) == "mvtec"
    train = load_samples(tmp_path, split="train")
    assert [(s.class_name, s.label, s.defect) for s in train] == [("bolt", 0, "good")] * 3 + [("cloth", 0, "good")] * 3
    test = load_samples(tmp_path, "mvtec", "test", classes=["cloth"])
    assert [(s.defect, s.label) for s in test] == [("crack", 1), ("good", 0), ("spot", 1)]
    crack = test[0]
    assert crack.mask_path == str(tmp_path / "cloth" / "ground_truth" / "crack" / "000_mask.png")
    assert test[1].mask_path is None


def test_mvtec_missing_class_and_empty_class_are_named(tmp_path):
    make_mvtec(tmp_path)
    with pytest.raises(DataError, match="'screw'"):
        load_samples(tmp_path, "mvtec", "train", classes=["screw"])
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="class 'empty' has no images"):
        load_samples(tmp_path, "mvtec", "train")
    with pytest.raises(DataError, match="not found: .*nowhere"):
        load_samples(tmp_path / "nowhere", "mvtec")


def test_mvtec_class_folder_given_instead_of_root(tmp_path):
    make_mvtec(tmp_path)
    with pytest.raises(DataError, match="ONE MVTec class folder.*--classes bolt"):
        load_samples(tmp_path / "bolt")


def test_jsonl_layout(tmp_path):
    make_mvtec(tmp_path)
    lines = [
        {"filename": "bolt/train/good/000.png", "label": 0, "label_name": "good", "clsname": "bolt"},
        {"filename": "bolt/test/crack/000.png", "label": 1, "label_name": "defective", "clsname": "bolt",
         "maskname": "bolt/ground_truth/crack/000_mask.png"},
        {"filename": "cloth/test/good/000.png", "label": 0, "label_name": "good", "clsname": "cloth"},
    ]
    (tmp_path / "test.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    samples = load_samples(tmp_path, "jsonl", "test")
    assert [(s.class_name, s.label, s.defect) for s in samples] == [("bolt", 0, "good"), ("bolt", 1, "defective"), ("cloth", 0, "good")]
    assert samples[1].mask_path == str(tmp_path / "bolt/ground_truth/crack/000_mask.png")
    assert samples[0].mask_path is None
    assert [s.class_name for s in load_samples(tmp_path, "jsonl", "test", classes=["cloth"])] == ["cloth"]
    # the meta file itself as root, and an explicit meta argument
    assert len(load_samples(tmp_path / "test.json")) == 3
    assert len(load_samples(tmp_path, meta="test.json")) == 3
    with pytest.raises(DataError, match="screw"):
        load_samples(tmp_path, "jsonl", "test", classes=["screw"])
    with pytest.raises(DataError, match="meta file not found"):
        load_samples(tmp_path, "jsonl", "train")


def test_jsonl_bad_line_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"filename": "a.png", "label": 0, "clsname": "x"}\n{"filename": "b.png"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2"):
        load_samples(tmp_path, "jsonl", "train")


def make_magnetic_tile(root: Path, free: int = 10) -> None:
    for i in range(free):
        write_png(root / "MT_Free" / "Imgs" / f"free_{i}.jpg", gray(120))
        write_png(root / "MT_Free" / "Imgs" / f"free_{i}.png", gray(0))
    for kind in ("Crack", "Blowhole"):
        for i in range(2):
            write_png(root / f"MT_{kind}" / "Imgs" / f"{kind}_{i}.jpg", gray(60))
            mask = gray(0)
            mask[5:9, 5:9] = 255
            mask[4, 4] = 3  # anti-aliasing noise: not a defect pixel
            write_png(root / f"MT_{kind}" / "Imgs" / f"{kind}_{i}.png", mask)


def test_magnetic_tile_layout(tmp_path):
    make_magnetic_tile(tmp_path)
    assert detect_layout(tmp_path) == "magnetic-tile"
    train = load_samples(tmp_path, split="train")
    test = load_samples(tmp_path, split="test")
    assert len(train) == 8 and all(s.label == 0 and s.defect == "good" for s in train)
    assert sorted(s.defect for s in test) == ["blowhole", "blowhole", "crack", "crack", "good", "good"]
    assert not {s.path for s in train} & {s.path for s in test}
    assert all(s.path.endswith(".jpg") and s.mask_path.endswith(".png") for s in test)
    assert {s.class_name for s in test} == {"magnetic-tile"}
    crack = next(s for s in test if s.defect == "crack")
    assert read_mask(crack.mask_path, None).sum() == 16
    with pytest.raises(DataError, match="one class"):
        load_samples(tmp_path, "magnetic-tile", classes=["crack"])


def test_magnetic_tile_without_free_is_an_error(tmp_path):
    write_png(tmp_path / "MT_Crack" / "Imgs" / "a.jpg", gray(10))
    with pytest.raises(DataError, match="MT_Free"):
        load_samples(tmp_path, "magnetic-tile")


def test_folder_layout_flat_and_nested(tmp_path):
    flat = tmp_path / "line3"
    for i in range(3):
        write_png(flat / f"{i}.png", gray(10 * i))
    (flat / "notes.txt").write_text("not an image")
    samples = load_samples(flat)
    assert [(Path(s.path).name, s.class_name, s.label, s.mask_path) for s in samples] == [
        ("0.png", "line3", 0, None), ("1.png", "line3", 0, None), ("2.png", "line3", 0, None)]
    nested = tmp_path / "customer"
    write_png(nested / "caps" / "a.png", gray(1))
    write_png(nested / "caps" / "day2" / "b.jpg", gray(2))
    write_png(nested / "tubes" / "c.bmp", gray(3))
    samples = load_samples(nested, "folder")
    assert [(s.class_name, Path(s.path).name) for s in samples] == [("caps", "a.png"), ("caps", "b.jpg"), ("tubes", "c.bmp")]
    (nested / "empty").mkdir()
    with pytest.raises(DataError, match="without images.*empty"):
        load_samples(nested, "folder")
    with pytest.raises(DataError, match="bottles not found"):
        load_samples(nested, "folder", classes=["bottles"])


def test_unreadable_images_are_skipped_counted_and_named(tmp_path, caplog):
    write_png(tmp_path / "ok.png", gray(200))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.jpg").write_bytes(b"")
    samples = load_samples(tmp_path, "folder")
    assert len(samples) == 3
    with caplog.at_level(logging.WARNING, logger="crad.data"):
        images, kept, skipped = load_images(samples, 16)
    assert images.shape == (1, 3, 16, 16) and [Path(s.path).name for s in kept] == ["ok.png"]
    assert sorted(Path(p).name for p in skipped) == ["broken.png", "empty.jpg"]
    assert "skipped 2 unreadable" in caplog.text and "broken.png" in caplog.text
    dataset = ImageDataset(samples, 16)
    assert len(dataset) == 1 and len(dataset.skipped) == 2
    image, mask, label, index = dataset[0]
    assert tuple(image.shape) == (3, 16, 16) and tuple(mask.shape) == (1, 16, 16) and label == 0 and index == 0
    assert abs(float(image.mean()) - 200 / 255) < 1e-6


def test_read_image_gray_to_rgb_and_range(tmp_path):
    write_png(tmp_path / "g.png", gray(51, (8, 8)))
    image = read_image(str(tmp_path / "g.png"), 8)
    assert image.shape == (3, 8, 8) and image.dtype == np.float32
    assert np.allclose(image, 0.2)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 2] = 255  # BGR red
    write_png(tmp_path / "red.png", colour)
    rgb = read_image(str(tmp_path / "red.png"), None)
    assert rgb[0].min() == 1.0 and rgb[1].max() == 0.0 and rgb[2].max() == 0.0


def test_resize_uses_area_when_shrinking_and_linear_when_enlarging():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert np.array_equal(resize_image(image, 20), cv2.resize(image, (20, 20), interpolation=cv2.INTER_AREA))
    assert np.array_equal(resize_image(image, 64), cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR))
    # one side grows (30 -> 35), the other shrinks (40 -> 35): INTER_AREA
    assert np.array_equal(resize_image(image, 35), cv2.resize(image, (35, 35), interpolation=cv2.INTER_AREA))
    assert resize_image(image, (40, 30)) is image


def test_binarize_mask_rules():
    assert binarize_mask(np.array([[0, 1]], np.uint8)).tolist() == [[0, 1]]
    assert binarize_mask(np.array([[0, 3, 127, 128, 255]], np.uint8)).tolist() == [[0, 0, 0, 1, 1]]
    assert binarize_mask(np.array([[[0, 0, 200], [0, 0, 0]]], np.uint8)).tolist() == [[1, 0]]


def sample(path: str, cls: str = "a", label: int = 0) -> Sample:
    return Sample(path, label, cls, "good" if label == 0 else "x", None)


def test_split_is_seeded_stable_stratified():
    samples = [sample(f"a/{i:02d}", "a") for i in range(10)] + [sample(f"b/{i:02d}", "b") for i in range(5)]
    a1, b1 = split_samples(samples, 0.8, seed=3)
    a2, b2 = split_samples(list(reversed(samples)), 0.8, seed=3)
    assert a1 == a2 and b1 == b2  # input order does not matter
    assert sum(s.class_name == "a" for s in a1) == 8 and sum(s.class_name == "b" for s in a1) == 4
    assert sorted(s.path for s in a1 + b1) == sorted(s.path for s in samples)
    a3, _ = split_samples(samples, 0.8, seed=4)
    assert a3 != a1  # the seed matters
    tiny_a, tiny_b = split_samples([sample("x/0"), sample("x/1")], 0.99, seed=0)
    assert len(tiny_a) == 1 and len(tiny_b) == 1


def test_limit_samples_caps_each_class_and_label():
    samples = [sample(f"a/{i:02d}", "a") for i in range(10)] + [sample(f"a/d{i}", "a", 1) for i in range(3)]
    limited = limit_samples(samples, 4, seed=0)
    assert sum(s.label == 0 for s in limited) == 4 and sum(s.label == 1 for s in limited) == 3
    assert limit_samples(samples, None, 0) == samples


@pytest.mark.skipif(not SHARED_MT.is_dir(), reason=f"Magnetic Tile data not found at {SHARED_MT}")
def test_real_magnetic_tile_counts():
    train = load_samples(SHARED_MT, split="train")
    test = load_samples(SHARED_MT, split="test")
    assert len(train) + sum(s.label == 0 for s in test) == 952
    assert sum(s.label == 1 for s in test) == 115 + 85 + 57 + 32 + 103
    assert len(train) == round(0.8 * 952)
