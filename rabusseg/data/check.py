"""``rabusseg data check``: validate a dataset in the folder format and report every problem.

Unlike :class:`~rabusseg.data.folder.DatasetFolder`, which stops at the first structural error,
the check keeps going so one run lists every bad file with its reason. Only a root that is not a
dataset at all (missing, no ``images/``, no images) raises :class:`DataError` at once.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rabusseg.data.folder import UNKNOWN_CLASS, check_root, find_mask, read_metadata, scan_images
from rabusseg.data.hashing import groups_from_metadata
from rabusseg.data.io import image_size, load_image, load_mask, read_split
from rabusseg.errors import DataError

Problem = tuple[str, str]  # (file, reason)


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: errors fail the check, warnings do not."""

    root: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "mean": float(array.mean()),
        "max": float(array.max()),
    }


def _shown(ids: list[str], limit: int = 8) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def check_dataset(root: str | os.PathLike[str]) -> CheckReport:
    """Validate ``root``: images readable, masks present and of the image's size, ids unique, split lists
    consistent (known ids, no train/test overlap, exact duplicates not across train/test)."""
    root = check_root(root)
    report = CheckReport(root)

    def name(path: Path) -> str:  # messages show dataset-relative paths
        return path.relative_to(root).as_posix()

    scan = scan_images(root / "images")
    for image_id, paths in sorted(scan.duplicates.items()):
        for path in paths[1:]:
            report.errors.append((name(path), f"duplicate id '{image_id}': also {name(paths[0])}"))
    for path in scan.ignored:
        report.warnings.append((name(path), "not an image extension; ignored"))

    metadata: list[dict[str, str]] = []
    meta_path = root / "metadata.csv"
    if meta_path.is_file():
        try:
            metadata = read_metadata(meta_path)
        except DataError as err:
            report.errors.append(("metadata.csv", str(err).removeprefix(f"{meta_path}: ")))
    meta = _check_metadata(metadata, set(scan.paths), report)
    classes = {i: meta.get(i, {}).get("class") or UNKNOWN_CLASS for i in scan.paths}

    workers = max(1, min(4, os.cpu_count() or 1))  # decoding releases the GIL: threads overlap it
    with ThreadPoolExecutor(max_workers=workers) as pool:
        cases = list(pool.map(lambda item: _check_case(root, *item, classes[item[0]]), sorted(scan.paths.items())))
    sizes = [c.size for c in cases if c.size is not None]
    fractions = [c.lesion_fraction for c in cases if c.lesion_fraction is not None]
    modes = Counter(c.mode for c in cases if c.mode)
    empty_masks = Counter(classes[c.id] for c in cases if c.lesion_fraction == 0.0)
    for case in cases:
        report.errors += case.errors
        report.warnings += case.warnings
    if (root / "masks").is_dir():
        for path in sorted((root / "masks").iterdir()):
            if not path.name.startswith(".") and path.is_file() and path.stem not in scan.paths:
                report.warnings.append((name(path), "mask without an image"))

    split_sizes = _check_splits(root, set(scan.paths), groups_from_metadata(metadata), report, name)
    widths, heights = [s[0] for s in sizes], [s[1] for s in sizes]
    report.summary = {
        "images": len(scan.paths),
        "classes": dict(sorted(Counter(classes.values()).items())),
        "modes": dict(modes),
        "width": _stats(widths),
        "height": _stats(heights),
        "distinct_sizes": len(set(sizes)),
        "lesion_area_fraction": _stats(fractions),
        "empty_masks": dict(sorted(empty_masks.items())),
        "splits": split_sizes,
    }
    return report


@dataclass
class _CaseResult:
    id: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    size: tuple[int, int] | None = None
    mode: str = ""
    lesion_fraction: float | None = None


