"""Writing the folder format: what the preparers (BUSI, UDIAT, image + mask folders) share.

Each preparer maps a raw download to :class:`PreparedCase` objects with a pure per-case
function; this module saves them, fills the duplicate columns and writes ``metadata.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rabusseg.data.hashing import dhash256, exact_duplicate_groups, near_duplicate_pairs, pixel_md5
from rabusseg.data.io import image_size, load_image, load_mask
from rabusseg.errors import DataError, OutputExistsError


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


def relative_name(path: Path, base: Path) -> str:
    """``path`` relative to the raw download (provenance in ``metadata.csv``), absolute when outside it."""
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()


def load_case(image: Path, masks: list[Path], case_id: str, cls: str, base: Path) -> PreparedCase:
    """One case from an image and its mask files (merged by union); no files are written."""
    rgb = load_image(image)
    lesion = np.zeros(rgb.shape[:2], dtype=bool)
    for path in masks:
        part = load_mask(path)
        if part.shape != lesion.shape:
            (mw, mh), (w, h) = image_size(part), image_size(rgb)
            raise DataError(f"{path}: mask is {mw}x{mh} but its image {image.name} is {w}x{h}")
        lesion |= part
    return PreparedCase(
        id=case_id,
        cls=cls,
        rgb=rgb,
        mask=lesion,
        original_filename=relative_name(image, base),
        original_mask_files=[relative_name(p, base) for p in masks],
        source_sha256=sha256_file(image),
    )


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
