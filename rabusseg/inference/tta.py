"""Softmax probabilities at the input size, optionally averaged over test-time augmentations.

This is the one code path that turns a network's quarter-resolution logits into per-pixel
probabilities: evaluation (:mod:`rabusseg.evaluation`), ``predict``, ranking and the ONNX check
all call it, so resizing and augmentation cannot drift apart between them.

Test-time augmentation (TTA) runs every combination of {identity, horizontal flip} x ``scales``,
resizes each view's logits back to the input size (bilinear, ``align_corners=True``, the same rule
as :func:`rabusseg.models.upsample_logits`), takes the softmax, undoes the flip and averages.
Averaging *probabilities* rather than logits keeps a confident view from drowning the others; the
per-pixel variance over views is a cheap measure of how much the views disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rabusseg.models.resize import upsample_logits

DEFAULT_SCALES: tuple[float, ...] = (0.75, 1.0, 1.25)


def logits_of(output: object) -> torch.Tensor:
    """The segmentation logits of a forward pass: a tensor, or an object with ``.pred``."""
    if isinstance(output, torch.Tensor):
        return output
    pred = getattr(output, "pred", None)
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"model output {type(output).__name__} has no tensor 'pred' field")
    return pred


def _views(flip: bool, scales: Sequence[float]) -> Iterator[tuple[bool, float]]:
    for scale in scales:
        yield False, float(scale)
        if flip:
            yield True, float(scale)


def _view_probabilities(model: nn.Module, images: torch.Tensor, flipped: bool, scale: float) -> torch.Tensor:
    """Softmax of one augmented view, mapped back to the input frame."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    x = torch.flip(images, dims=(-1,)) if flipped else images
    if scale != 1.0:
        scaled = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        x = upsample_logits(x, scaled)
    logits = upsample_logits(logits_of(model(x)).float(), size)  # (B, K, H, W)
    probs = torch.softmax(logits, dim=1)
    return torch.flip(probs, dims=(-1,)) if flipped else probs


def _check_inputs(images: torch.Tensor, scales: Sequence[float]) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"TTA scales must be positive numbers, got {tuple(scales)}")


def _model_device(model: nn.Module) -> torch.device | None:
    param = next(iter(model.parameters()), None)
    return None if param is None else param.device


def predict_probabilities_with_variance(
    model: nn.Module,
    images: torch.Tensor,
    *,
    tta: bool = False,
    flip: bool = True,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax ``(B, K, H, W)`` over the views and its per-pixel variance over the views.

    Without ``tta`` there is one view and the variance is zero.  The model is run in eval mode
    and put back in the mode it was in (evaluation may be called in the middle of training).
    """
    views = list(_views(flip, scales)) if tta else [(False, 1.0)]
    _check_inputs(images, [s for _, s in views])
    device = _model_device(model)
    if device is not None:
        images = images.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            total: torch.Tensor | float = 0.0
            total_sq: torch.Tensor | float = 0.0
            for flipped, scale in views:
                p = _view_probabilities(model, images, flipped, scale)
                total = total + p
                total_sq = total_sq + p * p
            n = float(len(views))
            mean = torch.as_tensor(total / n)
            variance = torch.as_tensor(total_sq / n - mean * mean).clamp_min_(0.0)  # population variance over views
    finally:
        model.train(was_training)
    return mean, variance


def predict_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    *,
    tta: bool = False,
    flip: bool = True,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> torch.Tensor:
    """Softmax probabilities ``(B, K, H, W)`` at the size of ``images`` (normalised ``(B, 3, H, W)``)."""
    mean, _ = predict_probabilities_with_variance(model, images, tta=tta, flip=flip, scales=scales)
    return mean


def entropy_map(probabilities: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-pixel Shannon entropy ``(B, H, W)`` of ``(B, K, H, W)`` probabilities, normalised to [0, 1].

    Dividing by ``log K`` makes the number comparable between binary and multi-class models.
    """
    k = probabilities.shape[1]
    ent = -(probabilities * torch.log(probabilities.clamp_min(eps))).sum(dim=1)
    return (ent / torch.log(torch.tensor(float(max(k, 2))))).clamp_(0.0, 1.0)


def resize_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Map ``(B, K, h, w)`` probabilities computed at the inference size back to an original ``size``.

    Bilinear interpolation of probabilities keeps them in [0, 1] and summing to one, so masks
    taken at the original resolution (``p_lesion > 0.5``) match ``argmax`` for two classes.
    """
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    return F.interpolate(probabilities, size=tuple(size), mode="bilinear", align_corners=False)
