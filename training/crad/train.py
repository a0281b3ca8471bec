"""Training, as the spec's section 2 defines it, with the reference's bugs fixed.

- Loss: MSE between the fused features F and X. Only the CRAD module trains; the backbone is
  frozen, so its features are computed once per image and cached (in memory, and on disk with
  --feature-cache so that a second run on the same images skips the backbone entirely).
- AdamW with two groups (grids lr 0.1, everything else lr 1e-3), betas (0.9, 0.999), weight
  decay 0.01 on all; StepLR gamma 0.1 stepped per epoch; gradient-norm clipping at 0.1;
  coordinate jitter (inside CradModule) with p 0.5, sigma 0.05.
- StepLR step: 40 for the reference's 50 epochs. With fewer epochs it scales to keep the decay
  at the same point of the schedule: round(0.8 * epochs), at least 1 (e.g. 10 epochs -> 8).
  --step-size overrides this.
- Truly seeded: --seed fixes the head's initialisation, the batch order and the jitter; the same
  seed and the same images give bit-identical weights (on the same machine and thread count).
  Resuming restores every random state, so an interrupted run ends where an uninterrupted one does.
  That holds on the CPU; on CUDA (--device, see crad.device) the jitter draws from the GPU's
  generator and its kernels are not bit-reproducible, so CUDA runs agree closely, not exactly.
- Model selection uses held-out NORMAL training images only (never the test set): a seeded,
  per-class fraction (--holdout) of the normal images is kept out of training, and the
  checkpoint with the lowest held-out reconstruction loss (MSE(F, X) in eval mode) is best.pt.
  With --holdout 0 the last epoch is kept (a fixed number of epochs, which the spec allows).
- Small sets (a new product starts with a handful of good parts), see choose_holdout and
  plan_schedule: --holdout auto (the default) holds out 10 % per class only when every class
  has at least 10 normal images and the hold-out holds at least 8 images in total; otherwise
  nothing is held out and the model is the last epoch of the fixed schedule. --min-steps (default
  300) raises the epoch count of a small set until the run makes that many optimizer steps, with
  the StepLR decay kept at 80 % of the (longer) run; the batch size is capped at the number of
  training images. What was decided goes into the model's crad.training and the log.
- Unified: every class's normal images train one model; the class list goes into the model.
- --max-minutes: before each epoch, stop if the previous epoch would not fit in what is left.
- Settings chosen per class from good images (--select on, the default; crad.select): each
  candidate --neck-pool trains a short run (--select-steps) and scores held-out good images against
  synthetic anomalies drawn on them (crad.anomalies); the best separation wins, is logged and goes
  into crad.training as settings_selection. --select off trains the given settings; only stops
  after choosing (selection.json). The selection restores the random state it found, so the
  training after it is exactly `--select off --neck-pool <chosen>`.

Outputs in --out: best.pt (the selected model: load_detector / export read it), last.pt (the
resume point: model + optimizer + scheduler + random states), history.json (per-epoch losses).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("crad.train")

REFERENCE_EPOCHS = 50
REFERENCE_STEP_SIZE = 40
# Small-set defaults (module docstring). A held-out loss over fewer than 8 images is too noisy to
# select on, and below 10 images a class's 10 % would round up to 20-50 % of its few images.
AUTO_HOLDOUT_FRACTION = 0.1
MIN_AUTO_HOLDOUT_IMAGES = 8
MIN_AUTO_HOLDOUT_CLASS_IMAGES = 10
# The reference schedule makes ~2,300 steps on Magnetic Tile's ~720 training images (50 epochs of
# 46 batches of 16); on 8 images it would make 50. 300 (an eighth of the former) is a judgement,
# not a measurement: the few-shot bench (crad.bench_fewshot) is where to check it.
DEFAULT_MIN_STEPS = 300


def decay_epoch(epochs: int) -> int:
    """80 % of a run of `epochs` (where the reference's 40 of 50 puts the decay), at least 1."""
    return max(1, int(round(epochs * REFERENCE_STEP_SIZE / REFERENCE_EPOCHS)))


def scaled_step_size(epochs: int) -> int:
    """StepLR step for a run of `epochs`: 40 at >= 50 epochs, else 80 % of the run."""
    if epochs >= REFERENCE_EPOCHS:
        return REFERENCE_STEP_SIZE
    return decay_epoch(epochs)


@dataclass
class TrainConfig:
    epochs: int = REFERENCE_EPOCHS
    batch_size: int = 16
    seed: int = 0
    lr_grid: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.01
    step_size: int | None = None  # None: scaled_step_size(epochs)
    gamma: float = 0.1
    clip: float = 0.1
    jitter_probability: float = 0.5
    jitter_sigma: float = 0.05
    max_minutes: float | None = None
    progress: bool = True

    def effective_step_size(self) -> int:
        return self.step_size if self.step_size else scaled_step_size(self.epochs)


# ---- small sets: the hold-out and the schedule ------------------------------------------------

def parse_holdout(text: str) -> float | str:
    """--holdout: "auto" or a fraction in [0, 1)."""
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a fraction in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"the hold-out fraction must be in [0, 1), got {value:g}")
    return value


