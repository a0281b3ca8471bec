"""What the benches (crad.bench, crad.bench_fewshot, crad.bench_unified) share.

- The Magnetic Tile split of the protocol (bench_split), which every bench starts from.
- Backbone features are computed once per image (features_of) and every head, CRAD or PatchCore,
  runs on those cached features (head_predictions): the backbone is frozen, so one pass serves
  every model of a run, and the heads' times are measured apart from the backbone's.
- CRAD heads train exactly as `crad train` trains them: crad.train.plan_schedule, then
  crad.train.fit on the cached features (train_crad).
- Model sizes: a CRAD head's parameters and bytes and its checkpoint's bytes; a PatchCore
  memory bank's rows and bytes.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import Sample, image_batches, limit_samples, magnetic_tile_split, split_samples
from .device import loader_options, synchronize


def bench_split(data: str | Path, split_seed: int, seed: int, holdout: float, limit: int | None):
    """(train, holdout, test) samples of the Magnetic Tile protocol (crad.bench's docstring)."""
    train_all, test = magnetic_tile_split(data, split_seed)
    if holdout > 0:
        train, held = split_samples(train_all, 1.0 - holdout, seed)
    else:
        train, held = train_all, []
    if limit is not None:
        train = limit_samples(train, limit, seed)
        held = limit_samples(held, max(2, limit // 5), seed)
        test = limit_samples(test, limit, seed)
    return train, held, test


def features_of(detector, samples: Sequence[Sample], batch: int, progress: bool = False, description: str = "images",
                training: bool = False):
    """Backbone + neck features of `samples`: (features (N,C,H,W) on the detector's device, kept
    samples, skipped paths, backbone seconds). Before any neck pooling: that is CRAD's alone
    (train_crad and head_predictions apply it), PatchCore compares on the spec's X.

    Training features come from crad.train.compute_features (float16 autocast on CUDA, as
    `crad train` computes them); test features stay float32, as eval and the daemon's ONNX model
    compute them (crad.device says why).
    """
    import torch
    from tqdm import tqdm

    from .train import compute_features

    device = detector.mean.device
    detector.eval()
    chunks: list = []
    kept: list[Sample] = []
    skipped: list[str] = []
    seconds = 0.0
    batches = image_batches(samples, detector.input_size, batch, skipped, **loader_options(device))
    with torch.no_grad():
        detector.unpooled_features(torch.zeros(1, 3, detector.input_size, detector.input_size, device=device))  # one-off allocations
        for images, batch_samples in tqdm(batches, total=math.ceil(len(samples) / batch), desc=f"{description} features",
                                          unit="batch", disable=not progress, file=sys.stderr):
            started = time.perf_counter()
            images = torch.as_tensor(images)
            if training:
                chunks.append(compute_features(detector, images, batch, pooled=False))
            else:
                chunks.append(detector.unpooled_features(images.to(device, non_blocking=True)).float())
            synchronize(device)
            seconds += time.perf_counter() - started
            kept.extend(batch_samples)
    if not chunks:
        return torch.zeros((0, detector.head.C, detector.head.H, detector.head.W), device=device), kept, skipped, seconds
    return torch.cat(chunks), kept, skipped, seconds


def head_predictions(model, features, batch: int):
    """A head (CradDetector or PatchCoreBaseline) on cached features_of features: (maps (N,S,S)
    float32, image scores (N,) float32, seconds the head took, CRAD's neck pooling included)."""
    import torch

    device = features.device
    if hasattr(model, "eval"):
        model.eval()
    if hasattr(model, "pool_features"):
        features = model.pool_features(features)
    maps: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    seconds = 0.0
    with torch.no_grad():
        if len(features):
            model.maps_from_features(features[:1])  # one-off allocations are not inference time
        for start in range(0, len(features), batch):
            began = time.perf_counter()
            out_maps, out_scores = model.maps_from_features(features[start:start + batch])
            synchronize(device)
            seconds += time.perf_counter() - began
            maps.append(out_maps[:, 0].float().cpu().numpy())
            scores.append(out_scores.float().cpu().numpy().reshape(-1))
    if not maps:
        return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32), seconds
    return np.concatenate(maps), np.concatenate(scores), seconds


def fresh_detector(template, seed: int):
    """A copy of `template` (its frozen backbone) with a new CRAD head initialised from `seed`."""
    import torch

    from .model import CradModule

    detector = copy.deepcopy(template)
    head = template.head
    torch.manual_seed(seed)
    detector.head = CradModule(head.C, head.H, head.W, head.E, head.sampling).to(template.mean.device)
    return detector


def train_crad(template, train_features, held_features, seed: int, requested, min_steps: int, run_dir: str | Path,
               classes: list[str], training_info: dict, progress: bool = False):
    """A new CRAD head trained as `crad train` trains it, on cached features.

    `requested` is the TrainConfig asked for; crad.train.plan_schedule adapts it to the set's
    size (min_steps). With held-out features the selected epoch (best.pt) is returned, else the
    last. Returns (detector, TrainResult, schedule decision, fit seconds).
    """
    import torch

    from .train import fit, plan_schedule

    detector = fresh_detector(template, seed)
    config, schedule = plan_schedule(replace(requested, seed=seed, progress=progress), len(train_features), min_steps)
    info = {**training_info, "images": len(train_features), "holdout_images": 0 if held_features is None else len(held_features),
            "epochs": config.epochs, "schedule": schedule, "seed": seed,
            "selection": "lowest held-out normal MSE(F, X)" if held_features is not None else "last epoch"}
    started = time.perf_counter()
    pooled_held = None if held_features is None else detector.pool_features(held_features)
    result = fit(detector, detector.pool_features(train_features), pooled_held, config, run_dir, {"classes": classes, "training": info})
    seconds = time.perf_counter() - started
    if held_features is not None:
        best = torch.load(Path(run_dir) / "best.pt", map_location=template.mean.device)
        detector.head.load_state_dict(best["head_state"])
    return detector.eval(), result, schedule, seconds


def fit_patchcore(train_features, input_size: int, args, seed: int):
    """A PatchCore memory bank over `train_features` with the bench's options: (baseline, seconds)."""
    from .baseline import PatchCoreBaseline

    started = time.perf_counter()
    baseline = PatchCoreBaseline.fit(train_features, None, input_size, args.coreset_ratio, args.max_bank,
                                     args.projection_dim, seed=seed)
    return baseline, time.perf_counter() - started


def crad_size(detector, checkpoint: str | Path) -> dict:
    """Parameters and bytes of a CRAD head, and the bytes of its checkpoint (which also holds the
    backbone's weights, for a self-contained file)."""
    import torch

    from .model import count_parameters

    buffer = io.BytesIO()
    torch.save(detector.head.state_dict(), buffer)
    return {"parameters": count_parameters(detector.head), "head_bytes": buffer.getbuffer().nbytes,
            "checkpoint_bytes": os.path.getsize(checkpoint)}


def patchcore_size(baseline) -> dict:
    bank = baseline.memory_bank
    return {"memory_bank": int(bank.shape[0]), "bank_bytes": int(bank.numel() * bank.element_size())}


def crad_label(args) -> str:
    """CRAD's name in reports, with the options that change what it is."""
    return f"CRAD {args.variant}" + (f" (neck pool {args.neck_pool})" if getattr(args, "neck_pool", 1) > 1 else "")


def percent_cell(value) -> str:
    """A metric in percent for a Markdown table, or a dash when it is undefined."""
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.1f}"


def parse_int_list(text: str) -> list[int]:
    """"8,16,32" -> [8, 16, 32] (for argparse), each >= 0, in the given order, no repeats."""
    import argparse

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers, got {text!r}")
    return values


def write_bench(out: Path, summary: dict, markdown: str) -> None:
    """bench.json (undefined metrics as null) and bench.md in `out`."""
    from .evaluate import _nan_to_none

    (out / "bench.json").write_text(json.dumps(_nan_to_none(summary), indent=2) + "\n")
    (out / "bench.md").write_text(markdown)
