"""A seeded generator of synthetic product images with exact defect masks (numpy + OpenCV).

Three product classes, each with natural normal variation (lighting gain and gradient, small
shifts and rotations, sensor noise) and several defect kinds:

| class  | what                                         | defects |
| ------ | -------------------------------------------- | ------- |
| weave  | a basket-woven fabric texture                | hole, pulled_thread, stain, cut |
| washer | a machined washer with two notches, fixed pose | scratch, dent, crack, chip, contamination |
| label  | a printed label (text + barcode) on a belt     | missing_print, smudge, scratch, stain, spot |

Exact masks: a defect is drawn on the clean (noise-free) rendering; the mask is exactly the
set of pixels it changed by at least MASK_MIN_CHANGE grey levels, and every other pixel is put
back to the normal rendering. Lighting and sensor noise are applied afterwards, identically to
the normal and the defective version, so outside the mask a defective image is bit-identical to
the normal image drawn from the same seed.

Determinism: every image has its own numpy Generator seeded from (seed, class, split, index),
so the same arguments give identical bytes, and changing --train does not change the test set.
Output: the MVTec AD layout (<class>/train/good, <class>/test/<kind>,
<class>/ground_truth/<kind>/<name>_mask.png, masks 0/255) plus synth.json with the arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

GENERATOR_VERSION = "1"
MASK_MIN_CHANGE = 8.0  # grey levels (0..255) a defect must change a pixel by to be in the mask
MIN_DEFECT_AREA = 0.0006  # fraction of the image a defect must cover (else it is redrawn)
SPLIT_CODES = {"train": 0, "test_good": 1, "test_defect": 2, "samples": 3}

DEFECTS: dict[str, tuple[str, ...]] = {
    "weave": ("hole", "pulled_thread", "stain", "cut"),
    "washer": ("scratch", "dent", "crack", "chip", "contamination"),
    "label": ("missing_print", "smudge", "scratch", "stain", "spot"),
}
CLASSES = tuple(DEFECTS)


class Scene:
    """A clean rendering (float32 HxWx3 RGB, 0..255) and the geometry its defects need."""

    def __init__(self, image: np.ndarray, region: np.ndarray, extra: dict | None = None):
        self.image = image
        self.region = region  # uint8 0/1: where defects may start (the product's surface)
        self.extra = extra or {}


# ----------------------------------------------------------------------------- helpers


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _pose(rng: np.random.Generator, size: int, max_shift: float = 0.025, max_angle_deg: float = 2.0):
    dx, dy = rng.uniform(-max_shift, max_shift, 2) * size
    angle = math.radians(rng.uniform(-max_angle_deg, max_angle_deg))
    return float(dx), float(dy), angle


def _blob(rng: np.random.Generator, size: int, center, radius: float, vertices: int = 14) -> np.ndarray:
    """An irregular filled polygon (uint8 0/1), radius jittered per vertex."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.55, 1.15, vertices)
    pts = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], axis=1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask


def _random_walk(rng: np.random.Generator, start, angle: float, steps: int, step_len: float, wiggle: float) -> np.ndarray:
    pts = [np.array(start, np.float64)]
    for _ in range(steps):
        angle += rng.uniform(-wiggle, wiggle)
        pts.append(pts[-1] + step_len * np.array([math.cos(angle), math.sin(angle)]))
    return np.round(np.array(pts)).astype(np.int32)


