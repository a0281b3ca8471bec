"""--device: the CPU path end to end, a clear error for CUDA where there is none, and the
DataLoader-worker decoding a GPU run uses giving the same batches as decoding in-process."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crad import bench, calibrate, evaluate, train
from crad.data import image_batches, load_samples
from crad.device import loader_options, resolve_device
from crad.model import load_detector
from crad.synth import write_dataset

TRAINING = Path(__file__).resolve().parents[1]


def test_auto_picks_cuda_only_when_available_and_every_model_command_takes_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loader_options(torch.device("cpu")) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(torch.device("cuda"))["pin_memory"] is True
    for module in (train, evaluate, calibrate, bench):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert "--device" in parser.format_help(), module.__name__


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TRAINING)}
    for command in (["train", "--data", str(tmp_path), "--random-backbone"],
                    ["eval", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "e")]):
        done = subprocess.run([sys.executable, "-m", "crad", *command, "--device", "cuda"], capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == 2, done.stderr
        assert "--device cuda: CUDA is not available" in done.stderr and "Traceback" not in done.stderr


def test_cpu_path_trains_and_evaluates(tmp_path):
    write_dataset(tmp_path / "data", ["washer"], n_train=4, n_test_good=2, n_test_defect=2, size=72, seed=0)
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "data"), "--backbone", "mobilenet-v2", "--random-backbone",
                              "--variant", "tiny", "--E", "8", "--input-size", "64", "--epochs", "1", "--batch-size", "2",
                              "--holdout", "0", "--min-steps", "0", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    assert train.run(args) == 0
    detector, _ = load_detector(str(tmp_path / "run" / "best.pt"))
    assert all(p.device.type == "cpu" for p in detector.parameters())
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--model", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "data"),
                              "--out", str(tmp_path / "eval"), "--overlays", "0", "--device", "cpu"])
    assert evaluate.run(args) == 0
    assert (tmp_path / "eval" / "results.json").is_file()


@pytest.mark.filterwarnings("ignore")
def test_worker_decoding_gives_the_same_batches_and_skips(tmp_path):
    write_dataset(tmp_path / "data", ["washer"], n_train=5, n_test_good=0, n_test_defect=0, size=40, seed=1)
    broken = tmp_path / "data" / "washer" / "train" / "good" / "002_broken.png"
    broken.write_bytes(b"not a png")
    samples = load_samples(str(tmp_path / "data"), "mvtec", "train")
    here, there = [], []
    in_process = [(np.asarray(images), [s.path for s in kept]) for images, kept in image_batches(samples, 32, 2, here)]
    workers = [(np.asarray(images), [s.path for s in kept])
               for images, kept in image_batches(samples, 32, 2, there, num_workers=2)]
    assert here == there == [str(broken)]
    assert [p for _, paths in in_process for p in paths] == [p for _, paths in workers for p in paths]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in in_process]), np.concatenate([i for i, _ in workers]))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_cpu_threads_follow_the_cpus_the_process_may_use():
    # A process pinned to one CPU (taskset, a cgroup cpuset) must not start a thread per core of the machine.
    code = ("import os, torch; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from crad.device import resolve_device, usable_cpus; resolve_device('cpu'); print(usable_cpus(), torch.get_num_threads())")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["1", "1"]
