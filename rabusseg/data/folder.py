"""The project's dataset folder format: the index that reads it.

Layout::

    ROOT/images/<id>.<png|jpg|jpeg|bmp|tif|tiff>
    ROOT/masks/<id>.png            any non-zero pixel = lesion (JPEG masks: > 127, see rabusseg.data.io)
    ROOT/metadata.csv              optional; columns ``id``, ``class`` and any others
    ROOT/splits/**/<name>.txt      one id per line

:class:`DatasetFolder` is strict (a broken layout raises :class:`DataError` at once) because
training must not start on a half-valid dataset; :mod:`rabusseg.data.check` uses the same
lower-level readers leniently to report every problem in one pass.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from rabusseg.data.io import IMAGE_EXTENSIONS, is_image_file, read_split
from rabusseg.errors import DataError

UNKNOWN_CLASS = "unknown"
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
"""Mask file extensions, in order of preference (PNG is the format's own)."""


@dataclass
class ImageScan:
    """What is in ``images/``: one path per id, plus the ids found twice and the ignored files."""

    paths: dict[str, Path] = field(default_factory=dict)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)
    ignored: list[Path] = field(default_factory=list)


def scan_images(images_dir: Path) -> ImageScan:
    """Index ``images/`` by file stem; a stem seen with two extensions is a duplicate id."""
    scan = ImageScan()
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if not is_image_file(path):
            scan.ignored.append(path)
            continue
        if path.stem in scan.paths:
            scan.duplicates.setdefault(path.stem, [scan.paths[path.stem]]).append(path)
        else:
            scan.paths[path.stem] = path
    return scan


def read_metadata(path: Path) -> list[dict[str, str]]:
    """Read ``metadata.csv`` as a list of row dicts; it must have an ``id`` column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
            columns = reader.fieldnames or []
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected a CSV with an 'id' column") from None
    except (OSError, csv.Error) as err:
        raise DataError(f"{path}: cannot read metadata ({err})") from None
    if "id" not in columns:
        raise DataError(f"{path}: no 'id' column (columns: {', '.join(columns) or 'none'})")
    return rows


def check_root(root: str | os.PathLike[str]) -> Path:
    """Return ``root`` as a Path after checking that it is a dataset folder with a non-empty ``images/``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder '{root}' does not exist")
    if not root.is_dir():
        raise DataError(f"'{root}' is a file, expected a dataset folder")
    images = root / "images"
    if not images.is_dir():
        raise DataError(
            f"'{root}' is not a dataset in the rabusseg folder format: it has no images/ folder "
            "(expected images/<id>.png, masks/<id>.png, optional metadata.csv and splits/)"
        )
    if not any(is_image_file(p) for p in images.iterdir()):
        raise DataError(f"{images}: holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return root


def find_mask(masks_dir: Path, image_id: str) -> Path | None:
    """The mask file of ``image_id`` (``masks/<id>.png`` preferred), or ``None``."""
    for ext in MASK_EXTENSIONS:
        candidate = masks_dir / f"{image_id}{ext}"
        if candidate.is_file():
            return candidate
    return None


class DatasetFolder:
    """Index of one dataset in the folder format (ids, files, classes, split lists)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = check_root(root)
        scan = scan_images(self.root / "images")
        if scan.duplicates:
            listed = "; ".join(f"{i}: {', '.join(p.name for p in ps)}" for i, ps in sorted(scan.duplicates.items()))
            raise DataError(f"{self.root / 'images'}: ids present with more than one file ({listed})")
        self._images = scan.paths
        self.ids: list[str] = sorted(scan.paths)
        meta_path = self.root / "metadata.csv"
        self.metadata: list[dict[str, str]] = read_metadata(meta_path) if meta_path.is_file() else []
        self._meta_by_id: dict[str, dict[str, str]] = {}
        for row in self.metadata:
            if row["id"] in self._meta_by_id:
                raise DataError(f"{meta_path}: id '{row['id']}' appears on more than one row")
            self._meta_by_id[row["id"]] = row

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def _known(self, image_id: str) -> str:
        if image_id not in self._images:
            raise DataError(f"id '{image_id}' is not in {self.root / 'images'}")
        return image_id

    def image_path(self, image_id: str) -> Path:
        """Path of the image file of ``image_id``."""
        return self._images[self._known(image_id)]

    def mask_path(self, image_id: str) -> Path | None:
        """Path of the mask of ``image_id``, or ``None`` when it has none (unlabelled data)."""
        return find_mask(self.root / "masks", self._known(image_id))

    def class_of(self, image_id: str) -> str:
        """Class from ``metadata.csv`` (``"unknown"`` when absent), used to stratify and report."""
        row = self._meta_by_id.get(self._known(image_id), {})
        return row.get("class") or UNKNOWN_CLASS

    def meta(self, image_id: str) -> dict[str, str]:
        """The ``metadata.csv`` row of ``image_id`` (empty when it has none)."""
        return dict(self._meta_by_id.get(self._known(image_id), {}))

    def labeled_ids(self) -> list[str]:
        """Ids that have a mask in ``masks/``, sorted: what can be scored when there are no split lists."""
        masks = self.root / "masks"
        return [i for i in self.ids if find_mask(masks, i) is not None] if masks.is_dir() else []

    def available_splits(self) -> list[str]:
        """Split names under ``splits/``, e.g. ``["1_2/labeled", "1_2/unlabeled", "test"]``."""
        splits = self.root / "splits"
        if not splits.is_dir():
            return []
        return sorted(p.relative_to(splits).with_suffix("").as_posix() for p in splits.rglob("*.txt"))

    def split_path(self, name: str | os.PathLike[str]) -> Path:
        """Resolve a split name (``"1_2/labeled"``) or a ``.txt`` path (absolute, or relative to the root or cwd)."""
        text = os.fspath(name)
        if text.endswith(".txt") or Path(text).is_absolute():
            path = Path(text)
            for candidate in ([path] if path.is_absolute() else [self.root / path, path]):
                if candidate.exists():
                    return candidate
            raise DataError(f"split file '{text}' does not exist (looked in {self.root} and the current folder)")
        path = self.root / "splits" / f"{text}.txt"
        if not path.exists():
            known = ", ".join(self.available_splits()) or "none"
            raise DataError(f"unknown split '{text}': {path} does not exist (available: {known})")
        return path

    def split(self, name: str | os.PathLike[str]) -> list[str]:
        """Ids of a split list; every id must name an image of this dataset."""
        path = self.split_path(name)
        ids = read_split(path)
        unknown = [i for i in ids if i not in self._images]
        if unknown:
            shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise DataError(f"{path}: {len(unknown)} id(s) not in {self.root / 'images'}: {shown}")
        return ids
