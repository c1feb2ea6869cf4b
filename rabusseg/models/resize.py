"""The one resize rule for logits and feature maps: bilinear, align_corners=True (METHOD)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def upsample_logits(logits: Tensor, size: tuple[int, int] | list[int]) -> Tensor:
    """Resize (B, C, h, w) to (B, C, *size) bilinearly with align_corners=True.

    Used for logits (to the label or original image size) and for feature maps; returns the
    input itself when it already has that size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
