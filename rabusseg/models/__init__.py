"""Network: dilated encoders, DeepLabv3+ head with the ARP branch, relation functions."""

from __future__ import annotations

from rabusseg.models.builder import build_model
from rabusseg.models.deeplabv3plus import SegmentationModel
from rabusseg.models.encoders import ENCODERS, get_encoder
from rabusseg.models.outputs import SegmentationOutput
from rabusseg.models.resize import upsample_logits
from rabusseg.models.weights import load_encoder_weights

__all__ = [
    "ENCODERS",
    "SegmentationModel",
    "SegmentationOutput",
    "build_model",
    "get_encoder",
    "load_encoder_weights",
    "upsample_logits",
]
