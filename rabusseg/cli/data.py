"""CLI verbs ``rabusseg data check | split | prepare busi | prepare udiat | prepare folders``.

Thin wrappers: each verb calls one typed function of :mod:`rabusseg.data` and prints a summary.
Library errors (``DataError``, ``OutputExistsError``...) propagate to :func:`rabusseg.cli.main`,
which prints them without a traceback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer

from rabusseg.cli.app import data_app, prepare_app


def _dataset_root(path: Path) -> Path:
    """A path as given, or a dataset name inside the datasets directory (``busi``)."""
    if path.exists():
        return path
    from rabusseg.paths import resolve_data_root

    return resolve_data_root(path)


def _console(stderr: bool = False):  # noqa: ANN202  (rich is imported lazily)
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fmt(stats: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    if not stats:
        return "-"
    return " / ".join(f"{stats[k] * scale:.{digits}f}" for k in ("min", "median", "max"))


@data_app.command("check")
def check(
    directory: Path = typer.Argument(..., metavar="DIR", help="Dataset folder (or a name in the datasets directory)."),
) -> None:
    """Validate a dataset; list every bad file with its reason and exit non-zero on errors."""
    from rich.table import Table

    from rabusseg.data.check import check_dataset

    report = check_dataset(_dataset_root(directory))
    out, err = _console(), _console(stderr=True)
    summary: dict[str, Any] = report.summary
    table = Table(title=f"{report.root}: {summary['images']} images")
    table.add_column("")
    table.add_column("value")
    table.add_row("classes", ", ".join(f"{c} {n}" for c, n in summary["classes"].items()))
    table.add_row("width min / median / max", _fmt(summary["width"]))
    table.add_row("height min / median / max", _fmt(summary["height"]))
    table.add_row("distinct sizes", str(summary["distinct_sizes"]))
    table.add_row("gray / colour images", f"{summary['modes'].get('gray', 0)} / {summary['modes'].get('colour', 0)}")
    table.add_row("lesion area % min / median / max", _fmt(summary["lesion_area_fraction"], 100, 2))
    table.add_row("empty masks", ", ".join(f"{c} {n}" for c, n in summary["empty_masks"].items()) or "0")
    for name, size in summary["splits"].items():
        table.add_row(f"split {name}", str(size))
    out.print(table)
    for file, reason in report.warnings:
        err.print(f"[yellow]warning:[/] {file}: {reason}", markup=True)
    for file, reason in report.errors:
        err.print(f"[bold red]error:[/] {file}: {reason}", markup=True)
    if not report.ok:
        err.print(f"[bold red]{len(report.errors)} problem(s) in {report.root}[/]", markup=True)
        raise typer.Exit(code=1)
    out.print(f"ok: {report.root} ({len(report.warnings)} warning(s))")


@data_app.command("split")
def split(
    directory: Path = typer.Argument(..., metavar="DIR", help="Dataset folder (or a name in the datasets directory)."),
    labeled: str = typer.Option(..., "--labeled", help="Labelled fraction of the training pool: 1/8, 0.125 or 12.5%."),
    seed: int = typer.Option(0, "--seed", help="Seed; for one seed the labelled sets of all ratios are nested."),
    test: Optional[str] = typer.Option(
        None, "--test", help="Test list (split name or .txt path); default splits/test.txt."
    ),
    val: int = typer.Option(
        0, "--val", min=0, help="Also write val.txt: this many images carved from the labelled set."
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Folder under splits/ (default: the ratio, e.g. 1_8)."),
    include_normal: bool = typer.Option(False, "--include-normal", help="Keep class 'normal' in the training pool."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redraw lists written earlier by this command (never paper splits)."
    ),
) -> None:
    """Draw stratified, nested, duplicate-safe labelled/unlabelled lists from the training pool."""
    from rich.table import Table

    from rabusseg.data.splits import make_split

    result = make_split(_dataset_root(directory), labeled, seed, test, val, name, include_normal, overwrite)
    counts = result.counts()
    classes = sorted({c for per in counts.values() for c in per})
    table = Table(title=f"splits/{result.name} (seed {seed})")
    table.add_column("list")
    for cls in classes:
        table.add_column(cls, justify="right")
    table.add_column("total", justify="right")
    for list_name, per in counts.items():
        table.add_row(list_name, *(str(per.get(c, 0)) for c in classes), str(sum(per.values())))
    out = _console()
    out.print(table)
    if result.excluded:
        reasons = Counter(result.excluded.values())
        out.print("left out of the pool: " + "; ".join(f"{n} x {r}" for r, n in reasons.items()))
    out.print(f"wrote {result.directory}")


_FAST_PNG = "Light PNG compression: same pixels, larger files, several times faster."


def _print_prepared(result, kind: str) -> None:  # noqa: ANN001
    from rich.table import Table

    classes = Counter(str(r["class"]) for r in result.rows)
    modes = Counter(str(r["mode"]) for r in result.rows)
    table = Table(title=f"{kind} -> {result.out}: {len(result.rows)} cases")
    table.add_column("")
    table.add_column("value")
    table.add_row("classes", ", ".join(f"{c} {n}" for c, n in sorted(classes.items())))
    table.add_row("stored gray / RGB", f"{modes.get('L', 0)} / {modes.get('RGB', 0)}")
    table.add_row("images with several masks", str(sum(int(r["n_mask_files"]) > 1 for r in result.rows)))
    groups = {r["exact_duplicate_group"] for r in result.rows if r["exact_duplicate_group"]}
    table.add_row("exact-duplicate groups", str(len(groups)))
    table.add_row("near-duplicate candidate pairs", str(len(result.near_duplicates)))
    for key, ids in result.splits.items():
        table.add_row(f"split {key}", str(len(ids)))
    out = _console()
    out.print(table)
    for path in result.skipped:
        out.print(f"skipped (not a case file): {path}")


@prepare_app.command("busi")
def prepare_busi_verb(
    raw: Path = typer.Argument(..., help="The BUSI download (holding Dataset_BUSI_with_GT/); only read."),
    out: Path = typer.Argument(..., help="Output dataset folder (must be empty unless --overwrite)."),
    paper_splits: Optional[Path] = typer.Option(
        None, "--paper-splits", help="Folder of the authors' lists (test.txt, 1_2/...)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what an earlier run wrote in OUT."),
    fast_png: bool = typer.Option(False, "--fast-png", help=_FAST_PNG),
) -> None:
    """Convert the public BUSI download to the rabusseg folder format."""
    from rabusseg.data.prepare_busi import prepare_busi

    result = prepare_busi(raw, out, paper_splits=paper_splits, overwrite=overwrite, optimize_png=not fast_png)
    _print_prepared(result, "BUSI")


@prepare_app.command("udiat")
def prepare_udiat_verb(
    raw: Path = typer.Argument(..., help="UDIAT Dataset B (original/, GT/, optional DatasetB.xlsx); only read."),
    out: Path = typer.Argument(..., help="Output dataset folder (must be empty unless --overwrite)."),
    paper_splits: Optional[Path] = typer.Option(
        None, "--paper-splits", help="Folder of the authors' lists (000009_Benign.png...)."
    ),
    type_table: Optional[Path] = typer.Option(
        None, "--type-table", help="CSV or XLSX with each image's type (benign/malignant)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what an earlier run wrote in OUT."),
    fast_png: bool = typer.Option(False, "--fast-png", help=_FAST_PNG),
) -> None:
    """Convert UDIAT Dataset B to the rabusseg folder format."""
    from rabusseg.data.prepare_udiat import prepare_udiat

    result = prepare_udiat(
        raw, out, paper_splits=paper_splits, type_table=type_table, overwrite=overwrite, optimize_png=not fast_png
    )
    _print_prepared(result, "UDIAT")


@prepare_app.command("folders")
def prepare_folders_verb(
    raw: Path = typer.Argument(..., help="A dataset kept as an image folder and a mask folder; only read."),
    out: Path = typer.Argument(..., help="Output dataset folder (must be empty unless --overwrite)."),
    images: str = typer.Option("images", "--images", help="The image folder, relative to RAW."),
    masks: str = typer.Option("masks", "--masks", help="The mask folder, relative to RAW."),
    mask_name: str = typer.Option(
        "{id}", "--mask-name",
        help="Mask file name without extension; {id} is the image's: '{id}_mask', 'mask_{id}'; "
             "'{id}_mask*' merges several masks per image.",
    ),  # fmt: skip
    class_table: Optional[Path] = typer.Option(
        None, "--class-table", help="CSV with 'id' (or 'filename') and 'class' columns."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what an earlier run wrote in OUT."),
    fast_png: bool = typer.Option(False, "--fast-png", help=_FAST_PNG),
) -> None:
    """Convert any image folder + mask folder (another scanner's set) to the rabusseg folder format."""
    from rabusseg.data.prepare_folders import prepare_folders

    result = prepare_folders(raw, out, images=images, masks=masks, mask_name=mask_name, class_table=class_table,
                             overwrite=overwrite, optimize_png=not fast_png)  # fmt: skip
    _print_prepared(result, "folders")
