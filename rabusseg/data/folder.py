"""The project's dataset folder format: an index for reading it, helpers for writing it.

Layout::

    ROOT/images/<id>.<png|jpg|jpeg|bmp|tif|tiff>
    ROOT/masks/<id>.png            any non-zero pixel = lesion
    ROOT/metadata.csv              optional; columns ``id``, ``class`` and any others
    ROOT/splits/**/<name>.txt      one id per line

:class:`DatasetFolder` is strict (a broken layout raises :class:`DataError` at once) because
training must not start on a half-valid dataset; :mod:`rabusseg.data.check` uses the same
lower-level readers leniently to report every problem in one pass.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from rabusseg.data.hashing import dhash256, exact_duplicate_groups, near_duplicate_pairs, pixel_md5
from rabusseg.data.io import IMAGE_EXTENSIONS, is_image_file, read_split
from rabusseg.errors import DataError, OutputExistsError

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


# --------------------------------------------------------------------------- writing


def prepare_output_dir(out: Path, raw: Path, overwrite: bool, owned: tuple[str, ...]) -> None:
    """Make ``out`` ready for a preparer: never inside ``raw``, empty unless ``overwrite``.

    With ``overwrite`` only the entries a preparer writes (``owned``) are removed, so stale images
    of an earlier run cannot survive next to the new ones.
    """
    out_r, raw_r = out.resolve(), raw.resolve()
    if out_r == raw_r or raw_r in out_r.parents:
        raise DataError(f"output '{out}' is inside the raw download '{raw}'; the raw data is never written to")
    if out_r in raw_r.parents and overwrite:
        raise DataError(f"output '{out}' contains the raw download '{raw}'; refusing to overwrite it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output '{out}' exists and is a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"output folder '{out}' is not empty; pass --overwrite to replace it")
        for name in owned:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_csv(path: Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    """Write rows with a fixed column order and LF line ends."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


METADATA_COLUMNS: list[str] = [
    "id", "class", "original_filename", "original_mask_files", "n_mask_files", "width", "height",
    "mode", "lesion_area_fraction", "source_sha256", "pixel_md5", "exact_duplicate_group",
]  # fmt: skip
NEAR_DUPLICATE_COLUMNS: list[str] = ["id_a", "id_b", "dhash256_hamming", "same_pixels"]


@dataclass
class PrepareResult:
    """What a preparer wrote, for the CLI summary and for tests."""

    out: Path
    rows: list[dict[str, object]]
    near_duplicates: list[dict[str, object]]
    splits: dict[str, list[str]]
    skipped: list[Path]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (provenance: ties a prepared case to its exact source file)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class PreparedCase:
    """One converted case, before writing: what a preparer's pure per-case function returns."""

    id: str
    cls: str
    rgb: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # bool (H, W)
    original_filename: str
    original_mask_files: list[str]
    source_sha256: str


def stored_image(rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """The array to save and its mode: grayscale (``L``) when the three channels are equal, else RGB.

    Most ultrasound exports are gray saved as RGB; storing one channel is lossless for them and
    keeps colour only where it carries information (overlays, Doppler).
    """
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0]), "L"
    return rgb, "RGB"


def write_case(out: Path, case: PreparedCase, optimize_png: bool = True) -> dict[str, object]:
    """Save a case's image and 0/255 mask as PNG and return its metadata row (plus its ``dhash``).

    ``optimize_png`` (Pillow ``optimize=True``) gives the smallest files, byte-identical to the
    shared BUSI copy; ``False`` writes the same pixels several times faster. The
    ``exact_duplicate_group`` column is filled by :func:`finish_prepared` once all cases are known.
    """
    image, mode = stored_image(case.rgb)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    options = {"optimize": True} if optimize_png else {"compress_level": 1}
    Image.fromarray(image, mode=mode).save(out / "images" / f"{case.id}.png", **options)
    Image.fromarray(case.mask.astype(np.uint8) * 255, mode="L").save(out / "masks" / f"{case.id}.png", **options)
    height, width = case.mask.shape
    return {
        "id": case.id,
        "class": case.cls,
        "original_filename": case.original_filename,
        "original_mask_files": ";".join(case.original_mask_files),
        "n_mask_files": len(case.original_mask_files),
        "width": width,
        "height": height,
        "mode": mode,
        "lesion_area_fraction": f"{float(case.mask.mean()):.6f}",
        "source_sha256": case.source_sha256,
        "pixel_md5": pixel_md5(case.rgb),
        "exact_duplicate_group": "",
        "dhash": dhash256(case.rgb),
    }


def finish_prepared(out: Path, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Fill the duplicate groups, write ``metadata.csv`` and ``near_duplicate_candidates.csv``.

    Returns the near-duplicate candidate pairs.
    """
    rows.sort(key=lambda r: str(r["id"]))
    ids = [str(r["id"]) for r in rows]
    digests = [str(r["pixel_md5"]) for r in rows]
    groups = exact_duplicate_groups(ids, digests)
    for row in rows:
        row["exact_duplicate_group"] = groups.get(str(row["id"]), "")
    pairs = near_duplicate_pairs(ids, [r["dhash"] for r in rows], digests)  # type: ignore[misc]
    write_csv(out / "metadata.csv", rows, METADATA_COLUMNS)
    write_csv(out / "near_duplicate_candidates.csv", pairs, NEAR_DUPLICATE_COLUMNS)
    return pairs
