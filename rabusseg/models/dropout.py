"""Element-wise dropout whose random numbers cost a third of torch's on a CPU.

torch draws one number from its (sequential) CPU generator per element: 13-15 ms for the
8 x 64 x 40 x 40 decoder maps of a cpu_small step, about 5% of the step (docs/speed.md).  One
int64 draw carries 63 uniform bits, so here each draw gives three 21-bit uniforms: a third of
the generator calls for the same distribution (the drop probability rounded to a multiple of
2**-21).  It uses torch's default generator, as ``nn.Dropout`` does, so seeding and resuming a
run behave alike.  On other devices (CUDA's dropout is one fused kernel) it is ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_BITS = 21
_MASK = (1 << _BITS) - 1


def keep_mask_like(x: Tensor, p: float) -> Tensor:
    """A bool tensor shaped and laid out like ``x`` (contiguous or channels-last): True with
    probability ``1 - p``, independently."""
    n = x.numel()
    draws = torch.empty((n + 2) // 3, dtype=torch.int64, device=x.device).random_()  # 63 uniform bits each
    uniforms = torch.cat((draws & _MASK, (draws >> _BITS) & _MASK, draws >> (2 * _BITS)))[:n]  # (n,) in [0, 2**21)
    keep = torch.empty_like(x, dtype=torch.bool)  # x's strides (channels-last stays channels-last)
    keep.as_strided((n,), (1,)).copy_(uniforms >= round(p * (1 << _BITS)))  # dense storage, any element order
    return keep


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout`` with the cheaper random numbers on CPU (same scaling by ``1 / (1 - p)``)."""
    if not training or p == 0.0:
        return x
    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    if x.device.type != "cpu" or not dense:
        return F.dropout(x, p, training=True)
    return x * keep_mask_like(x, p).to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (no parameters: state dicts and ONNX graphs are unchanged)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
