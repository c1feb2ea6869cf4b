"""Where datasets live, resolved one way everywhere (configs, tests, benchmarks).

Presets name datasets relative to a *datasets directory* (e.g. ``data.root: busi``) so no
config carries a personal path.  The directory is ``$RABUSSEG_DATASETS`` when set, otherwise
the first existing ``../shared/datasets`` next to the working directory or the source checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from rabusseg.errors import DataError

DATASETS_ENV = "RABUSSEG_DATASETS"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path | None:
    """The datasets directory, or ``None`` when none is configured or found."""
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env).expanduser()
    for candidate in (Path.cwd() / ".." / "shared" / "datasets", _REPO_ROOT / ".." / "shared" / "datasets"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def resolve_data_root(root: str | os.PathLike[str]) -> Path:
    """Resolve a dataset folder given as a path, or as a name inside :func:`datasets_dir`."""
    path = Path(root).expanduser()
    if path.is_dir():
        return path.resolve()
    base = datasets_dir()
    if not path.is_absolute() and base is not None and (base / path).is_dir():
        return (base / path).resolve()
    where = f" or in {base}" if base is not None else f" (set ${DATASETS_ENV} to the folder holding your datasets)"
    raise DataError(f"dataset folder '{root}' does not exist: looked for it as a path{where}")
