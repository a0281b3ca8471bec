"""Evaluation: predictions, the metrics per class, and the report (JSON, Markdown table, overlays).

The metrics themselves (image and pixel AUROC, AUPRO to FPR 0.3, F1-max: definitions there) are
crad.metrics'. Here they are taken per class, then as the unweighted mean over classes, all on
maps at the model's input size, and all raw: an AUC below 0.5 is reported as it is, never flipped.

- image label: 1 when the sample is labelled defective or its mask has a defect pixel.
- pixel metrics: over the class's images that have a mask or are normal (defect images without
  a mask are left out of them).

A metric that is undefined for a class (no defect images, no regions) is NaN (null in JSON)
and the mean is taken over the classes where it is defined.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .data import (LAYOUTS, DataError, Sample, image_batches, limit_samples, load_samples,
                   read_image_uint8, sample_mask)
from .device import DeviceError, add_device_argument, loader_options, resolve_device
from .metrics import METRIC_TITLES, METRICS, aupro, best_f1, image_auroc, pixel_auroc
from .thresholds import tradeoff_markdown, tradeoff_table

log = logging.getLogger("crad.evaluate")


# ----------------------------------------------------------------------------- image labels


def image_labels(samples: Sequence[Sample], masks: np.ndarray | None) -> np.ndarray:
    """1 for a sample labelled defective or with any defect pixel in its mask."""
    labels = np.array([s.label for s in samples], dtype=np.int64)
    if masks is not None:
        labels = np.maximum(labels, (masks.reshape(len(samples), -1).max(axis=1) > 0).astype(np.int64))
    return labels


# ----------------------------------------------------------------------------- predictions


def _device_of(detector) -> "object":
    import torch

    try:
        return next(detector.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def predict_with_skips(detector, samples: Sequence[Sample], size: int, batch: int = 16):
    """(maps (N,S,S) float32, scores (N,) float32, kept samples, skipped paths).

    `detector(images)` must return (maps (N,1,S,S), scores (N,)), like CradDetector and the
    PatchCore baseline.
    """
    import torch

    if hasattr(detector, "eval"):
        detector.eval()
    device = _device_of(detector)
    maps: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    kept: list[Sample] = []
    skipped: list[str] = []
    for images, batch_samples in image_batches(samples, size, batch, skipped, **loader_options(device)):
        with torch.no_grad():
            out_maps, out_scores = detector(torch.as_tensor(images).to(device, non_blocking=True))
        maps.append(out_maps.detach().float().cpu().numpy()[:, 0])
        scores.append(out_scores.detach().float().cpu().numpy().reshape(-1))
        kept.extend(batch_samples)
    if not kept:
        raise DataError("no readable images to predict")
    return np.concatenate(maps), np.concatenate(scores), kept, skipped


def predict(detector, samples: Sequence[Sample], size: int, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N,S,S), scores (N,)) aligned with `samples`; an unreadable image is an error."""
    maps, scores, _, skipped = predict_with_skips(detector, samples, size, batch)
    if skipped:
        raise DataError(f"cannot read {len(skipped)} image(s): {', '.join(skipped[:10])}")
    return maps, scores


# ----------------------------------------------------------------------------- report


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def class_metrics(samples: Sequence[Sample], maps: np.ndarray, scores: np.ndarray, masks: np.ndarray,
                  fpr_limit: float = 0.3) -> dict:
    """The four metrics for one class, plus counts."""
    labels = image_labels(samples, masks)
    # defect images without a ground-truth mask cannot be scored per pixel
    with_pixels = np.array([not (s.label == 1 and s.mask_path is None) for s in samples])
    f1, threshold = best_f1(labels, scores)
    return {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks[with_pixels], maps[with_pixels]) if with_pixels.any() else float("nan"),
        "aupro": aupro(masks[with_pixels], maps[with_pixels], fpr_limit) if with_pixels.any() else float("nan"),
        "f1_max": f1,
        "f1_threshold": threshold,
        "good": int((labels == 0).sum()),
        "defect": int((labels == 1).sum()),
        "pixel_images": int(with_pixels.sum()),
        "defect_kinds": defect_kind_aurocs(samples, labels, scores),
    }


def defect_kind_aurocs(samples: Sequence[Sample], labels: np.ndarray, scores: np.ndarray) -> dict[str, dict]:
    """Image AUROC of the class's good images against each defect kind alone: which kinds a model misses."""
    good = labels == 0
    kinds: dict[str, dict] = {}
    for kind in sorted({s.defect for s, label in zip(samples, labels) if label == 1}):
        chosen = np.array([label == 1 and s.defect == kind for s, label in zip(samples, labels)])
        kinds[kind] = {"count": int(chosen.sum()),
                       "image_auroc": image_auroc(np.r_[np.zeros(good.sum()), np.ones(chosen.sum())],
                                                  np.r_[scores[good], scores[chosen]])}
    return kinds


