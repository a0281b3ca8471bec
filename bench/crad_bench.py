"""The Python half of `npm run bench` (bench/bench.ts runs it; run it alone for debugging).

  torch     the trainer's PyTorch detector in eval mode on CPU, the way the reference implementation
            infers (torch.no_grad, NCHW batches): images/s per batch size on the given images.
  variants  build the model variants of the benchmark (backbones x CRAD/CRAD-S x GridSample/tent),
            export each to the contract's ONNX form into --out, and count multiply-accumulates
            per image. Heads and (where no weight file is here) backbones are random: the figures
            are SPEED figures, the outputs mean nothing.

Both print one JSON object on stdout; progress goes to stderr.
Run: PYTHONPATH=training /usr/bin/python3 bench/crad_bench.py torch --images samples/*.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from crad.backbones import BackboneWeightsError, RandomBackboneWarning
from crad.data import read_image
from crad.export import check_onnx, contract_metadata, export_onnx
from crad.model import build_detector

REPO_ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[crad_bench] {message}", file=sys.stderr, flush=True)


# Backbones whose weight file the bench may read: the nsfwjs npm package (scripts/fetch-nsfwjs-weights.sh).
# The other families' default files live in ../shared/data, which the benchmark never touches.
WEIGHTS_READ = {"mobilenet-v2-nsfwjs"}


def build(backbone: str, variant: str, sampling: str, size: int) -> tuple[torch.nn.Module, bool]:
    """(detector in eval mode, True if its backbone carries real weights). Seeded, so two runs
    build the same head. Weights do not change the speed; where none may be read, or none are
    here, the backbone is random."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        if backbone in WEIGHTS_READ:
            try:
                return build_detector(backbone, variant, input_size=size, sampling=sampling).eval(), True
            except BackboneWeightsError:
                log(f"{backbone}: no weight file here (scripts/fetch-nsfwjs-weights.sh); random weights")
        return build_detector(backbone, variant, input_size=size, sampling=sampling, random_backbone=True).eval(), False


# ---- multiply-accumulate counter ------------------------------------------------------------

