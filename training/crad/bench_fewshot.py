"""Few good images: CRAD and PatchCore on N good Magnetic Tile images, several seeded draws.

`python -m crad bench magnetic-tile --few-shot 8,16,32 --seeds 0,1,2`

A new product starts with a handful of good parts. For each N and seed, a seeded draw of N good
images from the protocol's training 80 % of MT_Free (crad.data.limit_samples) trains
- CRAD as `crad train` would with its small-set defaults: --holdout auto (which holds nothing
  out of so few images, so the model is the last epoch of a fixed schedule) and --min-steps
  (the epochs are raised until the run makes that many optimizer steps);
- PatchCore, its memory bank built from the same N images' features;
and both are evaluated on the protocol's whole test set (the other 20 % of MT_Free and every
defect image). The backbone runs once over the training 80 % and once over the test set; every
draw indexes into those features. Reported per N: mean, standard deviation (over seeds, n-1) and
range of each metric, and CRAD's fit time.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

from .bench_common import (bench_split, crad_label, features_of, fit_patchcore, head_predictions, percent_cell,
                           train_crad, write_bench)
from .data import Sample, limit_samples
from .evaluate import evaluate_predictions
from .metrics import METRIC_TITLES, METRICS

log = logging.getLogger("crad.bench")
SUMMARY_METRICS = ("image_auroc", "pixel_auroc", "aupro")


def few_shot_draw(pool: list[Sample], count: int, seed: int) -> list[Sample]:
    """A seeded draw of `count` good images from `pool` (one class): the same seed gives the same draw."""
    if not 0 < count <= len(pool):
        raise ValueError(f"cannot draw {count} good images from {len(pool)}")
    return limit_samples(pool, count, seed)


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max; NaN values are left out."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "min": float(finite.min()), "max": float(finite.max()),
            "n": int(finite.size)}


def summarise(draws: list[dict], sizes: list[int]) -> dict:
    """Per N: the spread over seeds of each method's metrics and fit seconds."""
    summary = {}
    for count in sizes:
        runs = [d for d in draws if d["n"] == count]
        summary[str(count)] = {
            method: {**{m: spread([r[method]["metrics"][m] for r in runs]) for m in METRICS},
                     "fit_seconds": spread([r[method]["fit_seconds"] for r in runs])}
            for method in ("crad", "patchcore")
        }
    return summary


def _spread_cell(value: dict, percent: bool = True) -> str:
    if value["mean"] is None:
        return "—"
    show = percent_cell if percent else (lambda v: f"{v:.0f}")
    return f"{show(value['mean'])} ± {show(value['std'])} ({show(value['min'])}–{show(value['max'])})"


def few_shot_table(summary: dict, crad_name: str) -> str:
    """Markdown: one row per N and method; cells are mean ± std (min–max) over the seeds."""
    lines = ["| good images | method | " + " | ".join(METRIC_TITLES[m] for m in SUMMARY_METRICS) + " | fit s |",
             "|" + " --- |" * (len(SUMMARY_METRICS) + 3)]
    for count, methods in summary.items():
        for method, name in (("crad", crad_name), ("patchcore", "PatchCore")):
            cells = [_spread_cell(methods[method][m]) for m in SUMMARY_METRICS]
            lines.append(f"| {count} | {name} | " + " | ".join(cells) + f" | {_spread_cell(methods[method]['fit_seconds'], False)} |")
    return "\n".join(lines) + "\n"


