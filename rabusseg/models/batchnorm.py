"""Precise BatchNorm statistics: a trained network's running mean and variance re-estimated on chosen images.

Why: during training every BatchNorm layer keeps an exponential average (momentum 0.1, so about
the last ten steps) of the statistics of training batches.  On a CPU recipe those are a few
randomly scaled crops with black padding (and, for the semi-supervised methods, colour-jittered
CutMix images), not the whole, unpadded images that inference sees.  Averaging the statistics
of the inference-like inputs over many images instead (Wu and Johnson, "Rethinking 'Batch' in
BatchNorm", 2021) costs a few seconds of forward passes and changes no learned weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer (1d/2d/3d, SyncBatchNorm) of ``model`` that tracks running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor],
                          forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> int:  # fmt: skip
    """Replace each BatchNorm layer's running mean/var by their average over ``batches``; return the batch count.

    Every other module runs in eval mode (dropout off) and no gradient is recorded; each layer
    averages the per-batch statistics with equal weights (``momentum=None``), so the result does
    not depend on the order of the batches beyond rounding.  The modes and momenta of the model
    are restored afterwards.  ``forward(model, batch)`` defaults to ``model(batch)``.
    """
    call = forward or (lambda net, x: net(x))
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]  # type: ignore[union-attr]
    count = 0
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        with torch.no_grad():
            for batch in batches:
                call(model, batch)
                count += 1
        if count == 0:
            raise ValueError("recalibrate_batchnorm: no batches were given")
    except BaseException:
        for m, (mean, var, tracked) in zip(layers, saved, strict=True):  # leave the model as it was
            m.running_mean.copy_(mean)  # type: ignore[union-attr]
            m.running_var.copy_(var)  # type: ignore[union-attr]
            m.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]
        raise
    finally:
        for m in layers:
            m.momentum = momenta[m]
        for m, training in modes.items():
            m.training = training
    return count
