"""Encoder registry: one name per encoder, each returning x1..x4 (see :class:`Encoder`)."""

from __future__ import annotations

from collections.abc import Callable

from rabusseg.errors import ConfigError
from rabusseg.models.encoders.base import VALID_OUTPUT_STRIDES, Encoder
from rabusseg.models.encoders.efficientnet import EfficientNetLite0Encoder, efficientnet_lite0
from rabusseg.models.encoders.mobilenet import MobileNetV2Encoder, mobilenet_v2, mobilenet_v2_320
from rabusseg.models.encoders.resnet import ResNetEncoder, resnet18, resnet34, resnet50, resnet50_deepstem, resnet101

ENCODERS: dict[str, Callable[[int], Encoder]] = {
    "resnet50_deepstem": resnet50_deepstem,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_320": mobilenet_v2_320,
    "efficientnet_lite0": efficientnet_lite0,
}
"""Name -> factory taking the output stride."""


def get_encoder(name: str, output_stride: int = 8) -> Encoder:
    """Build a randomly initialised encoder by name; a wrong name or stride raises ConfigError."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder '{name}'; valid encoders: {', '.join(sorted(ENCODERS))}")
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")
    return ENCODERS[name](output_stride)


__all__ = ["ENCODERS", "EfficientNetLite0Encoder", "Encoder", "MobileNetV2Encoder", "ResNetEncoder", "get_encoder"]
