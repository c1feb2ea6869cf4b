"""rabusseg: relation-aware semi-supervised segmentation of breast-ultrasound lesions.

Subpackages follow the pipeline: :mod:`rabusseg.data` (folder format, preparers, splits,
phantoms, PyTorch datasets), :mod:`rabusseg.models` (encoders, DeepLabv3+ decoder, ARP/CRA
relation functions), :mod:`rabusseg.losses`, :mod:`rabusseg.engine` (training loop, EMA,
checkpoints, distributed), :mod:`rabusseg.evaluation` (metrics, reports) and
:mod:`rabusseg.inference` (Segmenter, predict, export).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that ``import rabusseg`` does not import torch.
    if name == "Segmenter":
        from rabusseg.inference.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'rabusseg' has no attribute {name!r}")
