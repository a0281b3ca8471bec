"""Calibration: the thresholds and ranges the daemon needs to turn raw scores into verdicts.

The result is the model contract's `crad.calibration` object:
    {"image": {"threshold", "min", "max"}, "pixel": {"threshold", "min", "max"}, "source", "images"}
and the daemon publishes normalized = clamp((raw - threshold) / (max - min) + 0.5, 0, 1).

The rules are crad.thresholds' (see there; `--rule`):
- Image threshold, good images only (default "frr"): the lowest threshold whose false-reject rate
  on new good parts is at most --target-frr (default 1 %) with --confidence (default 95 %), from
  the held-out normal scores (an order-statistic bound, or a fitted tail when there are too few
  normals for one). "max-margin" is the old rule (the largest normal + 10 % of the range).
- Good images only, with synthetic anomalies (--synthetic N per normal image, default 3:
  crad.anomalies draws them on the calibration's normal images, seeded by --seed): "balanced",
  the default then, minimises the estimated false-reject rate plus the synthetic miss rate. The
  trade-off table gets a column of missed synthetic anomalies for every threshold, and when the
  chosen threshold passes more than half of them the calibration carries a `warning` and the
  command prints it loudly. --synthetic 0: no anomalies, the "frr" rule as before.
- With labelled defect images (default "f1"): the F1-optimal threshold; or "miss-rate" (misses
  at most --target-miss of them). Synthetic anomalies are then not drawn.
- Pixel threshold (where regions start): F1-optimal over pixels when defect masks are given;
  otherwise the image rule applied to each normal image's largest pixel value, so that at most
  the target share of good parts shows a region ("max-margin": over all normal pixels).
- min / max: over the normal values, and the defect values too when given.
The calibration object also records the rule (`rule`) and the trade-off on its own images
(`tradeoff`: false rejects and missed defects at the chosen and the alternative thresholds);
the daemon reads only image, pixel, source and images.
Calibrate on normal images the model was NOT trained on: training images score lower than
new normal images, which would put the threshold too low.

Outputs: a copy of an ONNX model with `crad.calibration` in its metadata_props (written
atomically: crad.files), a sidecar JSON (model path + ".calibration.json", the same object),
or a copy of a CRAD checkpoint with the calibration in its extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import thresholds
from .data import LAYOUTS, load_samples, limit_samples
from .device import DeviceError, add_device_argument, resolve_device
from .files import atomic_write_bytes
from .metrics import best_f1

CALIBRATION_KEY = "crad.calibration"
SIDECAR_SUFFIX = ".calibration.json"
DEFAULT_SYNTHETIC = 3


def calibrate_scores(normal_maps: np.ndarray, normal_scores: np.ndarray, defect_maps: np.ndarray | None = None,
                     defect_scores: np.ndarray | None = None, defect_masks: np.ndarray | None = None,
                     quantile: float = thresholds.DEFAULT_QUANTILE, margin: float = thresholds.DEFAULT_MARGIN,
                     rule: str = "auto", target_frr: float = thresholds.DEFAULT_TARGET_FRR,
                     confidence: float = thresholds.DEFAULT_CONFIDENCE,
                     target_miss: float = thresholds.DEFAULT_TARGET_MISS, synthetic_scores: np.ndarray | None = None) -> dict:
    """The `crad.calibration` object (see the module docstring for the rules).

    normal_maps (N,H,W) and normal_scores (N,) from held-out normal images; optionally
    defect_maps (M,H,W), defect_scores (M,) and defect_masks (M,H,W) of 0/1, and the image scores
    of synthetic anomalies drawn on the normal images (they never enter min / max).
    """
    normal_scores = np.asarray(normal_scores, np.float64).reshape(-1)
    normal_maps = np.asarray(normal_maps)
    if normal_scores.size < 2:
        raise ValueError(f"calibration needs at least 2 normal images, got {normal_scores.size}")
    if normal_maps.shape[0] != normal_scores.size:
        raise ValueError(f"{normal_maps.shape[0]} normal maps but {normal_scores.size} normal scores")
    if not 0.0 <= quantile <= 1.0 or margin < 0:
        raise ValueError(f"quantile must be in [0, 1] and margin >= 0, got {quantile} and {margin}")
    has_defects = defect_scores is not None and np.asarray(defect_scores).size > 0
    defect_scores = np.asarray(defect_scores, np.float64).reshape(-1) if has_defects else np.zeros(0)
    n_defects = defect_scores.size
    all_scores = np.concatenate([normal_scores, defect_scores])
    all_pixels_min, all_pixels_max = float(normal_maps.min()), float(normal_maps.max())
    if has_defects and defect_maps is not None:
        all_pixels_min = min(all_pixels_min, float(np.min(defect_maps)))
        all_pixels_max = max(all_pixels_max, float(np.max(defect_maps)))
    options = dict(target_frr=target_frr, confidence=confidence, target_miss=target_miss, quantile=quantile, margin=margin)
    synthetic = None if synthetic_scores is None else np.asarray(synthetic_scores, np.float64).reshape(-1)
    image_threshold, image_rule = thresholds.choose(rule, normal_scores, defect_scores, synthetic=synthetic, **options)
    if has_defects and defect_maps is not None and defect_masks is not None:
        defect_masks = np.asarray(defect_masks)
        if defect_masks.shape != np.shape(defect_maps):
            raise ValueError(f"defect masks {defect_masks.shape} and maps {np.shape(defect_maps)} differ in shape")
        pixel_labels = np.concatenate([np.zeros(normal_maps.size, bool), defect_masks.reshape(-1) > 0])
        pixel_values = np.concatenate([normal_maps.reshape(-1), np.asarray(defect_maps).reshape(-1)])
        pixel_f1, pixel_threshold = best_f1(pixel_labels, pixel_values)
        pixel_rule = {"rule": "f1", "f1": pixel_f1, "text": "F1-optimal over pixels"}
    elif image_rule["rule"] == "max-margin":
        pixel_threshold, pixel_rule = thresholds.max_margin_threshold(normal_maps.reshape(-1), quantile, margin)
    else:
        # a good part shows a region when its largest pixel passes: bound that share like the FRR
        peaks = normal_maps.reshape(normal_maps.shape[0], -1).max(axis=1)
        pixel_threshold, pixel_rule = thresholds.frr_threshold(peaks, target_frr, confidence)
        pixel_rule["text"] = "largest pixel of each normal image, " + pixel_rule["text"]
    image_min, image_max = float(all_scores.min()), float(all_scores.max())
    for what, low, high in (("image scores", image_min, image_max), ("pixel values", all_pixels_min, all_pixels_max)):
        if not high > low:
            raise ValueError(f"calibration: all {what} are equal ({low}); the normalised score would divide by zero")
    counts = f"{normal_scores.size} normal" + (f" + {n_defects} defect" if n_defects else "") + " images"
    calibration = {
        "image": {"threshold": float(image_threshold), "min": image_min, "max": image_max},
        "pixel": {"threshold": float(pixel_threshold), "min": all_pixels_min, "max": all_pixels_max},
        "source": f"{counts}; image: {image_rule['text']}; pixel: {pixel_rule['text']}; min/max over all",
        "images": int(normal_scores.size + n_defects),
        "rule": {"image": image_rule, "pixel": pixel_rule},
        "tradeoff": thresholds.tradeoff_table(normal_scores, defect_scores, {"chosen": image_threshold}, synthetic),
    }
    if synthetic is not None and synthetic.size:
        calibration.update(synthetic_check(float(image_threshold), synthetic))
    return calibration


def synthetic_check(threshold: float, synthetic: np.ndarray) -> dict:
    """The synthetic anomalies' record for the calibration, with a `warning` when `threshold`
    passes more than thresholds.SYNTHETIC_WARNING of them as OK."""
    missed = int((synthetic < threshold).sum())
    record: dict = {"synthetic": {"anomalies": int(synthetic.size), "missed_at_threshold": missed,
                                  "miss_rate_at_threshold": missed / synthetic.size}}
    if missed / synthetic.size > thresholds.SYNTHETIC_WARNING:
        record["warning"] = (f"the image threshold {threshold:.6g} passes {missed} of {synthetic.size} synthetic anomalies "
                             f"({100 * missed / synthetic.size:.0f} %) as OK: most defects like them would pass; "
                             f"see the trade-off table and choose a lower threshold or a better model")
    return record


def normalized_score(raw: float, calibration: dict, level: str = "image") -> float:
    """The contract's normalised score (0.5 = the threshold): what the daemon publishes."""
    part = calibration[level]
    return float(np.clip((raw - part["threshold"]) / (part["max"] - part["min"]) + 0.5, 0.0, 1.0))


