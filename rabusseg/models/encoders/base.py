"""What every encoder promises the decoder: four feature maps and their widths and strides."""

from __future__ import annotations

from torch import Tensor, nn

VALID_OUTPUT_STRIDES = (8, 16)


def check_output_stride(output_stride: int) -> None:
    """Reject anything but 8 or 16: the decoder's ASPP rates are defined for these two only."""
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")


class Encoder(nn.Module):
    """Base class: ``forward(x)`` returns ``[x1, x2, x3, x4]``.

    Nominal strides are 4, 8, 8, 8 at output stride 8 and 4, 8, 16, 16 at output stride 16.
    On inputs that are not multiples of the stride the maps round up (a stride-2 conv with
    padding 1 gives ``ceil(n / 2)``); the deep stem's ceil-mode max-pool gives ``n // 2 + 1``.
    """

    out_channels: tuple[int, int, int, int]
    """Channels of x1..x4: the decoder and the relation modules size themselves from these."""
    ignored_weight_prefixes: tuple[str, ...] = ()
    """State-dict prefixes of the classification head that a weight file may carry and an
    encoder never has (``fc.`` for ResNet, ``classifier.`` for MobileNetV2)."""

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        check_output_stride(output_stride)
        self.output_stride = output_stride

    @property
    def strides(self) -> tuple[int, int, int, int]:
        """Nominal strides of x1..x4 relative to the input."""
        return (4, 8, self.output_stride, self.output_stride)

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def layers_through(self, level: int) -> list[nn.Module]:
        """The modules that compute x1..x``level`` (1-3) and nothing after: what freezing the
        first ``level`` feature levels freezes (``train.frozen_encoder_levels``)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its layers by feature level")


def check_level(level: int) -> None:
    """Feature levels that can be frozen: x1, x2, x3 (x4 feeds ASPP and the relation modules)."""
    if level not in (1, 2, 3):
        raise ValueError(f"level must be 1, 2 or 3, got {level!r}")


def init_conv_bn(module: nn.Module) -> None:
    """He init (fan-out) of every convolution, BatchNorm to identity: the mobile encoders' start."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def stride_schedule(first_strides: list[int], output_stride: int, start_stride: int = 2) -> list[tuple[int, int]]:
    """(stride, dilation) per block: a block that would take the stride past ``output_stride`` keeps
    stride 1 and multiplies the dilation (of itself and every later block) by the stride it gave up."""
    out, current, dilation = [], start_stride, 1
    for stride in first_strides:
        if stride > 1 and current * stride > output_stride:
            dilation *= stride
            stride = 1
        current *= stride
        out.append((stride, dilation))
    return out
