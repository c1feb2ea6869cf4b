"""The one resize rule for logits and feature maps: bilinear, align_corners=True (METHOD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample_logits(logits: Tensor, size: tuple[int, int] | list[int] | torch.Size) -> Tensor:
    """Resize (B, C, h, w) to (B, C, *size) bilinearly with align_corners=True.

    Used for logits (to the label, crop or original image size) and for feature maps; returns
    the input itself when it already has that size.  While tracing (ONNX export) the size stays
    symbolic: ``int()`` would freeze the traced size into a ``--dynamic`` graph.
    """
    if torch.jit.is_tracing():
        return F.interpolate(logits, size=(size[0], size[1]), mode="bilinear", align_corners=True)
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
