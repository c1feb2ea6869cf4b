"""CLI verbs ``train`` and ``demo``: thin wrappers over :func:`rabusseg.engine.trainer.train` and
:func:`rabusseg.app.demo.run_demo` (torch is imported inside the verbs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from rabusseg.cli.app import app, data_app, prepare_app  # noqa: F401


def _print_result_line(summary: dict, run_dir: Path) -> None:
    from rich.console import Console

    console = Console()
    last = summary.get("test_last") or {}
    best = summary.get("test_best") or {}
    parts = [f"run directory: {run_dir}"]
    if last:
        parts.append(f"test Dice (last) {last['dice']['mean']:.4f} +- {last['dice']['std']:.4f}")
    if best:
        parts.append(f"test Dice (best on val) {best['dice']['mean']:.4f}")
    console.print("; ".join(parts), highlight=False)


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="A preset name (busi_1-2, cpu_small, demo, ...) or a YAML file.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (config, metrics, checkpoints, evaluation).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: --set train.epochs=20 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from checkpoints/last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start again in a non-empty --out (old files are moved aside).")] = False,
) -> None:
    """Train a segmenter (supervised, mean_teacher, fixmatch or ra_busseg) into a run directory.

    Under torchrun (torchrun --nproc_per_node=N -m rabusseg train ...) every process joins one DDP job; rank 0 writes.
    """
    from rabusseg.config import load_config
    from rabusseg.engine.trainer import train as run_training

    cfg = load_config(config, set_ or [])
    result = run_training(cfg, out, resume=resume, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":
        _print_result_line(result.summary, out)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the phantoms, the run and the report.")] = Path("rabusseg-demo"),
    data: Annotated[Path | None, typer.Option("--data", help="Use this dataset folder instead of synthesising phantoms.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse a non-empty --out (the old run is moved aside).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a demo.yaml setting (repeatable).")] = None,
) -> None:
    """The main job in one command: phantoms -> 1/4 split -> RA-BUSSeg training on CPU -> test
    evaluation -> predictions with overlays -> summary.json and report.html."""
    from rabusseg.app.demo import run_demo

    run_demo(out, data=data, overwrite=overwrite, overrides=set_ or [])