def _line_mask(size: int, polylines: list[np.ndarray], thickness: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.polylines(mask, polylines, False, 1, thickness=thickness, lineType=cv2.LINE_8)
    return mask


def _point_in(rng: np.random.Generator, region: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(region)
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def _tint(image: np.ndarray, where: np.ndarray, color, alpha: float) -> np.ndarray:
    out = image.copy()
    sel = where.astype(bool)
    out[sel] = (1 - alpha) * out[sel] + alpha * np.asarray(color, np.float32)
    return out


# ----------------------------------------------------------------------------- weave


def _render_weave(rng: np.random.Generator, size: int) -> Scene:
    dx, dy, angle = _pose(rng, size, max_angle_deg=1.5)
    period = size / 16 * rng.uniform(0.98, 1.02)
    x, y = _grid(size)
    c, s = math.cos(angle), math.sin(angle)
    u = (x - dx) * c + (y - dy) * s
    v = -(x - dx) * s + (y - dy) * c
    i, j = np.floor(u / period), np.floor(v / period)
    fu, fv = u / period - i, v / period - j
    horizontal = ((i + j) % 2) == 0
    across = np.where(horizontal, fv, fu)  # position across the thread
    along = np.where(horizontal, u, v)
    profile = 0.55 + 0.45 * np.sin(np.pi * np.clip(across, 0, 1)) ** 0.7
    fibres = 1.0 + 0.05 * np.sin(2 * np.pi * along / (period / 3.0))
    base = np.array([196, 176, 140], np.float32) * np.float32(rng.uniform(0.96, 1.04)) * rng.uniform(0.985, 1.015, 3).astype(np.float32)
    image = profile[..., None] * fibres[..., None] * base
    return Scene(image.astype(np.float32), np.ones((size, size), np.uint8), {"period": period, "angle": angle})


def _weave_defect(kind: str, rng: np.random.Generator, scene: Scene, size: int) -> np.ndarray:
    image = scene.image
    margin = int(0.1 * size)
    center = rng.integers(margin, size - margin, 2)
    if kind == "hole":
        region = _blob(rng, size, center, rng.uniform(0.025, 0.05) * size)
        return _tint(image, region, (28, 24, 20), 0.92)
    if kind == "pulled_thread":
        # one thread lifted out of the weave: a flat, brighter band along the weave direction
        angle = scene.extra["angle"] + (0 if rng.random() < 0.5 else math.pi / 2)
        length = rng.uniform(0.25, 0.5) * size
        half = np.array([math.cos(angle), math.sin(angle)]) * length / 2
        band = _line_mask(size, [np.round([center - half, center + half]).astype(np.int32)],
                          max(2, int(scene.extra["period"] * 0.35)))
        return _tint(image, band, (238, 222, 186), 0.75)
    if kind == "stain":
        region = _blob(rng, size, center, rng.uniform(0.05, 0.09) * size, vertices=18)
        region = cv2.dilate(region, np.ones((3, 3), np.uint8))
        return _tint(image, region, (92, 62, 26), 0.45)
    if kind == "cut":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.12, 0.3) * size
        half = np.array([math.cos(angle), math.sin(angle)]) * length / 2
        cut = _line_mask(size, [np.round([center - half, center + half]).astype(np.int32)], 2)
        return _tint(image, cut, (20, 18, 16), 0.9)
    raise ValueError(f"unknown weave defect {kind!r}")


# ----------------------------------------------------------------------------- washer


def _render_washer(rng: np.random.Generator, size: int) -> Scene:
    dx, dy, angle = _pose(rng, size, max_shift=0.02, max_angle_deg=3.0)
    cx, cy = size / 2 + dx, size / 2 + dy
    r_out, r_in = 0.36 * size, 0.16 * size
    x, y = _grid(size)
    rx, ry = x - cx, y - cy
    r = np.sqrt(rx**2 + ry**2)
    phi = np.arctan2(ry, rx)
    # matte background with a faint texture that follows the pose (the belt moves with it)
    background = 62 + 6 * np.sin((x - dx) / 5.0) * np.sin((y - dy) / 7.0)
    image = np.repeat(background[..., None], 3, axis=2) * np.array([1.0, 1.0, 1.08], np.float32)
    ring = (r <= r_out) & (r >= r_in)
    # two notches in the outer rim fix the pose
    for notch_angle in (angle, angle + np.pi):
        along = rx * math.cos(notch_angle) + ry * math.sin(notch_angle)
        across = -rx * math.sin(notch_angle) + ry * math.cos(notch_angle)
        ring &= ~((along > r_out - 0.05 * size) & (np.abs(across) < 0.03 * size))
    # brushed metal: anisotropic highlight across the angle, darker towards the edges
    radial = (r - r_in) / (r_out - r_in)
    metal = 150 + 45 * np.cos(2 * (phi - angle - 0.6)) + 25 * np.sin(np.pi * np.clip(radial, 0, 1)) - 12
    metal = metal + 4 * np.sin(r * 1.7)
    tone = np.array([1.0, 1.0, 0.97], np.float32) * rng.uniform(0.97, 1.03)
    image = np.where(ring[..., None], metal[..., None] * tone, image).astype(np.float32)
    region = ring.astype(np.uint8)
    return Scene(image, region, {"center": (cx, cy), "r_out": r_out, "r_in": r_in, "angle": angle})


def _washer_defect(kind: str, rng: np.random.Generator, scene: Scene, size: int) -> np.ndarray:
    image, region = scene.image, scene.region
    cx, cy = scene.extra["center"]
    r_out, r_in = scene.extra["r_out"], scene.extra["r_in"]
    if kind == "scratch":
        start = np.array(_point_in(rng, region), np.float64)
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.1, 0.25) * size
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
        line = _line_mask(size, [np.round([start, end]).astype(np.int32)], int(rng.integers(1, 3))) & region
        return _tint(image, line, (250, 250, 245), 0.8)
    if kind == "dent":
        spot = _blob(rng, size, _point_in(rng, region), rng.uniform(0.015, 0.03) * size) & region
        return _tint(image, spot, (55, 52, 50), 0.7)
    if kind == "crack":
        theta = rng.uniform(0, 2 * np.pi)
        from_outer = rng.random() < 0.5
        radius = r_out - 1 if from_outer else r_in + 1
        start = (cx + radius * math.cos(theta), cy + radius * math.sin(theta))
        direction = theta + (np.pi if from_outer else 0.0)
        walk = _random_walk(rng, start, direction, int(rng.integers(10, 18)), 0.012 * size, 0.6)
        crack = _line_mask(size, [walk], 1) & region
        return _tint(image, crack, (22, 20, 20), 0.95)
    if kind == "chip":
        # a piece broken out of the outer rim: the background shows through
        theta = rng.uniform(0, 2 * np.pi)
        center = (cx + r_out * math.cos(theta), cy + r_out * math.sin(theta))
        piece = _blob(rng, size, center, rng.uniform(0.04, 0.07) * size) & region
        return _tint(image, piece, (62, 62, 67), 1.0)
    if kind == "contamination":
        dust = np.zeros((size, size), np.uint8)
        cx0, cy0 = _point_in(rng, region)
        for _ in range(int(rng.integers(4, 10))):
            px, py = rng.normal(0, 0.03 * size, 2)
            cv2.circle(dust, (int(cx0 + px), int(cy0 + py)), int(rng.integers(1, 4)), 1, -1, lineType=cv2.LINE_8)
        return _tint(image, dust, (120, 96, 48), 0.85)
    raise ValueError(f"unknown washer defect {kind!r}")


