"""Training: seeding, resume, selection on held-out normals, time budget, small-set defaults, the command end to end."""

import argparse
import json

import torch

from crad.backbones import construct_backbone
from crad.model import CradDetector, detector_from_payload, load_detector
from crad.data import Sample
from crad.train import (DEFAULT_MIN_STEPS, TrainConfig, add_arguments, choose_holdout, fit, plan_schedule, run,
                        scaled_step_size)

INPUT = 64  # B4 at 64 px: X is (216, 8, 8), small enough for fast tests


def tiny_detector(seed: int) -> CradDetector:
    torch.manual_seed(seed)
    return CradDetector(construct_backbone("efficientnet-b4", None, random=True), variant="tiny", E=16, input_size=INPUT)


def fake_features(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 216, 8, 8, generator=generator)


def config(**overrides) -> TrainConfig:
    values = dict(epochs=3, batch_size=4, seed=7, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def head_state(path) -> dict:
    return torch.load(path)["head_state"]


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_step_size_scales_with_fewer_epochs():
    assert scaled_step_size(50) == 40
    assert scaled_step_size(200) == 40
    assert scaled_step_size(10) == 8
    assert scaled_step_size(1) == 1
    assert config(epochs=10).effective_step_size() == 8
    assert config(epochs=10, step_size=3).effective_step_size() == 3


def test_same_seed_same_weights_and_other_seed_differs(tmp_path):
    train, holdout = fake_features(10, 0), fake_features(3, 1)
    results = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        fit(tiny_detector(seed), train, holdout, config(seed=seed), tmp_path / name, {"classes": ["x"]})
        results.append(head_state(tmp_path / name / "last.pt"))
    assert states_equal(results[0], results[1])
    assert not states_equal(results[0], results[2])
    # ... and training did change the weights.
    assert not states_equal(results[0], tiny_detector(7).head.state_dict())


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    train, holdout = fake_features(10, 0), fake_features(3, 1)
    fit(tiny_detector(7), train, holdout, config(epochs=3), tmp_path / "full", {})

    # Interrupted after one epoch (same schedule: the step size is fixed explicitly).
    fit(tiny_detector(7), train, holdout, config(epochs=1, step_size=2), tmp_path / "part", {})
    payload = torch.load(tmp_path / "part" / "last.pt")
    resumed = detector_from_payload(payload, "last.pt")
    result = fit(resumed, train, holdout, config(epochs=3, step_size=2), tmp_path / "part", {}, resume_state=payload["training_state"])
    assert result.epochs_completed == 3
    assert states_equal(head_state(tmp_path / "full" / "last.pt"), head_state(tmp_path / "part" / "last.pt"))


def test_selection_uses_lowest_holdout_loss(tmp_path):
    train, holdout = fake_features(10, 0), fake_features(3, 1)
    result = fit(tiny_detector(7), train, holdout, config(epochs=4), tmp_path, {"classes": ["x"]})
    losses = [record["holdout_loss"] for record in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    _, extra = load_detector(str(tmp_path / "best.pt"))
    assert extra["selected_epoch"] == result.best_epoch and extra["classes"] == ["x"]
    assert json.loads((tmp_path / "history.json").read_text()) == result.history


def test_time_budget_stops_between_epochs(tmp_path):
    ticks = iter(range(0, 10_000, 30))  # every clock read advances 30 s
    result = fit(tiny_detector(7), fake_features(8, 0), None, config(epochs=20, max_minutes=2.0), tmp_path, {}, clock=lambda: next(ticks))
    assert result.stopped_by_time_budget
    assert 0 < result.epochs_completed < 20
    assert result.best_epoch == result.epochs_completed  # no holdout: the last epoch is kept


def test_train_command_on_synthetic_classes(tmp_path):
    from crad.synth import write_dataset

    write_dataset(tmp_path / "data", ["weave", "washer"], n_train=5, n_test_good=0, n_test_defect=0, size=80, seed=0)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([
        "--data", str(tmp_path / "data"), "--backbone", "efficientnet-b4", "--random-backbone",
        "--variant", "tiny", "--E", "16", "--input-size", str(INPUT), "--epochs", "2", "--batch-size", "4",
        "--holdout", "0.2", "--min-steps", "0", "--out", str(tmp_path / "run"), "--feature-cache", str(tmp_path / "cache"),
        "--no-progress", "--select", "off",
    ])
    assert run(args) == 0
    detector, extra = load_detector(str(tmp_path / "run" / "best.pt"))
    assert extra["classes"] == ["washer", "weave"]
    assert extra["training"]["images"] == 8 and extra["training"]["holdout_images"] == 2
    assert extra["training"]["dataset_hash"].startswith("sha256:")
    assert (detector.head.E, detector.input_size) == (16, INPUT)
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 2

    # Resuming with a longer schedule continues from epoch 2 with the stored settings.
    resume = parser.parse_args(["--resume", str(tmp_path / "run" / "last.pt"), "--epochs", "3", "--no-progress"])
    assert run(resume) == 0
    assert torch.load(tmp_path / "run" / "last.pt")["training_state"]["epoch"] == 3


def normal_samples(per_class: dict[str, int]) -> list[Sample]:
    return [Sample(f"/{name}/{i:03d}.png", 0, name, "good", None) for name, count in per_class.items() for i in range(count)]


def test_small_set_holds_nothing_out_and_raises_the_epochs():
    train, held, rule = choose_holdout(normal_samples({"part": 16}), "auto", seed=0)
    assert len(train) == 16 and held == [] and rule.startswith("auto: no hold-out")
    # one class too small for 10 %: nothing is held out, even when the total would allow it
    train, held, _ = choose_holdout(normal_samples({"big": 200, "new": 6}), "auto", seed=0)
    assert len(train) == 206 and held == []

    planned, decision = plan_schedule(TrainConfig(), train_count=8, min_steps=DEFAULT_MIN_STEPS)
    assert planned.batch_size == 8  # capped at the image count
    assert planned.epochs == 300 and decision["steps"] == 300 and decision["epochs_raised_for_min_steps"]
    assert planned.effective_step_size() == 240  # the decay stays at 80 % of the longer run
    planned, decision = plan_schedule(TrainConfig(), train_count=32, min_steps=DEFAULT_MIN_STEPS)
    assert (planned.batch_size, planned.epochs, decision["steps"]) == (16, 150, 300)
    planned, _ = plan_schedule(TrainConfig(step_size=7), train_count=8, min_steps=DEFAULT_MIN_STEPS)
    assert planned.effective_step_size() == 7  # an explicit --step-size is kept
    planned, decision = plan_schedule(TrainConfig(epochs=3), train_count=8, min_steps=0)
    assert planned.epochs == 3 and not decision["epochs_raised_for_min_steps"]


def test_large_set_keeps_the_reference_run():
    normals = normal_samples({"part": 720})
    train, held, rule = choose_holdout(normals, "auto", seed=0)
    assert (len(train), len(held)) == (648, 72) and rule.startswith("auto: 10% per class")
    assert choose_holdout(normals, 0.2, seed=0)[1] != [] and choose_holdout(normals, 0.0, seed=0)[1] == []
    planned, decision = plan_schedule(TrainConfig(), train_count=len(train), min_steps=DEFAULT_MIN_STEPS)
    assert (planned.epochs, planned.batch_size, planned.effective_step_size()) == (50, 16, 40)
    assert not decision["epochs_raised_for_min_steps"] and decision["steps"] == 50 * 41


def test_train_command_defaults_on_a_small_set(tmp_path):
    from crad.synth import write_dataset

    write_dataset(tmp_path / "data", ["weave", "washer"], n_train=5, n_test_good=0, n_test_defect=0, size=80, seed=0)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args(["--data", str(tmp_path / "data")])
    assert (defaults.holdout, defaults.min_steps, defaults.epochs, defaults.select) == ("auto", DEFAULT_MIN_STEPS, None, "on")
    args = parser.parse_args([
        "--data", str(tmp_path / "data"), "--backbone", "mobilenet-v2", "--random-backbone",
        "--variant", "tiny", "--E", "16", "--input-size", str(INPUT), "--epochs", "1", "--batch-size", "4",
        "--min-steps", "5", "--out", str(tmp_path / "run"), "--no-progress", "--select", "off",
    ])
    assert run(args) == 0
    _, extra = load_detector(str(tmp_path / "run" / "best.pt"))
    info = extra["training"]
    assert info["holdout_images"] == 0 and info["holdout_rule"].startswith("auto: no hold-out")
    assert info["selection"] == "last epoch" and extra["selected_epoch"] == 2
    # 10 images in batches of 4 = 3 steps per epoch: 1 epoch makes 3 steps, raised to 2 epochs = 6
    assert info["schedule"]["epochs_raised_for_min_steps"] and info["epochs"] == 2 and info["schedule"]["steps"] == 6

    # Resuming keeps --holdout auto and --min-steps; a longer run that reaches the minimum is not raised.
    resume = parser.parse_args(["--resume", str(tmp_path / "run" / "last.pt"), "--epochs", "3", "--no-progress"])
    assert run(resume) == 0
    state = torch.load(tmp_path / "run" / "last.pt")["training_state"]
    assert state["epoch"] == 3 and state["args"]["min_steps"] == 5 and state["args"]["holdout"] == "auto"
