"""Where the trainer computes: `--device auto|cpu|cuda` for every command that runs a model.

- auto: CUDA when torch.cuda.is_available(), else the CPU; cuda without CUDA is an error that
  says so (never a silent fall-back to a CPU run that takes a hundred times longer).
- Mixed precision (float16 autocast) only for the frozen backbone's features in training: they
  are inputs to the head, cached once. Not for the head's training (its learned grid coordinates
  and the small reconstruction loss need float32 without a gradient scaler) and not for eval or
  calibration (thresholds must match the float32 ONNX model the daemon runs).
- Image decoding feeds a GPU from DataLoader workers into pinned memory; on the CPU the main
  process decodes (workers would only compete with torch's own threads).
"""

from __future__ import annotations

import argparse
import contextlib
import os

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="auto (CUDA when available, else CPU), cpu or cuda (default auto)")


def resolve_device(name: str = "auto"):
    """The torch.device for `name`; sets the CPU thread count for CPU runs."""
    import torch

    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise DeviceError(f"--device cuda: CUDA is not available to this PyTorch {torch.__version__} "
                          f"(CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")
    if name == "cuda" or (name == "auto" and cuda):
        return torch.device("cuda")
    torch.set_num_threads(usable_cpus())
    return torch.device("cpu")


def usable_cpus() -> int:
    """CPUs this process may run on (taskset, cgroup cpusets), not all the machine has: more torch
    threads than cores makes every step wait for the thread that was descheduled."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def feature_autocast(device):
    """float16 autocast on CUDA for the frozen backbone (see the module docstring), else nothing."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def loader_options(device) -> dict:
    """DataLoader workers and pinned memory for a GPU; the main process on a CPU."""
    if device is None or device.type != "cuda":
        return {"num_workers": 0, "pin_memory": False}
    return {"num_workers": min(8, max(1, usable_cpus() - 1)), "pin_memory": True}


def synchronize(device) -> None:
    """Wait for queued GPU work, so that a timing covers it."""
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