# ----------------------------------------------------------------------------- label

_LABEL_LINES = ("CRAD EDGE", "LOT 24-117", "QC  PASS")
# A fixed bar pattern: part of the product, the same on every label.
_BARCODE = np.random.default_rng(20241128).integers(1, 4, 28)


def _render_label(rng: np.random.Generator, size: int) -> Scene:
    dx, dy = np.round(rng.uniform(-0.02, 0.02, 2) * size).astype(int)
    belt = np.array([44, 52, 72], np.float32) * rng.uniform(0.96, 1.04)
    image = np.empty((size, size, 3), np.float32)
    image[:] = belt
    x0, y0 = int(0.15 * size) + dx, int(0.22 * size) + dy
    x1, y1 = int(0.85 * size) + dx, int(0.78 * size) + dy
    paper = np.array([236, 232, 218], np.float32) * rng.uniform(0.98, 1.02)
    label = np.zeros((size, size), np.uint8)
    cv2.rectangle(label, (x0, y0), (x1, y1), 1, -1)
    image[label.astype(bool)] = paper
    printed = np.zeros((size, size), np.uint8)
    scale = size / 256 * 0.62
    thickness = max(1, int(round(size / 160)))
    line_boxes = []
    for k, text in enumerate(_LABEL_LINES):
        org = (x0 + int(0.05 * size), y0 + int((0.11 + 0.085 * k) * size))
        cv2.putText(printed, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 1, thickness, cv2.LINE_8)
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        line_boxes.append((org[0], org[1] - h, org[0] + w, org[1] + 2))
    # barcode: bars of width 1..3 units with unit gaps
    unit = max(1, size // 128)
    bx, by0, by1 = x0 + int(0.05 * size), y0 + int(0.36 * size), y0 + int(0.51 * size)
    start = bx
    for width in _BARCODE:
        cv2.rectangle(printed, (bx, by0), (bx + int(width) * unit - 1, by1), 1, -1)
        bx += (int(width) + 1) * unit
    line_boxes.append((start, by0, bx, by1))
    ink = np.array([26, 26, 34], np.float32) * rng.uniform(0.85, 1.2)
    image[printed.astype(bool)] = ink
    return Scene(image, label, {"printed": printed, "boxes": line_boxes, "paper": paper, "ink": ink})


def _label_defect(kind: str, rng: np.random.Generator, scene: Scene, size: int) -> np.ndarray:
    image, region = scene.image, scene.region
    if kind == "missing_print":
        x0, y0, x1, y1 = scene.extra["boxes"][int(rng.integers(len(scene.extra["boxes"])))]
        width = max(4, int((x1 - x0) * rng.uniform(0.2, 0.5)))
        left = int(rng.integers(x0, max(x0 + 1, x1 - width)))
        gap = np.zeros((size, size), np.uint8)
        gap[y0:y1 + 1, left:left + width] = 1
        return _tint(image, gap & scene.extra["printed"], scene.extra["paper"], 1.0)
    if kind == "smudge":
        x0, y0, x1, y1 = scene.extra["boxes"][int(rng.integers(len(scene.extra["boxes"])))]
        center = (rng.uniform(x0, x1), rng.uniform(y0, y1))
        smear = _blob(rng, size, center, rng.uniform(0.03, 0.05) * size) & region
        return _tint(image, smear, scene.extra["ink"], 0.55)
    if kind == "scratch":
        start = np.array(_point_in(rng, region), np.float64)
        angle = rng.uniform(0, 2 * np.pi)
        end = start + rng.uniform(0.12, 0.3) * size * np.array([math.cos(angle), math.sin(angle)])
        line = _line_mask(size, [np.round([start, end]).astype(np.int32)], 1) & region
        return _tint(image, line, (128, 124, 118), 0.85)
    if kind == "stain":
        stain = _blob(rng, size, _point_in(rng, region), rng.uniform(0.04, 0.08) * size, vertices=18) & region
        return _tint(image, stain, (200, 160, 60), 0.4)
    if kind == "spot":
        spot = _blob(rng, size, _point_in(rng, region), rng.uniform(0.008, 0.02) * size, vertices=9)
        return _tint(image, spot, (18, 18, 22), 0.95)
    raise ValueError(f"unknown label defect {kind!r}")


RENDERERS: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "weave": _render_weave, "washer": _render_washer, "label": _render_label,
}
DEFECT_DRAWERS: dict[str, Callable[[str, np.random.Generator, Scene, int], np.ndarray]] = {
    "weave": _weave_defect, "washer": _washer_defect, "label": _label_defect,
}


