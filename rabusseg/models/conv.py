"""Convolutions with exact fast paths for what oneDNN runs badly: dilation on small maps, bf16 depthwise.

Why: the CPU presets train on 160 px crops, so the output-stride-16 grid is 10 x 10, while the
ASPP dilations are 6, 12 and 18 and MobileNetV2's last blocks are dilated by 2.  oneDNN runs
these shapes badly: the backward of a 3x3 convolution with dilation 12 on a 10 x 10 map costs
as much as a dense one although every tap but the centre reads zero padding, and a depthwise
convolution with dilation 2 is several times slower than the same one without dilation.

Both rewrites compute the same function (up to float summation order):

* **Tap pruning.**  With "same" padding, a kernel row (column) whose offset is at least the
  map's height (width) only ever reads padding.  When the dilation reaches the map size along
  an axis, only the centre row (column) of the kernel is applied, as a smaller convolution.
* **Space to batch** (depthwise only).  A convolution with dilation d equals the undilated one
  applied to each of the d x d phase-shifted sub-grids of the map (the classic atrous trick);
  the map is padded with zeros to a multiple of d first, which changes nothing in the kept
  outputs.  For channels-last maps the shuffle is one copy of whole channel vectors.

Traced (ONNX) and scripted graphs use the plain convolution: the rewrites depend on the input
size, which a trace would freeze.  ``rewrites = False`` switches them off (benchmarks compare).

Under CPU bf16 autocast, depthwise convolutions run in float32: oneDNN's bf16 depthwise
backward was twice as slow as float32 here, while the dense 1x1 and 3x3 convolutions around
them gain from bf16 (AMX).  This is a precision policy, not an approximation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Rewrite = Literal["plain", "centre_taps", "space_to_batch"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) with the exact small-map rewrites and
    float32 depthwise under CPU autocast."""

    rewrites: bool = True

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels

    def rewrite_for(self, h: int, w: int) -> Rewrite:
        """Which form runs on an ``h x w`` map: ``plain``, ``centre_taps`` or ``space_to_batch``."""
        k_h, k_w = self.kernel_size
        d_h, d_w = self.dilation
        if not (
            self.rewrites
            and self.stride == (1, 1)
            and self.padding_mode == "zeros"
            and k_h % 2 == 1
            and k_w % 2 == 1
            and self.padding == (d_h * (k_h // 2), d_w * (k_w // 2))
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export()
        ):
            return "plain"
        if (k_h > 1 and d_h >= h) or (k_w > 1 and d_w >= w):
            return "centre_taps"
        if self.depthwise and d_h == d_w > 1:
            return "space_to_batch"
        return "plain"

    def forward(self, x: Tensor) -> Tensor:
        if self.depthwise and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        rewrite = self.rewrite_for(h, w)
        if rewrite == "centre_taps":
            d_h, d_w = self.dilation
            return self._centre_taps(x, self.kernel_size[0] > 1 and d_h >= h, self.kernel_size[1] > 1 and d_w >= w)
        if rewrite == "space_to_batch":
            return self._space_to_batch(x, self.dilation[0])
        return super().forward(x)

    def _centre_taps(self, x: Tensor, rows: bool, cols: bool) -> Tensor:
        """The convolution restricted to the kernel rows/columns that can see the map."""
        k_h, k_w = self.kernel_size
        weight = self.weight
        padding = list(self.padding)
        dilation = list(self.dilation)
        if rows:
            weight, padding[0], dilation[0] = weight[:, :, k_h // 2 : k_h // 2 + 1], 0, 1
        if cols:
            weight, padding[1], dilation[1] = weight[:, :, :, k_w // 2 : k_w // 2 + 1], 0, 1
        return F.conv2d(x, weight, self.bias, 1, tuple(padding), tuple(dilation), self.groups)

    def _space_to_batch(self, x: Tensor, d: int) -> Tensor:
        """Dilation d as an undilated convolution over the d*d phase grids (exact)."""
        b, c, h, w = x.shape
        pad_h, pad_w = -h % d, -w % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros, as the implicit padding would read
        hh, ww = (h + pad_h) // d, (w + pad_w) // d
        padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # (B, H, W, C) in memory: move whole channel vectors, one copy each way.
            phases = x.permute(0, 2, 3, 1).reshape(b, hh, d, ww, d, c).permute(0, 2, 4, 1, 3, 5)  # (B, d, d, hh, ww, C)
            xs = phases.reshape(b * d * d, hh, ww, c).permute(0, 3, 1, 2)  # (B*d*d, C, hh, ww), channels-last
            y = F.conv2d(xs, self.weight, self.bias, 1, padding, 1, self.groups)  # (B*d*d, C', hh, ww)
            co = y.shape[1]
            y = y.permute(0, 2, 3, 1).reshape(b, d, d, hh, ww, co).permute(0, 3, 1, 4, 2, 5)  # (B, hh, d, ww, d, C')
            out = y.reshape(b, hh * d, ww * d, co).permute(0, 3, 1, 2)  # (B, C', H, W), channels-last
        else:
            xs = x.reshape(b, c, hh, d, ww, d).permute(0, 3, 5, 1, 2, 4).reshape(b * d * d, c, hh, ww)
            y = F.conv2d(xs, self.weight, self.bias, 1, padding, 1, self.groups)  # (B*d*d, C', hh, ww)
            co = y.shape[1]
            out = y.reshape(b, d, d, co, hh, ww).permute(0, 3, 4, 1, 5, 2).reshape(b, co, hh * d, ww * d)
        return out[:, :, :h, :w] if pad_h or pad_w else out


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
           bias: bool = False) -> nn.Conv2d:  # fmt: skip
    """A convolution with "same" padding: :class:`Conv2d` when dilated or grouped, else ``nn.Conv2d``."""
    cls = Conv2d if dilation > 1 or groups > 1 else nn.Conv2d
    padding = (kernel - 1) // 2 * dilation
    return cls(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=bias)


def set_conv_rewrites(module: nn.Module, enabled: bool) -> int:
    """Switch the dilation rewrites of every :class:`Conv2d` in ``module``; returns how many there are."""
    convs = [m for m in module.modules() if isinstance(m, Conv2d)]
    for conv in convs:
        conv.rewrites = enabled
    return len(convs)
