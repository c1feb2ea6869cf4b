"""``rabusseg`` command line: thin verbs over the importable, typed functions.

Each module registers its verbs on :data:`rabusseg.cli.app.app`; heavy imports (torch, models)
happen inside the verbs so ``rabusseg --help`` stays fast.  Errors meant for the user
(:class:`~rabusseg.errors.RabussegError`) are printed without a traceback and exit with status 1.
"""

from __future__ import annotations

import os
import sys

from rabusseg.cli import data as _data  # noqa: F401  (registers verbs)
from rabusseg.cli import evaluate as _evaluate  # noqa: F401
from rabusseg.cli import predict as _predict  # noqa: F401
from rabusseg.cli import recalibrate as _recalibrate  # noqa: F401
from rabusseg.cli import serve as _serve  # noqa: F401
from rabusseg.cli import synth as _synth  # noqa: F401
from rabusseg.cli import train as _train  # noqa: F401
from rabusseg.cli.app import app
from rabusseg.errors import RabussegError


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # Idle OpenMP threads sleep instead of spinning (torch is not imported yet, so this takes
    # effect).  On cores shared with other work, spinning made small convolutions up to 50x
    # slower here (benchmarks/_common.py); an explicit user setting is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        app(args=argv, prog_name="rabusseg")
    except RabussegError as err:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)
