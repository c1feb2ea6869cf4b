"""Per-image lesion metrics on boolean masks, with written rules for empty masks.

Overlap metrics come from the pixel counts ``tp, fp, fn, tn`` of the lesion class:
Dice ``2tp / (2tp + fp + fn)``, IoU ``tp / (tp + fp + fn)``, precision ``tp / (tp + fp)``,
recall (sensitivity) ``tp / (tp + fn)``, specificity ``tn / (tn + fp)``.

Surface distances use MONAI's edge extraction and exact Euclidean nearest-edge distances
(:func:`monai.metrics.utils.get_edge_surface_distance`): the edge of a mask is the mask minus its
binary erosion, and distances run between pixel centres, scaled by ``spacing`` (row, column).
Reductions follow MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``:

- **HD95** is the larger of the two *directed* 95th percentiles (prediction edge -> ground-truth
  edge, and back), not the 95th percentile of the pooled set of distances.
- **ASSD** is the mean of all distances of both directions pooled together (each edge pixel of
  either mask counts once), not the average of the two directed means.

Empty masks (each image gets an ``empty_case`` label so summaries can count them):

================  ==========================  ===============================================
``empty_case``    situation                   scores
================  ==========================  ===============================================
``none``          both masks non-empty        formulas above
``both_empty``    no lesion, none predicted   dice = iou = precision = recall = 1, hd95 = assd = 0
``empty_gt``      no lesion, some predicted   dice = iou = precision = 0, recall = NaN, hd95 = assd = NaN
``empty_pred``    lesion missed entirely      dice = iou = recall = 0, precision = NaN, hd95 = assd = NaN
================  ==========================  ===============================================

Any other ``0/0`` ratio (e.g. specificity when the lesion fills the image) is NaN.  NaN values
are skipped by :func:`rabusseg.evaluation.aggregate.summarize`, which reports how many it skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "precision", "recall", "specificity", "hd95", "assd")
"""The per-image scores, in report order."""
COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "fn", "tn")
EMPTY_CASES: tuple[str, ...] = ("both_empty", "empty_gt", "empty_pred")

NAN = float("nan")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else NAN


def empty_case(pred_area: float, gt_area: float) -> str:
    """Which empty-mask rule applies: ``none``, ``both_empty``, ``empty_gt`` or ``empty_pred``."""
    if gt_area > 0 and pred_area > 0:
        return "none"
    if gt_area == 0 and pred_area == 0:
        return "both_empty"
    return "empty_gt" if gt_area == 0 else "empty_pred"


def _as_mask(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean or 0/1, got values outside {{0, 1}}")
        arr = arr.astype(bool)
    return arr


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 2 or not all(np.isfinite(values)) or min(values) <= 0:
        raise ValueError(f"spacing must be two positive numbers (row, column), got {tuple(spacing)}")
    return values  # type: ignore[return-value]


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)) -> tuple[float, float]:
    """``(hd95, assd)`` of two non-empty boolean masks, in the units of ``spacing``."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI 1.5+ passes a deprecated argument to itself internally; nothing for us to fix.
        warnings.simplefilter("ignore", FutureWarning)
        _, (d_pred, d_gt), _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)),
            torch.from_numpy(np.ascontiguousarray(gt)),
            distance_metric="euclidean",
            spacing=_check_spacing(spacing),
            symmetric=True,
            warn_empty=False,
        )
    d_pred, d_gt = d_pred.double(), d_gt.double()
    hd95 = max(float(torch.quantile(d_pred, 0.95)), float(torch.quantile(d_gt, 0.95)))
    assd = float(torch.cat([d_pred, d_gt]).mean())
    return hd95, assd


def binary_metrics(pred: Any, gt: Any, spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, Any]:
    """Scores of one predicted lesion mask against its ground truth (see the module docstring).

    Returns the floats named in :data:`METRIC_NAMES`, the pixel counts ``tp, fp, fn, tn`` (so
    that pooled scores can be formed later) and the string ``empty_case``.
    """
    p = _as_mask(pred, "pred")
    g = _as_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    tn = p.size - tp - fp - fn
    case = empty_case(tp + fp, tp + fn)

    out: dict[str, Any] = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "hd95": NAN,
        "assd": NAN,
    }
    if case == "none":
        out["hd95"], out["assd"] = surface_distances(p, g, spacing)
    elif case == "both_empty":
        out.update(dice=1.0, iou=1.0, precision=1.0, recall=1.0, hd95=0.0, assd=0.0)
    else:  # one side empty: no overlap, distances undefined
        out.update(dice=0.0, iou=0.0)
    out.update(tp=tp, fp=fp, fn=fn, tn=tn, empty_case=case)
    return out


def pooled_dice(rows: Iterable[dict[str, Any]]) -> float:
    """Dataset-level Dice: ``2 sum(tp) / (2 sum(tp) + sum(fp) + sum(fn))`` over all pixels of all images.

    Large lesions weigh more than in the mean of per-image Dice.  1.0 when no image has a lesion
    and none is predicted (the ``both_empty`` rule), NaN for no rows.
    """
    counts = np.array([[r["tp"], r["fp"], r["fn"]] for r in rows], dtype=np.float64).reshape(-1, 3)
    if counts.shape[0] == 0:
        return NAN
    tp, fp, fn = counts.sum(axis=0)
    den = 2 * tp + fp + fn
    return float(2 * tp / den) if den > 0 else 1.0
