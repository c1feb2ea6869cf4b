"""Labelled / unlabelled splits: drawn reproducibly, or translated from the authors' lists.

:func:`make_split` draws, per class, one seeded permutation of the training pool and takes a
prefix of it as the labelled set. The permutation does not depend on the ratio, so for one seed
the labelled sets are nested (1/16 within 1/8 within 1/4 within 1/2), as the paper's protocol asks.
The permutation runs over exact-duplicate *groups*, so copies of one image always land on the
same side; images duplicating a test image are left out of the pool altogether.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from rabusseg.data.folder import DatasetFolder
from rabusseg.data.hashing import groups_from_metadata
from rabusseg.data.io import read_split, write_split
from rabusseg.errors import ConfigError, DataError, OutputExistsError

PROVENANCE_FILE = "split.json"
"""Written next to generated lists; only folders holding it may be overwritten (never paper splits)."""


@dataclass
class SplitResult:
    """The lists :func:`make_split` wrote, and why some ids were left out."""

    name: str
    directory: Path
    labeled: list[str]
    unlabeled: list[str]
    val: list[str]
    test: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, Counter[str]]:
        """Per list, the number of ids of each class."""
        lists = {"labeled": self.labeled, "unlabeled": self.unlabeled, "val": self.val, "test": self.test}
        return {name: Counter(self.classes[i] for i in ids) for name, ids in lists.items()}


def parse_fraction(text: str | float | Fraction) -> Fraction:
    """Parse ``"1/8"``, ``"0.125"`` or ``"12.5%"`` into a fraction strictly between 0 and 1."""
    raw = str(text).strip()
    try:
        value = Fraction(raw[:-1]) / 100 if raw.endswith("%") else Fraction(raw)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"labelled fraction '{text}' is not a number like 1/8, 0.125 or 12.5%") from None
    value = value.limit_denominator(1000)
    if not 0 < value < 1:
        raise ConfigError(f"labelled fraction '{text}' must be between 0 and 1 (exclusive)")
    return value


def fraction_name(value: Fraction) -> str:
    """Folder name of a ratio, the convention of the paper's lists: ``1/8 -> "1_8"``."""
    return f"{value.numerator}_{value.denominator}"


