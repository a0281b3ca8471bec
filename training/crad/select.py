"""The trainer chooses its own settings per class from good images alone (`crad train --select`).

Each candidate setting (a fixed, small set: the neck pooling K of crad.model, default 1 and 3)
trains a fresh, seeded head on the training features with a short schedule (the caller's
`train_head`, crad.train.short_schedule: --select-steps optimizer steps), then scores held-out
good images and synthetic anomalies drawn on those same images (crad.anomalies: CutPaste patches
and scars, Perlin-noise blends, spots and scratches, tiny to large). The candidate with the
highest image AUROC of good against synthetic wins; a tie keeps the earlier candidate (the first
is the trainer's default). With several classes in one model the AUROC is over all of them.

Only settings that reuse the backbone's features are candidates (the pooling is applied after the
neck, so one backbone pass serves them all): taps or input size would each need another pass over
every image, which the CPU budget does not hold (docs/quality-engineers.md says what it costs).

The record (`selection_record`) goes into the model's crad.training as `settings_selection`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from typing import Callable

import numpy as np

from .metrics import image_auroc
from .model import CradModule

log = logging.getLogger("crad.select")

DEFAULT_NECK_POOLS = (1, 3)
RULE = ("highest image AUROC of held-out good images against synthetic anomalies drawn on them, "
        "after a short training schedule per candidate (a tie keeps the earlier candidate)")


def parse_neck_pools(text: str) -> list[int]:
    """--select-neck-pools: a comma-separated list of odd K >= 1, no repeats."""
    import argparse

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected odd integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 or v % 2 == 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"neck pools must be distinct odd integers >= 1, got {text!r}")
    return values


def candidate_detector(template, neck_pool: int, seed: int):
    """A copy of `template` (its frozen backbone) with neck pooling `neck_pool` and a new head from `seed`."""
    import torch

    detector = copy.deepcopy(template)
    detector.neck_pool = int(neck_pool)
    head = template.head
    torch.manual_seed(seed)
    detector.head = CradModule(head.C, head.H, head.W, head.E, head.sampling).to(template.mean.device)
    return detector


def image_scores(detector, features, batch: int) -> np.ndarray:
    """Image scores of unpooled features (N, C, H, W) with the detector's pooling and head."""
    import torch

    detector.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(features), batch):
            _, out = detector.maps_from_features(detector.pool_features(features[start:start + batch]))
            scores.append(out.float().cpu().numpy().reshape(-1))
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def separation(good: np.ndarray, anomalous: np.ndarray, records: list[dict]) -> dict:
    """Image AUROC of good against all anomalies, and against each size and kind alone."""
    def auroc_of(chosen: np.ndarray) -> float:
        labels = np.concatenate([np.zeros(len(good)), np.ones(len(chosen))])
        return float(image_auroc(labels, np.concatenate([good, chosen])))

    figures = {"synthetic_auroc": auroc_of(anomalous)}
    for key in ("size", "kind"):
        groups: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(records):
            groups[record[key]].append(index)
        figures[f"by_{key}"] = {name: auroc_of(anomalous[idx]) for name, idx in groups.items()}
    return figures


def select_settings(template, train_features, good_features, anomalous_features, records: list[dict],
                    neck_pools: list[int], seed: int, batch: int,
                    train_head: Callable[[object, object], dict]) -> dict:
    """Train and score each candidate (module docstring); returns the selection record.

    Features are unpooled (detector.unpooled_features); `train_head(detector, pooled_features)`
    trains detector.head in place and returns what it ran (the schedule)."""
    import torch

    rng_state = torch.get_rng_state()  # the caller's head initialisation and jitter stay as without selection
    started = time.perf_counter()
    candidates = []
    try:
        for neck_pool in neck_pools:
            began = time.perf_counter()
            detector = candidate_detector(template, neck_pool, seed)
            schedule = train_head(detector, detector.pool_features(train_features))
            good = image_scores(detector, good_features, batch)
            anomalous = image_scores(detector, anomalous_features, batch)
            figures = separation(good, anomalous, records)
            candidates.append({"neck_pool": neck_pool, **figures, "seconds": round(time.perf_counter() - began, 1)})
            log.info("selection: neck pool %d -> synthetic image AUROC %.4f (%s) in %.0f s", neck_pool,
                     figures["synthetic_auroc"], ", ".join(f"{k} {v:.3f}" for k, v in figures["by_size"].items()),
                     candidates[-1]["seconds"])
            del detector
    finally:
        torch.set_rng_state(rng_state)
    best = max(range(len(candidates)), key=lambda i: (candidates[i]["synthetic_auroc"], -i))
    return {
        "mode": "on", "rule": RULE, "chosen": {"neck_pool": candidates[best]["neck_pool"]},
        "candidates": candidates, "good_images": int(len(good_features)),
        "synthetic_anomalies": int(len(anomalous_features)),
        "anomaly_kinds": sorted({r["kind"] for r in records}), "anomaly_sizes": sorted({r["size"] for r in records}),
        "schedule": schedule, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
    }


def describe(record: dict) -> str:
    """One log line for a selection record."""
    if record.get("mode") != "on":
        return f"settings selection off: {record.get('text', 'the given settings')}"
    figures = ", ".join(f"neck pool {c['neck_pool']}: {c['synthetic_auroc']:.4f}" for c in record["candidates"])
    return (f"settings chosen: neck pool {record['chosen']['neck_pool']} (synthetic image AUROC, {record['good_images']} "
            f"good vs {record['synthetic_anomalies']} synthetic: {figures}; {record['seconds']:.0f} s)")
