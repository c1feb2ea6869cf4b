"""Mean-teacher EMA (METHOD section 3): parameters averaged, buffers copied."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay(t: int, max_decay: float = 0.99) -> float:
    """``min(1 - 1 / (t + 1), max_decay)``, ``t`` = optimiser steps since warm-up.

    At ``t = 0`` the decay is 0, so the first update copies the student: the teacher starts as
    the warmed-up student and averages over a growing window until it reaches ``max_decay``.
    """
    return min(1.0 - 1.0 / (t + 1), max_decay)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student`` for parameters; buffers copied.

    BatchNorm running statistics are copied rather than averaged, as in the reference
    mean-teacher implementations: they describe the current student's activations.
    """
    for t_param, s_param in zip(teacher.parameters(), student.parameters(), strict=True):
        t_param.mul_(decay).add_(s_param.detach(), alpha=1.0 - decay)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        t_buf.copy_(s_buf)