# ----------------------------------------------------------------------------- images


def _finish(image: np.ndarray, gain: float, gradient: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Lighting (gain and a linear gradient) and sensor noise, then uint8 RGB."""
    lit = image * gain * gradient[..., None] + noise
    return np.clip(np.round(lit), 0, 255).astype(np.uint8)


def render_pair(class_name: str, defect: str | None, size: int, seed_sequence: np.random.SeedSequence):
    """(normal uint8 HxWx3 RGB, defective or None, mask uint8 0/1 or None) from one seed.

    The normal and the defective image share pose, lighting and noise; they differ exactly
    on the mask.
    """
    if class_name not in RENDERERS:
        raise ValueError(f"unknown synthetic class {class_name!r}; known: {', '.join(CLASSES)}")
    if defect is not None and defect not in DEFECTS[class_name]:
        raise ValueError(f"unknown defect {defect!r} for class {class_name!r}; known: {', '.join(DEFECTS[class_name])}")
    scene_rng, light_rng, defect_rng = (np.random.default_rng(s) for s in seed_sequence.spawn(3))
    scene = RENDERERS[class_name](scene_rng, size)
    gain = float(light_rng.uniform(0.9, 1.1))
    direction = light_rng.uniform(0, 2 * np.pi)
    x, y = _grid(size)
    ramp = ((x - size / 2) * math.cos(direction) + (y - size / 2) * math.sin(direction)) / size
    gradient = (1.0 + light_rng.uniform(0.0, 0.12) * ramp).astype(np.float32)
    noise = light_rng.normal(0.0, light_rng.uniform(1.5, 3.5), (size, size, 3)).astype(np.float32)
    normal = _finish(scene.image, gain, gradient, noise)
    if defect is None:
        return normal, None, None
    min_area = MIN_DEFECT_AREA * size * size
    for _ in range(50):
        drawn = DEFECT_DRAWERS[class_name](defect, defect_rng, scene, size)
        mask = (np.abs(drawn - scene.image).max(axis=2) >= MASK_MIN_CHANGE).astype(np.uint8)
        if mask.sum() >= min_area:
            break
    else:
        raise RuntimeError(f"could not draw a visible {defect} on {class_name} at size {size}")
    exact = np.where(mask[..., None].astype(bool), drawn, scene.image)
    return normal, _finish(exact, gain, gradient, noise), mask


def _seed_for(seed: int, class_name: str, split: str, index: int) -> np.random.SeedSequence:
    # crc32, not hash(): Python's str hash changes from run to run.
    return np.random.SeedSequence([seed, zlib.crc32(class_name.encode()), SPLIT_CODES[split], index])


def make_image(class_name: str, split: str, index: int, size: int, seed: int, defect: str | None = None):
    """One image of the dataset: (uint8 HxWx3 RGB, mask 0/1 or None)."""
    normal, defective, mask = render_pair(class_name, defect, size, _seed_for(seed, class_name, split, index))
    return (normal, None) if defect is None else (defective, mask)


def encode_png(rgb_or_gray: np.ndarray) -> bytes:
    image = cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR) if rgb_or_gray.ndim == 3 else rgb_or_gray
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _check_classes(classes: list[str]) -> None:
    unknown = [c for c in classes if c not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown synthetic class(es) {', '.join(unknown)}; known: {', '.join(CLASSES)}")


def write_dataset(out: str | Path, classes: list[str], n_train: int, n_test_good: int, n_test_defect: int,
                  size: int = 256, seed: int = 0, overwrite: bool = False) -> dict:
    """Write the MVTec-layout dataset; returns the counts written per class."""
    _check_classes(classes)
    out = Path(out)
    for class_name in classes:
        if (out / class_name).exists():
            if not overwrite:
                raise FileExistsError(f"{out / class_name} exists; pass --overwrite to replace it")
            shutil.rmtree(out / class_name)
    counts: dict[str, dict[str, int]] = {}
    for class_name in classes:
        root = out / class_name
        for i in range(n_train):
            image, _ = make_image(class_name, "train", i, size, seed)
            _write(root / "train" / "good" / f"{i:03d}.png", encode_png(image))
        for i in range(n_test_good):
            image, _ = make_image(class_name, "test_good", i, size, seed)
            _write(root / "test" / "good" / f"{i:03d}.png", encode_png(image))
        kinds = DEFECTS[class_name]
        per_kind = {k: 0 for k in kinds}
        for i in range(n_test_defect):
            kind = kinds[i % len(kinds)]
            image, mask = make_image(class_name, "test_defect", i, size, seed, kind)
            name = f"{per_kind[kind]:03d}"
            per_kind[kind] += 1
            _write(root / "test" / kind / f"{name}.png", encode_png(image))
            _write(root / "ground_truth" / kind / f"{name}_mask.png", encode_png(mask * np.uint8(255)))
        counts[class_name] = {"train": n_train, "test_good": n_test_good, **{k: v for k, v in per_kind.items() if v}}
    manifest = {
        "generator": f"crad.synth {GENERATOR_VERSION}", "seed": seed, "size": size, "classes": classes,
        "train": n_train, "test_good": n_test_good, "test_defect": n_test_defect, "counts": counts,
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return counts


def write_samples(out: str | Path, classes: list[str], per_class: int, size: int = 256, seed: int = 0) -> list[dict]:
    """A flat folder of demo images: per class, half good and half defective (kinds in turn).

    Names are <class>_<nn>_<good|defect kind>.png; manifest.json lists each file's class,
    kind and expected verdict (OK/NG) for the daemon's demo and tests.
    """
    _check_classes(classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for class_name in classes:
        kinds = DEFECTS[class_name]
        for i in range(per_class):
            defect = None if i % 2 == 0 else kinds[(i // 2) % len(kinds)]
            image, _ = make_image(class_name, "samples", i, size, seed, defect)
            name = f"{class_name}_{i:02d}_{defect or 'good'}.png"
            _write(out / name, encode_png(image))
            entries.append({"file": name, "class": class_name, "defect": defect or "good",
                            "expected": "OK" if defect is None else "NG"})
    manifest = {"generator": f"crad.synth {GENERATOR_VERSION}", "seed": seed, "size": size, "images": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return entries


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Generate synthetic product images with exact defect masks (MVTec layout)."
    parser.add_argument("--out", help="dataset root to write (MVTec layout)")
    parser.add_argument("--samples-out", help="also write a flat folder of demo images (good and defective) here")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES, metavar="CLASS",
                        help=f"classes to generate (default: all of {', '.join(CLASSES)})")
    parser.add_argument("--train", type=int, default=200, help="normal training images per class")
    parser.add_argument("--test-good", type=int, default=30, help="normal test images per class")
    parser.add_argument("--test-defect", type=int, default=40, help="defective test images per class (kinds in turn)")
    parser.add_argument("--samples-per-class", type=int, default=4, help="demo images per class for --samples-out")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing class folders under --out")


def run(args: argparse.Namespace) -> int:
    if not args.out and not args.samples_out:
        raise SystemExit("crad synth: give --out DIR (dataset) and/or --samples-out DIR (demo images)")
    for name in ("train", "test_good", "test_defect", "samples_per_class"):
        if getattr(args, name) < 0:
            raise SystemExit(f"crad synth: --{name.replace('_', '-')} must be >= 0")
    if args.size < 32:
        raise SystemExit(f"crad synth: --size must be at least 32, got {args.size}")
    if args.out:
        try:
            counts = write_dataset(args.out, args.classes, args.train, args.test_good, args.test_defect,
                                   args.size, args.seed, args.overwrite)
        except FileExistsError as error:
            raise SystemExit(f"crad synth: {error}") from None
        for class_name, c in counts.items():
            print(f"{args.out}/{class_name}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if args.samples_out:
        entries = write_samples(args.samples_out, args.classes, args.samples_per_class, args.size, args.seed)
        print(f"{args.samples_out}: {len(entries)} demo images + manifest.json")
    return 0
