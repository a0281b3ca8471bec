"""Dataset layouts, image reading and seeded splits.

Every image the trainer, the evaluator and the calibrator see goes through `read_image`, which
uses THE one resize of the project (`resize_image`, OpenCV): the daemon resizes frames with the
same OpenCV call, so scores seen at calibration are the scores seen on the line.

Layouts understood by `load_samples`:

- "mvtec": <root>/<class>/train/good/*, <root>/<class>/test/<defect>/*,
  <root>/<class>/ground_truth/<defect>/<name>_mask.png ("good" is the normal defect name).
- "jsonl": the reference implementation's JSON Lines meta: one object per line with
  filename, label, label_name, clsname and (for defects) maskname, paths relative to root.
- "magnetic-tile": <root>/MT_<kind>/Imgs/<name>.jpg with the mask <name>.png beside it;
  MT_Free holds the normal images. One product class, "magnetic-tile"; its train/test split is
  `magnetic_tile_split` (seeded, documented there).
- "folder": a plain folder of good images (a customer's folder). Images directly inside the
  root make one class named after the root; otherwise each sub-folder is a class (images found
  recursively inside it). All samples are label 0 with no mask; `split` is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

log = logging.getLogger("crad.data")

try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # synth and the metrics work without torch
    _TorchDataset = object  # type: ignore[assignment,misc]

# Identical to the daemon's list (src/shared/images.ts; test_image_extensions compares them), so a
# customer's folder means the same images to the trainer and to the line.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
LAYOUTS = ("auto", "mvtec", "jsonl", "magnetic-tile", "folder")
GOOD = "good"
MAGNETIC_TILE_CLASS = "magnetic-tile"
# Fixed so that every run (train, eval, bench) sees the same Magnetic Tile test set.
MAGNETIC_TILE_SEED = 0
MAGNETIC_TILE_TRAIN_FRACTION = 0.8


class DataError(ValueError):
    """A dataset that cannot be used as given (missing folder, empty class, bad meta line)."""


@dataclass
class Sample:
    path: str
    label: int  # 0 normal, 1 defective
    class_name: str
    defect: str  # "good" for normal samples
    mask_path: str | None


# ----------------------------------------------------------------------------- images


def resize_interpolation(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """INTER_LINEAR only when the image grows in both directions, INTER_AREA otherwise.

    INTER_AREA averages the source pixels under each output pixel (no aliasing when
    shrinking); when one side shrinks and the other grows it still behaves well, so only a
    true enlargement uses bilinear interpolation. The daemon applies the same rule.
    """
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if dh >= sh and dw >= sw:
        return cv2.INTER_LINEAR
    return cv2.INTER_AREA


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """THE one resize of the project (OpenCV). `size` is an int (square) or (height, width)."""
    dh, dw = (size, size) if isinstance(size, int) else size
    sh, sw = image.shape[:2]
    if (sh, sw) == (dh, dw):
        return image
    return cv2.resize(image, (dw, dh), interpolation=resize_interpolation((sh, sw), (dh, dw)))


def _decode(path: str, flags: int) -> np.ndarray | None:
    # np.fromfile + imdecode also works for non-ASCII paths, where cv2.imread fails silently.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, flags)


def read_image_uint8(path: str, size: int | None) -> np.ndarray | None:
    """RGB uint8 (size, size, 3), or None when the file cannot be decoded.

    Grayscale images become 3 identical channels, alpha is dropped, 16-bit images are
    reduced to 8 bits (OpenCV's IMREAD_COLOR, as the daemon decodes frames).
    """
    bgr = _decode(path, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    if size is not None:
        bgr = resize_image(bgr, size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str, size: int | None) -> np.ndarray | None:
    """float32 (3, size, size) RGB in [0, 1], or None for an unreadable file."""
    rgb = read_image_uint8(path, size)
    if rgb is None:
        return None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """0/1 uint8 from a mask image.

    Masks stored as 0/1 count any non-zero pixel; 0/255 masks (MVTec) and anti-aliased masks
    (Magnetic Tile's edges take values 1..254) count a pixel as defect when it is at least
    half covered (>= 128): the usual rasterisation rule, and it drops the faint edge noise.
    """
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.max(initial=0) <= 1:
        return (mask > 0).astype(np.uint8)
    half = 128 if mask.dtype == np.uint8 else (np.iinfo(mask.dtype).max + 1) // 2
    return (mask >= half).astype(np.uint8)


def read_mask(path: str, size: int | None) -> np.ndarray:
    """uint8 (size, size) of 0/1, binarised at full resolution then resized (nearest)."""
    raw = _decode(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"cannot read mask image {path}")
    mask = binarize_mask(raw)
    if size is not None and mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return mask


def sample_mask(sample: Sample, size: int) -> np.ndarray:
    """The sample's 0/1 mask, or all zeros when it has none."""
    if sample.mask_path is None:
        return np.zeros((size, size), dtype=np.uint8)
    return read_mask(sample.mask_path, size)


def warn_skipped(skipped: Sequence[str], what: str = "images") -> None:
    if skipped:
        shown = ", ".join(skipped[:20]) + (f" ... (+{len(skipped) - 20} more)" if len(skipped) > 20 else "")
        log.warning("skipped %d unreadable %s: %s", len(skipped), what, shown)


class _Decoded(_TorchDataset):  # type: ignore[misc,valid-type]
    """(index, float32 image or None): decoding for DataLoader workers."""

    def __init__(self, samples: Sequence[Sample], size: int):
        self.samples, self.size = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return index, read_image(self.samples[index].path, self.size)


def _collate_readable(items):
    import torch

    readable = [(i, image) for i, image in items if image is not None]
    images = torch.from_numpy(np.stack([image for _, image in readable])) if readable else None
    return images, [i for i, _ in readable], [i for i, image in items if image is None]


def image_batches(samples: Sequence[Sample], size: int, batch: int, skipped: list[str], num_workers: int = 0,
                  pin_memory: bool = False):
    """Yield (float32 n x 3 x size x size, their samples) for up to `batch` readable images at a time.

    Unreadable files are appended to `skipped` and named in one warning once all are read. With
    workers (crad.device.loader_options gives them for a GPU) DataLoader workers decode the images
    into torch tensors, pinned if asked, while the GPU computes; without, they are decoded here.
    """
    if num_workers > 0:
        from torch.utils.data import DataLoader

        loader = DataLoader(_Decoded(samples, size), batch_size=batch, shuffle=False, collate_fn=_collate_readable,
                            num_workers=num_workers, pin_memory=pin_memory)
        for images, readable, unreadable in loader:
            skipped.extend(samples[i].path for i in unreadable)
            if images is not None:
                yield images, [samples[i] for i in readable]
        warn_skipped(skipped)
        return
    pending: list[np.ndarray] = []
    kept: list[Sample] = []
    for sample in samples:
        image = read_image(sample.path, size)
        if image is None:
            skipped.append(sample.path)
            continue
        pending.append(image)
        kept.append(sample)
        if len(pending) == batch:
            yield np.stack(pending), kept
            pending, kept = [], []
    if pending:
        yield np.stack(pending), kept
    warn_skipped(skipped)


def load_images(samples: Sequence[Sample], size: int) -> tuple[np.ndarray, list[Sample], list[str]]:
    """Read every sample: (float32 N x 3 x size x size, kept samples, skipped paths).

    Unreadable files are skipped, counted and named in a warning.
    """
    skipped: list[str] = []
    batches = list(image_batches(samples, size, max(1, len(samples)), skipped))
    if not batches:
        return np.zeros((0, 3, size, size), dtype=np.float32), [], skipped
    return batches[0][0], batches[0][1], skipped


# ----------------------------------------------------------------------------- layouts


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in entries if _is_image(p))


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{what} not found: {path}")


def detect_layout(root: str | os.PathLike, meta: str | None = None) -> str:
    """Which layout `root` is in (see the module docstring)."""
    rootp = Path(root)
    if meta is not None or rootp.suffix.lower() in (".jsonl", ".json") and rootp.is_file():
        return "jsonl"
    _require_dir(rootp, "dataset folder")
    subdirs = [p for p in rootp.iterdir() if p.is_dir()]
    if any(p.name.startswith("MT_") and (p / "Imgs").is_dir() for p in subdirs):
        return "magnetic-tile"
    if any((p / "train").is_dir() or (p / "test").is_dir() for p in subdirs):
        return "mvtec"
    if (rootp / "train").is_dir() or (rootp / "test").is_dir():
        raise DataError(
            f"{rootp} looks like ONE MVTec class folder; pass its parent folder (the dataset root) "
            f"and --classes {rootp.name}"
        )
    return "folder"


def load_samples(
    root: str | os.PathLike,
    layout: str = "auto",
    split: str = "train",
    classes: list[str] | None = None,
    meta: str | None = None,
) -> list[Sample]:
    """List the samples of a dataset split (files are not opened here; see `load_images`).

    Raises DataError naming the missing folder, the requested class that has no images, or
    the bad meta line.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    if layout == "auto":
        layout = detect_layout(root, meta)
    if layout == "mvtec":
        samples = _load_mvtec(Path(root), split, classes)
    elif layout == "jsonl":
        samples = _load_jsonl(Path(root), split, classes, meta)
    elif layout == "magnetic-tile":
        samples = _load_magnetic_tile(Path(root), split, classes)
    else:
        samples = _load_folder(Path(root), classes)
    if not samples:
        raise DataError(f"no images found in {root} (layout {layout}, split {split})")
    return samples


def _class_dirs(root: Path, classes: list[str] | None, is_class) -> list[Path]:
    _require_dir(root, "dataset folder")
    if classes is None:
        found = sorted(p for p in root.iterdir() if p.is_dir() and is_class(p))
        if not found:
            raise DataError(f"no class folders found in {root}")
        return found
    dirs = []
    for name in classes:
        _require_dir(root / name, f"class folder {name!r}")
        dirs.append(root / name)
    return dirs


def _load_mvtec(root: Path, split: str, classes: list[str] | None) -> list[Sample]:
    samples: list[Sample] = []
    class_dirs = _class_dirs(root, classes, lambda p: (p / "train").is_dir() or (p / "test").is_dir())
    for class_dir in class_dirs:
        split_dir = class_dir / split
        _require_dir(split_dir, f"{split} folder of class {class_dir.name!r}")
        defect_dirs = [split_dir / GOOD] if split == "train" else sorted(p for p in split_dir.iterdir() if p.is_dir())
        if split == "train":
            _require_dir(split_dir / GOOD, f"train/good folder of class {class_dir.name!r}")
        class_samples: list[Sample] = []
        missing_masks: list[str] = []
        for defect_dir in defect_dirs:
            defect = defect_dir.name
            for image in _images_in(defect_dir):
                mask_path = None
                if defect != GOOD:
                    candidate = class_dir / "ground_truth" / defect / f"{image.stem}_mask.png"
                    if candidate.is_file():
                        mask_path = str(candidate)
                    else:
                        missing_masks.append(str(image))
                label = 0 if defect == GOOD else 1
                class_samples.append(Sample(str(image), label, class_dir.name, defect, mask_path))
        if not class_samples:
            raise DataError(f"class {class_dir.name!r} has no images in {split_dir}")
        if missing_masks:
            log.warning(
                "%d defect images of class %r have no ground-truth mask (they count for image "
                "metrics only): %s", len(missing_masks), class_dir.name, ", ".join(missing_masks[:10]),
            )
        samples.extend(class_samples)
    return samples


def _load_jsonl(root: Path, split: str, classes: list[str] | None, meta: str | None) -> list[Sample]:
    if root.is_file():  # the meta file itself was given as the root
        meta_path, root = root, root.parent
    elif meta is not None:
        meta_path = Path(meta) if Path(meta).is_absolute() or Path(meta).is_file() else root / meta
    else:
        candidates = [root / f"{split}.jsonl", root / f"{split}.json"]
        meta_path = next((c for c in candidates if c.is_file()), candidates[0])
    if not meta_path.is_file():
        raise DataError(f"JSON Lines meta file not found: {meta_path}")
    samples: list[Sample] = []
    with open(meta_path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                filename, label, clsname = entry["filename"], int(entry["label"]), entry["clsname"]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{meta_path}:{number}: bad meta line ({exc!r}): {line.strip()[:200]}") from exc
            if label not in (0, 1):
                raise DataError(f"{meta_path}:{number}: label must be 0 or 1, got {label}")
            maskname = entry.get("maskname")
            defect = entry.get("label_name") or (GOOD if label == 0 else "defective")
            samples.append(
                Sample(
                    str(root / filename), label, clsname, defect,
                    str(root / maskname) if maskname else None,
                )
            )
    if classes is not None:
        present = {s.class_name for s in samples}
        absent = [c for c in classes if c not in present]
        if absent:
            raise DataError(f"class(es) {', '.join(absent)} have no entries in {meta_path}")
        samples = [s for s in samples if s.class_name in classes]
    return samples


def _magnetic_tile_all(root: Path) -> tuple[list[Sample], list[Sample]]:
    """(normal samples of MT_Free, defect samples of every other MT_<kind>), sorted by path."""
    _require_dir(root, "Magnetic Tile folder")
    kinds = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("MT_"))
    if not any(k.name == "MT_Free" for k in kinds):
        raise DataError(f"Magnetic Tile folder {root} has no MT_Free folder of normal images")
    normal: list[Sample] = []
    defects: list[Sample] = []
    for kind in kinds:
        imgs = kind / "Imgs"
        _require_dir(imgs, f"Imgs folder of {kind.name}")
        # The .png files beside the .jpg images are their masks.
        images = sorted(p for p in imgs.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
        if not images:
            raise DataError(f"{imgs} holds no .jpg images")
        is_free = kind.name == "MT_Free"
        for image in images:
            mask = image.with_suffix(".png")
            sample = Sample(
                str(image), 0 if is_free else 1, MAGNETIC_TILE_CLASS,
                GOOD if is_free else kind.name[3:].lower(),
                str(mask) if mask.is_file() else None,
            )
            (normal if is_free else defects).append(sample)
    return normal, defects


def magnetic_tile_split(
    root: str | os.PathLike,
    seed: int = MAGNETIC_TILE_SEED,
    train_fraction: float = MAGNETIC_TILE_TRAIN_FRACTION,
) -> tuple[list[Sample], list[Sample]]:
    """The protocol of the published Magnetic Tile results: (train, test).

    train = a seeded `train_fraction` of MT_Free (via `split_samples`); test = the rest of
    MT_Free plus every defect image. The default seed and fraction are fixed so that every
    command sees the same test set.
    """
    normal, defects = _magnetic_tile_all(Path(root))
    train, test_good = split_samples(normal, train_fraction, seed)
    return train, test_good + defects


def _load_magnetic_tile(root: Path, split: str, classes: list[str] | None) -> list[Sample]:
    if classes is not None and list(classes) != [MAGNETIC_TILE_CLASS]:
        raise DataError(
            f"the Magnetic Tile set has one class, {MAGNETIC_TILE_CLASS!r}; got classes {classes}"
        )
    train, test = magnetic_tile_split(root)
    return train if split == "train" else test


def _load_folder(root: Path, classes: list[str] | None) -> list[Sample]:
    _require_dir(root, "image folder")
    top_level = _images_in(root)
    if top_level:
        groups = {root.name: _images_in(root, recursive=True)}
    else:
        groups = {d.name: _images_in(d, recursive=True) for d in sorted(p for p in root.iterdir() if p.is_dir())}
        if not groups:
            raise DataError(f"image folder {root} holds no images and no class sub-folders")
    if classes is not None:
        absent = [c for c in classes if c not in groups]
        if absent:
            raise DataError(f"class folder(s) {', '.join(absent)} not found in {root}")
        groups = {c: groups[c] for c in classes}
    empty = [name for name, images in groups.items() if not images]
    if empty:
        raise DataError(f"class folder(s) without images in {root}: {', '.join(empty)}")
    return [Sample(str(p), 0, name, GOOD, None) for name, images in groups.items() for p in images]


# ----------------------------------------------------------------------------- splits


def split_samples(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded, stable split into (a, b) with about `fraction` of the samples in a.

    Stratified by (class, label): within each group the samples are sorted by path (so the
    input order does not matter), shuffled with numpy's default_rng(seed), and the first
    round(fraction * n) go to a. A group of n >= 2 keeps at least one sample on each side
    when 0 < fraction < 1. Both halves come back sorted by path.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"split fraction must be in [0, 1], got {fraction}")
    groups: dict[tuple[str, int], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.class_name, sample.label), []).append(sample)
    a: list[Sample] = []
    b: list[Sample] = []
    rng = np.random.default_rng(seed)
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda s: s.path)
        n = len(group)
        k = int(round(fraction * n))
        if 0.0 < fraction < 1.0 and n >= 2:
            k = min(max(k, 1), n - 1)
        order = rng.permutation(n)
        a.extend(group[i] for i in order[:k])
        b.extend(group[i] for i in order[k:])
    return sorted(a, key=lambda s: s.path), sorted(b, key=lambda s: s.path)


def limit_samples(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    """At most `limit` samples per (class, label) group, seeded (for smoke tests and demos)."""
    if limit is None:
        return list(samples)
    groups: dict[tuple[str, int], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.class_name, sample.label), []).append(sample)
    kept: list[Sample] = []
    for key in sorted(groups):
        group = groups[key]
        if len(group) > limit:
            group, _ = split_samples(group, limit / len(group), seed)
            group = group[:limit]
        kept.extend(group)
    return sorted(kept, key=lambda s: s.path)


# ----------------------------------------------------------------------------- torch dataset

class ImageDataset(_TorchDataset):  # type: ignore[misc,valid-type]
    """Images decoded once (uint8, to keep memory at a quarter of float32) and masks.

    Unreadable images are skipped at construction, counted and named in a warning;
    `samples` holds the kept ones and `skipped` the paths left out. Items are
    (image float32 3xSxS in [0,1], mask float32 1xSxS of 0/1, label int, index int).
    """

    def __init__(self, samples: Sequence[Sample], size: int):
        self.size = size
        self.samples: list[Sample] = []
        self.skipped: list[str] = []
        images: list[np.ndarray] = []
        for sample in samples:
            rgb = read_image_uint8(sample.path, size)
            if rgb is None:
                self.skipped.append(sample.path)
                continue
            images.append(rgb)
            self.samples.append(sample)
        warn_skipped(self.skipped)
        self._images = images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        import torch

        sample = self.samples[index]
        image = torch.from_numpy(self._images[index].transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))
        mask = torch.from_numpy(sample_mask(sample, self.size).astype(np.float32)[None])
        return image, mask, sample.label, index