def choose_holdout(normals: list, holdout: float | str, seed: int) -> tuple[list, list, str]:
    """(training samples, held-out samples, the rule applied in words) for --holdout.

    "auto" holds out AUTO_HOLDOUT_FRACTION per class (seeded, crad.data.split_samples) only when
    every class has at least MIN_AUTO_HOLDOUT_CLASS_IMAGES normal images and the hold-out holds at
    least MIN_AUTO_HOLDOUT_IMAGES in total; otherwise it holds out nothing (last epoch kept).
    """
    from .data import split_samples

    if holdout == "auto":
        smallest = min(Counter(s.class_name for s in normals).values())
        train, held = split_samples(normals, 1.0 - AUTO_HOLDOUT_FRACTION, seed)
        if smallest >= MIN_AUTO_HOLDOUT_CLASS_IMAGES and len(held) >= MIN_AUTO_HOLDOUT_IMAGES:
            return train, held, f"auto: {AUTO_HOLDOUT_FRACTION:.0%} per class held out ({len(held)} images)"
        if smallest < MIN_AUTO_HOLDOUT_CLASS_IMAGES:
            why = f"a class has {smallest} normal images, fewer than {MIN_AUTO_HOLDOUT_CLASS_IMAGES}"
        else:
            why = f"{AUTO_HOLDOUT_FRACTION:.0%} per class is {len(held)} images, fewer than {MIN_AUTO_HOLDOUT_IMAGES}"
        return list(normals), [], f"auto: no hold-out ({why}); the last epoch of the fixed schedule is kept"
    if holdout > 0:
        train, held = split_samples(normals, 1.0 - holdout, seed)
        return train, held, f"{holdout:g} per class held out ({len(held)} images)"
    return list(normals), [], "none (--holdout 0); the last epoch of the fixed schedule is kept"


def plan_schedule(config: TrainConfig, train_count: int, min_steps: int) -> tuple[TrainConfig, dict]:
    """The run `config` becomes on `train_count` training images, and what was decided.

    The batch is capped at the image count. When the requested epochs would make fewer than
    `min_steps` optimizer steps (0: no minimum), the epochs are raised to make them; the raised run
    keeps the StepLR decay at 80 % of its length (unless config.step_size fixes it), as a shorter
    run does. A set large enough keeps the requested run unchanged.
    """
    if train_count < 1:
        raise ValueError("no training images to plan a schedule for")
    batch_size = min(config.batch_size, train_count)
    steps_per_epoch = math.ceil(train_count / batch_size)
    epochs = config.epochs
    raised = min_steps > 0 and epochs * steps_per_epoch < min_steps
    if raised:
        epochs = math.ceil(min_steps / steps_per_epoch)
    step_size = config.step_size or (decay_epoch(epochs) if raised else scaled_step_size(epochs))
    planned = replace(config, epochs=epochs, batch_size=batch_size, step_size=step_size)
    decision = {
        "epochs_requested": config.epochs, "epochs": epochs, "epochs_raised_for_min_steps": raised,
        "min_steps": min_steps, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
        "steps": epochs * steps_per_epoch, "step_size": step_size,
    }
    return planned, decision


