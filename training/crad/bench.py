"""Benchmarks on real data: CRAD against a PatchCore-style baseline on the same backbone features.

`python -m crad bench magnetic-tile --minutes 30 --backbone mobilenet-v2`

Protocol of the published Magnetic Tile results (DifferNet, CS-Flow): a seeded 80 % of MT_Free
trains (`crad.data.magnetic_tile_split`, split seed 0 by default); the other 20 % and every
defect image (Blowhole, Break, Crack, Fray, Uneven) form the test set. A further seeded
--holdout fraction of the training 80 % is kept out of training for CRAD's model selection
(lowest held-out reconstruction loss: never the test set). CRAD trains with crad.train.fit
within --minutes (by default with as many epochs as a timed trial epoch says fit, so that the
learning-rate schedule completes); PatchCore builds its memory bank from the same training features. Both are
evaluated on the same test features (one backbone pass), with the metrics of crad.evaluate.

--limit N caps the training, held-out and test images (N per label, seeded) for smoke tests:
such results are not comparable with the published ones.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from .data import Sample, image_batches, limit_samples, load_images, magnetic_tile_split, split_samples
from .device import add_device_argument, resolve_device
from .evaluate import METRICS, METRIC_TITLES, evaluate_predictions
from .train import add_neck_pool_argument

log = logging.getLogger("crad.bench")
DATASETS = ("magnetic-tile",)
# Published image AUROC on Magnetic Tile (the DifferNet and CS-Flow papers).
PUBLISHED = {
    "magnetic-tile": [
        ("DifferNet (published)", {"image_auroc": 0.977}),
        ("CS-Flow (published)", {"image_auroc": 0.993}),
    ],
}


def bench_split(data: str | Path, split_seed: int, seed: int, holdout: float, limit: int | None):
    """(train, holdout, test) samples of the protocol above."""
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


def _test_predictions(crad, patchcore, samples: list[Sample], size: int, batch: int, device=None):
    """One backbone pass over the test images; both heads on the same features."""
    import torch

    from .device import loader_options, synchronize

    maps = {"crad": [], "patchcore": []}
    scores = {"crad": [], "patchcore": []}
    seconds = {"backbone": 0.0, "crad": 0.0, "patchcore": 0.0}
    kept: list[Sample] = []
    skipped: list[str] = []
    with torch.no_grad():  # warm-up: the first call's one-off allocations are not inference time
        warm = crad.unpooled_features(torch.zeros(1, 3, size, size, device=device))
        crad.maps_from_features(crad.pool_features(warm))
        patchcore.maps_from_features(warm)
        for images, batch_samples in image_batches(samples, size, batch, skipped, **loader_options(device)):
            start = time.perf_counter()
            features = crad.unpooled_features(torch.as_tensor(images).to(device, non_blocking=True))
            synchronize(device)
            seconds["backbone"] += time.perf_counter() - start
            for name, model in (("crad", crad), ("patchcore", patchcore)):
                start = time.perf_counter()
                out_maps, out_scores = model.maps_from_features(crad.pool_features(features) if model is crad else features)
                synchronize(device)
                seconds[name] += time.perf_counter() - start
                maps[name].append(out_maps[:, 0].float().cpu().numpy())
                scores[name].append(out_scores.float().cpu().numpy())
            kept.extend(batch_samples)
    results = {name: (np.concatenate(maps[name]), np.concatenate(scores[name])) for name in maps}
    return results, kept, skipped, seconds


def epochs_for_budget(detector, train_features, held_features, args, out: Path) -> tuple[int, float]:
    """How many epochs fit the budget, so that the learning-rate schedule (scaled to the epoch
    count by crad.train) completes instead of being cut before its decay.

    One trial epoch on a copy of the detector (the real run starts from the same initial
    weights) measures an epoch's time; its own time is taken off the budget.
    Returns (epochs, minutes left for the real run).
    """
    import copy
    import shutil

    from .train import REFERENCE_EPOCHS, TrainConfig, fit

    trial = TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed, progress=False)
    started = time.perf_counter()
    fit(copy.deepcopy(detector), train_features, held_features, trial, out / "trial-epoch", {})
    epoch_seconds = time.perf_counter() - started
    shutil.rmtree(out / "trial-epoch", ignore_errors=True)
    left = args.minutes * 60.0 - epoch_seconds
    epochs = int(max(1, min(REFERENCE_EPOCHS, math.floor(0.95 * left / epoch_seconds))))
    log.info("a trial epoch took %.1f s: %d epochs fit the %.1f min budget", epoch_seconds, epochs, args.minutes)
    return epochs, max(left / 60.0, epoch_seconds / 60.0)


def _cell(value) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.1f}"


def comparison_table(rows: list[tuple[str, dict, dict]]) -> str:
    """rows: (name, metrics, timings) -> Markdown, metrics in percent."""
    header = "| method | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " | fit s | ms/image |"
    lines = [header, "|" + " --- |" * (len(METRICS) + 3)]
    for name, metrics, timing in rows:
        fit = timing.get("fit_seconds")
        per_image = timing.get("ms_per_image")
        lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(m)) for m in METRICS)
                     + f" | {'—' if fit is None else f'{fit:.0f}'} | {'—' if per_image is None else f'{per_image:.1f}'} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Benchmark CRAD and a PatchCore baseline (same backbone features) on a real data set."
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--data", help="data set folder (default: $CRAD_SHARED_DATA/<dataset>, else ../shared/data/<dataset>)")
    parser.add_argument("--minutes", type=float, default=30.0, help="CRAD training time budget (default 30)")
    parser.add_argument("--epochs", type=int,
                        help="CRAD epochs (default: as many as fit --minutes, at most 50, timed on a trial epoch)")
    parser.add_argument("--backbone", default="mobilenet-v2")
    parser.add_argument("--backbone-weights")
    parser.add_argument("--random-backbone", action="store_true", help="random backbone weights: for tests only")
    parser.add_argument("--variant", default="crad-s")
    parser.add_argument("--E", type=int)
    parser.add_argument("--input-size", type=int, default=224)
    add_neck_pool_argument(parser)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed of training, the held-out split, --limit and the coreset")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 80/20 split of MT_Free (default 0: keep it)")
    parser.add_argument("--holdout", type=float, default=0.05, help="fraction of the training 80%% held out for model selection")
    parser.add_argument("--limit", type=int, help="at most N images per label in each part (smoke tests only)")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--max-bank", type=int, default=10000, help="PatchCore memory bank size cap")
    parser.add_argument("--projection-dim", type=int, default=128, help="PatchCore coreset random projection")
    parser.add_argument("--out", help="output folder (default runs/bench/<dataset>)")
    parser.add_argument("--overlays", type=int, default=3, help="overlay images per class and method")
    parser.add_argument("--no-progress", action="store_true")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .backbones import shared_data_dir
    from .baseline import PatchCoreBaseline
    from .model import build_detector, load_detector
    from .train import TrainConfig, compute_features, fit

    device = resolve_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = Path(args.data) if args.data else shared_data_dir() / args.dataset
    if not data.is_dir():
        raise SystemExit(f"crad bench: data set folder {data} not found (pass --data or set CRAD_SHARED_DATA)")
    out = Path(args.out or Path("runs") / "bench" / args.dataset)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    timings: dict[str, float] = {}

    train, held, test = bench_split(data, args.split_seed, args.seed, args.holdout, args.limit)
    log.info("%s: %d training, %d held-out normal, %d test images (%d defective)", args.dataset, len(train), len(held),
             len(test), sum(s.label for s in test))

    started = time.perf_counter()
    torch.manual_seed(args.seed)  # the head's initialisation
    detector = build_detector(args.backbone, args.variant, args.E, args.input_size, args.backbone_weights,
                              args.random_backbone, neck_pool=args.neck_pool)
    detector.to(device)
    size = detector.input_size
    train_images, train_kept, _ = load_images(train, size)
    held_images, held_kept, _ = load_images(held, size) if held else (None, [], [])
    timings["load_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    # Unpooled: PatchCore compares on the spec's X whatever neck pooling CRAD is given.
    train_features = compute_features(detector, train_images, args.batch_size, progress, "train features", pooled=False)
    held_features = compute_features(detector, held_images, args.batch_size, progress, "holdout features", pooled=False) if held_kept else None
    timings["train_features_seconds"] = time.perf_counter() - started
    del train_images, held_images

    epochs, train_minutes = args.epochs, args.minutes
    if epochs is None:
        started = time.perf_counter()
        epochs, train_minutes = epochs_for_budget(detector, train_features, held_features, args, out)
        timings["trial_epoch_seconds"] = time.perf_counter() - started
    config = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=args.seed, max_minutes=train_minutes,
                         progress=progress)
    training_info = {
        "dataset": args.dataset, "protocol": "seeded 80% of MT_Free trains; 20% + all defects test",
        "split_seed": args.split_seed, "images": len(train_kept), "holdout_images": len(held_kept),
        "epochs": config.epochs, "seed": args.seed, "limit": args.limit,
        "selection": "lowest held-out normal MSE(F, X)" if held_kept else "last epoch",
        "backbone_weights": detector.backbone.weights_origin, "trainer": f"crad {__version__}",
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    started = time.perf_counter()
    result = fit(detector, detector.pool_features(train_features),
                 None if held_features is None else detector.pool_features(held_features), config, out / "crad",
                 {"classes": sorted({s.class_name for s in train_kept}), "training": training_info})
    timings["crad_fit_seconds"] = time.perf_counter() - started
    best, _ = load_detector(str(out / "crad" / "best.pt"))
    best.to(device)

    started = time.perf_counter()
    patchcore = PatchCoreBaseline.fit(train_features, best.unpooled_features, size, args.coreset_ratio, args.max_bank,
                                      args.projection_dim, seed=args.seed)
    timings["patchcore_fit_seconds"] = time.perf_counter() - started
    del train_features, held_features

    predictions, kept, skipped, seconds = _test_predictions(best, patchcore, test, size, args.batch_size, device)
    per_image = {name: 1000.0 * s / len(kept) for name, s in seconds.items()}
    results = {}
    for name, title in (("crad", f"CRAD {args.variant}"), ("patchcore", "PatchCore baseline")):
        maps, scores = predictions[name]
        results[name] = evaluate_predictions(kept, maps, scores, out / name, args.overlays, f"{title} on {args.dataset}",
                                             {"ms_per_image_head": per_image[name], "ms_per_image_backbone": per_image["backbone"]})

    crad_row = {"fit_seconds": timings["crad_fit_seconds"], "ms_per_image": per_image["backbone"] + per_image["crad"]}
    patchcore_row = {"fit_seconds": timings["patchcore_fit_seconds"],
                     "ms_per_image": per_image["backbone"] + per_image["patchcore"]}
    neck = f", neck pool {args.neck_pool}" if args.neck_pool > 1 else ""
    rows = [(f"CRAD {args.variant} ({args.backbone}{neck}, {result.epochs_completed} epochs)", results["crad"]["mean"], crad_row),
            (f"PatchCore ({args.backbone}, bank {patchcore.memory_bank.shape[0]})", results["patchcore"]["mean"], patchcore_row)]
    rows += [(name, metrics, {}) for name, metrics in PUBLISHED[args.dataset]]
    table = comparison_table(rows)
    summary = {
        "dataset": args.dataset, "data": str(data), "backbone": args.backbone, "variant": args.variant,
        "neck_pool": args.neck_pool, "device": str(device),
        "epochs_per_minute": result.epochs_completed / max(timings["crad_fit_seconds"] / 60.0, 1e-9),
        "minutes": args.minutes, "limit": args.limit, "seed": args.seed, "split_seed": args.split_seed,
        "images": {"train": len(train_kept), "holdout": len(held_kept), "test": len(kept),
                   "test_defective": sum(s.label for s in kept), "skipped": skipped},
        "crad": {"epochs_completed": result.epochs_completed, "best_epoch": result.best_epoch,
                 "stopped_by_time_budget": result.stopped_by_time_budget, "metrics": results["crad"]["mean"],
                 **crad_row},
        "patchcore": {"memory_bank": int(patchcore.memory_bank.shape[0]), "coreset_ratio": args.coreset_ratio,
                      "metrics": results["patchcore"]["mean"], **patchcore_row},
        "published": {name: metrics for name, metrics in PUBLISHED[args.dataset]},
        "timings": {**timings, "test_seconds": seconds},
    }
    from .evaluate import _nan_to_none

    (out / "bench.json").write_text(json.dumps(_nan_to_none(summary), indent=2) + "\n")
    note = "" if args.limit is None else f"\n--limit {args.limit}: a smoke test, not comparable with the published rows.\n"
    header = (f"# {args.dataset}: CRAD vs PatchCore on {args.backbone} features\n\n"
              f"{len(train_kept)} training / {len(held_kept)} held-out normal images, {len(kept)} test images "
              f"({summary['images']['test_defective']} defective); CRAD budget {args.minutes:g} min on {device}, "
              f"{summary['epochs_per_minute']:.2f} epochs/min.\n{note}\n")
    (out / "bench.md").write_text(header + table)
    print(table)
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, per-method reports in {out / 'crad'} and {out / 'patchcore'}")
    return 0