def score_synthetic(detector, samples, size: int, per_image: int, seed: int, batch: int) -> np.ndarray:
    """Image scores of `per_image` synthetic anomalies (crad.anomalies) drawn on each of `samples`."""
    import torch

    from .anomalies import make_anomalies
    from .data import load_images

    images, _, _ = load_images(samples, size)
    anomalous, _ = make_anomalies(images, per_image, seed)
    device = detector.mean.device
    detector.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(anomalous), batch):
            scores.append(detector(torch.as_tensor(anomalous[start:start + batch], device=device))[1].float().cpu().numpy())
    return np.concatenate(scores).reshape(-1)


# ----------------------------------------------------------------------------- model files


def read_model_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, as a dict."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def write_model_metadata(onnx_in: str | Path, onnx_out: str | Path, updates: dict[str, str]) -> None:
    """Copy `onnx_in` to `onnx_out` with metadata_props keys set (others kept); atomic."""
    import onnx

    model = onnx.load(str(onnx_in))
    existing = {prop.key: prop for prop in model.metadata_props}
    for key, value in updates.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata value of {key!r} must be a string, got {type(value).__name__}")
        if key in existing:
            existing[key].value = value
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
    atomic_write_bytes(onnx_out, model.SerializeToString(), parents=True)


def sidecar_path(model_path: str | Path) -> str:
    return str(model_path) + SIDECAR_SUFFIX


