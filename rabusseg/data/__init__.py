"""Datasets in the rabusseg folder format: reading, checking, preparing and splitting.

Only the light, torch-free parts are re-exported here; preparers, phantoms and the torch
datasets are imported from their modules.
"""

from __future__ import annotations

from rabusseg.data.check import CheckReport, check_dataset
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import IMAGE_EXTENSIONS, load_image, load_mask, read_split
from rabusseg.data.splits import make_split, parse_fraction

__all__ = [
    "IMAGE_EXTENSIONS",
    "CheckReport",
    "DatasetFolder",
    "check_dataset",
    "load_image",
    "load_mask",
    "make_split",
    "parse_fraction",
    "read_split",
]