def _check_case(root: Path, image_id: str, path: Path, cls: str) -> _CaseResult:
    """Decode one image and its mask; record what is wrong with them."""
    result = _CaseResult(image_id)
    name = path.relative_to(root).as_posix()
    try:
        image = load_image(path)
    except DataError as err:
        result.errors.append((name, str(err).removeprefix(f"{path}: ")))
        return result
    result.size = width, height = image_size(image)
    gray = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    result.mode = "gray" if gray else "colour"
    mask_path = find_mask(root / "masks", image_id)
    if mask_path is None:
        result.errors.append((name, f"missing mask: expected masks/{image_id}.png"))
        return result
    mask_name = mask_path.relative_to(root).as_posix()
    try:
        mask = load_mask(mask_path)
    except DataError as err:
        result.errors.append((mask_name, str(err).removeprefix(f"{mask_path}: ")))
        return result
    if mask.shape != image.shape[:2]:
        mask_width, mask_height = image_size(mask)
        result.errors.append(
            (mask_name, f"mask is {mask_width}x{mask_height} but its image {path.name} is {width}x{height}")
        )
        return result
    if mask_path.suffix.lower() in (".jpg", ".jpeg"):
        result.warnings.append((mask_name, "JPEG mask: lossy compression turns edge noise into lesion pixels"))
    result.lesion_fraction = float(mask.mean())
    if result.lesion_fraction == 0.0 and cls not in ("normal", UNKNOWN_CLASS):
        result.warnings.append((mask_name, f"empty mask for a '{cls}' image"))
    return result


def _check_metadata(rows: list[dict[str, str]], ids: set[str], report: CheckReport) -> dict[str, dict[str, str]]:
    by_id: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["id"] in by_id:
            report.errors.append(("metadata.csv", f"id '{row['id']}' appears on more than one row"))
        by_id[row["id"]] = row
    if rows and "class" not in rows[0]:
        report.warnings.append(("metadata.csv", "no 'class' column: every image counts as class 'unknown'"))
    unknown = sorted(set(by_id) - ids)
    if unknown:
        report.warnings.append(("metadata.csv", f"{len(unknown)} id(s) without an image: {_shown(unknown)}"))
    missing = sorted(ids - set(by_id)) if rows else []
    if missing:
        report.warnings.append(("metadata.csv", f"{len(missing)} image(s) without a row: {_shown(missing)}"))
    return by_id


def _is_test(path: Path) -> bool:
    return path.stem.lower() == "test"


def _check_splits(
    root: Path, ids: set[str], groups: dict[str, str], report: CheckReport, name: Callable[[Path], str]
) -> dict[str, int]:
    """Every id known; no training list shares an id (or an exact-duplicate group) with the test list
    of its folder or of any folder above it."""
    splits_dir = root / "splits"
    if not splits_dir.is_dir():
        return {}
    lists: dict[Path, list[str]] = {}
    for path in sorted(splits_dir.rglob("*.txt")):
        try:
            lists[path] = read_split(path)
        except DataError as err:
            report.errors.append((name(path), str(err).removeprefix(f"{path}: ")))
            continue
        unknown = [i for i in lists[path] if i not in ids]
        if unknown:
            report.errors.append((name(path), f"{len(unknown)} id(s) not in images/: {_shown(unknown)}"))
        repeated = sorted(i for i, n in Counter(lists[path]).items() if n > 1)
        if repeated:
            report.warnings.append((name(path), f"{len(repeated)} id(s) listed more than once: {_shown(repeated)}"))
    for test_path, test_ids in lists.items():
        if not _is_test(test_path):
            continue
        test_set = set(test_ids)
        test_groups = {groups[i]: i for i in test_ids if i in groups}
        for path, train_ids in lists.items():
            if _is_test(path) or test_path.parent not in (path.parent, *path.parents):
                continue
            both = sorted(test_set.intersection(train_ids))
            if both:
                report.errors.append((name(path), f"{len(both)} id(s) also in {name(test_path)}: {_shown(both)}"))
            copies = [i for i in set(train_ids) - test_set if groups.get(i) in test_groups]
            pairs = sorted(f"{i}~{test_groups[groups[i]]}" for i in copies)
            if pairs:
                report.warnings.append(
                    (name(path), f"exact duplicate(s) of images in {name(test_path)}: {_shown(pairs)}")
                )
    return {p.relative_to(splits_dir).with_suffix("").as_posix(): len(v) for p, v in lists.items()}