def write_sidecar(path: str | Path, calibration: dict) -> None:
    atomic_write_bytes(path, (json.dumps(calibration, indent=2) + "\n").encode(), parents=True)


def store_in_checkpoint(checkpoint_in: str | Path, checkpoint_out: str | Path, calibration: dict) -> None:
    """Copy a CRAD checkpoint with extra["calibration"] set."""
    import torch

    from .model import atomic_torch_save

    payload = torch.load(str(checkpoint_in), map_location="cpu")
    if not isinstance(payload, dict) or "extra" not in payload:
        raise ValueError(f"{checkpoint_in}: not a CRAD checkpoint (no 'extra' entry)")
    payload["extra"] = dict(payload["extra"] or {}, calibration=calibration)
    atomic_torch_save(payload, str(checkpoint_out))


def check_same_model(metadata: dict[str, str], build: dict, onnx_path: str, checkpoint: str) -> None:
    """Refuse to calibrate an ONNX file with scores of a different model (input size, variant)."""
    problems = []
    if "crad.input" in metadata:
        height = json.loads(metadata["crad.input"]).get("height")
        if height is not None and int(height) != int(build["input_size"]):
            problems.append(f"input size {height} vs {build['input_size']}")
    if "crad.variant" in metadata and metadata["crad.variant"] != build.get("variant"):
        problems.append(f"variant {metadata['crad.variant']!r} vs {build.get('variant')!r}")
    if problems:
        raise SystemExit(f"crad calibrate: {onnx_path} was not exported from {checkpoint}: " + "; ".join(problems))


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Calibrate thresholds from held-out normal images (and optionally labelled defects) "
                          "and write crad.calibration into a model copy, a sidecar JSON or a checkpoint copy.")
    parser.add_argument("--model", required=True,
                        help="CRAD checkpoint (.pt) to score with, or the ONNX file to calibrate (then give --checkpoint)")
    parser.add_argument("--checkpoint", help="checkpoint to score with when --model is an ONNX file")
    parser.add_argument("--onnx", help="ONNX file whose copy receives crad.calibration (when --model is a checkpoint)")
    parser.add_argument("--normal", required=True, help="held-out NORMAL images (any layout; only label-0 samples are used)")
    parser.add_argument("--defects", help="labelled defect images (any layout; a plain folder counts as all defective)")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS)
    parser.add_argument("--split", default="test", choices=("train", "test"),
                        help="split of --normal/--defects for the mvtec/jsonl/magnetic-tile layouts (default test)")
    parser.add_argument("--classes", nargs="+")
    parser.add_argument("--limit", type=int, help="at most N images per class and label (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rule", default="auto", choices=thresholds.RULES,
                        help="image threshold rule: auto (f1 with --defects, else balanced with --synthetic, else frr), "
                             "frr, max-margin, f1, miss-rate, balanced")
    parser.add_argument("--target-frr", type=float, default=thresholds.DEFAULT_TARGET_FRR,
                        help="frr rule: largest false-reject rate of good parts (default 0.01)")
    parser.add_argument("--confidence", type=float, default=thresholds.DEFAULT_CONFIDENCE,
                        help="frr rule: confidence of that bound (default 0.95)")
    parser.add_argument("--target-miss", type=float, default=thresholds.DEFAULT_TARGET_MISS,
                        help="miss-rate rule: largest share of labelled defects missed (default 0.05)")
    parser.add_argument("--synthetic", type=int, default=DEFAULT_SYNTHETIC, metavar="N",
                        help=f"without --defects: draw N synthetic anomalies on each normal image (crad.anomalies, seeded "
                             f"by --seed) to estimate the miss rate of each threshold; their balance with the false-reject "
                             f"rate is the default rule (default {DEFAULT_SYNTHETIC}; 0: none, the frr rule)")
    parser.add_argument("--quantile", type=float, default=thresholds.DEFAULT_QUANTILE, help="max-margin rule")
    parser.add_argument("--margin", type=float, default=thresholds.DEFAULT_MARGIN, help="max-margin rule")
    parser.add_argument("--batch", type=int, default=16)
    add_device_argument(parser)
    parser.add_argument("--checkpoint-out", metavar="FILE",
                        help="also write a copy of the scoring checkpoint with the calibration in its extra "
                             "(`crad export` then puts it into the ONNX file); may be the checkpoint itself")
    parser.add_argument("--out", required=True,
                        help="FILE.onnx: calibrated copy of the ONNX model; FILE.json: the calibration (sidecar: "
                             "<model>.onnx.calibration.json); other: calibrated copy of the checkpoint")