def describe_schedule(decision: dict) -> str:
    """One log line for plan_schedule's decision."""
    raised = (f", raised from {decision['epochs_requested']} epochs to reach --min-steps {decision['min_steps']}"
              if decision["epochs_raised_for_min_steps"] else "")
    return (f"{decision['epochs']} epochs x {decision['steps_per_epoch']} steps of batch {decision['batch_size']} = "
            f"{decision['steps']} optimizer steps, learning-rate decay after epoch {decision['step_size']}{raised}")


# ---- features --------------------------------------------------------------------------------

def compute_features(detector, images, batch_size: int = 16, progress: bool = False, description: str = "images",
                     pooled: bool = True):
    """Backbone + neck features of `images` (N,3,S,S float32 in [0,1], numpy or torch) -> (N,C,H,W)
    float32, on the detector's device (float16 autocast on CUDA: crad.device says why); with
    pooled=False before the neck's optional pooling (detector.pool_features applies it later)."""
    import torch
    from tqdm import tqdm

    from .device import feature_autocast

    device = detector.mean.device
    images = torch.as_tensor(images, dtype=torch.float32)
    if device.type == "cuda" and len(images):
        images = images.pin_memory()
    chunks = []
    detector.eval()
    with torch.no_grad(), feature_autocast(device):
        for start in tqdm(range(0, len(images), batch_size), desc=f"{description} features", unit="batch", disable=not progress, file=sys.stderr):
            batch = images[start:start + batch_size].to(device, non_blocking=True)
            chunks.append((detector.features(batch) if pooled else detector.unpooled_features(batch)).float())
    if not chunks:
        return torch.zeros((0, detector.head.C, detector.head.H, detector.head.W), device=device)
    return torch.cat(chunks)


def _tensor_digest(tensors) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def cached_features(detector, images, cache_dir: str | None, batch_size: int, progress: bool, description: str,
                    pooled: bool = True):
    """compute_features, memoised on disk under cache_dir by (backbone weights, input size, pooling, images)."""
    import numpy as np
    import torch

    if not cache_dir:
        return compute_features(detector, images, batch_size, progress, description, pooled=pooled)
    key = hashlib.sha256()
    options = {k: v for k, v in detector.build_arguments().items() if k in ("backbone", "backbone_options", "input_size", "neck_pool")}
    if not pooled:
        options["neck_pool"] = "unpooled"
    key.update(json.dumps(options, sort_keys=True).encode())
    key.update(_tensor_digest(detector.backbone.state_dict().values()).encode())
    key.update(hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes()).hexdigest().encode())
    if detector.mean.device.type == "cuda":  # float16-autocast features differ from the CPU's float32 ones
        key.update(b"cuda float16 autocast")
    path = Path(cache_dir) / f"features-{key.hexdigest()[:32]}.pt"
    if path.is_file():
        log.info("features of %d %s images read from cache %s", len(images), description, path)
        return torch.load(path, map_location=detector.mean.device)
    features = compute_features(detector, images, batch_size, progress, description, pooled=pooled)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .model import atomic_torch_save

    atomic_torch_save(features.cpu(), str(path))
    return features


# ---- the training loop -----------------------------------------------------------------------

@dataclass
class TrainResult:
    epochs_completed: int
    best_epoch: int
    best_holdout_loss: float | None
    stopped_by_time_budget: bool
    history: list[dict] = field(default_factory=list)


def _batched_eval(detector, features, batch_size: int) -> dict[str, float]:
    """Held-out reconstruction loss and image-score statistics, in eval mode (no jitter)."""
    import torch
    import torch.nn.functional as F

    detector.head.eval()
    total, count, scores = 0.0, 0, []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            X = features[start:start + batch_size]
            fused, _, _ = detector.head_forward(X)
            total += F.mse_loss(fused, X, reduction="sum").item()
            count += X.numel()
            scores.append(detector.maps_from_features(X)[1])
    all_scores = torch.cat(scores)
    return {
        "holdout_loss": total / count,
        "holdout_score_mean": all_scores.mean().item(),
        "holdout_score_max": all_scores.max().item(),
    }


