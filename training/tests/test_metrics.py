"""Evaluation metrics against their definitions (brute force) and hand-computed cases; the report writer."""

import json
import math

import numpy as np
import pytest

from crad.data import Sample
from crad.evaluate import compute_metrics, evaluate_predictions, image_labels, markdown_table
from crad.metrics import aupro, auroc, best_f1, pixel_auroc, region_labels


def pairwise_auroc(labels, scores):
    """P(defect scores above normal), ties half: the definition, by brute force."""
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores).reshape(-1)
    positive, negative = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return np.mean((positive > negative) + 0.5 * (positive == negative))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_pairwise_ranking_probability_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
    assert auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores), abs=1e-12)


def test_auroc_hand_cases_and_never_flipped():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0  # raw, not flipped to 1
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    # one positive ranked above one of two negatives: 1/2
    assert auroc([0, 1, 0], [0.1, 0.2, 0.3]) == 0.5
    assert math.isnan(auroc([1, 1], [0.1, 0.2]))


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_is_the_best_over_every_threshold(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels, 1.0), 1)
    f1 = {}
    for t in np.unique(scores):
        tp = np.sum((scores >= t) & (labels == 1))
        f1[t] = 2 * tp / (np.sum(scores >= t) + labels.sum())
    best, threshold = best_f1(labels, scores)
    assert best == pytest.approx(max(f1.values()), abs=1e-12)
    # among equal F1s the highest threshold (the fewest rejects)
    assert threshold == max(t for t, v in f1.items() if v == pytest.approx(best, abs=1e-12))


def test_f1_hand_case():
    # t=0.8: TP 2 FP 0 FN 1 -> 0.8; t=0.3: TP 2 FP 1 FN 1 -> 4/6; t=0.2: TP 3 FP 1 FN 0 -> 6/7; t=0.1: 6/8
    best, threshold = best_f1([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9])
    assert best == pytest.approx(6 / 7) and threshold == 0.2


def test_pixel_auroc_is_auroc_over_all_pixels():
    rng = np.random.default_rng(1)
    masks = (rng.random((3, 8, 8)) > 0.8).astype(np.uint8)
    maps = rng.random((3, 8, 8)) + masks * 0.3
    assert pixel_auroc(masks, maps) == pytest.approx(pairwise_auroc(masks, maps), abs=1e-12)


def test_regions_use_8_connectivity_across_images():
    masks = np.zeros((2, 5, 5), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = 1  # diagonal neighbours: one region
    masks[0, 4, 4] = 1
    masks[1, 2, 2] = 1
    regions, count = region_labels(masks)
    assert count == 3 and regions[0, 0, 0] == regions[0, 1, 1] != regions[0, 4, 4]


def test_aupro_perfect_and_hand_computed():
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 0, :2] = 1  # region A: 2 pixels
    masks[0, 3, 3] = 1  # region B: 1 pixel
    perfect = masks.astype(np.float64)
    assert aupro(masks, perfect) == pytest.approx(1.0)
    # A's pixels score 0.9 and 0.5, B scores 0.7; the 13 normal pixels score 0.6 except one at 0.95.
    maps = np.full((1, 4, 4), 0.6)
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 3, 3] = 0.9, 0.5, 0.7
    maps[0, 2, 0] = 0.95
    # curve (fpr, pro): (0,0) -> 0.95:(1/13, 0) -> 0.9:(1/13, 0.25) -> 0.7:(1/13, 0.75) -> 0.6:(1, 0.75)
    # to FPR 0.3: 0 area up to 1/13, then PRO 0.75 from 1/13 to 0.3 (interpolated limit)
    expected = 0.75 * (0.3 - 1 / 13) / 0.3
    assert aupro(masks, maps, 0.3) == pytest.approx(expected)


def test_aupro_reference_by_brute_force_thresholds():
    rng = np.random.default_rng(2)
    masks = np.zeros((3, 12, 12), np.uint8)
    masks[0, 2:5, 2:6] = 1
    masks[1, 7:11, 1:3] = 1
    masks[1, 0, 11] = 1
    maps = rng.random((3, 12, 12)) * 0.8 + masks * rng.random((3, 12, 12)) * 0.6
    regions, count = region_labels(masks)
    thresholds = np.sort(np.unique(maps))[::-1]
    fprs, pros = [0.0], [0.0]
    normal = regions == 0
    for t in thresholds:
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([above[regions == k].mean() for k in range(1, count + 1)]))
    fprs, pros = np.array(fprs), np.array(pros)
    limit = 0.3
    keep = fprs <= limit
    x, y = list(fprs[keep]), list(pros[keep])
    j = keep.sum()
    y.append(pros[j - 1] + (pros[j] - pros[j - 1]) * (limit - fprs[j - 1]) / (fprs[j] - fprs[j - 1]))
    x.append(limit)
    x, y = np.array(x), np.array(y)
    area = np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)  # trapezoids
    assert aupro(masks, maps, limit) == pytest.approx(area / limit, abs=1e-12)


