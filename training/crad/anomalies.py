"""Synthetic anomalies drawn on good images: what the trainer chooses its settings with, and what
calibration estimates its miss rate with, when a customer has good images only.

Kinds (the established self-supervised ones, plus the two simplest defects of crad.synth):
- cutpaste: a rectangle of the image's own content, from elsewhere, colour-jittered and pasted
  (CutPaste, Li et al. 2021);
- scar: a thin rotated stripe of the image's own content from elsewhere (CutPaste-scar);
- perlin: a Perlin-noise-shaped region blended with a texture (DRAEM, Zavrtanik et al. 2021; no
  texture dataset here, so the texture is another good image, rotated and colour-shifted);
- spot: an irregular dark or bright blob (crad.synth's blob);
- scratch: a thin, slightly wandering dark or bright line (crad.synth's random walk).

Sizes run from tiny to large as fractions of the image's area (SIZES). Anomaly k is drawn on
good image k mod N, kind KINDS[k mod 5], size the (k div 5) mod 4-th of SIZES, from its own
numpy Generator seeded with (seed, k): the same images and seed give identical anomalies.
Images are float32 (N, 3, S, S) RGB in [0, 1], as crad.data.load_images returns them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .synth import _blob, _random_walk

KINDS = ("cutpaste", "scar", "perlin", "spot", "scratch")
# fraction of the image's area: at 224 px about 50, 250, 1000 and 4000 pixels
SIZES = {"tiny": 0.001, "small": 0.005, "medium": 0.02, "large": 0.08}


def perlin_noise(height: int, width: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise over a grid of `cells` x `cells` cells, roughly in [-1, 1]."""
    angles = rng.uniform(0.0, 2.0 * np.pi, (cells + 1, cells + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, cells, height, endpoint=False)[:, None] * np.ones((1, width))
    x = np.linspace(0, cells, width, endpoint=False)[None, :] * np.ones((height, 1))
    i, j = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - i, x - j

    def corner(di: int, dj: int) -> np.ndarray:
        g = gradients[i + di, j + dj]
        return g[..., 0] * (fy - di) + g[..., 1] * (fx - dj)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (top * (1 - uy) + bottom * uy) * math.sqrt(2.0)


def _jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Per-channel gain and offset (colour jitter), clipped to [0, 1]."""
    gain = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    offset = rng.uniform(-strength / 2, strength / 2, 3).astype(np.float32)
    return np.clip(rgb * gain + offset, 0.0, 1.0)


def _shifted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image's own content moved by a random offset of at least a fifth of its side."""
    size = image.shape[0]
    dy, dx = (int(v) for v in rng.integers(size // 5, size - size // 5, 2))
    return np.roll(image, (dy, dx), axis=(0, 1))


def _contrast_colour(image: np.ndarray, where: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour clearly darker or brighter than the image under `where`."""
    local = image[where.astype(bool)].mean(axis=0) if where.any() else image.reshape(-1, 3).mean(axis=0)
    step = rng.uniform(0.2, 0.45)
    sign = -1.0 if local.mean() > 0.5 else 1.0
    if rng.random() < 0.3:
        sign = -sign
    return np.clip(local + sign * step, 0.0, 1.0).astype(np.float32)


def _rectangle(size: int, area: float, rng: np.random.Generator, aspect_range=(0.3, 3.3)) -> np.ndarray:
    pixels = area * size * size
    aspect = math.exp(rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1])))
    h = int(np.clip(round(math.sqrt(pixels / aspect)), 2, size - 2))
    w = int(np.clip(round(pixels / h), 2, size - 2))
    y, x = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
    mask = np.zeros((size, size), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


def _stripe(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    width = max(2.0, rng.uniform(2, 16) * size / 256)
    length = min(0.9 * size, area * size * size / width)
    width = max(2.0, min(width, area * size * size / length))
    center = rng.uniform(0.15 * size, 0.85 * size, 2)
    box = cv2.boxPoints(((float(center[0]), float(center[1])), (float(length), float(width)), float(rng.uniform(0, 180))))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return mask


def _perlin_region(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular region of about `area` x the image, inside a window at a random place."""
    keep = 0.4  # share of the window the region fills
    side = int(np.clip(round(math.sqrt(area / keep) * size), 4, size))
    noise = perlin_noise(side, side, int(rng.integers(2, 5)), rng)
    region = (noise >= np.quantile(noise, 1 - keep)).astype(np.uint8)
    y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
    mask = np.zeros((size, size), np.uint8)
    mask[y:y + side, x:x + side] = region
    return mask


def draw_anomaly(image: np.ndarray, kind: str, area: float, rng: np.random.Generator,
                 texture: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One anomaly on `image` (H, W, 3 float32 in [0, 1], square): (new image, mask uint8 0/1).

    `texture` (H, W, 3) is what the perlin kind blends in (default: the image itself, turned)."""
    size = image.shape[0]
    if kind == "cutpaste":
        mask = _rectangle(size, area, rng)
        content = _jitter(_shifted(image, rng), rng, 0.2)
        alpha = np.float32(1.0)
    elif kind == "scar":
        mask = _stripe(size, area, rng)
        content = _jitter(_shifted(image, rng), rng, 0.2)
        alpha = np.float32(1.0)
    elif kind == "perlin":
        mask = _perlin_region(size, area, rng)
        source = np.rot90(image if texture is None else texture, int(rng.integers(1, 4)))
        content = _jitter(np.ascontiguousarray(source), rng, 0.3)
        alpha = np.float32(rng.uniform(0.5, 1.0))
    elif kind == "spot":
        radius = math.sqrt(area * size * size / math.pi)
        center = rng.uniform(radius + 1, size - radius - 1, 2)
        mask = _blob(rng, size, center, radius / 0.85)
        content = np.broadcast_to(_contrast_colour(image, mask, rng), image.shape)
        alpha = np.float32(rng.uniform(0.6, 0.95))
    elif kind == "scratch":
        thickness = max(1, int(round(rng.uniform(1, 3) * size / 256)))
        length = min(0.9 * size, area * size * size / thickness)
        steps = 12
        start = rng.uniform(0.2 * size, 0.8 * size, 2)
        walk = _random_walk(rng, start, rng.uniform(0, 2 * np.pi), steps, length / steps, 0.25)
        mask = np.zeros((size, size), np.uint8)
        cv2.polylines(mask, [walk], False, 1, thickness=thickness, lineType=cv2.LINE_8)
        content = np.broadcast_to(_contrast_colour(image, mask, rng), image.shape)
        alpha = np.float32(rng.uniform(0.7, 0.95))
    else:
        raise ValueError(f"unknown synthetic anomaly kind {kind!r}; known: {', '.join(KINDS)}")
    where = mask.astype(bool)[..., None]
    out = np.where(where, (1 - alpha) * image + alpha * content, image).astype(np.float32)
    return out, mask


def plan(count: int, images: int) -> list[dict]:
    """Which good image, kind and size anomaly k of `count` uses (module docstring)."""
    sizes = list(SIZES)
    return [{"image": k % images, "kind": KINDS[k % len(KINDS)], "size": sizes[(k // len(KINDS)) % len(sizes)]}
            for k in range(count)]


def make_anomalies(images: np.ndarray, per_image: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """`per_image` anomalies on each of `images` (N, 3, S, S): (anomalous images (N * per_image,
    3, S, S) float32, one record per anomaly: image index, kind, size, area covered)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square RGB images (N, 3, S, S), got shape {images.shape}")
    count = len(images) * per_image
    out = np.empty((count,) + images.shape[1:], np.float32)
    records = plan(count, len(images))
    for k, record in enumerate(records):
        rng = np.random.default_rng([seed, k])
        image = images[record["image"]].transpose(1, 2, 0)
        other = images[(record["image"] + 1 + k) % len(images)].transpose(1, 2, 0) if len(images) > 1 else None
        drawn, mask = draw_anomaly(image, record["kind"], SIZES[record["size"]], rng, other)
        out[k] = drawn.transpose(2, 0, 1)
        record["area"] = float(mask.mean())
    return out, records
