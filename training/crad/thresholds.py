"""Decision thresholds: the rules calibration chooses from, and the trade-off table that shows a
quality engineer what each threshold costs (false rejects of good parts against missed defects).

A part is NG when its score >= the threshold (the daemon's `normalized >= 0.5`).

Rules:
- "frr" (good images only, the default): the lowest threshold whose false-reject rate on new
  good parts is at most `target_frr` with probability `confidence`, from the held-out normal
  scores. With enough normals (n >= log(1 - confidence) / log(1 - target_frr), e.g. 299 for
  1 % at 95 %) this is distribution-free: the r-th smallest normal score, r the smallest with
  P(Binomial(n, 1 - target_frr) <= r - 1) >= confidence (a one-sided order-statistic tolerance
  bound). With fewer normals the order statistics cannot reach that far into the tail, so the
  bound is extrapolated from a fitted log-normal tail (one-sided normal tolerance bound on the
  log scores; Natrella's k-factor) and says so. Below MIN_FIT normals no fit is credible: the
  "max-margin" rule is used instead, and recorded.
- "max-margin": the `quantile` of the normal scores plus `margin` x their range (the old default:
  the largest normal plus 10 %).
- "f1" (labelled defects given, their default): the F1-optimal threshold over normal and defect scores.
- "miss-rate": the highest threshold that misses at most `target_miss` of the labelled defects.
- "balanced" (good images only, with synthetic anomalies drawn on them: calibration's default
  then): the threshold that minimises the estimated false-reject rate (the fitted tail of the
  normal scores, as the "frr" rule fits it) plus the miss rate on the synthetic anomalies, equal
  weights. It is one of the synthetic scores (the miss rate only changes there). Below MIN_FIT
  normals no tail is credible: the "frr" rule is used instead, and recorded.

Synthetic anomalies are not real defects: their miss rate says what a threshold lets through of
defects like them (tiny to large patches, blends, spots, scratches), not the line's true miss rate.
SYNTHETIC_WARNING is the miss rate above which calibration warns that a threshold passes most.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from scipy.stats import binom

from .metrics import best_f1

RULES = ("auto", "frr", "max-margin", "f1", "miss-rate", "balanced")
DEFAULT_TARGET_FRR = 0.01
DEFAULT_CONFIDENCE = 0.95
DEFAULT_TARGET_MISS = 0.05
DEFAULT_QUANTILE = 1.0
DEFAULT_MARGIN = 0.1
MIN_FIT = 10
SYNTHETIC_WARNING = 0.5


def normals_needed(target_frr: float, confidence: float) -> int:
    """The fewest normals for which the largest one bounds the FRR (the distribution-free limit)."""
    return int(math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_frr)))


def max_margin_threshold(values: np.ndarray, quantile: float = DEFAULT_QUANTILE, margin: float = DEFAULT_MARGIN) -> tuple[float, dict]:
    values = np.asarray(values, np.float64).reshape(-1)
    threshold = float(np.quantile(values, quantile)) + margin * float(values.max() - values.min())
    return threshold, {"rule": "max-margin", "quantile": quantile, "margin": margin,
                       "text": f"normal quantile {quantile:g} + {margin:g} x (max - min)"}


def frr_threshold(normal: np.ndarray, target_frr: float = DEFAULT_TARGET_FRR,
                  confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, dict]:
    """The "frr" rule (see the module docstring): (threshold, how it was obtained)."""
    if not (0 < target_frr < 1 and 0 < confidence < 1):
        raise ValueError(f"target FRR and confidence must be in (0, 1), got {target_frr} and {confidence}")
    values = np.sort(np.asarray(normal, np.float64).reshape(-1))
    n = values.size
    needed = normals_needed(target_frr, confidence)
    base = {"rule": "frr", "target_frr": target_frr, "confidence": confidence, "normals": n, "normals_needed": needed}
    if n >= needed:
        # smallest r with P(at most r - 1 of n normals fall below the (1 - FRR) quantile) >= confidence
        r = int(np.argmax(binom.cdf(np.arange(n + 1), n, 1.0 - target_frr) >= confidence - 1e-12)) + 1
        return float(values[r - 1]), {**base, "method": "order statistic", "order": r,
                                      "text": f"FRR <= {target_frr:g} at {confidence:g} confidence: normal score {r} of {n} (distribution-free)"}
    if n < MIN_FIT:
        threshold, info = max_margin_threshold(values)
        return threshold, {**base, "method": "max-margin", "text": f"only {n} normals (< {MIN_FIT}) for an FRR bound: {info['text']}"}
    positive = bool(values.min() > 0)
    sample = np.log(values) if positive else values
    z_p, z_g = NormalDist().inv_cdf(1.0 - target_frr), NormalDist().inv_cdf(confidence)
    a = 1.0 - z_g ** 2 / (2.0 * (n - 1))
    b = z_p ** 2 - z_g ** 2 / n
    k = (z_p + math.sqrt(z_p ** 2 - a * b)) / a
    bound = float(sample.mean() + k * sample.std(ddof=1))
    tail = "log-normal" if positive else "normal"
    return (math.exp(bound) if positive else bound), {
        **base, "method": f"{tail} tail", "k": k,
        "text": f"FRR <= {target_frr:g} at {confidence:g} confidence: fitted {tail} tail of {n} normals "
                f"(fewer than the {needed} a distribution-free bound needs)"}


def estimated_frr(normal: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, str]:
    """P(a new good part scores >= t) for each t, from a normal fit of the (log, when all positive)
    normal scores: the tail the "frr" rule extrapolates with. Returns (rates, the fit in words)."""
    values = np.asarray(normal, np.float64).reshape(-1)
    points = np.asarray(thresholds, np.float64).reshape(-1)
    positive = bool(values.min() > 0 and points.min() > 0)
    sample, at = (np.log(values), np.log(points)) if positive else (values, points)
    mean, std = float(sample.mean()), max(float(sample.std(ddof=1)), 1e-12)
    normal_dist = NormalDist(mean, std)
    rates = np.array([1.0 - normal_dist.cdf(float(t)) for t in at])
    return rates, f"{'log-normal' if positive else 'normal'} fit of {values.size} normal scores"


def balanced_threshold(normal: np.ndarray, synthetic: np.ndarray, target_frr: float = DEFAULT_TARGET_FRR,
                       confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, dict]:
    """The "balanced" rule (module docstring): (threshold, how it was obtained)."""
    normal = np.asarray(normal, np.float64).reshape(-1)
    synthetic = np.sort(np.asarray(synthetic, np.float64).reshape(-1))
    if synthetic.size == 0:
        raise ValueError("the balanced rule needs scores of synthetic anomalies")
    if normal.size < MIN_FIT:
        threshold, info = frr_threshold(normal, target_frr, confidence)
        return threshold, {**info, "text": f"only {normal.size} normals (< {MIN_FIT}) to estimate a false-reject rate "
                                           f"for the balanced rule: {info['text']}"}
    # at the j-th smallest synthetic score (0-based) exactly j synthetic anomalies fall below
    candidates = np.append(synthetic, np.nextafter(synthetic[-1], np.inf))
    frr, fit = estimated_frr(normal, candidates)
    miss = np.searchsorted(synthetic, candidates, side="left") / synthetic.size
    cost = frr + miss
    best = int(np.flatnonzero(cost <= cost.min() + 1e-12)[-1])  # a tie: the higher threshold, fewer false rejects
    return float(candidates[best]), {
        "rule": "balanced", "estimated_frr": float(frr[best]), "synthetic_miss_rate": float(miss[best]),
        "normals": int(normal.size), "synthetic": int(synthetic.size),
        "text": (f"balanced: estimated false-reject rate {100 * frr[best]:.2g} % ({fit}) + missed synthetic anomalies "
                 f"{100 * miss[best]:.3g} % (of {synthetic.size}) is the smallest sum; good images only, so the "
                 f"anomalies are synthetic: defects unlike them may be missed more or less often")}


def f1_threshold(normal: np.ndarray, defect: np.ndarray) -> tuple[float, dict]:
    normal, defect = np.asarray(normal).reshape(-1), np.asarray(defect).reshape(-1)
    labels = np.concatenate([np.zeros(normal.size), np.ones(defect.size)])
    f1, threshold = best_f1(labels, np.concatenate([normal, defect]))
    return threshold, {"rule": "f1", "f1": f1, "text": "F1-optimal over normal and defect scores"}


def miss_threshold(defect: np.ndarray, target_miss: float = DEFAULT_TARGET_MISS) -> tuple[float, dict]:
    """The highest threshold that leaves at most target_miss of the defects below it."""
    if not 0 <= target_miss < 1:
        raise ValueError(f"target miss rate must be in [0, 1), got {target_miss}")
    values = np.sort(np.asarray(defect, np.float64).reshape(-1))
    allowed = int(math.floor(target_miss * values.size + 1e-9))
    return float(values[allowed]), {"rule": "miss-rate", "target_miss": target_miss,
                                    "text": f"misses at most {target_miss:g} of {values.size} labelled defects"}


def choose(rule: str, normal: np.ndarray, defect: np.ndarray | None = None, target_frr: float = DEFAULT_TARGET_FRR,
           confidence: float = DEFAULT_CONFIDENCE, target_miss: float = DEFAULT_TARGET_MISS,
           quantile: float = DEFAULT_QUANTILE, margin: float = DEFAULT_MARGIN,
           synthetic: np.ndarray | None = None) -> tuple[float, dict]:
    """(threshold, rule record) by the named rule; "auto" is f1 with defects, else balanced with
    synthetic anomalies, else frr."""
    has_defects = defect is not None and np.asarray(defect).size > 0
    has_synthetic = synthetic is not None and np.asarray(synthetic).size > 0
    if rule == "auto":
        rule = "f1" if has_defects else ("balanced" if has_synthetic else "frr")
    if rule in ("f1", "miss-rate") and not has_defects:
        raise ValueError(f"the {rule} rule needs labelled defect images")
    if rule == "balanced":
        if not has_synthetic:
            raise ValueError("the balanced rule needs synthetic anomalies (crad calibrate --synthetic N, N > 0)")
        return balanced_threshold(normal, synthetic, target_frr, confidence)
    if rule == "frr":
        return frr_threshold(normal, target_frr, confidence)
    if rule == "max-margin":
        return max_margin_threshold(normal, quantile, margin)
    if rule == "f1":
        return f1_threshold(normal, defect)
    if rule == "miss-rate":
        return miss_threshold(defect, target_miss)
    raise ValueError(f"unknown threshold rule {rule!r} (choose from {', '.join(RULES)})")


# ----------------------------------------------------------------------------- the trade-off


def tradeoff_row(name: str, threshold: float, normal: np.ndarray, defect: np.ndarray,
                 synthetic: np.ndarray | None = None) -> dict:
    """What one threshold does to these scores: false rejects (good >= t) and misses (defect < t);
    with synthetic anomaly scores, their misses too."""
    normal, defect = np.asarray(normal).reshape(-1), np.asarray(defect).reshape(-1)
    rejects, missed = int((normal >= threshold).sum()), int((defect < threshold).sum())
    row = {"threshold_rule": name, "threshold": float(threshold),
           # None, not NaN, for an empty side: the row goes into JSON (and the model's metadata)
           "false_rejects": rejects, "good": int(normal.size), "false_reject_rate": rejects / normal.size if normal.size else None,
           "missed": missed, "defect": int(defect.size), "miss_rate": missed / defect.size if defect.size else None}
    if synthetic is not None:
        synthetic = np.asarray(synthetic).reshape(-1)
        missed_synthetic = int((synthetic < threshold).sum())
        row.update({"synthetic_missed": missed_synthetic, "synthetic": int(synthetic.size),
                    "synthetic_miss_rate": missed_synthetic / synthetic.size if synthetic.size else None})
    return row


def tradeoff_table(normal: np.ndarray, defect: np.ndarray, chosen: dict[str, float] | None = None,
                   synthetic: np.ndarray | None = None) -> list[dict]:
    """Rows for the given thresholds (`chosen`: name -> threshold) and the usual alternatives,
    sorted by threshold: each row trades false rejects against missed defects (and, with
    `synthetic` scores, missed synthetic anomalies; the balanced threshold is then a row)."""
    normal = np.asarray(normal, np.float64).reshape(-1)
    defect = np.asarray(defect, np.float64).reshape(-1)
    candidates = dict(chosen or {})
    if synthetic is not None and np.asarray(synthetic).size and normal.size >= MIN_FIT:
        candidates["balanced (est. FRR + synthetic misses)"] = balanced_threshold(normal, synthetic)[0]
    if normal.size >= 2:
        candidates["max + 10 % of range (old default)"] = max_margin_threshold(normal)[0]
        for frr in (0.001, 0.01, 0.05):
            threshold, info = frr_threshold(normal, frr, DEFAULT_CONFIDENCE)
            candidates[f"FRR <= {100 * frr:g} % ({100 * DEFAULT_CONFIDENCE:g} % conf., {info['method']})"] = threshold
    if defect.size and normal.size:
        candidates["F1-optimal"] = f1_threshold(normal, defect)[0]
    if defect.size:
        for miss in (0.01, 0.05, 0.1):
            candidates[f"miss <= {100 * miss:g} %"] = miss_threshold(defect, miss)[0]
    rows = [tradeoff_row(name, t, normal, defect, synthetic) for name, t in candidates.items()]
    return sorted(rows, key=lambda row: row["threshold"])


def _share(count: int, total: int) -> str:
    return f"{count} / {total} ({100 * count / total:.1f} %)" if total else "n/a"


def tradeoff_markdown(rows: list[dict]) -> str:
    synthetic = any("synthetic" in row for row in rows)
    extra_head, extra_rule = (" missed synthetic anomalies |", " --- |") if synthetic else ("", "")
    lines = ["| threshold rule | threshold | false rejects (good) | missed defects |" + extra_head,
             "| --- | --- | --- | --- |" + extra_rule]
    for row in rows:
        extra = f" {_share(row['synthetic_missed'], row['synthetic'])} |" if "synthetic" in row else (" n/a |" if synthetic else "")
        lines.append(f"| {row['threshold_rule']} | {row['threshold']:.6g} | {_share(row['false_rejects'], row['good'])} "
                     f"| {_share(row['missed'], row['defect'])} |" + extra)
    return "\n".join(lines) + "\n"