def _shown(items: list[str], limit: int = 5) -> str:
    return ", ".join(repr(i) for i in items[:limit]) + (", ..." if len(items) > limit else "")


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across classes in proportion to ``sizes`` (largest remainder), for a stratified val."""
    pool = sum(sizes.values())
    exact = {c: total * n / pool for c, n in sizes.items()}
    shares = {c: int(np.floor(v)) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (shares[c] - exact[c], c))[: total - sum(shares.values())]:
        shares[c] += 1
    return shares


def _prefix(units: list[list[str]], target: int) -> int:
    """Smallest number of leading units holding at least ``target`` images (monotone in target)."""
    cumulative = np.cumsum([len(u) for u in units])
    return int(np.searchsorted(cumulative, target, side="left") + 1) if target > 0 else 0


def _check_target(directory: Path, overwrite: bool) -> None:
    listed = [directory / f for f in ("labeled.txt", "unlabeled.txt", "val.txt") if (directory / f).exists()]
    if not listed:
        return
    if not (directory / PROVENANCE_FILE).is_file():
        raise OutputExistsError(
            f"{directory} already holds split lists not written by 'rabusseg data split' (paper splits?); "
            "they are never overwritten: choose another --name"
        )
    if not overwrite:
        raise OutputExistsError(f"{directory} already holds split lists; pass --overwrite to redraw them")


def _training_units(
    folder: DatasetFolder, classes: dict[str, str], test: list[str], include_normal: bool
) -> tuple[dict[str, list[list[str]]], dict[str, str]]:
    """The training pool as exact-duplicate groups ("units", singletons for most ids) per class,
    and the ids left out with the reason."""
    groups = groups_from_metadata(folder.metadata)
    test_set, test_groups = set(test), {groups[i] for i in test if i in groups}
    excluded: dict[str, str] = {}
    units: dict[str, list[str]] = {}
    for image_id in folder.ids:
        if image_id in test_set:
            continue
        if classes[image_id] == "normal" and not include_normal:
            excluded[image_id] = "class normal (use --include-normal to keep it)"
        elif groups.get(image_id) in test_groups:
            excluded[image_id] = f"exact duplicate ({groups[image_id]}) of a test image"
        else:
            units.setdefault(groups.get(image_id, image_id), []).append(image_id)
    if not units:
        raise DataError(f"{folder.root}: the training pool is empty after removing test and excluded ids")
    by_class: dict[str, list[list[str]]] = {}
    for members in sorted(units.values()):
        by_class.setdefault(classes[members[0]], []).append(members)  # a mixed group follows its first id
    return by_class, excluded


def make_split(
    root: str | os.PathLike[str],
    labeled_fraction: str | float | Fraction,
    seed: int = 0,
    test_list: str | os.PathLike[str] | None = None,
    val: int = 0,
    name: str | None = None,
    include_normal: bool = False,
    overwrite: bool = False,
) -> SplitResult:
    """Write ``splits/<name>/{labeled,unlabeled[,val]}.txt`` drawn from the training pool of ``root``.

    The pool is every id not in the test list (``splits/test.txt`` by default, when it exists),
    without class ``normal`` unless ``include_normal`` (the paper trains on lesion images only).
    ``val`` images are carved from the front of the labelled prefix, so they are the same for every
    ratio and the labelled sets (minus val) stay nested.
    """
    folder = DatasetFolder(root)
    fraction = parse_fraction(labeled_fraction)
    if val < 0:
        raise ConfigError(f"--val must be 0 or more, got {val}")
    name = name or fraction_name(fraction)
    if Path(name).is_absolute() or ".." in Path(name).parts or not name.strip("/"):
        raise ConfigError(f"split name '{name}' must be a relative folder name under splits/")
    directory = folder.root / "splits" / name
    _check_target(directory, overwrite)

    if test_list is None and (folder.root / "splits" / "test.txt").is_file():
        test_list = "test"
    test = folder.split(test_list) if test_list is not None else []
    classes = {i: folder.class_of(i) for i in folder.ids}
    by_class, excluded = _training_units(folder, classes, test, include_normal)
    sizes = {c: sum(len(u) for u in us) for c, us in by_class.items()}
    val_per_class = _allocate(val, sizes) if val else {c: 0 for c in sizes}

    labeled: list[str] = []
    validation: list[str] = []
    for cls, class_units in sorted(by_class.items()):
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode())])  # per class: adding a class changes no other
        order = [class_units[k] for k in rng.permutation(len(class_units))]
        n_labeled = _prefix(order, max(1, _round_half_up(float(fraction) * sizes[cls])))
        n_val = _prefix(order, val_per_class[cls])
        if n_val >= n_labeled and val_per_class[cls] > 0:
            raise DataError(
                f"--val {val} takes {val_per_class[cls]} '{cls}' images but the {fraction} labelled set has only "
                f"{sum(len(u) for u in order[:n_labeled])} of them; lower --val or raise --labeled"
            )
        validation += [i for u in order[:n_val] for i in u]
        labeled += [i for u in order[n_val:n_labeled] for i in u]
    chosen = set(labeled) | set(validation)
    unlabeled = [i for us in by_class.values() for u in us for i in u if i not in chosen]

    result = SplitResult(
        name, directory, sorted(labeled), sorted(unlabeled), sorted(validation), test, excluded, classes
    )
    write_split(directory / "labeled.txt", result.labeled)
    write_split(directory / "unlabeled.txt", result.unlabeled)
    if val:
        write_split(directory / "val.txt", result.val)
    elif (directory / "val.txt").exists():
        (directory / "val.txt").unlink()  # only reached when overwriting our own earlier draw
    provenance = {
        "labeled_fraction": str(fraction), "seed": seed, "test_list": str(test_list) if test_list else None,
        "val": val, "include_normal": include_normal,
        "counts": {k: dict(v) for k, v in result.counts().items()},
        "excluded": {r: sorted(i for i, why in excluded.items() if why == r) for r in sorted(set(excluded.values()))},
    }  # fmt: skip
    (directory / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return result


def translate_split_lists(
    paper_dir: Path, to_id: Callable[[str], str | None], known_ids: set[str]
) -> dict[str, list[str]]:
    """Translate every ``*.txt`` list under ``paper_dir`` from the authors' file names to ids.

    Keys are the list paths relative to ``paper_dir`` without ``.txt`` (``"test"``, ``"1_2/labeled"``).
    Every name must translate and name a case of the dataset: a list silently shortened would
    change the benchmark.
    """
    if not paper_dir.is_dir():
        raise DataError(f"paper splits folder '{paper_dir}' does not exist")
    files = sorted(paper_dir.rglob("*.txt"))
    if not files:
        raise DataError(f"{paper_dir}: no split lists (*.txt) found")
    result: dict[str, list[str]] = {}
    problems: list[str] = []
    for path in files:
        entries = read_split(path)
        translated = [(entry, to_id(entry)) for entry in entries]
        foreign = [entry for entry, image_id in translated if image_id is None]
        absent = [entry for entry, image_id in translated if image_id is not None and image_id not in known_ids]
        if foreign:
            problems.append(f"{path}: {len(foreign)} name(s) not of this dataset's form: {_shown(foreign)}")
        if absent:
            problems.append(
                f"{path}: {len(absent)} of {len(entries)} name(s) not in the raw download: {_shown(absent)}"
            )
        result[path.relative_to(paper_dir).with_suffix("").as_posix()] = [i for _, i in translated if i is not None]
    if problems:
        raise DataError("cannot translate the paper splits:\n  " + "\n  ".join(problems))
    return result


def write_translated_splits(out: Path, splits: dict[str, list[str]]) -> None:
    """Write translated lists as ``out/splits/<key>.txt``, keeping the authors' order."""
    for key, ids in splits.items():
        write_split(out / "splits" / f"{key}.txt", ids)