def mean_metrics(per_class: dict[str, dict]) -> dict:
    mean = {}
    for metric in METRICS:
        values = [m[metric] for m in per_class.values() if math.isfinite(m[metric])]
        mean[metric] = float(np.mean(values)) if values else float("nan")
    return mean


def compute_metrics(samples: Sequence[Sample], maps: np.ndarray, scores: np.ndarray, fpr_limit: float = 0.3,
                    calibration: dict | None = None) -> dict:
    """{"classes": {name: metrics}, "mean": {...}, "tradeoff": [rows]} for predictions aligned with
    `samples`. The trade-off is over all classes together (a model has one image threshold) and
    includes the model's own calibrated threshold when `calibration` is given."""
    size = maps.shape[-1]
    per_class: dict[str, dict] = {}
    labels = np.zeros(len(samples), np.int64)
    for class_name in sorted({s.class_name for s in samples}):
        index = [i for i, s in enumerate(samples) if s.class_name == class_name]
        chosen = [samples[i] for i in index]
        masks = np.stack([sample_mask(s, size) for s in chosen])
        labels[index] = image_labels(chosen, masks)
        per_class[class_name] = class_metrics(chosen, maps[index], scores[index], masks, fpr_limit)
    chosen_thresholds = {"model's calibrated threshold": calibration["image"]["threshold"]} if calibration else {}
    tradeoff = tradeoff_table(scores[labels == 0], scores[labels == 1], chosen_thresholds)
    return {"classes": per_class, "mean": mean_metrics(per_class), "tradeoff": tradeoff}


def _percent(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def markdown_table(results: dict, title: str | None = None) -> str:
    header = "| class | good | defect | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |"
    lines = ([f"## {title}", ""] if title else []) + [header, "|" + " --- |" * (3 + len(METRICS))]
    for name, m in results["classes"].items():
        lines.append(f"| {name} | {m['good']} | {m['defect']} | " + " | ".join(_percent(m[k]) for k in METRICS) + " |")
    mean = results["mean"]
    lines.append("| **mean** | | | " + " | ".join(_percent(mean[k]) for k in METRICS) + " |")
    text = "\n".join(lines) + "\n"
    kinds = [(name, kind, k) for name, m in results["classes"].items() for kind, k in m.get("defect_kinds", {}).items()]
    if kinds:
        text += ("\n### Image AUROC per defect kind (the class's good images against that kind alone)\n\n"
                 "| class | defect kind | images | image AUROC |\n| --- | --- | --- | --- |\n"
                 + "".join(f"| {name} | {kind} | {k['count']} | {_percent(k['image_auroc'])} |\n" for name, kind, k in kinds))
    if results.get("tradeoff"):
        text += ("\n### Threshold trade-off (all classes; NG when score >= threshold)\n\nThresholds other than the "
                 "model's are chosen on these same images, so their rates are optimistic.\n\n"
                 + tradeoff_markdown(results["tradeoff"]))
    return text


def overlay_image(image_rgb: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray, low: float, high: float,
                  caption: str) -> np.ndarray:
    """Three panels side by side (BGR for cv2.imwrite): image, heatmap, heatmap over image with
    the ground-truth mask contour in green."""
    span = max(high - low, 1e-12)
    heat = np.clip((anomaly_map - low) / span, 0, 1)
    heat_bgr = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    image_bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    blended = cv2.addWeighted(image_bgr, 0.5, heat_bgr, 0.5, 0)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(blended, contours, -1, (0, 255, 0), 1)
    panel = np.hstack([image_bgr, heat_bgr, blended])
    (text_width, text_height), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    cv2.rectangle(panel, (0, 0), (text_width + 8, text_height + 10), (0, 0, 0), -1)
    cv2.putText(panel, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def _overlay_choice(samples: Sequence[Sample], index: list[int], count: int) -> list[int]:
    """Defect and good samples in turn (defects first), in path order: deterministic."""
    defects = sorted((i for i in index if samples[i].label == 1), key=lambda i: samples[i].path)
    goods = sorted((i for i in index if samples[i].label == 0), key=lambda i: samples[i].path)
    chosen: list[int] = []
    while len(chosen) < count and (defects or goods):
        for pool in (defects, goods):
            if pool and len(chosen) < count:
                chosen.append(pool.pop(0))
    return chosen


def write_overlays(samples: Sequence[Sample], maps: np.ndarray, scores: np.ndarray, out_dir: Path, per_class: int) -> list[str]:
    size = maps.shape[-1]
    written: list[str] = []
    for class_name in sorted({s.class_name for s in samples}):
        index = [i for i, s in enumerate(samples) if s.class_name == class_name]
        low, high = float(maps[index].min()), float(maps[index].max())  # one colour scale per class
        for i in _overlay_choice(samples, index, per_class):
            sample = samples[i]
            image = read_image_uint8(sample.path, size)
            if image is None:
                continue
            caption = f"{sample.defect} score {scores[i]:.4g}"
            panel = overlay_image(image, maps[i], sample_mask(sample, size), low, high, caption)
            path = out_dir / "overlays" / class_name / f"{sample.defect}_{Path(sample.path).stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), panel)
            written.append(str(path))
    return written


def write_report(results: dict, out_dir: str | Path, title: str) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(_nan_to_none(results), indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown_table(results, title))


def evaluate_predictions(samples: Sequence[Sample], maps: np.ndarray, scores: np.ndarray, out_dir: str | Path | None,
                         overlays_per_class: int = 3, title: str = "evaluation", extra: dict | None = None,
                         calibration: dict | None = None) -> dict:
    """Metrics for predictions aligned with `samples`; writes the report when out_dir is given."""
    results = compute_metrics(samples, maps, scores, calibration=calibration)
    results.update(extra or {})
    if out_dir is not None:
        if overlays_per_class > 0:
            results["overlays"] = write_overlays(samples, maps, scores, Path(out_dir), overlays_per_class)
        write_report(results, out_dir, title)
        write_image_scores(samples, scores, Path(out_dir) / "scores.csv")
    return results


def write_image_scores(samples: Sequence[Sample], scores: np.ndarray, path: Path) -> None:
    """One row per image, so that a quality engineer can find the false rejects and the misses."""
    import csv

    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "class", "defect", "label", "score"])
        for sample, score in zip(samples, scores):
            writer.writerow([sample.path, sample.class_name, sample.defect, sample.label, f"{float(score):.6g}"])


