"""Separate vs unified: one model for several classes against one model per class, CRAD and PatchCore.

`python -m crad bench unified --mt-train 200 --synth-train 100 --epochs 20`

CRAD's headline claim is that one model serves many product classes. The classes here are
Magnetic Tile (the published protocol's split; --mt-train caps its training part with a seeded
draw) and the synthetic classes of crad.synth (weave, washer and label by default), generated
into <out>/synth with --seed. Every image is resized to --input-size (Magnetic Tile's grey JPEGs
are read as three identical channels, as everywhere in the trainer). Four ways to model them:

- CRAD unified: ONE model trained on every class's good training images (no class input);
- CRAD separate: one model per class, each with the same --epochs and settings;
- PatchCore unified: one memory bank over every class's training features;
- PatchCore separate: one memory bank per class (each capped at --max-bank, as the unified one).

Each is evaluated per class on that class's test set (a per-class model sees only its own class's
test images, as it would on a line that knows the product). The backbone runs once per image and
all four use those features. CRAD holds nothing out here and keeps the last epoch of the fixed
schedule, and --min-steps defaults to 0, so that every CRAD model sees exactly its class's images
for the same epochs: the comparison is of the models, not of their schedules.

Reported: per class image/pixel AUROC and AUPRO, their means over classes, the size of each
choice (CRAD: head parameters, head bytes and checkpoint bytes, summed over its models;
PatchCore: memory-bank rows and bytes) and the heads' milliseconds per test image on this device
(the shared backbone's time is reported once, apart).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .bench_common import (bench_split, crad_label, crad_size, features_of, fit_patchcore, head_predictions, patchcore_size,
                           percent_cell, train_crad, write_bench)
from .data import MAGNETIC_TILE_CLASS, Sample, limit_samples, load_samples
from .evaluate import evaluate_predictions

log = logging.getLogger("crad.bench")
METHODS = ("crad-unified", "crad-separate", "patchcore-unified", "patchcore-separate")
TABLE_METRICS = ("image_auroc", "pixel_auroc", "aupro")
ALL_CLASSES = "all"  # the one group of a unified model

# fit(group name, its classes, training rows) -> (model, fit seconds, size figures, details)
GroupFit = Callable[[str, list[str], list[int]], tuple[object, float, dict, dict]]


def unified_samples(args: argparse.Namespace, data: Path, out: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """(training samples, test samples, class names in table order): Magnetic Tile, then the
    synthetic classes, generated into out/synth."""
    from .synth import write_dataset

    mt_train, _, mt_test = bench_split(data, args.split_seed, args.seed, 0.0, args.limit)
    mt_train = limit_samples(mt_train, args.mt_train, args.seed)
    synth, synth_classes = out / "synth", list(dict.fromkeys(args.synth_classes))
    write_dataset(synth, synth_classes, args.synth_train, args.synth_test_good, args.synth_test_defect,
                  args.synth_size, args.seed, overwrite=True)
    synth_train = load_samples(synth, "mvtec", "train", synth_classes)
    synth_test = load_samples(synth, "mvtec", "test", synth_classes)
    return mt_train + synth_train, mt_test + synth_test, [MAGNETIC_TILE_CLASS, *synth_classes]


def rows_by_class(samples: list[Sample], classes: list[str]) -> dict[str, list[int]]:
    return {name: [i for i, s in enumerate(samples) if s.class_name == name] for name in classes}


def run_scheme(fit: GroupFit, groups: dict[str, list[str]], train_rows: dict[str, list[int]],
               test_rows: dict[str, list[int]], test_features, batch: int, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fit one model per group (one group of all classes: unified; one per class: separate) and
    predict each class's test images with its group's model.

    Returns (maps, scores) aligned with the test features and the scheme's figures: models, fit
    seconds, head ms per test image, summed size figures, per-group details.
    """
    count = len(test_features)
    maps = np.zeros((count, size, size), np.float32)
    scores = np.zeros(count, np.float32)
    fit_seconds, head_seconds, sizes, details = 0.0, 0.0, {}, {}
    for group, members in groups.items():
        rows = sorted(row for name in members for row in train_rows[name])
        model, seconds, model_size, details[group] = fit(group, members, rows)
        fit_seconds += seconds
        for key, value in model_size.items():
            sizes[key] = sizes.get(key, 0) + value
        test_index = sorted(row for name in members for row in test_rows[name])
        if test_index:
            maps[test_index], scores[test_index], seconds = head_predictions(model, test_features[test_index], batch)
            head_seconds += seconds
        del model
    figures = {"models": len(groups), "fit_seconds": fit_seconds, "ms_per_image_head": 1000.0 * head_seconds / max(count, 1),
               "size": sizes, "details": details}
    return maps, scores, figures