def run_few_shot(args: argparse.Namespace, data: Path, out: Path, device) -> int:
    import torch

    from . import __version__
    from .model import build_detector
    from .train import DEFAULT_MIN_STEPS, REFERENCE_EPOCHS, TrainConfig, choose_holdout

    progress = not args.no_progress
    min_steps = DEFAULT_MIN_STEPS if args.min_steps is None else args.min_steps
    requested = TrainConfig(epochs=args.epochs or REFERENCE_EPOCHS, batch_size=args.batch_size)
    pool, _, test = bench_split(data, args.split_seed, args.seed, 0.0, args.limit)
    too_many = [n for n in args.few_shot if not 0 < n <= len(pool)]
    if too_many:
        raise SystemExit(f"crad bench: --few-shot {too_many}: the training part holds {len(pool)} good images")

    torch.manual_seed(args.seed)
    template = build_detector(args.backbone, args.variant, args.E, args.input_size, args.backbone_weights,
                              args.random_backbone, neck_pool=args.neck_pool).to(device)
    started = time.perf_counter()
    pool_features, pool_kept, pool_skipped, _ = features_of(template, pool, args.batch_size, progress, "train pool",
                                                            training=True)
    test_features, test_kept, test_skipped, backbone_seconds = features_of(template, test, args.batch_size, progress, "test")
    features_seconds = time.perf_counter() - started
    row_of = {s.path: i for i, s in enumerate(pool_kept)}
    log.info("few good images: draws of %s from %d good images, seeds %s; %d test images (%d defective)",
             args.few_shot, len(pool_kept), args.seeds, len(test_kept), sum(s.label for s in test_kept))

    draws = []
    for count in args.few_shot:
        for seed in args.seeds:
            draw = few_shot_draw(pool_kept, count, seed)
            train, held, holdout_rule = choose_holdout(draw, "auto", seed)
            draw_out = out / f"n{count}-seed{seed}"
            train_features = pool_features[[row_of[s.path] for s in train]]
            held_features = pool_features[[row_of[s.path] for s in held]] if held else None
            info = {"dataset": "magnetic-tile", "protocol": f"few-shot: {count} good images, seed {seed}",
                    "holdout_rule": holdout_rule, "trainer": f"crad {__version__}",
                    "backbone_weights": template.backbone.weights_origin}
            crad, result, schedule, crad_seconds = train_crad(
                template, train_features, held_features, seed, requested, min_steps, draw_out / "crad",
                ["magnetic-tile"], info, progress)
            patchcore, patchcore_seconds = fit_patchcore(pool_features[[row_of[s.path] for s in draw]],
                                                         template.input_size, args, seed)
            record = {"n": count, "seed": seed, "train": [os.path.relpath(s.path, data) for s in draw],
                      "holdout_rule": holdout_rule}
            for name, model, fit_seconds, title in (("crad", crad, crad_seconds, crad_label(args)),
                                                    ("patchcore", patchcore, patchcore_seconds, "PatchCore")):
                maps, scores, head_seconds = head_predictions(model, test_features, args.batch_size)
                results = evaluate_predictions(test_kept, maps, scores, draw_out / name, 0,
                                               f"{title}, {count} good images, seed {seed}")
                record[name] = {"metrics": results["mean"], "fit_seconds": fit_seconds,
                                "ms_per_image_head": 1000.0 * head_seconds / len(test_kept)}
            record["crad"].update(epochs_completed=result.epochs_completed, schedule=schedule)
            record["patchcore"]["memory_bank"] = int(patchcore.memory_bank.shape[0])
            draws.append(record)
            log.info("%d good images, seed %d: CRAD image AUROC %s, PatchCore %s", count, seed,
                     percent_cell(record["crad"]["metrics"]["image_auroc"]),
                     percent_cell(record["patchcore"]["metrics"]["image_auroc"]))

    summary = summarise(draws, args.few_shot)
    crad_name = crad_label(args)
    table = few_shot_table(summary, crad_name)
    report = {
        "mode": "few-shot", "dataset": "magnetic-tile", "data": str(data), "backbone": args.backbone,
        "variant": args.variant, "device": str(device), "sizes": args.few_shot, "seeds": args.seeds,
        "split_seed": args.split_seed, "limit": args.limit, "epochs_requested": requested.epochs, "min_steps": min_steps,
        "images": {"pool": len(pool_kept), "test": len(test_kept), "test_defective": sum(s.label for s in test_kept),
                   "skipped": pool_skipped + test_skipped},
        "summary": summary, "draws": draws,
        "timings": {"features_seconds": features_seconds,
                    "ms_per_image_backbone": 1000.0 * backbone_seconds / len(test_kept)},
    }
    note = "" if args.limit is None else f"\n--limit {args.limit}: a smoke test, not comparable with the full test set.\n"
    header = (f"# magnetic-tile, few good images: {crad_name} vs PatchCore on {args.backbone} features\n\n"
              f"Seeded draws of N good images from the protocol's {len(pool_kept)} training images (seeds "
              f"{', '.join(map(str, args.seeds))}), tested on {len(test_kept)} images "
              f"({report['images']['test_defective']} defective) on {device}. CRAD: --holdout auto, "
              f"{requested.epochs} epochs raised to at least {min_steps} optimizer steps. "
              f"Cells: mean ± std (min–max) over the seeds, in percent.\n{note}\n")
    write_bench(out, report, header + table)
    print(table)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}; per-draw reports in {out}/n<N>-seed<S>/")
    return 0
