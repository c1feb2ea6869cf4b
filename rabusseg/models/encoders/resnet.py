"""Dilated ResNets: the paper's deep-stem ResNet-50 and plain-stem torchvision-layout ResNets.

Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer1.0.downsample.0``) so torchvision's ImageNet files load without renaming.  The deep
stem keeps the layout of the public deep-stem ("ResNet-50-C") checkpoints used by
semi-supervised segmentation code: ``conv1`` is a sequence (indices 0, 3, 6 are convolutions,
1 and 4 their norms) and ``bn1`` normalises its 128-channel output.

Output stride 8 replaces the strides of stages 3 and 4 by dilation 2 and 4; output stride 16
keeps stage 3's stride and dilates stage 4 by 2.  Every block of a dilated stage uses the stage's
dilation (METHOD section 1), and the deep-stem model multiplies stage 4's dilation by its
multi-grid factors (2, 2, 4), i.e. block dilations 8, 8, 16 at output stride 8.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rabusseg.models.conv import conv2d
from rabusseg.models.encoders.base import Encoder, check_level

DEEPSTEM_MULTI_GRID = (2, 2, 4)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = conv2d(inplanes, planes, 3, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2d(planes, planes, 3, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride and dilation), 1x1 expand by 4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2d(planes, planes, 3, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def _deep_stem() -> nn.Sequential:
    """Three 3x3 convolutions (3->64 stride 2, 64->64, 64->128); the last one's norm is ``bn1``."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, 1, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3, 1, padding=1, bias=False),
    )


class ResNetEncoder(Encoder):
    """A ResNet trunk without its classifier, returning the outputs of its four stages."""

    ignored_weight_prefixes = ("fc.",)

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        *,
        output_stride: int = 8,
        deep_stem: bool = False,
        stem_ceil_mode: bool | None = None,
        multi_grid: Sequence[int] | None = None,
        zero_init_residual: bool = True,
    ) -> None:
        """``stem_ceil_mode`` defaults to ``deep_stem`` (METHOD's stem pools in ceil mode,
        torchvision's does not); ``multi_grid`` multiplies stage 4's dilation per block."""
        super().__init__(output_stride)
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {list(layers)}")
        if multi_grid is not None and (len(multi_grid) != layers[3] or any(g < 1 for g in multi_grid)):
            raise ValueError(f"multi_grid needs {layers[3]} positive factors (one per stage-4 block), got {multi_grid}")
        ceil_mode = deep_stem if stem_ceil_mode is None else stem_ceil_mode
        stem_width = 128 if deep_stem else 64
        self.conv1: nn.Module = _deep_stem() if deep_stem else nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=ceil_mode)

        # Stage 3 and 4 trade their stride for dilation until the output stride is reached.
        dil3, dil4 = (2, 4) if output_stride == 8 else (1, 2)
        grid4 = tuple(multi_grid) if multi_grid is not None else (1,) * layers[3]
        self._inplanes = stem_width
        self.layer1 = self._make_stage(block, 64, layers[0], stride=1, dilations=(1,) * layers[0])
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2, dilations=(1,) * layers[1])
        self.layer3 = self._make_stage(
            block, 256, layers[2], stride=2 if dil3 == 1 else 1, dilations=(dil3,) * layers[2]
        )
        self.layer4 = self._make_stage(block, 512, layers[3], stride=1, dilations=tuple(dil4 * g for g in grid4))
        width = block.expansion
        self.out_channels = (64 * width, 128 * width, 256 * width, 512 * width)
        self._init_weights(zero_init_residual)

    def _make_stage(
        self, block: Block, planes: int, blocks: int, *, stride: int, dilations: tuple[int, ...]
    ) -> nn.Sequential:
        downsample = None
        out_planes = planes * block.expansion
        if stride != 1 or self._inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
            )
        stage = [block(self._inplanes, planes, stride, dilations[0], downsample)]
        self._inplanes = out_planes
        stage += [block(out_planes, planes, 1, d, None) for d in dilations[1:]]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts as the identity: trains stably from random weights.
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, stem, H/4, W/4)
        x1 = self.layer1(x)  # (B, C1, H/4, W/4)
        x2 = self.layer2(x1)  # (B, C2, H/8, W/8)
        x3 = self.layer3(x2)  # (B, C3, H/os, W/os)
        x4 = self.layer4(x3)  # (B, C4, H/os, W/os)
        return [x1, x2, x3, x4]

    def layers_through(self, level: int) -> list[nn.Module]:
        check_level(level)
        return [self.conv1, self.bn1, *(self.layer1, self.layer2, self.layer3)[:level]]


def resnet50_deepstem(output_stride: int = 8) -> ResNetEncoder:
    """The paper's encoder: deep stem, ceil-mode pool, multi-grid (2, 2, 4) in stage 4."""
    return ResNetEncoder(
        Bottleneck, (3, 4, 6, 3), output_stride=output_stride, deep_stem=True, multi_grid=DEEPSTEM_MULTI_GRID
    )


def resnet18(output_stride: int = 8) -> ResNetEncoder:
    return ResNetEncoder(BasicBlock, (2, 2, 2, 2), output_stride=output_stride)


def resnet34(output_stride: int = 8) -> ResNetEncoder:
    return ResNetEncoder(BasicBlock, (3, 4, 6, 3), output_stride=output_stride)


def resnet50(output_stride: int = 8) -> ResNetEncoder:
    return ResNetEncoder(Bottleneck, (3, 4, 6, 3), output_stride=output_stride)


def resnet101(output_stride: int = 8) -> ResNetEncoder:
    return ResNetEncoder(Bottleneck, (3, 4, 23, 3), output_stride=output_stride)
