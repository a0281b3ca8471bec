"""`crad teach`: a folder of good images -> a calibrated ONNX model, in one command, for the daemon.

The daemon's on-device training (src/service/training.ts) runs this as a child process and reads
its stdout: one JSON object per line (docs: /work/notes/teach-contract.md, README "Teach"):
    {"phase": "prepare"|"train"|"calibrate"|"export", "epoch", "epochs", "loss", "etaSec", "fraction"}
    {"phase": "done", "onnx", "figures", "trainerVersion", "datasetSha256"}
    {"phase": "error", "error": "plain words"}   (and exit status 2)
Everything else (the steps' logs) goes to stderr.

The steps are the trainer's own commands with their defaults (`crad train`, `crad calibrate`,
`crad export`); what teach decides is the split of the good images into training and calibration
images, by the set's size (calibration_split): calibration wants images the model never saw
(crad.calibrate's docstring), training wants most of them. Every file goes under --work; the ONNX
file appears at --out only complete (export writes atomically), so a killed run leaves no half
model where the daemon looks.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

# Fewer good images than this cannot give a model and a threshold worth serving (the daemon's
# datasetAdvice says the same numbers to the operator: src/shared/dataset-advice.ts).
MIN_IMAGES = 20
# Calibration share: a fifth of the set, at least 10 images (crad.thresholds needs 10 for its bound)
# and at most 100 (more adds little to the order-statistic bound and takes them from training).
CALIBRATION_SHARE = 0.2
MIN_CALIBRATION = 10
MAX_CALIBRATION = 100
# Room the run needs on disk beyond the images: features, checkpoints, the ONNX file.
DEFAULT_MIN_FREE_MB = 200
# Share of the progress bar each phase takes (the backbone features count as "prepare").
PHASES = {"prepare": (0.0, 0.1), "train": (0.1, 0.85), "calibrate": (0.85, 0.93), "export": (0.93, 1.0)}


class TeachError(Exception):
    """A problem the operator can fix (too few images, unreadable files, no disk): said in plain words."""


def calibration_split(count: int) -> int:
    """How many of `count` good images calibrate (the rest train)."""
    return int(min(MAX_CALIBRATION, max(MIN_CALIBRATION, round(count * CALIBRATION_SHARE))))


class Reporter:
    """The JSON lines on the real stdout, whatever the steps do with sys.stdout."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.started = time.monotonic()

    def line(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def progress(self, phase: str, fraction_of_phase: float = 0.0, epoch: int = 0, epochs: int = 0,
                 loss: float | None = None, eta: float | None = None) -> None:
        low, high = PHASES[phase]
        fraction = low + (high - low) * min(1.0, max(0.0, fraction_of_phase))
        self.line({"phase": phase, "epoch": epoch, "epochs": epochs, "loss": loss,
                   "etaSec": None if eta is None else round(eta), "fraction": round(fraction, 4)})


class _Tail(io.TextIOBase):
    """stderr that also keeps its last lines, so that a failed step's own words reach the error line."""

    def __init__(self, target):
        self.target = target
        self.text = ""

    def write(self, text: str) -> int:
        self.target.write(text)
        self.text = (self.text + text)[-2000:]
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Good images -> train -> calibrate -> export, with JSON-lines progress (the daemon's on-device training)."
    parser.add_argument("--data", required=True, help="folder of good images (searched recursively)")
    parser.add_argument("--work", required=True, help="run folder for the split, checkpoints and logs (made)")
    parser.add_argument("--out", required=True, help="the ONNX file to write")
    parser.add_argument("--backbone", help="the trainer's backbone (default: crad train's)")
    parser.add_argument("--backbone-weights", help="weight file of the backbone")
    parser.add_argument("--random-backbone", action="store_true", help="random backbone weights: for tests only")
    parser.add_argument("--input-size", type=int, help="input size in pixels (default: crad train's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: crad train's for the set's size)")
    parser.add_argument("--min-steps", type=int, help="crad train --min-steps (default: crad train's)")
    parser.add_argument("--batch-size", type=int, help="crad train --batch-size (default: crad train's)")
    parser.add_argument("--select-steps", type=int, help="crad train --select-steps (default: crad train's)")
    parser.add_argument("--rule", help="crad calibrate --rule (default: crad calibrate's for good images only)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--min-free-mb", type=int, default=DEFAULT_MIN_FREE_MB, help=f"refuse to start with less free disk than this under --work (default {DEFAULT_MIN_FREE_MB})")


def _good_images(folder: Path) -> list[Path]:
    from .data import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise TeachError(f"the image folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _check_readable(images: list[Path]) -> None:
    from .data import read_image_uint8

    bad = [p for p in images if read_image_uint8(str(p), 32) is None]
    if bad:  # an image the daemon is still writing (record mode goes on) reads whole a moment later
        time.sleep(1.0)
        bad = [p.name for p in bad if read_image_uint8(str(p), 32) is None]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise TeachError(f"{len(bad)} of {len(images)} images cannot be read ({shown}): delete them or capture them again")


def _split(images: list[Path], work: Path, seed: int = 0) -> tuple[Path, Path, int, int]:
    """Link the images into work/train and work/calibration (a fresh split each run)."""
    import numpy as np

    calibration_count = calibration_split(len(images))
    order = np.random.default_rng(seed).permutation(len(images))
    folders = {"train": work / "train", "calibration": work / "calibration"}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for rank, index in enumerate(order):
        source = images[index]
        target = folders["calibration" if rank < calibration_count else "train"] / f"{rank:05d}{source.suffix.lower()}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return folders["train"], folders["calibration"], len(images) - calibration_count, calibration_count


def _step(name: str, module, argv: list[str], tail: _Tail, **extra) -> str:
    """Run a trainer command in-process; its stdout (a report) is returned, its logs go to stderr."""
    parser = argparse.ArgumentParser(prog=f"crad {name}")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    for key, value in extra.items():
        setattr(args, key, value)
    from .device import DeviceError

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(tail):
        try:
            code = int(module.run(args) or 0)
        except (ValueError, FileNotFoundError, DeviceError) as error:  # the user's to fix (as crad's own CLI says)
            raise TeachError(f"{name} failed: {error}") from error
    if code != 0:
        raise TeachError(f"{name} failed: {tail.last_line() or f'exit status {code}'}")
    return captured.getvalue()


def _teach(args: argparse.Namespace, report: Reporter, tail: _Tail) -> dict:
    from . import __version__
    from . import calibrate, export, train

    data, work, out = Path(args.data), Path(args.work), Path(args.out)
    report.progress("prepare")
    images = _good_images(data)
    if len(images) < MIN_IMAGES:
        raise TeachError(f"{len(images)} good images in {data}; at least {MIN_IMAGES} are needed (record more good parts)")
    work.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(work).free / 2**20
    if free_mb < args.min_free_mb:
        raise TeachError(f"the disk is full: {free_mb:.0f} MB free under {work}, the run needs {args.min_free_mb} MB")
    _check_readable(images)
    train_dir, calibration_dir, train_count, calibration_count = _split(images, work)
    digest = train.dataset_digest([str(p) for p in images], str(data))

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    options = []
    for flag, value in (("--backbone", args.backbone), ("--backbone-weights", args.backbone_weights),
                        ("--input-size", args.input_size), ("--epochs", args.epochs), ("--min-steps", args.min_steps),
                        ("--batch-size", args.batch_size), ("--select-steps", args.select_steps)):
        if value is not None:
            options += [flag, str(value)]
    if args.random_backbone:
        options.append("--random-backbone")
    started = time.monotonic()
    losses: list[float] = []

    def on_epoch(record: dict, epochs: int) -> None:
        epoch = int(record["epoch"])
        losses.append(float(record["train_loss"]))
        per_epoch = (time.monotonic() - train_started[0]) / max(1, epoch)
        report.progress("train", epoch / max(1, epochs), epoch, epochs, float(record["train_loss"]), per_epoch * (epochs - epoch) + 10)

    train_started = [time.monotonic()]
    report.progress("prepare", 0.5)
    run_dir = work / "run"
    summary = json.loads(_step("train", train, ["--data", str(train_dir), "--layout", "folder", "--out", str(run_dir), "--no-progress",
                                                 "--dataset-name", data.name, *options], tail, on_epoch=on_epoch))
    train_seconds = time.monotonic() - started
    report.progress("calibrate", 0.0, summary["epochs_completed"], summary["epochs_completed"], losses[-1] if losses else None)
    calibrated = run_dir / "calibrated.pt"
    rule = ["--rule", args.rule] if args.rule else []
    _step("calibrate", calibrate, ["--model", str(run_dir / "best.pt"), "--normal", str(calibration_dir), "--layout", "folder",
                                   "--out", str(calibrated), *rule], tail)
    report.progress("export", 0.0, summary["epochs_completed"], summary["epochs_completed"], losses[-1] if losses else None)
    references = sorted(str(p) for p in calibration_dir.iterdir())[:4]
    out.parent.mkdir(parents=True, exist_ok=True)
    exported = json.loads(_step("export", export, [str(calibrated), "--out", str(out), "--reference-images", *references], tail))
    from .model import load_detector

    _, extra = load_detector(str(calibrated))
    calibration = extra.get("calibration") or {}
    figures = {
        "images": {"train": train_count, "calibration": calibration_count},
        "epochs": summary["epochs_completed"],
        "finalLoss": losses[-1] if losses else None,
        "threshold": (calibration.get("image") or {}).get("threshold"),
        "calibrationRule": calibration.get("rule"),
        "trainSeconds": round(train_seconds, 1),
        "totalSeconds": round(time.monotonic() - report.started, 1),
        "bytes": exported.get("bytes"),
    }
    return {"phase": "done", "onnx": str(out.resolve()), "figures": figures, "trainerVersion": f"crad {__version__}",
            "datasetSha256": digest, "images": figures["images"]}


def run(args: argparse.Namespace) -> int:
    report = Reporter()
    tail = _Tail(sys.stderr)
    try:
        report.line(_teach(args, report, tail))
        return 0
    except TeachError as error:
        message = str(error)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            message = f"the disk is full ({error.filename or args.work}): free some space and start again"
        else:
            message = f"{error.strerror or error} ({error.filename})" if error.filename else str(error)
    except MemoryError:
        message = "out of memory: use a smaller input size or backbone (training.* keys)"
    report.line({"phase": "error", "error": message})
    return 2

