"""Convolutions with exact fast paths for what oneDNN runs badly: dilation on small maps, bf16 depthwise.

Why: the CPU presets train on 160 px crops, so the output-stride-16 grid is 10 x 10, while the
ASPP dilations are 6, 12 and 18 and MobileNetV2's last blocks are dilated by 2.  oneDNN runs
these shapes badly: the backward of a 3x3 convolution with dilation 12 on a 10 x 10 map costs
as much as a dense one although every tap but the centre reads zero padding, and a depthwise
convolution with dilation 2 is several times slower than the same one without dilation.

The rewrites compute the same function (up to float summation order):

* **Tap pruning.**  With "same" padding, a kernel row (column) whose offset is at least the
  map's height (width) only ever reads padding.  When the dilation reaches the map size along
  an axis, only the centre row (column) of the kernel is applied, as a smaller convolution.
* **Space to batch** (depthwise only).  A convolution with dilation d equals the undilated one
  applied to each of the d x d phase-shifted sub-grids of the map (the classic atrous trick);
  the map is padded with zeros to a multiple of d first, which changes nothing in the kept
  outputs.  For channels-last maps the shuffle is one copy of whole channel vectors.
* **Live-tap weight gradient** (dense, CPU, channels-last).  When few (output pixel, tap) pairs
  read the map (dilation 6 on cpu_small's 10 x 10 grid: 36%), the weight gradient is summed
  tap by tap over those pairs only; oneDNN's own took 3x as long.

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

Rewrite = Literal["plain", "centre_taps", "space_to_batch", "live_taps_weight_grad"]

LIVE_TAPS_MAX_SHARE = 0.6
"""Use the per-tap weight gradient when at most this share of (output pixel, tap) pairs read the map.

Measured (bf16 channels-last, forward + backward, 2 cores): dilation 6 on a 10 x 10 map (share
0.36) 31.7 -> 10.0 ms; dilation 12 on 16 x 16 (0.25) 196 -> 82 ms; on 32 x 32 (0.56) 660 -> 409
ms; dilation 4 on 16 x 16 (0.69) 38.2 -> 36.8 ms, and undilated maps were slower."""


def live_tap_share(size: int, kernel: int, dilation: int) -> float:
    """Share of (output pixel, kernel tap) pairs along one axis whose input lies inside the map."""
    half = kernel // 2
    live = sum(max(0, size - abs(t - half) * dilation) for t in range(kernel))
    return live / (kernel * size)


class _LiveTapsConv(torch.autograd.Function):
    """A dense stride-1 "same" convolution whose weight gradient sums only the taps that read the map.

    Why: oneDNN computes the weight gradient of a dilated convolution on a small map as if every
    tap read data; with dilation 6 on a 10 x 10 map most taps read padding.  Here each tap's
    gradient is one matmul over the output pixels whose input is inside the map (exact: the
    other pixels multiply zeros).  Forward and input gradient stay oneDNN's (a transposed
    convolution).  Used on CPU with channels-last maps (the tap slices are then plain row
    blocks); measured on oneDNN only, so CUDA keeps cuDNN's kernels.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int],  # type: ignore[override]
                dilation: tuple[int, int]) -> Tensor:  # fmt: skip
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return F.conv2d(x, weight, bias, 1, padding, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        (d_h, d_w), (o, c, k_h, k_w) = ctx.dilation, weight.shape
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv_transpose2d(grad, weight, None, 1, ctx.padding, 0, 1, ctx.dilation)
        if ctx.needs_input_grad[1]:
            h, w = x.shape[-2:]
            x_hwc, g_hwc = x.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)  # (B, H, W, C) views
            taps = []
            for i in range(k_h):
                dy = (i - k_h // 2) * d_h
                r0, r1 = max(0, -dy), min(h, h - dy)  # output rows whose input row r + dy is inside
                for j in range(k_w):
                    dx = (j - k_w // 2) * d_w
                    c0, c1 = max(0, -dx), min(w, w - dx)
                    if r1 <= r0 or c1 <= c0:
                        taps.append(weight.new_zeros(o, c))
                        continue
                    g = g_hwc[:, r0:r1, c0:c1].reshape(-1, o)
                    xi = x_hwc[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx].reshape(-1, c)
                    taps.append(g.t() @ xi)  # (O, C)
            grad_w = torch.stack(taps, dim=-1).reshape(o, c, k_h, k_w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


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
        if (
            self.groups == 1
            and max(d_h, d_w) > 1
            and live_tap_share(h, k_h, d_h) * live_tap_share(w, k_w, d_w) <= LIVE_TAPS_MAX_SHARE
        ):
            return "live_taps_weight_grad"
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
        live_taps = rewrite == "live_taps_weight_grad" and x.device.type == "cpu"
        if live_taps and x.is_contiguous(memory_format=torch.channels_last):
            return self._live_taps(x)
        return super().forward(x)

    def _live_taps(self, x: Tensor) -> Tensor:
        """The convolution through :class:`_LiveTapsConv` (autocast applied here: a Function's
        backward runs outside it)."""
        weight, bias = self.weight, self.bias
        device = x.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device, enabled=False):
            return _LiveTapsConv.apply(x, weight, bias, self.padding, self.dilation)

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