class MacCounter(TorchFunctionMode):
    """Counts multiply-accumulates of the ops that carry the work, from the shapes of one forward
    pass: conv2d, linear, matmul, grid_sample and bilinear resize (4 per output value), and
    average pooling (kernel area per output value). Elementwise ops are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: dict[str, int] = {}

    def add(self, op: str, macs: int) -> None:
        self.by_op[op] = self.by_op.get(op, 0) + int(macs)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (F.conv2d, torch.conv2d):
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            # weight (out, in/groups, kh, kw): each output value sums in/groups*kh*kw products.
            self.add("conv", out.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3])
        elif func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.add("linear", out.numel() * weight.shape[1])
        elif func in (torch.matmul, torch.Tensor.matmul, torch.bmm, torch.mm):
            self.add("matmul", out.numel() * args[0].shape[-1])
        elif func is F.grid_sample:
            self.add("grid_sample", out.numel() * 4)
        elif func is F.interpolate:
            self.add("resize", out.numel() * 4)
        elif func is F.avg_pool2d:
            kernel = args[1] if len(args) > 1 else kwargs["kernel_size"]
            kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
            self.add("avg_pool", out.numel() * kernel[0] * kernel[1])
        return out


def count_macs(detector, size: int) -> dict:
    """MACs per image: total, backbone share, and per op type."""
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():
        with MacCounter() as everything:
            detector(image)
        with MacCounter() as backbone:
            detector.backbone((image - detector.mean) / detector.std)
    return {"total": everything.total, "backbone": backbone.total, "by_op": everything.by_op}


# ---- torch inference speed -------------------------------------------------------------------

def load_images(paths: list[str], size: int) -> torch.Tensor:
    images = []
    for path in paths:
        image = read_image(path, size)
        if image is None:
            raise SystemExit(f"crad_bench: image {path!r} cannot be read")
        images.append(torch.from_numpy(image))
    return torch.stack(images)


def time_batches(detector, images: torch.Tensor, batches: list[int], seconds: float, min_runs: int) -> dict:
    """Per batch size: images/s and latency per batch, over at least `seconds` and `min_runs` runs,
    cycling through the images so that every batch holds different ones."""
    results = {}
    with torch.no_grad():
        for batch in batches:
            picks = [images[[(start + i) % len(images) for i in range(batch)]] for start in range(len(images))]
            for warm in range(2):
                detector(picks[warm % len(picks)])
            latencies = []
            started = time.perf_counter()
            while len(latencies) < min_runs or time.perf_counter() - started < seconds:
                t0 = time.perf_counter()
                detector(picks[len(latencies) % len(picks)])
                latencies.append((time.perf_counter() - t0) * 1000)
            elapsed = time.perf_counter() - started
            latencies.sort()
            results[str(batch)] = {
                "batch": batch,
                "runs": len(latencies),
                "imagesPerSecond": batch * len(latencies) / elapsed,
                "latencyMs": {
                    "mean": sum(latencies) / len(latencies),
                    "p50": latencies[len(latencies) // 2],
                    "p99": latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
                },
            }
            log(f"torch batch {batch}: {results[str(batch)]['imagesPerSecond']:.1f} images/s")
    return results


def torch_command(args) -> dict:
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    detector, real = build(args.backbone, args.variant, args.sampling, args.size)
    images = load_images(args.images, args.size)
    return {
        "model": {"backbone": args.backbone, "variant": args.variant, "sampling": args.sampling, "size": args.size, "backboneWeights": "real" if real else "random"},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batches": time_batches(detector, images, args.batches, args.seconds, args.min_runs),
    }


# ---- variants ---------------------------------------------------------------------------------

def source_fingerprint() -> str:
    """Hash of the trainer's model code and this file: a cached export is reused only while both
    are unchanged."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "training" / "crad").rglob("*.py")) + [Path(__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def variants_command(args) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint()
    rows = []
    for spec in args.specs:
        backbone, variant, sampling = spec.split(":")
        name = f"{backbone}_{variant}_{sampling}_{args.size}"
        onnx_path = out / f"{name}.onnx"
        meta_path = out / f"{name}.json"
        cached = json.loads(meta_path.read_text()) if meta_path.is_file() and onnx_path.is_file() else None
        if cached and cached.get("fingerprint") == fingerprint:
            log(f"{name}: cached export")
            rows.append(cached)
            continue
        started = time.perf_counter()
        detector, real = build(backbone, variant, sampling, args.size)
        macs = count_macs(detector, args.size)
        extra = {"training": {"purpose": "speed benchmark only: random head" + ("" if real else ", random backbone")}}
        export_onnx(detector, onnx_path, sampling, contract_metadata(detector, extra))
        check_onnx(onnx_path, sampling, args.size)
        row = {
            "name": name,
            "backbone": backbone,
            "variant": variant,
            "sampling": sampling,
            "size": args.size,
            "C": detector.head.C,
            "E": detector.head.E,
            "featureSize": [detector.head.H, detector.head.W],
            "parameters": sum(p.numel() for p in detector.parameters()),
            "backboneWeights": "real" if real else "random",
            "macs": macs,
            "onnx": str(onnx_path),
            "onnxBytes": onnx_path.stat().st_size,
            "fingerprint": fingerprint,
        }
        meta_path.write_text(json.dumps(row, indent=1) + "\n")
        log(f"{name}: exported in {time.perf_counter() - started:.1f} s, {macs['total'] / 1e9:.2f} GMAC/image")
        rows.append(row)
    return {"variants": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("torch", help="PyTorch eval-mode inference speed")
    t.add_argument("--images", nargs="+", required=True)
    t.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    t.add_argument("--seconds", type=float, default=5.0)
    t.add_argument("--min-runs", type=int, default=5)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0 = one per core)")
    t.add_argument("--backbone", default="mobilenet-v2-nsfwjs")
    t.add_argument("--variant", default="crad-s")
    t.add_argument("--sampling", default="gridsample", choices=("gridsample", "tent"))
    t.add_argument("--size", type=int, default=224)
    v = sub.add_parser("variants", help="export the variants and count their MACs")
    v.add_argument("--out", required=True, help="folder for the exported files (git-ignored, e.g. .work/bench/variants)")
    v.add_argument("--specs", nargs="+", required=True, metavar="BACKBONE:VARIANT:SAMPLING")
    v.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    result = torch_command(args) if args.command == "torch" else variants_command(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
