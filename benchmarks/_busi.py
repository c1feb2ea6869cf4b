"""The benchmarks' BUSI working copy: links to the shared files, writable split lists, carved validation lists.

The shared BUSI folder is read-only and never written to: :func:`prepare_data` makes a folder of
symbolic links to its images, masks and metadata beside a copy of its ``splits/``, and draws the
1/4 and 1/8 splits there (seed 0: the 1/8 labelled set is inside the 1/4 one).
:func:`carve_validation` holds images of an unlabelled list out as a validation list (BUSI has a
mask for every image), so choices are made on images of the training pool and the test list is
never read.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from _common import BENCH_DIR

WORK_ROOT = BENCH_DIR / "work" / "busi"
RATIOS = {"1_2": "paper", "1_4": "1/4", "1_8": "1/8"}
"""Split folder -> where its lists come from: the authors' lists, or drawn here with this fraction."""


def shared_busi() -> Path:
    """The read-only BUSI folder of the shared datasets directory."""
    from rabusseg.paths import resolve_data_root

    return resolve_data_root("busi")


def prepare_data(source: Path, work: Path = WORK_ROOT, seed: int = 0) -> Path:
    """A writable view of ``source``: links to its files, a copy of ``splits/``, the 1/4 and 1/8 splits drawn in it."""
    work.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        target = work / entry.name
        if entry.name == "splits":
            if not target.exists():
                shutil.copytree(entry, target, copy_function=shutil.copyfile)  # contents, not read-only modes
                for path in (target, *target.rglob("*")):
                    path.chmod(0o755 if path.is_dir() else 0o644)
        elif not target.exists() and not target.is_symlink():
            target.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    for ratio, origin in RATIOS.items():
        if origin != "paper" and not (work / "splits" / ratio / "labeled.txt").is_file():
            cmd = [sys.executable, "-m", "rabusseg", "data", "split", str(work), "--labeled", origin, "--seed", str(seed)]
            subprocess.run(cmd, check=True)
    return work


def carve_validation(root: Path, ratio: str, n: int, out: Path) -> tuple[str, str]:
    """Move ``n`` *unlabelled* ids (spread over the class-sorted list) to a validation list under ``out``.

    Why from the unlabelled list: BUSI has a mask for every image, so a validation list can be held
    out of the unlabelled pool and the labelled set keeps the size its ratio names (30 of the 65
    labelled images at 1/8 would be half of them).  No run trains on a validation image, and for
    ``supervised`` the training data is exactly that of the run without a validation list.
    Returns (unlabelled list, validation list) as absolute paths.
    """
    from rabusseg.data.folder import DatasetFolder

    unlabeled = DatasetFolder(root).split(f"{ratio}/unlabeled")
    if not 0 < n < len(unlabeled):
        raise ValueError(f"validation of {n}: the {ratio} unlabelled list has {len(unlabeled)} ids")
    val = [unlabeled[i * len(unlabeled) // n] for i in range(n)]  # evenly over the list: every class
    held = set(val)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unlabeled.txt").write_text("\n".join(i for i in unlabeled if i not in held) + "\n", encoding="utf-8")
    (out / "val.txt").write_text("\n".join(val) + "\n", encoding="utf-8")
    return str((out / "unlabeled.txt").resolve()), str((out / "val.txt").resolve())