def fit(
    detector,
    train_features,
    holdout_features,
    config: TrainConfig,
    run_dir: str | Path,
    extra: dict,
    resume_state: dict | None = None,
    resume_info: dict | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_epoch: Callable[[dict, int], None] | None = None,
) -> TrainResult:
    """Train detector.head on cached features; write last.pt each epoch and best.pt on improvement.

    `extra` goes into every checkpoint (classes, dataset, ...); `resume_state` is the
    "training_state" of a last.pt to continue from; `resume_info` is stored in that state for
    the caller (what it needs to rebuild the same data when resuming).
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from .model import atomic_torch_save, checkpoint_payload, save_checkpoint

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    head = detector.head
    head.jitter_probability = config.jitter_probability
    head.jitter_sigma = config.jitter_sigma
    count = len(train_features)
    if count == 0:
        raise ValueError("no training features: the training set is empty")
    has_holdout = holdout_features is not None and len(holdout_features) > 0

    optimizer = torch.optim.AdamW(
        [
            {"params": head.grid_parameters(), "lr": config.lr_grid},
            {"params": head.non_grid_parameters(), "lr": config.lr},
        ],
        betas=(0.9, 0.999),
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.effective_step_size(), gamma=config.gamma)
    order_generator = torch.Generator()

    if resume_state is None:
        torch.manual_seed(config.seed)
        order_generator.manual_seed(config.seed)
        start_epoch, history, best_epoch, best_loss = 0, [], 0, None
    else:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["torch_rng"])
        order_generator.set_state(resume_state["order_rng"])
        start_epoch = resume_state["epoch"]
        history = list(resume_state["history"])
        best_epoch, best_loss = resume_state["best_epoch"], resume_state["best_holdout_loss"]

    batches_per_epoch = math.ceil(count / config.batch_size)
    started = clock()
    last_epoch_seconds = 0.0
    stopped_by_budget = False
    bar = tqdm(
        total=config.epochs * batches_per_epoch,
        initial=start_epoch * batches_per_epoch,
        unit="batch",
        desc="train",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start_epoch, config.epochs):
            if config.max_minutes is not None:
                elapsed = clock() - started
                if elapsed + last_epoch_seconds > config.max_minutes * 60.0:
                    stopped_by_budget = True
                    log.warning("time budget of %.1f min reached: stopping before epoch %d of %d", config.max_minutes, epoch + 1, config.epochs)
                    break
            epoch_started = clock()
            head.train()
            permutation = torch.randperm(count, generator=order_generator)
            loss_sum = 0.0
            for start in range(0, count, config.batch_size):
                X = train_features[permutation[start:start + config.batch_size].to(train_features.device)]
                fused, _, _ = head(X)
                loss = F.mse_loss(fused, X)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(head.parameters(), config.clip)
                optimizer.step()
                loss_sum += loss.item() * len(X)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss.item():.4g}")
            learning_rates = [group["lr"] for group in optimizer.param_groups]
            scheduler.step()
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / count, "lr_grid": learning_rates[0], "lr": learning_rates[1]}
            if has_holdout:
                record.update(_batched_eval(detector, holdout_features, config.batch_size))
            last_epoch_seconds = clock() - epoch_started
            record["seconds"] = round(last_epoch_seconds, 3)
            history.append(record)

            improved = (not has_holdout) or best_loss is None or record["holdout_loss"] < best_loss
            if improved:
                best_epoch = epoch + 1
                best_loss = record.get("holdout_loss")
                save_checkpoint(str(run_dir / "best.pt"), detector, {**extra, "selected_epoch": best_epoch, "holdout_loss": best_loss})
            bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{record['train_loss']:.4g}", holdout=f"{record.get('holdout_loss', float('nan')):.4g}")

            payload = checkpoint_payload(detector, {**extra, "epoch": epoch + 1})
            payload["training_state"] = {
                "epoch": epoch + 1,
                "config": asdict(config),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "order_rng": order_generator.get_state(),
                "history": history,
                "best_epoch": best_epoch,
                "best_holdout_loss": best_loss,
                **(resume_info or {}),
            }
            atomic_torch_save(payload, str(run_dir / "last.pt"))
            (run_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
            if on_epoch is not None:  # progress for a caller (crad teach's JSON lines)
                on_epoch(record, config.epochs)
    finally:
        bar.close()
    completed = len(history)
    return TrainResult(completed, best_epoch, best_loss, stopped_by_budget, history)


# ---- choosing the settings from good images (crad.select) ------------------------------------

# Each candidate's short schedule, raised to whole epochs: on Magnetic Tile's 686 training images
# (43 batches of 16) 4 epochs, 172 steps: about 3.5 minutes per candidate on the quiet 2-core machine
# (estimated from its 1.3 s per step; docs/quality-engineers.md).
DEFAULT_SELECT_STEPS = 150
DEFAULT_SELECT_ANOMALIES = 3  # synthetic anomalies per held-out good image
MIN_SELECTION_GOOD = 4  # held-out good images the selection needs (else it holds out its own)
SELECTION_SPLIT = 0.25  # the share of the training images it holds out then, for the selection only


def short_schedule(steps: int, batch_size: int, seed: int) -> Callable:
    """train_head for crad.select: `fit` on pooled features for about `steps` optimizer steps
    (plan_schedule's minimum, the decay at 80 %), the last epoch kept, nothing written to keep."""
    import tempfile

    def train_head(detector, features) -> dict:
        config, schedule = plan_schedule(TrainConfig(epochs=1, batch_size=batch_size, seed=seed, progress=False),
                                         len(features), steps)
        with tempfile.TemporaryDirectory(prefix="crad-select-") as scratch:
            fit(detector, features, None, config, scratch, {})
        return schedule

    return train_head


def auto_select(detector, train_unpooled, good_images, good_unpooled, neck_pools: list[int], steps: int, per_image: int,
                seed: int, batch_size: int, progress: bool = False) -> dict:
    """crad.select on these features: synthetic anomalies on `good_images` (float32 N,3,S,S; never
    trained on), their features, every candidate trained and scored. Returns the selection record."""
    from .anomalies import make_anomalies
    from .select import select_settings

    started = time.perf_counter()
    anomalous_images, records = make_anomalies(good_images, per_image, seed)
    anomalous = compute_features(detector, anomalous_images, batch_size, progress, "synthetic anomalies", pooled=False)
    del anomalous_images
    record = select_settings(detector, train_unpooled, good_unpooled, anomalous, records, neck_pools, seed, batch_size,
                             short_schedule(steps, batch_size, seed))
    record["seconds_with_anomalies"] = round(time.perf_counter() - started, 1)
    return record


def selection_split(count: int, seed: int) -> tuple[list[int], list[int]] | None:
    """(indices to train the candidates on, indices to score them on) of `count` training images
    when there is no hold-out to score on: a seeded SELECTION_SPLIT, or None when too few."""
    import numpy as np

    held = max(2, int(round(SELECTION_SPLIT * count)))
    if count - held < 2:
        return None
    order = np.random.default_rng(seed).permutation(count)
    return sorted(int(i) for i in order[held:]), sorted(int(i) for i in order[:held])


def run_selection(args, detector, train_images, holdout_images, progress: bool):
    """--select on|only: choose args.neck_pool (crad.select) and set it on `detector`.

    Returns (selection record, pooled training features, pooled hold-out features or None): the
    backbone runs once, unpooled, for the selection and the training after it."""
    train_unpooled = cached_features(detector, train_images, args.feature_cache, args.batch_size, progress, "train", pooled=False)
    held_unpooled = None
    if holdout_images is not None and len(holdout_images):
        held_unpooled = cached_features(detector, holdout_images, args.feature_cache, args.batch_size, progress, "holdout", pooled=False)
    if held_unpooled is not None and len(held_unpooled) >= MIN_SELECTION_GOOD:
        candidates_train, good_images, good_unpooled = train_unpooled, holdout_images, held_unpooled
        source = f"the training hold-out ({len(held_unpooled)} good images)"
    else:
        split = selection_split(len(train_unpooled), args.seed)
        if split is None:
            record = {"mode": "skipped", "text": f"{len(train_unpooled)} training images are too few to hold any out: "
                                                 f"neck pool {args.neck_pool} as given"}
            return record, detector.pool_features(train_unpooled), None if held_unpooled is None else detector.pool_features(held_unpooled)
        fit_index, good_index = split
        candidates_train, good_images, good_unpooled = train_unpooled[fit_index], train_images[good_index], train_unpooled[good_index]
        source = (f"{len(good_index)} of the {len(train_unpooled)} training images (a seeded {SELECTION_SPLIT:.0%}), "
                  f"held out for the selection only; the model then trains on all of them")
    record = auto_select(detector, candidates_train, good_images, good_unpooled, args.select_neck_pools, args.select_steps,
                         args.select_anomalies, args.seed, args.batch_size, progress)
    record["good_source"] = source
    args.neck_pool = detector.neck_pool = record["chosen"]["neck_pool"]
    pooled_held = None if held_unpooled is None else detector.pool_features(held_unpooled)
    return record, detector.pool_features(train_unpooled), pooled_held


def add_selection_arguments(parser) -> None:
    from .select import DEFAULT_NECK_POOLS, parse_neck_pools

    group = parser.add_argument_group("settings selection (crad.select: from good images and synthetic anomalies)")
    group.add_argument("--select", choices=("on", "off", "only"), default="on",
                       help="on (default): choose --neck-pool among --select-neck-pools by how well a short run of each "
                            "separates held-out good images from synthetic anomalies drawn on them, then train with it; "
                            "off: train with the given --neck-pool; only: choose, write selection.json to --out, stop")
    group.add_argument("--select-neck-pools", type=parse_neck_pools, default=list(DEFAULT_NECK_POOLS), metavar="K,K",
                       help=f"the candidates (default {','.join(map(str, DEFAULT_NECK_POOLS))}; the first wins a tie)")
    group.add_argument("--select-steps", type=int, default=DEFAULT_SELECT_STEPS,
                       help=f"optimizer steps of each candidate's short run (default {DEFAULT_SELECT_STEPS})")
    group.add_argument("--select-anomalies", type=int, default=DEFAULT_SELECT_ANOMALIES,
                       help=f"synthetic anomalies per held-out good image (default {DEFAULT_SELECT_ANOMALIES})")


# ---- data -> features -> fit: the command ----------------------------------------------------

def dataset_digest(paths: list[str], root: str) -> str:
    """sha256 over the relative paths and bytes of the images used, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def add_neck_pool_argument(parser) -> None:
    parser.add_argument("--neck-pool", type=int, default=1, metavar="K",
                        help="average the features over each position's K x K neighbourhood before CRAD (odd K; default 1 = off, the spec's X). "
                             "3 helps on textured, unevenly lit surfaces with thin cracks and hurts small faint spots (README, Magnetic Tile)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .device import add_device_argument

    parser.description = "Train a CRAD model on the normal training images of one or more classes (unified)."
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="dataset root (MVTec layout, JSON Lines meta, Magnetic Tile or a folder)")
    data.add_argument("--layout", default="auto", help="auto | mvtec | jsonl | magnetic-tile | folder (default auto)")
    data.add_argument("--meta", help="JSON Lines meta file for --layout jsonl")
    data.add_argument("--classes", nargs="+", metavar="CLASS", help="classes to train on together (default: all)")
    data.add_argument("--limit-per-class", type=int, metavar="N", help="use at most N normal images per class (seeded)")
    data.add_argument("--holdout", type=parse_holdout, default="auto",
                      help=f"fraction of normal images per class held out for model selection, 0 = keep the last "
                           f"epoch, or auto (default): {AUTO_HOLDOUT_FRACTION:g} when every class has at least "
                           f"{MIN_AUTO_HOLDOUT_CLASS_IMAGES} normal images and that holds out at least "
                           f"{MIN_AUTO_HOLDOUT_IMAGES} in total, else 0")
    data.add_argument("--dataset-name", help="name recorded in the model's crad.training (default: the data folder's name)")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default="efficientnet-b4", help="efficientnet-b4 (paper) | mobilenet-v1-0.75 | mobilenet-v2 | mobilenet-v2-nsfwjs")
    model.add_argument("--backbone-weights", help="weight file of the backbone (default: its documented location)")
    model.add_argument("--random-backbone", action="store_true", help="random backbone weights: for tests only")
    model.add_argument("--variant", default="crad-s", help="crad (E = 4C) | crad-s (E = C) | a custom name with --E (default crad-s)")
    model.add_argument("--E", type=int, help="decoder expansion channels of a custom variant")
    model.add_argument("--input-size", type=int, default=224, help="square input size in pixels (default 224)")
    add_neck_pool_argument(model)
    optim = parser.add_argument_group("optimisation (defaults: the reference's)")
    optim.add_argument("--epochs", type=int, help=f"default {REFERENCE_EPOCHS}, or the resumed run's")
    optim.add_argument("--batch-size", type=int, default=16)
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument("--lr", type=float, default=1e-3, help="learning rate of everything but the grids")
    optim.add_argument("--lr-grid", type=float, default=0.1, help="learning rate of the two grids")
    optim.add_argument("--weight-decay", type=float, default=0.01)
    optim.add_argument("--step-size", type=int, help="StepLR step in epochs (default 40, or 0.8 x epochs below 50 epochs "
                                                        "or when --min-steps raised them)")
    optim.add_argument("--min-steps", type=int, default=DEFAULT_MIN_STEPS,
                       help=f"raise the epochs of a small set until the run makes at least this many optimizer steps "
                            f"(default {DEFAULT_MIN_STEPS}; 0: never)")
    optim.add_argument("--gamma", type=float, default=0.1)
    optim.add_argument("--clip", type=float, default=0.1, help="gradient-norm clipping")
    optim.add_argument("--jitter-probability", type=float, default=0.5)
    optim.add_argument("--jitter-sigma", type=float, default=0.05)
    run = parser.add_argument_group("run")
    run.add_argument("--out", default="runs/train", help="run folder for best.pt, last.pt, history.json (default runs/train)")
    run.add_argument("--resume", metavar="LAST_PT", help="continue the run saved in this last.pt (its data and settings are reused)")
    run.add_argument("--max-minutes", type=float, help="time budget: stop before an epoch that would not fit")
    run.add_argument("--feature-cache", metavar="DIR", help="also cache backbone features on disk here")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(run)
    add_selection_arguments(parser)


# Settings a resumed run must keep (everything that shapes the data or the optimisation).
_RESUME_FIXED = ("data", "layout", "meta", "classes", "limit_per_class", "holdout", "backbone", "backbone_weights",
                 "random_backbone", "variant", "E", "input_size", "neck_pool", "batch_size", "seed", "lr", "lr_grid",
                 "weight_decay", "step_size", "gamma", "clip", "jitter_probability", "jitter_sigma", "dataset_name",
                 "min_steps")


def _load_training_data(args, input_size: int):
    from .data import load_images, load_samples, limit_samples

    samples = load_samples(args.data, layout=args.layout, split="train", classes=args.classes, meta=args.meta)
    normals = [s for s in samples if s.label == 0]
    if not normals:
        raise ValueError(f"{args.data}: no normal training images")
    normals = limit_samples(normals, args.limit_per_class, args.seed)
    train_samples, holdout_samples, holdout_rule = choose_holdout(normals, args.holdout, args.seed)
    train_images, train_kept, _ = load_images(train_samples, input_size)
    holdout_images, holdout_kept, _ = load_images(holdout_samples, input_size) if holdout_samples else (None, [], [])
    if len(train_kept) == 0:
        raise ValueError(f"{args.data}: none of the {len(train_samples)} training images could be read")
    return train_images, train_kept, holdout_images, holdout_kept, holdout_rule


def _unselected(args, resumed_payload: dict | None) -> dict:
    """The settings_selection record without a selection: a resumed run's own, or --select off."""
    if resumed_payload is not None:
        return resumed_payload.get("extra", {}).get("training", {}).get("settings_selection") or {"mode": "off", "text": "resumed run"}
    return {"mode": "off", "text": f"--select off: neck pool {args.neck_pool} as given"}


def run(args: argparse.Namespace) -> int:
    import torch

    from .device import resolve_device

    device = resolve_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from . import __version__
    from .model import build_detector, detector_from_payload

    resume_state = None
    if args.resume:
        payload = torch.load(args.resume, map_location="cpu")
        if "training_state" not in payload:
            print(f"error: {args.resume} is not a resumable last.pt (no training state)", file=sys.stderr)
            return 2
        resume_state = payload["training_state"]
        saved_args = resume_state["args"]
        for name in _RESUME_FIXED:
            setattr(args, name, saved_args.get(name))
        if args.min_steps is None:  # a run started before --min-steps existed had no minimum
            args.min_steps = 0
        detector = detector_from_payload(payload, args.resume)
        args.out = str(Path(args.resume).resolve().parent)
        if args.epochs is None:  # the epochs asked for, which plan_schedule may raise again as it did
            args.epochs = resume_state.get("epochs_requested", resume_state["config"]["epochs"])
    elif not args.data:
        print("error: --data is required (or --resume a run)", file=sys.stderr)
        return 2
    if args.epochs is None:
        args.epochs = REFERENCE_EPOCHS
    if resume_state is None:
        # Before reading any image, so that a missing weight file fails at once.
        torch.manual_seed(args.seed)  # the head's initialisation
        detector = build_detector(args.backbone, args.variant, args.E, args.input_size, args.backbone_weights, args.random_backbone,
                                   neck_pool=args.neck_pool)
    detector.to(device)

    train_images, train_kept, holdout_images, holdout_kept, holdout_rule = _load_training_data(args, args.input_size)
    classes = sorted({s.class_name for s in train_kept})
    used_paths = [s.path for s in train_kept + holdout_kept]
    digest = dataset_digest(used_paths, args.data)
    if resume_state is not None and resume_state["dataset_hash"] != digest:
        print(f"error: the images under {args.data} changed since the run in {args.resume} started", file=sys.stderr)
        return 2
    log.info(
        "training %s on %s (C=%d, H=W=%d, E=%d): %d images of %d classes, %d held out, on %s",
        args.variant, detector.backbone.name, detector.head.C, detector.head.H, detector.head.E,
        len(train_kept), len(classes), len(holdout_kept), device,
    )

    progress = not args.no_progress
    if resume_state is None and args.select != "off":
        settings_selection, train_features, holdout_features = run_selection(args, detector, train_images, holdout_images, progress)
    else:
        # unpooled, then pooled (identical to pooled features): one cache serves every --neck-pool
        settings_selection = _unselected(args, payload if resume_state is not None else None)
        train_features = detector.pool_features(
            cached_features(detector, train_images, args.feature_cache, args.batch_size, progress, "train", pooled=False))
        holdout_features = detector.pool_features(
            cached_features(detector, holdout_images, args.feature_cache, args.batch_size, progress, "holdout", pooled=False)) if holdout_kept else None
    del train_images, holdout_images
    from .select import describe

    log.info("%s", describe(settings_selection))
    if args.select == "only" and resume_state is None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "selection.json").write_text(json.dumps(settings_selection, indent=1) + "\n")
        print(json.dumps(settings_selection, indent=1))
        return 0

    requested = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, lr_grid=args.lr_grid, lr=args.lr,
        weight_decay=args.weight_decay, step_size=args.step_size, gamma=args.gamma, clip=args.clip,
        jitter_probability=args.jitter_probability, jitter_sigma=args.jitter_sigma,
        max_minutes=args.max_minutes, progress=progress,
    )
    config, schedule = plan_schedule(requested, len(train_kept), args.min_steps)
    log.info("hold-out: %s", holdout_rule)
    log.info("schedule: %s", describe_schedule(schedule))
    training_info = {
        "dataset": args.dataset_name or Path(args.data).resolve().name,
        "dataset_hash": "sha256:" + digest,
        "images": len(train_kept),
        "holdout_images": len(holdout_kept),
        "holdout_rule": holdout_rule,
        "epochs": config.epochs,
        "step_size": config.effective_step_size(),
        "schedule": schedule,
        "seed": args.seed,
        "selection": "lowest held-out normal MSE(F, X)" if holdout_kept else "last epoch",
        "settings_selection": settings_selection,
        "backbone_weights": detector.backbone.weights_origin,
        "trainer": f"crad {__version__}",
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if resume_state is not None:
        training_info["date"] = payload.get("extra", {}).get("training", {}).get("date", training_info["date"])
    extra = {"classes": classes, "training": training_info}
    run_dir = Path(args.out)
    resume_info = {"args": {name: getattr(args, name) for name in _RESUME_FIXED}, "dataset_hash": digest,
                   "epochs_requested": requested.epochs}
    result = fit(detector, train_features, holdout_features, config, run_dir, extra, resume_state, resume_info,
                 on_epoch=getattr(args, "on_epoch", None))
    summary = {
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "best_holdout_loss": result.best_holdout_loss,
        "stopped_by_time_budget": result.stopped_by_time_budget,
        "best": str(run_dir / "best.pt"),
    }
    print(json.dumps(summary, indent=1))
    return 0
