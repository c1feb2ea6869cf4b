"""Learning-rate schedule: poly decay per iteration (METHOD section 3)."""

from __future__ import annotations

import math

from rabusseg.config import OptimConfig


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = OptimConfig().poly_power) -> float:
    """``base_lr * (1 - step / total_steps) ** power``; ``step`` counts from 0.

    Clamped at 0 past the end so a run extended by ``max_steps`` never gets a negative rate.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    progress = min(max(step, 0) / total_steps, 1.0)
    return base_lr * (1.0 - progress) ** power


def rampup(step: int, length: int) -> float:
    """Sigmoid-shaped ramp ``exp(-5 (1 - t)^2)`` from about 0.007 to 1 over ``length`` steps (t = step / length).

    The mean-teacher ramp (Laine & Aila; Tarvainen & Valpola): the unsupervised term grows while
    the teacher's pseudo-labels improve.  ``length <= 0``: no ramp (always 1).
    """
    if length <= 0:
        return 1.0
    t = min(max(step, 0) / length, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
