"""The evaluation metrics on arrays: scores, labels, masks and maps in, numbers out.

Used by crad.evaluate (per class, the report) and crad.thresholds (the F1 rule); it imports
no other crad module, so that both can stand on it.

- image AUROC (auroc, image_auroc): the area under the ROC curve of image scores against image labels.
- pixel AUROC: the same over every pixel of the given masks and maps.
- AUPRO (to FPR 0.3): the per-region overlap of Bergmann et al. (MVTec AD): each connected
  component (8-connectivity) of the ground-truth masks is a region; at a threshold, PRO is the
  mean over all regions of the fraction of the region's pixels above it, and FPR is the
  fraction of normal pixels above it. The PRO-over-FPR curve, exact at every distinct score,
  is integrated (trapezoids, linear interpolation at the limit) from 0 to 0.3 and divided by 0.3.
- F1-max: the best image-level F1 over all thresholds (predicted defective when score >= t).

All raw: an AUC below 0.5 is returned as it is, never flipped. A metric that is undefined for
its input (one class only, no regions) is NaN.

AUROC and F1 come from scikit-learn (roc_auc_score, precision_recall_curve); the PRO curve is
scikit-learn's roc_curve with each defect pixel weighted 1 / (regions x its region's size).
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
METRIC_TITLES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO@0.3", "f1_max": "F1-max"}


def _check_pair(labels: np.ndarray, scores: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"{what}: {labels.size} labels but {scores.size} scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what}: scores contain NaN or infinity")
    return labels, scores


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), NaN when only one class is present."""
    labels, scores = _check_pair(labels, scores, "auroc")
    if labels.all() or not labels.any():
        return float("nan")  # sklearn raises here; an undefined metric is NaN in the report
    return float(roc_auc_score(labels, scores))


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return auroc(labels, scores)


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """AUROC over every pixel: masks (N,H,W) 0/1, maps (N,H,W)."""
    if masks.shape != maps.shape:
        raise ValueError(f"pixel_auroc: masks {masks.shape} and maps {maps.shape} differ in shape")
    return auroc(masks.reshape(-1) > 0, maps.reshape(-1))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(max F1, its threshold t): predicted positive when score >= t. NaN when no positives."""
    labels, scores = _check_pair(labels, scores, "f1")
    if not labels.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))  # among equal F1s the highest threshold
    return float(f1[best]), float(thresholds[best])


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    return best_f1(labels, scores)[0]


def region_labels(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (8-connectivity) of each mask, numbered 1..K across all images."""
    regions = np.zeros(masks.shape, dtype=np.int32)
    total = 0
    for i, mask in enumerate(masks):
        count, labelled = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
        if count > 1:
            regions[i] = np.where(labelled > 0, labelled + total, 0)
            total += count - 1
    return regions, total


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to `fpr_limit` (see the module docstring)."""
    if masks.shape != maps.shape:
        raise ValueError(f"aupro: masks {masks.shape} and maps {maps.shape} differ in shape")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"aupro: fpr_limit must be in (0, 1], got {fpr_limit}")
    regions, count = region_labels(masks)
    negatives = int((regions == 0).sum())
    if count == 0 or negatives == 0:
        return float("nan")
    region_sizes = np.bincount(regions.reshape(-1), minlength=count + 1).astype(np.float64)
    # Weighting each defect pixel by 1 / (K * size of its region) turns the ROC curve's TPR into
    # PRO (the mean per-region overlap); normal pixels weigh 1, so FPR stays the pixel fraction.
    weights = np.ones(count + 1, np.float64)
    weights[1:] = 1.0 / (count * region_sizes[1:])
    flat_regions = regions.reshape(-1)
    fpr, pro, _ = roc_curve(flat_regions > 0, maps.reshape(-1).astype(np.float32),
                            sample_weight=weights[flat_regions], drop_intermediate=False)
    inside = fpr <= fpr_limit
    x, y = fpr[inside], pro[inside]
    if x[-1] < fpr_limit and inside.sum() < fpr.size:
        nxt = int(inside.sum())  # first point past the limit: interpolate the curve at the limit
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x, y = np.append(x, fpr_limit), np.append(y, y_limit)
    return float(auc(x, y) / fpr_limit)
