"""The run directory: refuse to mix runs, never destroy one silently.

* a missing or empty ``RUN_DIR`` is used as is;
* a non-empty one is refused unless ``resume`` (continue from ``checkpoints/last.pt``) or
  ``overwrite`` is given;
* ``overwrite`` does not delete anything: the old contents move to a sibling folder
  ``RUN_DIR.replaced-YYYYmmdd-HHMMSS`` (printed), which the user removes when sure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rabusseg.errors import OutputExistsError, RabussegError

LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
BEST_CHECKPOINT = Path("checkpoints") / "best.pt"


@dataclass(frozen=True)
class RunDirState:
    """What :func:`prepare_run_dir` found and did."""

    path: Path
    resume_from: Path | None
    """``checkpoints/last.pt`` when resuming, else ``None``."""
    moved_aside: Path | None
    """Where an overwritten run's files went."""


def _is_empty(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


def prepare_run_dir(path: str | Path, *, resume: bool = False, overwrite: bool = False, create: bool = True) -> RunDirState:
    """Check ``path`` against the flags; move an old run aside for ``overwrite``.

    ``create=False`` only checks (non-main ranks must not touch the disk).
    """
    path = Path(path)
    if resume and overwrite:
        raise RabussegError("--resume and --overwrite contradict each other: pick one")
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"run directory {path} exists and is not a folder")
    if resume:
        last = path / LAST_CHECKPOINT
        if not last.is_file():
            raise RabussegError(f"cannot resume: {last} does not exist (start a new run without --resume)")
        return RunDirState(path, last, None)
    moved = None
    if not _is_empty(path):
        if not overwrite:
            raise OutputExistsError(
                f"run directory {path} is not empty: pass --resume to continue it or --overwrite to "
                "start again (the old files are moved aside, not deleted)"
            )
        if create:
            moved = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            n = 1
            while moved.exists():
                moved = moved.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
                n += 1
            path.rename(moved)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return RunDirState(path, None, moved)
