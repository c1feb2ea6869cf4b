"""What ``predict`` was asked to segment: files, folders (recursive) and DICOM files, with unique names.

Output files are named after their input, flattened into one folder (``sub/img.png`` ->
``sub__img``), so two folders holding ``img.png`` must not overwrite each other: names that still
collide get their input folder's name in front, then a ``__2``, ``__3`` counter.  A DICOM file's
frame count is read from its header here, so every output path is known before inference starts.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rabusseg.data.io import IMAGE_EXTENSIONS, load_image
from rabusseg.errors import DataError
from rabusseg.inference.dicom import is_dicom, read_dicom


@dataclass(frozen=True)
class PredictInput:
    """One file to segment."""

    path: Path
    name: str
    """Unique, flat output name (no suffix)."""
    dicom: bool = False
    frames: int = 1
    """Frames in a DICOM cine loop; outputs get ``_fNNNN`` (0-based) when there is more than one."""
    root: str = ""
    """The input folder's name (or the file's parent), used to tell colliding names apart."""

    def stem(self, frame: int) -> str:
        return f"{self.name}_f{frame:04d}" if self.frames > 1 else self.name


@dataclass(frozen=True)
class InputFailure:
    """An input skipped, and why (shown to the user, non-zero exit)."""

    path: Path
    reason: str


def _dicom_frame_count(path: Path) -> int:
    from rabusseg.inference.dicom import _pydicom

    try:
        ds = _pydicom().dcmread(path, stop_before_pixels=True)
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except Exception as err:  # noqa: BLE001  pydicom raises many types for non-DICOM input
        raise DataError(f"not a readable DICOM file ({err})") from None


def _candidate(path: Path, name: str, root: str) -> PredictInput:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return PredictInput(path, name, root=root)
    if is_dicom(path):
        return PredictInput(path, name, dicom=True, frames=_dicom_frame_count(path), root=root)
    raise DataError(f"not an image or DICOM file (suffix '{path.suffix}' is not one of "
                    f"{', '.join(IMAGE_EXTENSIONS)}, .dcm and it has no DICM marker)")


def _folder_files(folder: Path) -> Iterable[Path]:
    """Image files and DICOM files under ``folder``; other files (notes, CSVs) are ignored quietly."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom(path):
            yield path


def _make_unique(items: list[PredictInput]) -> list[PredictInput]:
    def groups(xs: list[PredictInput]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(xs):
            out[item.name.lower()].append(i)  # case-insensitive: safe on macOS/Windows disks
        return out

    for indices in groups(items).values():
        if len(indices) > 1:
            for i in indices:
                items[i] = replace(items[i], name=f"{items[i].root}__{items[i].name}")
    for indices in groups(items).values():
        for k, i in enumerate(indices[1:], start=2):
            items[i] = replace(items[i], name=f"{items[i].name}__{k}")
    return items


def collect_inputs(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[PredictInput], list[InputFailure]]:
    """Expand files and folders into :class:`PredictInput` items with unique names, plus failures."""
    items: list[PredictInput] = []
    failures: list[InputFailure] = []
    seen: set[Path] = set()
    for raw in inputs:
        given = Path(raw)
        if given.is_dir():
            pairs = [(p, "__".join(p.relative_to(given).with_suffix("").parts)) for p in _folder_files(given)]
            root = given.resolve().name or "input"
        elif given.exists():
            pairs, root = [(given, given.stem)], given.resolve().parent.name or "input"
        else:
            failures.append(InputFailure(given, "does not exist"))
            continue
        for path, name in pairs:
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                items.append(_candidate(path, name, root))
            except DataError as err:
                failures.append(InputFailure(path, str(err)))
    return _make_unique(items), failures


def load_frames(item: PredictInput) -> tuple[list[np.ndarray], tuple[float, float] | None]:
    """The item's frames as ``uint8 (H, W, 3)`` RGB, and its (row, column) spacing in mm if known."""
    if item.dicom:
        image = read_dicom(item.path)
        return list(image.frames), image.spacing
    return [load_image(item.path)], None