def _metrics_cell(metrics: dict) -> str:
    return " / ".join(percent_cell(metrics.get(m)) for m in TABLE_METRICS)


def _size_cell(method: str, size: dict) -> str:
    if method.startswith("crad"):
        return f"{size['parameters'] / 1e6:.2f} M params, {size['head_bytes'] / 1e6:.1f} MB"
    return f"bank {size['memory_bank']}, {size['bank_bytes'] / 1e6:.1f} MB"


def unified_table(methods: dict, classes: list[str], names: dict[str, str]) -> str:
    """Markdown: one row per method, one column per class; cells are image AUROC / pixel AUROC /
    AUPRO@0.3 in percent."""
    lines = ["| method | models | size | head ms/image | " + " | ".join(classes) + " | mean |",
             "|" + " --- |" * (len(classes) + 5)]
    for method in METHODS:
        record = methods[method]
        cells = [_metrics_cell(record["classes"][name]) for name in classes] + [_metrics_cell(record["mean"])]
        lines.append(f"| {names[method]} | {record['models']} | {_size_cell(method, record['size'])} | "
                     f"{record['ms_per_image_head']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _difference(unified: dict, separate: dict, metric: str) -> str:
    a, b = unified["mean"].get(metric), separate["mean"].get(metric)
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return f"{percent_cell(a)} vs {percent_cell(b)}"
    return f"{percent_cell(a)} vs {percent_cell(b)} ({100 * (a - b):+.1f})"


def separate_vs_unified(methods: dict, class_count: int) -> str:
    """The paper's comparison in words: mean metrics, size and speed of one model against one per class."""
    lines = []
    for kind, title in (("crad", "CRAD"), ("patchcore", "PatchCore")):
        unified, separate = methods[f"{kind}-unified"], methods[f"{kind}-separate"]
        metrics = "; ".join(f"{name} {_difference(unified, separate, metric)}" for metric, name in
                            (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO")))
        if kind == "crad":
            size = (f"1 model of {unified['size']['head_bytes'] / 1e6:.1f} MB against {class_count} models of "
                    f"{separate['size']['head_bytes'] / 1e6:.1f} MB in all")
        else:
            size = (f"1 bank of {unified['size']['memory_bank']} features against {class_count} banks of "
                    f"{separate['size']['memory_bank']} in all")
        lines.append(f"- {title}, unified vs separate (mean over classes): {metrics}; {size}; head "
                     f"{unified['ms_per_image_head']:.1f} vs {separate['ms_per_image_head']:.1f} ms/image.")
    return "\n".join(lines) + "\n"


def run_unified(args: argparse.Namespace, data: Path, out: Path, device) -> int:
    import torch

    from . import __version__
    from .model import build_detector
    from .train import REFERENCE_EPOCHS, TrainConfig

    if args.synth_train < 1 or args.synth_test_good + args.synth_test_defect < 1:
        raise SystemExit("crad bench unified: each synthetic class needs training images and test images")
    progress = not args.no_progress
    min_steps = 0 if args.min_steps is None else args.min_steps
    requested = TrainConfig(epochs=args.epochs or REFERENCE_EPOCHS, batch_size=args.batch_size)

    started = time.perf_counter()
    train, test, classes = unified_samples(args, data, out)
    synth_seconds = time.perf_counter() - started
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    template = build_detector(args.backbone, args.variant, args.E, args.input_size, args.backbone_weights,
                              args.random_backbone, neck_pool=args.neck_pool).to(device)
    train_features, train_kept, train_skipped, _ = features_of(template, train, args.batch_size, progress, "train",
                                                               training=True)
    test_features, test_kept, test_skipped, backbone_seconds = features_of(template, test, args.batch_size, progress, "test")
    features_seconds = time.perf_counter() - started
    train_rows, test_rows = rows_by_class(train_kept, classes), rows_by_class(test_kept, classes)
    empty = [name for name in classes if not train_rows[name] or not test_rows[name]]
    if empty:
        raise SystemExit(f"crad bench unified: no readable training or test images for {', '.join(empty)}")
    for name in classes:
        log.info("%s: %d training, %d test images (%d defective)", name, len(train_rows[name]), len(test_rows[name]),
                 sum(test_kept[i].label for i in test_rows[name]))

    info = {"dataset": "unified: " + ", ".join(classes), "trainer": f"crad {__version__}",
            "backbone_weights": template.backbone.weights_origin, "holdout_rule": "none: the last epoch of the fixed schedule"}

    def crad_fit(method_dir: Path) -> GroupFit:
        # the models beside the method's report: <method>/model, or <method>/model-<class> per class
        def fit(group: str, members: list[str], rows: list[int]):
            run_dir = method_dir / ("model" if group == ALL_CLASSES else f"model-{group}")
            model, result, schedule, seconds = train_crad(template, train_features[rows], None, args.seed, requested,
                                                          min_steps, run_dir, members, info, progress)
            return model, seconds, crad_size(model, run_dir / "best.pt"), {
                "images": len(rows), "epochs_completed": result.epochs_completed, "schedule": schedule}
        return fit

    def patchcore_fit(group: str, members: list[str], rows: list[int]):
        model, seconds = fit_patchcore(train_features[rows], template.input_size, args, args.seed)
        return model, seconds, patchcore_size(model), {"images": len(rows)}

    unified_groups = {ALL_CLASSES: classes}
    separate_groups = {name: [name] for name in classes}
    schemes = {
        "crad-unified": (crad_fit(out / "crad-unified"), unified_groups),
        "crad-separate": (crad_fit(out / "crad-separate"), separate_groups),
        "patchcore-unified": (patchcore_fit, unified_groups),
        "patchcore-separate": (patchcore_fit, separate_groups),
    }
    names = {"crad-unified": f"{crad_label(args)} unified", "crad-separate": f"{crad_label(args)} separate",
             "patchcore-unified": "PatchCore unified", "patchcore-separate": "PatchCore separate"}
    methods = {}
    for method, (fit, groups) in schemes.items():
        log.info("%s: %d model(s)", names[method], len(groups))
        maps, scores, figures = run_scheme(fit, groups, train_rows, test_rows, test_features, args.batch_size,
                                           template.input_size)
        results = evaluate_predictions(test_kept, maps, scores, out / method, args.overlays,
                                       f"{names[method]} ({args.backbone})", {"figures": figures})
        methods[method] = {"classes": {name: results["classes"][name] for name in classes}, "mean": results["mean"],
                           **figures}

    table = unified_table(methods, classes, names)
    summary_text = separate_vs_unified(methods, len(classes))
    report = {
        "mode": "unified", "data": str(data), "classes": classes, "backbone": args.backbone, "variant": args.variant,
        "device": str(device), "input_size": template.input_size, "epochs": requested.epochs, "min_steps": min_steps,
        "seed": args.seed, "split_seed": args.split_seed, "limit": args.limit, "mt_train": args.mt_train,
        "synth": {"classes": args.synth_classes, "train": args.synth_train, "test_good": args.synth_test_good,
                  "test_defect": args.synth_test_defect, "size": args.synth_size},
        "images": {name: {"train": len(train_rows[name]), "test": len(test_rows[name]),
                          "test_defective": sum(test_kept[i].label for i in test_rows[name])} for name in classes},
        "skipped": train_skipped + test_skipped,
        "methods": methods,
        "timings": {"synth_seconds": synth_seconds, "features_seconds": features_seconds,
                    "ms_per_image_backbone": 1000.0 * backbone_seconds / len(test_kept)},
    }
    note = "" if args.limit is None else f"\n--limit {args.limit}: a smoke test, not comparable with the full test set.\n"
    counts = ", ".join(f"{name} {len(train_rows[name])}/{len(test_rows[name])}" for name in classes)
    header = (f"# Separate vs unified: {crad_label(args)} and PatchCore on {args.backbone} features\n\n"
              f"Training/test images per class: {counts}; {args.input_size} px; CRAD {requested.epochs} epochs per "
              f"model, no hold-out; on {device}, backbone {report['timings']['ms_per_image_backbone']:.1f} ms/image "
              f"(shared, not in the head column). Cells: image AUROC / pixel AUROC / AUPRO@0.3 in percent.\n{note}\n")
    write_bench(out, report, header + table + "\n" + summary_text)
    print(table)
    print(summary_text)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}; per-method reports in {out}/<method>/")
    return 0