def run(args: argparse.Namespace) -> int:
    from .data import DataError

    try:
        return _run(args)
    except (DataError, DeviceError, FileNotFoundError) as error:
        print(f"crad calibrate: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .data import DataError, Sample, detect_layout, sample_mask
    from .evaluate import predict_with_skips
    from .model import load_detector

    device = resolve_device(args.device)
    model_is_onnx = str(args.model).lower().endswith(".onnx")
    checkpoint = args.checkpoint or (None if model_is_onnx else args.model)
    onnx_target = args.onnx or (args.model if model_is_onnx else None)
    if checkpoint is None:
        raise SystemExit("crad calibrate: scoring needs the torch checkpoint (no onnxruntime in Python): pass --checkpoint")
    out = str(args.out)
    if out.lower().endswith(".onnx") and onnx_target is None:
        raise SystemExit("crad calibrate: --out is an ONNX file but no ONNX model was given (--model X.onnx or --onnx)")

    detector, extra = load_detector(checkpoint)
    detector.to(device)
    size = detector.input_size
    if onnx_target is not None:
        check_same_model(read_model_metadata(onnx_target), detector.build_arguments(), onnx_target, checkpoint)
    normal = [s for s in load_samples(args.normal, args.layout, args.split, args.classes) if s.label == 0]
    normal = limit_samples(normal, args.limit, args.seed)
    if not normal:
        raise DataError(f"no normal (label 0) images in {args.normal}")
    normal_maps, normal_scores, normal_kept, _ = predict_with_skips(detector, normal, size, args.batch)
    defect_maps = defect_scores = defect_masks = None
    if args.defects:
        layout = detect_layout(args.defects) if args.layout == "auto" else args.layout
        defects = load_samples(args.defects, layout, args.split, args.classes)
        if layout == "folder":  # a plain folder carries no labels: everything in it is defective
            defects = [Sample(s.path, 1, s.class_name, "defect", None) for s in defects]
        defects = [s for s in defects if s.label == 1]
        if not defects:
            raise DataError(f"no defect (label 1) images in {args.defects}")
        defects = limit_samples(defects, args.limit, args.seed)
        defect_maps, defect_scores, kept, _ = predict_with_skips(detector, defects, size, args.batch)
        if all(s.mask_path is not None for s in kept):
            defect_masks = np.stack([sample_mask(s, size) for s in kept])
    synthetic_scores = None
    if not args.defects and args.synthetic > 0:
        synthetic_scores = score_synthetic(detector, normal_kept, size, args.synthetic, args.seed, args.batch)
    calibration = calibrate_scores(normal_maps, normal_scores, defect_maps, defect_scores, defect_masks,
                                   args.quantile, args.margin, args.rule, args.target_frr, args.confidence,
                                   args.target_miss, synthetic_scores)
    text = json.dumps(calibration)
    if out.lower().endswith(".onnx"):
        write_model_metadata(onnx_target, out, {CALIBRATION_KEY: text})
    elif out.lower().endswith(".json"):
        write_sidecar(out, calibration)
    else:
        store_in_checkpoint(checkpoint, out, calibration)
    print(json.dumps(calibration, indent=2))
    print(thresholds.tradeoff_markdown(calibration["tradeoff"]))
    if "warning" in calibration:
        print(f"\n*** WARNING: {calibration['warning']} ***\n", file=sys.stderr)
    print(f"wrote {out}")
    if args.checkpoint_out:
        store_in_checkpoint(checkpoint, args.checkpoint_out, calibration)
        print(f"wrote {args.checkpoint_out}")
    return 0