def evaluate(detector, samples: Sequence[Sample], out_dir: str | Path | None, overlays_per_class: int = 3,
             size: int | None = None, batch: int = 16, title: str = "evaluation", calibration: dict | None = None) -> dict:
    """Predict, score and report. Unreadable images are skipped (counted in the results)."""
    size = size or int(getattr(detector, "input_size", 224))
    start = time.perf_counter()
    maps, scores, kept, skipped = predict_with_skips(detector, samples, size, batch)
    seconds = time.perf_counter() - start
    extra = {"images": len(kept), "skipped": skipped, "size": size,
             "predict_seconds": seconds, "ms_per_image": 1000.0 * seconds / len(kept)}
    return evaluate_predictions(kept, maps, scores, out_dir, overlays_per_class, title, extra, calibration)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Evaluate a CRAD checkpoint: image/pixel AUROC, AUPRO@0.3, F1-max, overlays."
    parser.add_argument("--model", required=True, help="CRAD checkpoint (.pt) written by `crad train`")
    parser.add_argument("--data", required=True, help="dataset root (or JSON Lines meta file)")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS)
    parser.add_argument("--meta", help="JSON Lines meta file for --layout jsonl (default <data>/test.jsonl)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--classes", nargs="+", help="classes to evaluate (default: all)")
    parser.add_argument("--out", required=True, help="folder for results.json, results.md and overlays/")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--overlays", type=int, default=3, help="overlay images per class (0: none)")
    parser.add_argument("--limit", type=int, help="at most N images per class and label (seeded; smoke tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from .model import load_detector

    try:
        device = resolve_device(args.device)
        detector, extra = load_detector(args.model)
        detector.to(device)
        samples = load_samples(args.data, args.layout, args.split, args.classes, args.meta)
    except (DataError, DeviceError, FileNotFoundError) as error:
        print(f"crad eval: {error}", file=sys.stderr)
        return 2
    samples = limit_samples(samples, args.limit, args.seed)
    calibration = extra.get("calibration")
    if isinstance(calibration, str):  # as `crad export --calibration` may have stored it
        calibration = json.loads(calibration)
    results = evaluate(detector, samples, args.out, args.overlays, batch=args.batch,
                       title=f"{Path(args.model).name} on {args.data}", calibration=calibration)
    results["model"] = str(args.model)
    write_report(results, args.out, f"{Path(args.model).name} on {args.data}")
    print(markdown_table(results))
    print(f"wrote {Path(args.out) / 'results.json'} and results.md ({results['ms_per_image']:.1f} ms/image)")
    return 0
