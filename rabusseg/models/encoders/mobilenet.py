"""MobileNetV2 in torchvision's state-dict layout, dilated to output stride 8 or 16.

Layout: ``features.0`` is conv-BN-ReLU6 (3->32, stride 2), ``features.1..17`` are inverted
residual blocks whose layers sit in ``features.i.conv``, ``features.18`` is the 1x1 conv to 1280
channels.  The classifier (``classifier.*``) is left out.

Taps: x1 after ``features.3`` (24 ch, stride 4), x2 after ``features.6`` (32 ch, stride 8), x3
after ``features.13`` (96 ch), x4 after ``features.18`` (1280 ch; keeping the last conv means an
ImageNet file loads completely, with nothing but the classifier left unused).  The blocks that
would bring the stride past the output stride keep stride 1 and multiply the dilation of their
depthwise convolution (and of every later one) by the stride they gave up.

``mobilenet_v2_320`` ends at ``features.17``: x4 is the 320-channel output of the last inverted
residual block, as in DeepLab's own MobileNetV2 backbone.  The 1x1 conv to 1280 channels was
trained for ImageNet's classifier; without it the ASPP and the ARP projection read a quarter of
the channels: a cpu_small RA-BUSSeg step takes 0.8x the time, but the model was less robust to
scanner-like image changes, so cpu_small keeps the last conv (docs/choices.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from rabusseg.models.conv import conv2d
from rabusseg.models.encoders.base import Encoder, check_level, init_conv_bn, stride_schedule

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_TAPS = (3, 6, 13)
"""Indices in ``features`` after which x1..x3 are taken; x4 is the output of the last layer."""


def _conv_bn_relu6(
    cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        conv2d(cin, cout, kernel, stride, dilation, groups),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Encoder(Encoder):
    """MobileNetV2 (width 1.0) trunk returning x1..x4 with channels (24, 32, 96, 1280), or
    (24, 32, 96, 320) with ``last_conv=False``."""

    ignored_weight_prefixes: tuple[str, ...] = ("classifier.",)

    def __init__(self, output_stride: int = 8, last_conv: bool = True) -> None:
        super().__init__(output_stride)
        features: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, stride=2)]
        blocks = [(t, c, s if i == 0 else 1) for t, c, n, s in _INVERTED_RESIDUAL_SETTING for i in range(n)]
        cin = 32
        for (t, c, _), (stride, dilation) in zip(blocks, stride_schedule([b[2] for b in blocks], output_stride), strict=True):
            features.append(InvertedResidual(cin, c, stride, dilation, t))
            cin = c
        if last_conv:
            features.append(_conv_bn_relu6(cin, 1280, 1))
            cin = 1280
        else:  # an ImageNet file's last conv (features.18) has no place here
            self.ignored_weight_prefixes = ("classifier.", f"features.{len(features)}.")
        self.features = nn.Sequential(*features)
        self.out_channels = (24, 32, 96, cin)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs: list[Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                outs.append(x)  # x1 (B, 24, H/4, W/4), x2 (B, 32, H/8, W/8), x3 (B, 96, H/os, W/os)
        return [*outs, x]  # x4 (B, 1280 or 320, H/os, W/os)

    def layers_through(self, level: int) -> list[nn.Module]:
        check_level(level)
        return list(self.features[: _TAPS[level - 1] + 1])


def mobilenet_v2(output_stride: int = 8) -> MobileNetV2Encoder:
    return MobileNetV2Encoder(output_stride)


def mobilenet_v2_320(output_stride: int = 8) -> MobileNetV2Encoder:
    """MobileNetV2 without its last 1x1 conv: x4 has 320 channels."""
    return MobileNetV2Encoder(output_stride, last_conv=False)
