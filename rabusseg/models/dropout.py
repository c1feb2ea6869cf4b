"""Element-wise dropout whose random numbers cost a third of torch's on a CPU.

torch draws one number from its (sequential) CPU generator per element: 13-15 ms for the
8 x 64 x 40 x 40 decoder maps of a cpu_small step (docs/speed.md).  One int64 draw carries 63
uniform bits; read as four int16 words, its three low words are three independent 16-bit
uniforms, so a third of the generator calls give the same distribution (the drop probability
rounded to a multiple of 2**-16), with no arithmetic on the draws (int64 shifts are slow on
CPU).  It uses torch's default generator, as ``nn.Dropout`` does, so seeding and resuming a run
behave alike.  On other devices (CUDA's dropout is one fused kernel) it is ``F.dropout``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_WORDS = 3
"""Uniform int16 words per int64 draw (the fourth holds bit 63, which ``random_`` leaves 0)."""
_LOW_WORDS = slice(0, 3) if sys.byteorder == "little" else slice(1, 4)
"""Where the three low words of an int64 sit in memory."""


def keep_mask_like(x: Tensor, p: float) -> Tensor:
    """A tensor of 0/1 in ``x``'s dtype, shape and layout (contiguous or channels-last): 1 with
    probability ``1 - p``, independently."""
    n = x.numel()
    k = -(-n // _WORDS)
    draws = torch.empty(k, dtype=torch.int64, device=x.device).random_()  # (k,) 63 uniform bits each
    words = draws.view(torch.int16).view(k, 4)[:, _LOW_WORDS]  # (k, 3) uniform on [-2**15, 2**15)
    keep = words >= round(p * 65536) - 32768  # (k, 3) bool, P = 1 - p
    out = torch.empty_like(x)  # x's strides: channels-last stays channels-last
    out.as_strided((n,), (1,)).copy_(keep.view(-1)[:n])  # dense storage, any element order
    return out


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout`` with the cheaper random numbers on CPU (same scaling by ``1 / (1 - p)``)."""
    if not training or p == 0.0:
        return x
    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    if x.device.type != "cpu" or not dense:
        return F.dropout(x, p, training=True)
    return x * keep_mask_like(x, p).mul_(1.0 / (1.0 - p))


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
