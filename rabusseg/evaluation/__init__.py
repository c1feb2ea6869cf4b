"""Evaluation: per-image metrics, split summaries, the evaluation runner and HTML reports.

``binary_metrics`` and ``summarize`` are plain numpy; the torch- and matplotlib-heavy parts
(``evaluate_model``, ``evaluate_checkpoint``, ``evaluation_split``, ``write_evaluation``,
``render_run_report``) are imported on first use so that ``import rabusseg.evaluation`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rabusseg.evaluation.aggregate import MetricStats, Summary, metric_mean, summarize
from rabusseg.evaluation.metrics import METRIC_NAMES, binary_metrics, pooled_dice

__all__ = [
    "METRIC_NAMES",
    "MetricStats",
    "Summary",
    "metric_mean",
    "binary_metrics",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluation_split",
    "pooled_dice",
    "render_run_report",
    "summarize",
    "write_evaluation",
]

_LAZY = {
    "evaluate_model": "rabusseg.evaluation.runner",
    "evaluate_checkpoint": "rabusseg.evaluation.runner",
    "evaluation_split": "rabusseg.evaluation.runner",
    "write_evaluation": "rabusseg.evaluation.output",
    "render_run_report": "rabusseg.evaluation.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rabusseg.evaluation' has no attribute {name!r}")
