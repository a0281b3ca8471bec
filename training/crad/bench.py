"""Benchmarks on real data: CRAD against a PatchCore-style baseline on the same backbone features.

`python -m crad bench magnetic-tile --minutes 30 --backbone mobilenet-v2`: the protocol below.
`python -m crad bench magnetic-tile --few-shot 8,16,32 --seeds 0,1,2`: few good images
(crad.bench_fewshot). `python -m crad bench unified`: one model for several classes against one
model per class (crad.bench_unified). `python -m crad bench select`: the settings chosen from good
images against the real ranking, per dataset (crad.bench_select). What they share is in
crad.bench_common.

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
import logging
import math
import time
from pathlib import Path

from .bench_common import bench_split, features_of, head_predictions, parse_int_list, percent_cell, write_bench
from .device import add_device_argument, resolve_device
from .evaluate import evaluate_predictions
from .metrics import METRIC_TITLES, METRICS
from .train import add_neck_pool_argument

log = logging.getLogger("crad.bench")
DATASETS = ("magnetic-tile", "unified", "select")
# Published image AUROC on Magnetic Tile (the DifferNet and CS-Flow papers).
PUBLISHED = {
    "magnetic-tile": [
        ("DifferNet (published)", {"image_auroc": 0.977}),
        ("CS-Flow (published)", {"image_auroc": 0.993}),
    ],
}


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


def comparison_table(rows: list[tuple[str, dict, dict]]) -> str:
    """rows: (name, metrics, timings) -> Markdown, metrics in percent."""
    header = "| method | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " | fit s | ms/image |"
    lines = [header, "|" + " --- |" * (len(METRICS) + 3)]
    for name, metrics, timing in rows:
        fit = timing.get("fit_seconds")
        per_image = timing.get("ms_per_image")
        lines.append(f"| {name} | " + " | ".join(percent_cell(metrics.get(m)) for m in METRICS)
                     + f" | {'—' if fit is None else f'{fit:.0f}'} | {'—' if per_image is None else f'{per_image:.1f}'} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .synth import CLASSES as SYNTH_CLASSES

    parser.description = "Benchmark CRAD and a PatchCore baseline (same backbone features) on a real data set."
    parser.add_argument("dataset", choices=DATASETS,
                        help="magnetic-tile: the published protocol (or few good images with --few-shot); "
                             "unified: Magnetic Tile plus synthetic classes, one model for all against one per class")
    parser.add_argument("--data", help="Magnetic Tile folder (default: $CRAD_SHARED_DATA/magnetic-tile, "
                                       "else ../shared/data/magnetic-tile)")
    parser.add_argument("--minutes", type=float, default=30.0, help="CRAD training time budget of the protocol run (default 30)")
    parser.add_argument("--epochs", type=int,
                        help="CRAD epochs. Protocol run: default as many as fit --minutes, at most 50, timed on a "
                             "trial epoch. --few-shot: asked for before --min-steps raises them (default 50). "
                             "unified: every model's epochs (default 50)")
    parser.add_argument("--min-steps", type=int,
                        help="raise a small training set's epochs until CRAD makes this many optimizer steps (crad "
                             "train's --min-steps; default 300 with --few-shot, 0 for unified so that every model "
                             "trains --epochs; the protocol run does not use it)")
    parser.add_argument("--backbone", default="mobilenet-v2")
    parser.add_argument("--backbone-weights")
    parser.add_argument("--random-backbone", action="store_true", help="random backbone weights: for tests only")
    parser.add_argument("--variant", default="crad-s")
    parser.add_argument("--E", type=int)
    parser.add_argument("--input-size", type=int, default=224)
    add_neck_pool_argument(parser)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of training, the held-out split, --limit, --mt-train, the synthetic images and the coreset")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 80/20 split of MT_Free (default 0: keep it)")
    parser.add_argument("--holdout", type=float, default=0.05,
                        help="fraction of the training 80%% held out for model selection in the protocol run "
                             "(--few-shot uses crad train's --holdout auto; unified holds nothing out)")
    parser.add_argument("--limit", type=int, help="at most N Magnetic Tile images per label in each part (smoke tests only)")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--max-bank", type=int, default=10000, help="PatchCore memory bank size cap (per bank)")
    parser.add_argument("--projection-dim", type=int, default=128, help="PatchCore coreset random projection")
    parser.add_argument("--out", help="output folder (default runs/bench/<dataset>, runs/bench/magnetic-tile-few-shot)")
    parser.add_argument("--overlays", type=int, default=3, help="overlay images per class and method")
    parser.add_argument("--no-progress", action="store_true")
    add_device_argument(parser)
    few = parser.add_argument_group("few good images (magnetic-tile --few-shot: crad.bench_fewshot)")
    few.add_argument("--few-shot", type=parse_int_list, metavar="N,N,...",
                     help="train on N good images (seeded draws from the protocol's 80%%) for each N, instead of all")
    few.add_argument("--seeds", type=parse_int_list, default=[0, 1, 2], metavar="S,S,...",
                     help="one draw per seed and N; a seed fixes the draw, the head's initialisation, the batch order "
                          "and the coreset (default 0,1,2)")
    unified = parser.add_argument_group("unified (crad.bench_unified)")
    unified.add_argument("--mt-train", type=int, metavar="N",
                         help="at most N Magnetic Tile training images (seeded draw from the protocol's 80%%; default all)")
    unified.add_argument("--synth-classes", nargs="+", default=list(SYNTH_CLASSES), choices=SYNTH_CLASSES, metavar="CLASS",
                         help=f"synthetic classes beside Magnetic Tile (default {' '.join(SYNTH_CLASSES)})")
    unified.add_argument("--synth-train", type=int, default=100, help="good training images per synthetic class (default 100)")
    unified.add_argument("--synth-test-good", type=int, default=30, help="good test images per synthetic class (default 30)")
    unified.add_argument("--synth-test-defect", type=int, default=40, help="defective test images per synthetic class (default 40)")
    unified.add_argument("--synth-size", type=int, default=256,
                         help="side of the generated images before the --input-size resize (default 256)")
    add_select_arguments(parser)


def add_select_arguments(parser: argparse.ArgumentParser) -> None:
    from .select import DEFAULT_NECK_POOLS, parse_neck_pools
    from .synth import CLASSES as SYNTH_CLASSES
    from .train import DEFAULT_SELECT_ANOMALIES, DEFAULT_SELECT_STEPS

    group = parser.add_argument_group("settings selection against the real ranking (select: crad.bench_select)")
    group.add_argument("--select-datasets", nargs="+", default=["magnetic-tile", *SYNTH_CLASSES], metavar="NAME",
                       choices=["magnetic-tile", *SYNTH_CLASSES], help="magnetic-tile and/or synthetic classes (default: all)")
    group.add_argument("--select-neck-pools", type=parse_neck_pools, default=list(DEFAULT_NECK_POOLS), metavar="K,K")
    group.add_argument("--select-steps", type=int, default=DEFAULT_SELECT_STEPS)
    group.add_argument("--select-anomalies", type=int, default=DEFAULT_SELECT_ANOMALIES)


def run(args: argparse.Namespace) -> int:
    from .backbones import shared_data_dir

    device = resolve_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = Path(args.data) if args.data else shared_data_dir() / "magnetic-tile"
    if not data.is_dir():
        raise SystemExit(f"crad bench: Magnetic Tile folder {data} not found (pass --data or set CRAD_SHARED_DATA)")
    if args.dataset == "unified":
        if args.few_shot:
            raise SystemExit("crad bench: --few-shot belongs to `crad bench magnetic-tile`")
        from .bench_unified import run_unified

        return run_unified(args, data, _out_folder(args, "unified"), device)
    if args.dataset == "select":
        from .bench_select import run_select_bench

        return run_select_bench(args, data, _out_folder(args, "select"), device)
    if args.few_shot:
        from .bench_fewshot import run_few_shot

        return run_few_shot(args, data, _out_folder(args, "magnetic-tile-few-shot"), device)
    return run_protocol(args, data, _out_folder(args, args.dataset), device)


def _out_folder(args: argparse.Namespace, default_name: str) -> Path:
    out = Path(args.out or Path("runs") / "bench" / default_name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_protocol(args: argparse.Namespace, data: Path, out: Path, device) -> int:
    """The published protocol (the module docstring): CRAD within --minutes against PatchCore."""
    import torch

    from . import __version__
    from .baseline import PatchCoreBaseline
    from .model import build_detector, load_detector
    from .train import TrainConfig, fit

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
    timings["load_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    train_features, train_kept, _, _ = features_of(detector, train, args.batch_size, progress, "train", training=True)
    held_features, held_kept, _, _ = features_of(detector, held, args.batch_size, progress, "holdout", training=True)
    if not held_kept:
        held_features = None
    timings["train_features_seconds"] = time.perf_counter() - started

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

    # One backbone pass over the test images; both heads on the same features.
    test_features, kept, skipped, backbone_seconds = features_of(best, test, args.batch_size, progress, "test")
    seconds = {"backbone": backbone_seconds}
    predictions = {}
    for name, model in (("crad", best), ("patchcore", patchcore)):
        maps, scores, seconds[name] = head_predictions(model, test_features, args.batch_size)
        predictions[name] = (maps, scores)
    del test_features
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
    note = "" if args.limit is None else f"\n--limit {args.limit}: a smoke test, not comparable with the published rows.\n"
    header = (f"# {args.dataset}: CRAD vs PatchCore on {args.backbone} features\n\n"
              f"{len(train_kept)} training / {len(held_kept)} held-out normal images, {len(kept)} test images "
              f"({summary['images']['test_defective']} defective); CRAD budget {args.minutes:g} min on {device}, "
              f"{summary['epochs_per_minute']:.2f} epochs/min.\n{note}\n")
    write_bench(out, summary, header + table)
    print(table)
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, per-method reports in {out / 'crad'} and {out / 'patchcore'}")
    return 0
