"""Convert the public BUSI download (Al-Dhabyani et al. 2020) to the folder format.

Input: ``RAW/Dataset_BUSI_with_GT/<class>/<class> (N).png`` with masks ``<class> (N)_mask.png``,
``<class> (N)_mask_1.png``, ... (``RAW`` may also be ``Dataset_BUSI_with_GT`` itself).
Output: ids ``<class>_<NNN>``, masks merged by union (0/255), images stored gray unless their
channels differ, ``metadata.csv``, ``near_duplicate_candidates.csv``, ``name_map.csv`` and, with
paper splits, ``splits/`` plus the authors' lists verbatim in ``source/ra_busseg_splits/``.
The conversion reproduces ``../shared/datasets/busi`` pixel for pixel.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rabusseg.data.io import image_size, load_image, load_mask
from rabusseg.data.prepared import (
    PreparedCase,
    PrepareResult,
    finish_prepared,
    prepare_output_dir,
    sha256_file,
    write_case,
    write_csv,
)
from rabusseg.data.splits import translate_split_lists, write_translated_splits
from rabusseg.errors import DataError

BUSI_FOLDER = "Dataset_BUSI_with_GT"
_NAME = re.compile(r"^(?P<cls>[A-Za-z]+) \((?P<num>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?\.png$")
_OWNED = ("images", "masks", "splits", "source", "metadata.csv", "near_duplicate_candidates.csv", "name_map.csv")


@dataclass
class BusiSource:
    """The files of one BUSI case in the download."""

    cls: str
    number: int
    image: Path
    masks: list[Path] = field(default_factory=list)

    @property
    def id(self) -> str:
        return busi_id(self.cls, self.number)


def busi_id(cls: str, number: int) -> str:
    """``("benign", 7) -> "benign_007"``: sortable ids that keep the class visible."""
    return f"{cls.lower()}_{number:03d}"


def busi_name_to_id(name: str) -> str | None:
    """Translate an authors' list entry (``"benign (101).png"``) to an id, or ``None`` if it is not one."""
    match = _NAME.match(name.strip())
    if match is None or match["mask"]:
        return None
    return busi_id(match["cls"], int(match["num"]))


def find_busi_base(raw: Path) -> Path:
    """The folder holding the class subfolders: ``RAW/Dataset_BUSI_with_GT`` or ``RAW`` itself."""
    if not raw.is_dir():
        raise DataError(f"raw BUSI folder '{raw}' does not exist")
    for base in (raw / BUSI_FOLDER, raw):
        if base.is_dir() and any(_NAME.match(p.name) for d in base.iterdir() if d.is_dir() for p in d.iterdir()):
            return base
    raise DataError(
        f"'{raw}' does not look like the BUSI download: expected {BUSI_FOLDER}/<class>/<class> (N).png "
        "with masks <class> (N)_mask.png"
    )


def discover_busi(base: Path) -> tuple[list[BusiSource], list[Path]]:
    """Group the download's files into cases; returns the cases and the files that were skipped."""
    cases: dict[tuple[str, int], BusiSource] = {}
    masks: dict[tuple[str, int], list[tuple[int, Path]]] = {}
    skipped: list[Path] = []
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir()):
            match = _NAME.match(path.name)
            if match is None or match["cls"].lower() != class_dir.name.lower():
                skipped.append(path)
                continue
            key = (match["cls"].lower(), int(match["num"]))
            if match["mask"]:
                masks.setdefault(key, []).append((int(match["k"] or 0), path))
            else:
                cases[key] = BusiSource(key[0], key[1], path)
    problems = [f"{paths[0][1]}: mask without an image" for key, paths in masks.items() if key not in cases]
    problems += [f"{case.image}: image without a mask file" for key, case in cases.items() if key not in masks]
    if problems:
        raise DataError("BUSI download is incomplete:\n  " + "\n  ".join(sorted(problems)))
    for key, case in cases.items():
        case.masks = [path for _, path in sorted(masks[key])]
    return [cases[key] for key in sorted(cases, key=lambda k: busi_id(*k))], skipped


def prepare_busi_case(source: BusiSource, base: Path) -> PreparedCase:
    """Load one case and merge its masks by union; no files are written."""
    rgb = load_image(source.image)
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    for path in source.masks:
        part = load_mask(path)
        if part.shape != mask.shape:
            raise DataError(
                f"{path}: mask is {image_size(part)[0]}x{image_size(part)[1]} but its image "
                f"{source.image.name} is {image_size(rgb)[0]}x{image_size(rgb)[1]}"
            )
        mask |= part
    return PreparedCase(
        id=source.id,
        cls=source.cls,
        rgb=rgb,
        mask=mask,
        original_filename=source.image.relative_to(base).as_posix(),
        original_mask_files=[p.name for p in source.masks],
        source_sha256=sha256_file(source.image),
    )


def prepare_busi(
    raw: Path, out: Path, paper_splits: Path | None = None, overwrite: bool = False, optimize_png: bool = True
) -> PrepareResult:
    """Convert a BUSI download at ``raw`` into the folder format at ``out`` (``raw`` is only read).

    With the default ``optimize_png`` the files are byte-identical to ``../shared/datasets/busi``.
    """
    raw, out = Path(raw), Path(out)
    base = find_busi_base(raw)
    sources, skipped = discover_busi(base)
    if not sources:
        raise DataError(f"{base}: no BUSI images found")
    name_to_id = {source.image.name: source.id for source in sources}
    splits: dict[str, list[str]] = {}
    if paper_splits is not None:  # translate before writing anything: a bad list leaves OUT untouched
        splits = translate_split_lists(Path(paper_splits), busi_name_to_id, set(name_to_id.values()))
    prepare_output_dir(out, raw, overwrite, _OWNED)
    rows = [write_case(out, prepare_busi_case(source, base), optimize_png) for source in sources]
    pairs = finish_prepared(out, rows)
    names = [{"ra_busseg_name": name, "id": image_id} for name, image_id in name_to_id.items()]
    write_csv(out / "name_map.csv", names, ["ra_busseg_name", "id"])
    if paper_splits is not None:
        write_translated_splits(out, splits)
        shutil.copytree(paper_splits, out / "source" / "ra_busseg_splits", dirs_exist_ok=True)
    return PrepareResult(out=out, rows=rows, near_duplicates=pairs, splits=splits, skipped=skipped)
