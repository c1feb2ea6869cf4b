"""Convert any dataset kept as an image folder and a mask folder into the folder format.

Input: ``RAW/<images>/<name>.<ext>`` and, for each image, the mask files
``RAW/<masks>/<mask name>.<ext>`` where the mask name is ``mask_name`` with ``{id}`` replaced by
the image's file stem: ``{id}`` (the same name, the default), ``{id}_mask``, ``mask_{id}``...; a
``*`` in it matches several masks per image (``{id}_mask*``), merged by union.  Ids are the
image stems; classes come from an optional table (``id``/file name and ``class`` columns), else
``unknown``.  Why: public breast-ultrasound sets from other scanners arrive in many such layouts,
and scoring a model on one (``rabusseg evaluate``) should not need a script of one's own.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import shutil
from pathlib import Path

from rabusseg.data.folder import UNKNOWN_CLASS, scan_images
from rabusseg.data.io import is_image_file
from rabusseg.data.prepared import PrepareResult, finish_prepared, load_case, prepare_output_dir, write_case
from rabusseg.errors import DataError

ID_FIELD = "{id}"
_OWNED = ("images", "masks", "metadata.csv", "near_duplicate_candidates.csv")


def index_masks(masks_dir: Path) -> dict[str, list[Path]]:
    """The image files of ``masks_dir`` by file stem."""
    index: dict[str, list[Path]] = {}
    for path in sorted(masks_dir.iterdir()):
        if path.is_file() and is_image_file(path):
            index.setdefault(path.stem, []).append(path)
    return index


def mask_files(index: dict[str, list[Path]], image_id: str, mask_name: str) -> list[Path]:
    """The mask files of ``image_id``: stems matching ``mask_name`` with ``{id}`` filled in, sorted.

    The whole stem must match, so ``case1`` never takes the mask of ``case1.2`` or ``case10``.
    """
    if not any(c in mask_name for c in "*?["):  # no wildcard: one lookup
        return list(index.get(mask_name.replace(ID_FIELD, image_id), []))
    pattern = mask_name.replace(ID_FIELD, glob.escape(image_id))
    return sorted(p for stem in index if fnmatch.fnmatchcase(stem, pattern) for p in index[stem])


def read_class_table(path: Path, ids: set[str]) -> dict[str, str]:
    """``{id: class}`` from a CSV with a ``class`` column and an ``id`` (or ``filename``) column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the class table ({err})") from None
    columns = {c.strip().lower(): c for c in (rows[0].keys() if rows else []) if c}
    key = columns.get("id") or columns.get("filename")
    if key is None or "class" not in columns:
        raise DataError(f"{path}: a class table needs an 'id' (or 'filename') and a 'class' column")
    classes: dict[str, str] = {}
    for row in rows:
        image_id = Path((row.get(key) or "").strip()).stem
        if image_id in ids:
            classes[image_id] = (row.get(columns["class"]) or "").strip().lower() or UNKNOWN_CLASS
    return classes


def prepare_folders(
    raw: Path,
    out: Path,
    images: str = "images",
    masks: str = "masks",
    mask_name: str = ID_FIELD,
    class_table: Path | None = None,
    overwrite: bool = False,
    optimize_png: bool = True,
) -> PrepareResult:
    """Convert ``RAW/<images>`` + ``RAW/<masks>`` into the folder format at ``out`` (``raw`` is only read).

    Every image needs at least one mask: a set with images to segment but nothing to score them
    against belongs in ``rabusseg predict``, so a missing mask stops the run with the full list.
    """
    raw, out = Path(raw), Path(out)
    if ID_FIELD not in mask_name:
        raise DataError(f"--mask-name {mask_name!r} must contain {ID_FIELD} (the image's file name without extension)")
    images_dir, masks_dir = raw / images, raw / masks
    for folder, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of {what} (choose it with --{what})")
    if images_dir.resolve() == masks_dir.resolve():
        raise DataError(f"{images_dir}: images and masks must be in separate folders")
    scan = scan_images(images_dir)
    if scan.duplicates:
        listed = "; ".join(", ".join(p.name for p in ps) for ps in scan.duplicates.values())
        raise DataError(f"{images_dir}: ids present with more than one file ({listed})")
    paths = list(scan.paths.values())
    if not paths:
        raise DataError(f"{images_dir}: holds no images")
    index = index_masks(masks_dir)
    found = {path: mask_files(index, path.stem, mask_name) for path in paths}
    missing = [str(p) for p, m in found.items() if not m]
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DataError(f"{len(missing)} image(s) without a mask {mask_name}.<ext> in {masks_dir}:\n  {shown}")
    classes = read_class_table(Path(class_table), set(scan.paths)) if class_table is not None else {}

    fresh = not out.exists()
    prepare_output_dir(out, raw, overwrite, _OWNED)
    try:
        rows = [write_case(out, load_case(p, m, p.stem, classes.get(p.stem, UNKNOWN_CLASS), raw), optimize_png)
                for p, m in found.items()]  # fmt: skip
        pairs = finish_prepared(out, rows)
    except BaseException:  # a bad file half-way: leave no half-written dataset behind
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return PrepareResult(out=out, rows=rows, near_duplicates=pairs, splits={}, skipped=[])