def test_aupro_undefined_without_regions():
    assert math.isnan(aupro(np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 4))))


def test_image_label_from_mask_or_label():
    samples = [Sample("a", 0, "c", "good", None), Sample("b", 1, "c", "x", None), Sample("c", 0, "c", "good", None)]
    masks = np.zeros((3, 2, 2), np.uint8)
    masks[2, 0, 0] = 1
    assert image_labels(samples, masks).tolist() == [0, 1, 1]


def test_metrics_per_class_and_mean_and_report(tmp_path):
    samples, maps, scores = [], [], []
    rng = np.random.default_rng(0)
    for cls, quality in (("good_model", 1.0), ("bad_model", -1.0)):
        for i in range(4):
            label = i % 2
            samples.append(Sample(f"/nonexistent/{cls}/{i}.png", label, cls, "good" if label == 0 else "x", None))
            scores.append(0.5 + quality * (label - 0.5) + 0.01 * i)
            maps.append(rng.random((32, 32)))
    results = compute_metrics(samples, np.stack(maps), np.array(scores))
    assert results["classes"]["good_model"]["image_auroc"] == 1.0
    assert results["classes"]["bad_model"]["image_auroc"] == 0.0
    assert results["mean"]["image_auroc"] == 0.5
    # defect images without masks are kept out of the pixel metrics; no regions -> AUPRO undefined
    assert results["classes"]["good_model"]["pixel_images"] == 2
    assert math.isnan(results["classes"]["good_model"]["pixel_auroc"])
    table = markdown_table(results)
    assert "| good_model | 2 | 2 | 100.0 | n/a | n/a |" in table
    written = evaluate_predictions(samples, np.stack(maps), np.array(scores), tmp_path, overlays_per_class=0)
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["classes"]["good_model"]["pixel_auroc"] is None
    assert loaded["mean"]["image_auroc"] == written["mean"]["image_auroc"]
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0] == "path,class,defect,label,score" and len(rows) == 1 + len(samples)
    assert rows[2].startswith("/nonexistent/good_model/1.png,good_model,x,1,")
    assert (tmp_path / "results.md").read_text().startswith("## evaluation")


def test_report_shows_the_threshold_tradeoff_with_the_models_threshold(tmp_path):
    samples = [Sample(f"/nonexistent/{i}.png", int(i >= 6), "c", "x" if i >= 6 else "good", None) for i in range(10)]
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.6, 0.8, 1.0, 1.2])
    maps = np.zeros((10, 32, 32))
    calibration = {"image": {"threshold": 0.7, "min": 0.1, "max": 1.2}}
    evaluate_predictions(samples, maps, scores, tmp_path, overlays_per_class=0, calibration=calibration)
    rows = json.loads((tmp_path / "results.json").read_text())["tradeoff"]
    model_row = next(r for r in rows if r["threshold_rule"] == "model's calibrated threshold")
    # good >= 0.7: only 0.9; defects < 0.7: only 0.6
    assert (model_row["false_rejects"], model_row["good"], model_row["missed"], model_row["defect"]) == (1, 6, 1, 4)
    f1_row = next(r for r in rows if r["threshold_rule"] == "F1-optimal")
    assert f1_row["threshold"] == 0.6  # TP 4, FP 1, FN 0 -> 8/9, the best (0.8: 6/8)
    assert "| model's calibrated threshold | 0.7 | 1 / 6 (16.7 %) | 1 / 4 (25.0 %) |" in (tmp_path / "results.md").read_text()


def test_image_auroc_per_defect_kind_shows_which_kind_is_missed():
    # goods score 0.4-0.5; "crack" scores above every good, "stain" below every good
    samples = [Sample(f"/nonexistent/g{i}.png", 0, "c", "good", None) for i in range(3)]
    samples += [Sample(f"/nonexistent/c{i}.png", 1, "c", "crack", None) for i in range(2)]
    samples += [Sample(f"/nonexistent/s{i}.png", 1, "c", "stain", None) for i in range(4)]
    scores = np.array([0.4, 0.45, 0.5, 0.9, 0.8, 0.1, 0.2, 0.3, 0.35])
    results = compute_metrics(samples, np.zeros((len(samples), 8, 8)), scores)
    kinds = results["classes"]["c"]["defect_kinds"]
    assert kinds == {"crack": {"count": 2, "image_auroc": 1.0}, "stain": {"count": 4, "image_auroc": 0.0}}
    assert results["classes"]["c"]["image_auroc"] == pytest.approx(2 / 6)
    table = markdown_table(results)
    assert "| c | crack | 2 | 100.0 |" in table and "| c | stain | 4 | 0.0 |" in table
