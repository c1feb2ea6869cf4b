"""CLI verbs: ``evaluate`` (score a checkpoint on a split) and ``report`` (HTML page of a run).

Both are thin wrappers over :func:`rabusseg.evaluation.runner.evaluate_checkpoint` and
:func:`rabusseg.evaluation.report.render_run_report`; torch is imported inside the verbs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rabusseg.cli.app import app, data_app, prepare_app  # noqa: F401
from rabusseg.cli.predict import RESIZE_HELP, SIZE_HELP, TTA_HELP, inference_size_arg, resize_arg, tta_arg, weights_arg

SPLIT_HELP = ("Split list under splits/ (without .txt), or 'all' for every image with a mask; default: test, "
              "or all when the folder has no split lists.")


def _summary_table(summary: dict[str, Any], title: str, unit: str) -> Any:
    from rich.table import Table

    from rabusseg.evaluation.metrics import METRIC_NAMES

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    table = Table(title=title)
    for col in ("metric", "mean", "std", "median", "95% CI", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name in METRIC_NAMES:
        s = summary.get(name)
        if s is None:
            continue
        lo, hi = s["ci95"]
        label = f"{name} ({unit})" if name in ("hd95", "assd") else name
        table.add_row(label, f(s["mean"]), f(s["std"]), f(s["median"]), f"[{f(lo)}, {f(hi)}]", str(s["n"]))
    table.add_row("pooled dice", f(summary.get("pooled_dice")), "", "", "", str(summary.get("n_images")))
    return table


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A rabusseg checkpoint (.pt).")],
    data_dir: Annotated[str, typer.Argument(help="Dataset folder, or its name inside $RABUSSEG_DATASETS.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for per_image.csv, summary.json, report.html.")],
    split: Annotated[str | None, typer.Option("--split", help=SPLIT_HELP, show_default=False)] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help=TTA_HELP, show_default=False)] = None,
    size: Annotated[int | None, typer.Option("--size", help=SIZE_HELP)] = None,
    resize: Annotated[str | None, typer.Option("--resize", help=RESIZE_HELP)] = None,
    full_size: Annotated[bool, typer.Option("--full-size", help="Evaluate the full image (same as --size 0).")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 1,
    weights: Annotated[str, typer.Option("--weights", help="student, teacher or auto (checkpoint's choice).")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty output folder.")] = False,
) -> None:
    """Score CHECKPOINT on a split of DATA_DIR at each image's original resolution."""
    from rich.console import Console

    from rabusseg.evaluation.runner import evaluate_checkpoint

    inference_size = None if full_size else inference_size_arg(size)
    summary = evaluate_checkpoint(checkpoint, data_dir, split, out, tta=tta_arg(tta), size=inference_size,
                                  device=device, overwrite=overwrite, batch_size=batch_size, weights=weights_arg(weights),
                                  resize=resize_arg(resize))  # fmt: skip
    console = Console()
    console.print(_summary_table(summary, f"{summary['context']['split']}: {summary['n_images']} images", "px"))
    cases = summary["empty_cases"]
    console.print(f"empty masks: {cases['both_empty']} both empty, {cases['empty_gt']} false alarm(s), "
                  f"{cases['empty_pred']} missed lesion(s)")
    console.print(f"wrote {out / 'per_image.csv'}, {out / 'summary.json'}, {out / 'report.html'}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A training run directory.")]) -> None:
    """Write RUN_DIR/report.html: training curves and the last test evaluation."""
    from rich.console import Console

    from rabusseg.evaluation.report import render_run_report

    Console().print(f"wrote {render_run_report(run_dir)}")
