"""Does the choice from good images pick what real defects would? `crad bench select`.

`python -m crad bench select --select-datasets magnetic-tile weave washer label --epochs 16`

For each dataset (Magnetic Tile on the published protocol's split, and the synthetic classes of
crad.synth, generated into <out>/synth with --seed and the --synth-* sizes), as `crad train`
would see it: the normal training images, a hold-out chosen by crad.train.choose_holdout ("auto":
10 % per class), and the dataset's labelled test set, which only this bench reads. Then:

1. the selection exactly as `crad train --select on` runs it (crad.select: each candidate neck
   pooling's short run, scored on the hold-out against synthetic anomalies drawn on it);
2. every candidate trained with the requested schedule (--epochs, --min-steps; best held-out
   loss, as `crad train`) and tested on the real test set: the real ranking;
3. the PatchCore baseline on the same features;
4. the chosen candidate calibrated as `crad calibrate` does by default on the hold-out (the
   balanced rule, with synthetic anomalies on those images) and, for comparison, with the FRR
   bound alone: the share of real defects each threshold catches and of test good parts it rejects.

The backbone runs once per image; every head uses those features. Nothing from the test set
reaches the selection, the training or the calibration.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

import numpy as np

from .bench_common import features_of, fit_patchcore, head_predictions, percent_cell, train_crad, write_bench
from .data import MAGNETIC_TILE_CLASS, Sample, limit_samples, load_images, load_samples, magnetic_tile_split
from .metrics import image_auroc

log = logging.getLogger("crad.bench")


def dataset_samples(name: str, data: Path, out: Path, args: argparse.Namespace) -> tuple[list[Sample], list[Sample]]:
    """(normal training samples, test samples) of Magnetic Tile or one synthetic class."""
    if name == MAGNETIC_TILE_CLASS or name == "magnetic-tile":
        train, test = magnetic_tile_split(data)
    else:
        from .synth import write_dataset

        root = out / "synth"
        if not (root / name).is_dir():
            write_dataset(root, [name], args.synth_train, args.synth_test_good, args.synth_test_defect, args.synth_size,
                          args.seed)
        train, test = load_samples(root, "mvtec", "train", [name]), load_samples(root, "mvtec", "test", [name])
    train = limit_samples([s for s in train if s.label == 0], args.limit, args.seed)
    return train, (test if args.limit is None else limit_samples(test, args.limit, args.seed))


def catch_and_reject(threshold: float, scores: np.ndarray, labels: np.ndarray) -> dict:
    """What `threshold` does on the real test set: defects caught (>= t) and good parts rejected."""
    defects, good = scores[labels == 1], scores[labels == 0]
    return {"threshold": float(threshold), "defects_caught": int((defects >= threshold).sum()), "defects": int(defects.size),
            "good_rejected": int((good >= threshold).sum()), "good": int(good.size)}


def bench_dataset(name: str, data: Path, out: Path, args: argparse.Namespace, device) -> dict:
    import torch

    from .anomalies import make_anomalies
    from .calibrate import calibrate_scores
    from .model import build_detector
    from .select import select_settings
    from .train import TrainConfig, choose_holdout, compute_features, short_schedule

    progress = not args.no_progress
    normals, test = dataset_samples(name, data, out, args)
    train, held, holdout_rule = choose_holdout(normals, "auto", args.seed)
    if len(held) < 2:
        raise SystemExit(f"crad bench select: {name} has too few normal images for a hold-out ({holdout_rule})")
    torch.manual_seed(args.seed)
    template = build_detector(args.backbone, args.variant, args.E, args.input_size, args.backbone_weights,
                              args.random_backbone).to(device)
    train_f, train_kept, _, _ = features_of(template, train, args.batch_size, progress, "train", training=True)
    held_f, held_kept, _, _ = features_of(template, held, args.batch_size, progress, "holdout", training=True)
    test_f, test_kept, _, _ = features_of(template, test, args.batch_size, progress, "test")
    labels = np.array([s.label for s in test_kept])
    held_images, _, _ = load_images(held_kept, template.input_size)
    anomalous_images, records = make_anomalies(held_images, args.select_anomalies, args.seed)
    anomalous_f = compute_features(template, anomalous_images, args.batch_size, progress, "synthetic anomalies", pooled=False)
    del held_images, anomalous_images
    log.info("%s: %d training, %d held-out, %d test images (%d defective), %d synthetic anomalies", name, len(train_kept),
             len(held_kept), len(test_kept), int(labels.sum()), len(records))

    started = time.perf_counter()
    selection = select_settings(template, train_f, held_f, anomalous_f, records, args.select_neck_pools, args.seed,
                                args.batch_size, short_schedule(args.select_steps, args.batch_size, args.seed))
    selection_seconds = time.perf_counter() - started
    chosen = selection["chosen"]["neck_pool"]
    synthetic = {c["neck_pool"]: c["synthetic_auroc"] for c in selection["candidates"]}

    requested = TrainConfig(epochs=args.epochs or 50, batch_size=args.batch_size)
    min_steps = 300 if args.min_steps is None else args.min_steps
    classes = [name]
    candidates = {}
    for pool in args.select_neck_pools:
        pooled_template = copy.deepcopy(template)
        pooled_template.neck_pool = pool
        detector, result, schedule, seconds = train_crad(pooled_template, train_f, held_f, args.seed, requested, min_steps,
                                                         out / name / f"pool-{pool}", classes, {"dataset": name}, progress)
        _, test_scores, _ = head_predictions(detector, test_f, args.batch_size)
        record = {"neck_pool": pool, "synthetic_auroc": synthetic[pool], "image_auroc": float(image_auroc(labels, test_scores)),
                  "epochs": result.epochs_completed, "best_epoch": result.best_epoch, "fit_seconds": round(seconds, 1)}
        if pool == chosen:
            held_maps, held_scores, _ = head_predictions(detector, held_f, args.batch_size)
            _, anomalous_scores, _ = head_predictions(detector, anomalous_f, args.batch_size)
            for rule in ("auto", "frr"):
                calibration = calibrate_scores(held_maps, held_scores, rule=rule, synthetic_scores=anomalous_scores)
                record[f"threshold_{rule}"] = {
                    "rule": calibration["rule"]["image"]["rule"], **catch_and_reject(calibration["image"]["threshold"], test_scores, labels),
                    "synthetic_miss_rate": calibration["synthetic"]["miss_rate_at_threshold"],
                    "warning": calibration.get("warning")}
        candidates[pool] = record
        del detector

    baseline, patchcore_seconds = fit_patchcore(train_f, template.input_size, args, args.seed)
    _, patchcore_scores, _ = head_predictions(baseline, test_f, args.batch_size)
    real_best = max(args.select_neck_pools, key=lambda p: (candidates[p]["image_auroc"], -args.select_neck_pools.index(p)))
    return {
        "dataset": name, "images": {"train": len(train_kept), "holdout": len(held_kept), "test": len(test_kept),
                                    "test_defective": int(labels.sum()), "synthetic_anomalies": len(records)},
        "selection": selection, "selection_seconds": round(selection_seconds, 1), "chosen": chosen,
        "real_best": real_best, "agrees": bool(candidates[chosen]["image_auroc"] >= candidates[real_best]["image_auroc"]),
        "candidates": [candidates[p] for p in args.select_neck_pools],
        "default": candidates[args.select_neck_pools[0]],
        "patchcore": {"image_auroc": float(image_auroc(labels, patchcore_scores)), "fit_seconds": round(patchcore_seconds, 1)},
    }


def _share(part: dict) -> str:
    caught, rejected = part["defects_caught"], part["good_rejected"]
    return (f"{caught}/{part['defects']} ({100 * caught / max(part['defects'], 1):.0f} %) caught, "
            f"{rejected}/{part['good']} ({100 * rejected / max(part['good'], 1):.1f} %) good rejected")


def select_table(rows: list[dict], pools: list[int]) -> str:
    """Markdown: per dataset, default vs chosen vs PatchCore, the synthetic and real ranking, the thresholds."""
    head = " | ".join(f"pool {p}: synthetic / real" for p in pools)
    lines = [f"| dataset | {head} | chosen | real best | CRAD default (pool {pools[0]}) | CRAD chosen | PatchCore | "
             "default threshold (balanced) on real test | FRR-bound threshold | selection s |",
             "|" + " --- |" * (len(pools) + 9)]
    for row in rows:
        by_pool = {c["neck_pool"]: c for c in row["candidates"]}
        cells = " | ".join(f"{percent_cell(by_pool[p]['synthetic_auroc'])} / {percent_cell(by_pool[p]['image_auroc'])}" for p in pools)
        chosen = by_pool[row["chosen"]]
        lines.append(f"| {row['dataset']} | {cells} | {row['chosen']} | {row['real_best']}{'' if row['agrees'] else ' (chose wrong)'} | "
                     f"{percent_cell(row['default']['image_auroc'])} | {percent_cell(chosen['image_auroc'])} | "
                     f"{percent_cell(row['patchcore']['image_auroc'])} | {_share(chosen['threshold_auto'])} | "
                     f"{_share(chosen['threshold_frr'])} | {row['selection_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_select_bench(args: argparse.Namespace, data: Path, out: Path, device) -> int:
    rows = []
    for name in args.select_datasets:
        rows.append(bench_dataset(name, data, out, args, device))
        write_bench(out, {"mode": "select", "rows": rows, "backbone": args.backbone, "variant": args.variant,
                          "epochs": args.epochs, "min_steps": args.min_steps, "seed": args.seed, "device": str(device),
                          "select_steps": args.select_steps, "select_anomalies": args.select_anomalies},
                    select_table(rows, args.select_neck_pools))
        log.info("%s done: chose neck pool %d, real best %d", name, rows[-1]["chosen"], rows[-1]["real_best"])
    table = select_table(rows, args.select_neck_pools)
    print(table)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
