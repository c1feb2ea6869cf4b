"""Atrous spatial pyramid pooling (METHOD section 1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rabusseg.models.conv import conv2d
from rabusseg.models.dropout import Dropout

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
"""Dilations of the three 3x3 branches per output stride: halved at stride 16 so that each
branch sees the same field of view in image pixels."""


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias: BN follows) -> BN -> ReLU, 'same' padding."""
    return nn.Sequential(
        conv2d(cin, cout, kernel, dilation=dilation),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def separable_conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Depthwise k x k -> pointwise 1x1 -> BN -> ReLU: a dense k x k conv's receptive field at
    1/k^2 + 1/cout of its multiply-adds (the decoder of DeepLabv3+ with Xception, and of
    segmentation_models_pytorch's DeepLabV3+)."""
    return nn.Sequential(
        conv2d(cin, cin, kernel, groups=cin),
        conv2d(cin, cout, 1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def global_average_pool(x: Tensor) -> Tensor:
    """Mean over H and W -> (B, C, 1, 1), with a gradient in ``x``'s own memory format.

    Why: torch's pooling backward returns a contiguous (NCHW) gradient even for a channels-last
    ``x``; added to the channels-last gradients of x4's other consumers, it made the gradient
    accumulation and every op behind it (BN, ReLU6 backward) take the slow mixed-layout path
    (the additions: 5.4 -> 1.9 ms a cpu_small step once CRA's slice was gone too).  Averaging the
    (B, H*W, C) view of a channels-last map is the same sum, and its backward stays channels-last.
    """
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        b, c, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c).mean(dim=1).reshape(b, c, 1, 1)
    return x.mean(dim=(2, 3), keepdim=True)


class ASPPPooling(nn.Module):
    """Image-level branch: global average pool -> 1x1 conv-BN-ReLU -> broadcast back.

    Its BN sees one value per channel and image, so training needs at least 2 images per batch.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(global_average_pool(x))  # (B, cout, 1, 1)
        # Upsampling a 1x1 map (bilinear or nearest alike) is a broadcast.
        return y.expand(-1, -1, x.shape[-2], x.shape[-1])  # (B, cout, h, w)


class ASPP(nn.Module):
    """Five parallel branches on x4, concatenated and fused by a 3x3 conv-BN-ReLU-Dropout."""

    def __init__(self, cin: int, channels: int = 256, output_stride: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be one of {tuple(ASPP_RATES)}, got {output_stride!r}")
        self.rates = ASPP_RATES[output_stride]
        self.pooling = ASPPPooling(cin, channels)
        self.branch1x1 = conv_bn_relu(cin, channels, 1)
        self.atrous = nn.ModuleList(conv_bn_relu(cin, channels, 3, r) for r in self.rates)
        self.fuse = nn.Sequential(conv_bn_relu(5 * channels, channels, 3), Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.pooling(x), self.branch1x1(x)] + [conv(x) for conv in self.atrous]
        return self.fuse(torch.cat(branches, dim=1))  # (B, 5*ch, h, w) -> (B, ch, h, w)

