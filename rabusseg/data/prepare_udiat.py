"""Convert UDIAT Dataset B (Yap et al. 2018) to the folder format.

Input: ``RAW/original/000001.png`` and ``RAW/GT/000001.png`` (``RAW`` may also hold one folder
with that layout), and optionally a type table (``DatasetB.xlsx`` or a CSV) giving each image's
type, benign or malignant. The authors' split lists name files ``000009_Benign.png``: they give
the id (``000009``) and, when no table is available, the class. Ids are the file stems.
"""

from __future__ import annotations

import csv
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from rabusseg.data.folder import UNKNOWN_CLASS
from rabusseg.data.io import is_image_file, read_split
from rabusseg.data.prepared import (
    PreparedCase,
    PrepareResult,
    finish_prepared,
    load_case,
    prepare_output_dir,
    write_case,
)
from rabusseg.data.splits import translate_split_lists, write_translated_splits
from rabusseg.errors import DataError

CLASSES = ("benign", "malignant")
_PAPER_NAME = re.compile(r"^(?P<id>.+?)(?:_(?P<cls>benign|malignant))?(?:\.[A-Za-z]+)?$", re.IGNORECASE)
_OWNED = ("images", "masks", "splits", "source", "metadata.csv", "near_duplicate_candidates.csv")
_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def read_xlsx_rows(path: Path) -> list[list[str]]:
    """Cell texts of the first worksheet of an ``.xlsx`` file, read with the standard library.

    An .xlsx is a zip of XML; reading the one table UDIAT ships this way avoids a spreadsheet
    dependency. Formulas give their cached value; dates and styles are not interpreted.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            shared: list[str] = []
            if "xl/sharedStrings.xml" in names:
                strings = ElementTree.fromstring(archive.read("xl/sharedStrings.xml"))
                shared = [
                    "".join(t.text or "" for t in si.iter(f"{_SHEET_NS}t")) for si in strings.iter(f"{_SHEET_NS}si")
                ]
            sheets = sorted(
                (int(m[1]), n) for n in names if (m := re.fullmatch(r"xl/worksheets/sheet(\d+)\.xml", n))
            )
            if not sheets:
                raise DataError(f"{path}: .xlsx file holds no worksheet")
            sheet = ElementTree.fromstring(archive.read(sheets[0][1]))
    except (zipfile.BadZipFile, OSError, ElementTree.ParseError, KeyError) as err:
        raise DataError(f"{path}: not a readable .xlsx file ({err})") from None
    rows: list[list[str]] = []
    for row in sheet.iter(f"{_SHEET_NS}row"):
        values: dict[int, str] = {}
        for position, cell in enumerate(row.findall(f"{_SHEET_NS}c")):
            letters = re.match(r"[A-Z]+", cell.get("r", ""))
            column = position
            if letters:
                column = 0
                for ch in letters[0]:
                    column = column * 26 + ord(ch) - 64
                column -= 1
            kind, value = cell.get("t"), cell.find(f"{_SHEET_NS}v")
            if kind == "inlineStr":
                values[column] = "".join(t.text or "" for t in cell.iter(f"{_SHEET_NS}t"))
            elif kind == "s" and value is not None and value.text is not None:
                values[column] = shared[int(value.text)] if int(value.text) < len(shared) else ""
            else:
                values[column] = (value.text or "") if value is not None else ""
        rows.append([values.get(k, "") for k in range(max(values, default=-1) + 1)])
    return rows


def find_udiat_base(raw: Path) -> Path:
    """The folder holding ``original/`` and ``GT/``: ``RAW`` or its only subfolder that has them."""
    if not raw.is_dir():
        raise DataError(f"raw UDIAT folder '{raw}' does not exist")
    candidates = [raw, *sorted(p for p in raw.iterdir() if p.is_dir())]
    for base in candidates:
        if (base / "original").is_dir() and (base / "GT").is_dir():
            return base
    raise DataError(f"'{raw}' does not look like UDIAT Dataset B: expected original/<id>.png and GT/<id>.png")


def paper_name_to_id(name: str) -> str | None:
    """``"000009_Benign.png" -> "000009"`` (also accepts ``000009.png`` and bare ids)."""
    match = _PAPER_NAME.match(name.strip())
    return match["id"] if match else None


def _paper_classes(paper_dir: Path) -> dict[str, str]:
    classes: dict[str, str] = {}
    for path in sorted(paper_dir.rglob("*.txt")):
        for entry in read_split(path):
            match = _PAPER_NAME.match(entry)
            if match and match["cls"]:
                classes[match["id"]] = match["cls"].lower()
    return classes


def _normalise_id(cell: str, by_number: dict[int, str], ids: set[str]) -> str | None:
    text = cell.strip()
    stem = text.rsplit(".", 1)[0] if text.lower().endswith((".png", ".bmp", ".jpg", ".tif")) else text
    if stem in ids:
        return stem
    if re.fullmatch(r"\d+(\.0+)?", stem):  # spreadsheets turn 000001 into 1 or 1.0
        return by_number.get(int(float(stem)))
    return None


def read_type_table(path: Path, ids: set[str]) -> dict[str, str]:
    """Read the benign/malignant type of each id from a CSV or XLSX table.

    Columns are found by content, not by header name (the published table's headers vary): the
    id column is the one whose cells name the most images, the type column the one holding the
    most ``benign`` / ``malignant`` values.
    """
    if not path.is_file():
        raise DataError(f"type table '{path}' does not exist")
    if path.suffix.lower() == ".xlsx":
        rows = read_xlsx_rows(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                rows = [list(r) for r in csv.reader(handle)]
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: not a readable CSV table ({err})") from None
    else:
        raise DataError(f"{path}: unsupported type table; give a .csv or .xlsx file (save .xls as .xlsx)")
    width = max((len(r) for r in rows), default=0)
    cells = [[(r[k] if k < len(r) else "").strip() for r in rows] for k in range(width)]  # column-major
    by_number = {int(i): i for i in ids if i.isdigit()}
    id_hits = [sum(_normalise_id(c, by_number, ids) is not None for c in col) for col in cells]
    type_hits = [sum(c.lower() in CLASSES for c in col) for col in cells]
    if not id_hits or max(id_hits) == 0 or max(type_hits) == 0:
        raise DataError(f"{path}: found no column of image ids and no column of benign/malignant types")
    id_col, type_col = int(np.argmax(id_hits)), int(np.argmax(type_hits))
    table: dict[str, str] = {}
    for id_cell, type_cell in zip(cells[id_col], cells[type_col]):
        image_id = _normalise_id(id_cell, by_number, ids)
        if image_id is not None and type_cell.lower() in CLASSES:
            if table.get(image_id, type_cell.lower()) != type_cell.lower():
                raise DataError(f"{path}: id {image_id} is listed as both benign and malignant")
            table[image_id] = type_cell.lower()
    return table


def prepare_udiat_case(image: Path, mask: Path, cls: str, base: Path) -> PreparedCase:
    """Load one case (image and its ground-truth mask); no files are written."""
    return load_case(image, [mask], image.stem, cls, base)


def _find_table(base: Path, raw: Path) -> Path | None:
    for folder in dict.fromkeys((base, raw)):
        tables = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".xlsx", ".csv"))
        if tables:
            return tables[0]
    return None


def prepare_udiat(
    raw: Path,
    out: Path,
    paper_splits: Path | None = None,
    type_table: Path | None = None,
    overwrite: bool = False,
    optimize_png: bool = True,
) -> PrepareResult:
    """Convert UDIAT Dataset B at ``raw`` into the folder format at ``out`` (``raw`` is only read).

    Classes come from the type table (given, or a ``.xlsx``/``.csv`` found in RAW), else from the
    paper lists' file names, else ``unknown``; table and lists must agree.
    """
    raw, out = Path(raw), Path(out)
    base = find_udiat_base(raw)
    images = sorted(p for p in (base / "original").iterdir() if is_image_file(p))
    if not images:
        raise DataError(f"{base / 'original'}: holds no images")
    masks = {p.stem: p for p in (base / "GT").iterdir() if is_image_file(p)}
    missing = [str(p) for p in images if p.stem not in masks]
    if missing:
        raise DataError(f"{len(missing)} UDIAT image(s) without a GT mask:\n  " + "\n  ".join(missing))
    ids = {p.stem for p in images}
    if len(ids) != len(images):
        repeated = sorted(i for i, n in Counter(p.stem for p in images).items() if n > 1)
        raise DataError(f"{base / 'original'}: ids present with more than one file: {', '.join(repeated)}")

    table_path = Path(type_table) if type_table is not None else _find_table(base, raw)
    classes = read_type_table(table_path, ids) if table_path is not None else {}
    splits: dict[str, list[str]] = {}
    if paper_splits is not None:
        splits = translate_split_lists(Path(paper_splits), paper_name_to_id, ids)
        for image_id, cls in _paper_classes(Path(paper_splits)).items():
            if classes.setdefault(image_id, cls) != cls:
                raise DataError(f"{image_id}: the type table says {classes[image_id]} but the paper lists say {cls}")

    prepare_output_dir(out, raw, overwrite, _OWNED)
    rows = [
        write_case(out, prepare_udiat_case(p, masks[p.stem], classes.get(p.stem, UNKNOWN_CLASS), base), optimize_png)
        for p in images
    ]
    pairs = finish_prepared(out, rows)
    if paper_splits is not None:
        write_translated_splits(out, splits)
        shutil.copytree(paper_splits, out / "source" / "ra_busseg_splits", dirs_exist_ok=True)
    return PrepareResult(out=out, rows=rows, near_duplicates=pairs, splits=splits, skipped=[])
