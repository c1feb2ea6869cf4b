"""Split-level summaries of per-image metric rows: mean, spread, bootstrap interval, per class.

A summary is plain JSON types (undefined numbers are ``None``) so it can go straight into
``summary.json`` and into a checkpoint.  Layout::

    {"n_images": int,
     "dice": {"mean", "std", "median", "ci95": [lo, hi], "n", "n_nan"}, ... one per metric ...,
     "pooled_dice": float,            # over all pixels of all images
     "empty_cases": {"both_empty": k, "empty_gt": k, "empty_pred": k},
     "per_class": {"benign": {same keys without per_class}, ...},
     "bootstrap": {"n_resamples", "seed", "method": "percentile"}}

``std`` is the sample standard deviation (``ddof=1``).  ``ci95`` is the percentile bootstrap
interval of the mean: images are resampled with replacement, which says how much the mean would
move on another test set drawn like this one.  NaN values (see :mod:`rabusseg.evaluation.metrics`)
are left out of every statistic of that metric and counted in ``n_nan``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from rabusseg.evaluation.metrics import EMPTY_CASES, METRIC_NAMES, pooled_dice

UNKNOWN_CLASS = "unknown"


class MetricStats(TypedDict):
    """One metric over the images of a split (NaN skipped and counted)."""

    mean: float | None
    std: float | None
    median: float | None
    ci95: list[float | None]
    n: int
    n_nan: int


class Summary(TypedDict, total=False):
    """What :func:`summarize` returns (and ``summary.json`` holds): one :class:`MetricStats` per metric."""

    n_images: int
    pooled_dice: float | None
    empty_cases: dict[str, int]
    per_class: dict[str, Any]
    bootstrap: dict[str, Any]
    dice: MetricStats
    iou: MetricStats
    precision: MetricStats
    recall: MetricStats
    specificity: MetricStats
    hd95: MetricStats
    assd: MetricStats
    context: dict[str, Any]  # evaluate_checkpoint's settings (split, size, ...), as in summary.json


def metric_mean(summary: Mapping[str, Any] | None, metric: str = "dice") -> float | None:
    """``summary[metric]["mean"]``, or ``None`` when the summary or the metric is missing."""
    stats = (summary or {}).get(metric)
    return stats.get("mean") if isinstance(stats, Mapping) else None


def _num(x: float) -> float | None:
    """A JSON-safe float: NaN/inf become ``None``."""
    return float(x) if math.isfinite(x) else None


def bootstrap_mean_ci(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, all resamples drawn in one array."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 1:
        return float(values[0]), float(values[0])
    if n == 0 or n_resamples < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))  # (R, n) resampled image indices
    means = values[idx].mean(axis=1)  # (R,)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def describe(values: Sequence[float], n_bootstrap: int = 1000, seed: int = 0) -> MetricStats:
    """``mean, std, median, ci95, n, n_nan`` of one metric over images (NaN skipped and counted)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = arr[~np.isnan(arr)]
    n = int(finite.size)
    if n == 0:
        return {"mean": None, "std": None, "median": None, "ci95": [None, None], "n": 0, "n_nan": int(arr.size)}
    lo, hi = bootstrap_mean_ci(finite, n_bootstrap, seed)
    return {
        "mean": _num(finite.mean()),
        "std": _num(finite.std(ddof=1)) if n > 1 else None,
        "median": _num(float(np.median(finite))),
        "ci95": [_num(lo), _num(hi)],
        "n": n,
        "n_nan": int(arr.size - n),
    }


def _metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The standard metrics present in the rows, in report order."""
    present = set().union(*(r.keys() for r in rows)) if rows else set(METRIC_NAMES)
    return [m for m in METRIC_NAMES if m in present]


def _group_summary(rows: Sequence[dict[str, Any]], n_bootstrap: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_images": len(rows)}
    for name in _metric_names(rows):
        column = [float(r.get(name, math.nan)) for r in rows]
        out[name] = describe(column, n_bootstrap, seed)
    has_counts = bool(rows) and all(k in r for r in rows for k in ("tp", "fp", "fn"))
    out["pooled_dice"] = _num(pooled_dice(rows)) if has_counts else None
    cases = [r.get("empty_case", "none") for r in rows]
    out["empty_cases"] = {case: cases.count(case) for case in EMPTY_CASES}
    return out


def summarize(rows: Sequence[dict[str, Any]], n_bootstrap: int = 1000, seed: int = 0) -> Summary:
    """Summary of per-image rows (``id``, ``class``, metrics, counts, ``empty_case``): see the module docstring."""
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    rows = list(rows)
    summary = _group_summary(rows, n_bootstrap, seed)
    classes: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        classes.setdefault(str(r.get("class") or UNKNOWN_CLASS), []).append(r)
    summary["per_class"] = {c: _group_summary(classes[c], n_bootstrap, seed) for c in sorted(classes)}
    summary["bootstrap"] = {"n_resamples": n_bootstrap, "seed": seed, "method": "percentile"}
    return summary
