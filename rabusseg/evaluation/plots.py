"""PNG figures for the HTML reports, drawn with matplotlib's object API (no pyplot state).

Figures are built on :class:`matplotlib.figure.Figure` directly, which renders with the Agg
backend without touching the global pyplot machinery: safe in worker threads, headless servers
and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

Series = tuple[Sequence[float], Sequence[float]]
"""``(x, y)`` of one curve."""

GT_COLOR = "#22c55e"
PRED_COLOR = "#ef4444"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_histogram(values: Sequence[float], path: Path, *, xlabel: str = "Dice", bins: int = 20) -> Path:
    """Histogram of a per-image score in [0, 1] (NaN dropped), with the mean and median marked."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.hist(arr, bins=np.linspace(0.0, 1.0, bins + 1), color="#3b82f6", edgecolor="white")
    if arr.size:
        ax.axvline(arr.mean(), color="black", linestyle="--", label=f"mean {arr.mean():.3f}")
        ax.axvline(np.median(arr), color="gray", linestyle=":", label=f"median {np.median(arr):.3f}")
        ax.legend(loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(f"{xlabel} per image (n = {arr.size})")
    return _save(fig, path)


def plot_curves(panels: Mapping[str, Mapping[str, Series]], path: Path, *, xlabel: str = "step") -> Path:
    """One subplot per panel title, one line per labelled series; empty panels are skipped."""
    panels = {t: s for t, s in panels.items() if any(len(x) for x, _ in s.values())}
    n = max(1, len(panels))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax, (title, series) in zip(axes, panels.items()):
        for label, (x, y) in series.items():
            ax.plot(x, y, label=label, marker="o" if len(x) < 20 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center")
    fig.tight_layout()
    return _save(fig, path)


def plot_cases(
    cases: Sequence[tuple[str, float, np.ndarray, np.ndarray, np.ndarray]], path: Path, *, title: str
) -> Path:
    """A row of ``(id, dice, image, gt, pred)`` panels: the image with GT and prediction contours."""
    n = max(1, len(cases))
    fig = Figure(figsize=(3.2 * n, 3.6))
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).reshape(-1)
    for ax, (image_id, dice, image, gt, pred) in zip(axes, cases):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        for mask, color in ((gt, GT_COLOR), (pred, PRED_COLOR)):
            if mask.any():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.5)
        ax.set_title(f"{image_id}\nDice {dice:.3f}", fontsize="small")
        ax.set_axis_off()
    if not cases:
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no cases", ha="center", va="center")
    fig.suptitle(f"{title}  (green: ground truth, red: prediction)", fontsize="medium")
    return _save(fig, path)
