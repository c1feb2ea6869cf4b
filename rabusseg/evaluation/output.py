"""Write an evaluation to disk: ``per_image.csv``, ``summary.json``, ``report.html`` and its PNGs.

Layout of ``OUT/``::

    per_image.csv        id, class, empty_case, every metric, tp/fp/fn/tn, height, width
    summary.json         the summary of :func:`rabusseg.evaluation.aggregate.summarize` + "context"
    report.html          tables, Dice histogram, best/worst gallery (figures/*.png)

An existing non-empty ``OUT`` is never written into without ``overwrite``; with it, only the
files above are replaced (nothing else in the folder is deleted).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rabusseg.errors import OutputExistsError
from rabusseg.evaluation.gallery import GalleryCase, GalleryCases
from rabusseg.evaluation.metrics import COUNT_NAMES, METRIC_NAMES
from rabusseg.evaluation.plots import plot_cases, plot_histogram
from rabusseg.evaluation.report import context_table, evaluation_sections, figure, page

if TYPE_CHECKING:
    from rabusseg.data.folder import DatasetFolder

FIGURES = "figures"


def prepare_out_dir(out_dir: str | os.PathLike[str], overwrite: bool, *, create: bool = True) -> Path:
    """Create ``out_dir`` (unless ``create`` is false: check only); refuse a non-empty one unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"output folder {out} already exists and is not empty (use --overwrite to replace)")
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def _csv_value(v: Any) -> Any:
    """NaN as an empty cell (read back as NaN by pandas and spreadsheets), floats at full precision."""
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def csv_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Fixed columns first (id, class, empty case, metrics, counts), then any extra keys in order seen."""
    fixed = ["id", "class", "empty_case", *METRIC_NAMES, *COUNT_NAMES, "height", "width"]
    present = {k for r in rows for k in r}
    extra = [k for r in rows for k in r if k not in fixed]
    return [c for c in fixed if c in present] + list(dict.fromkeys(extra))


def write_per_image_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    columns = csv_columns(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _csv_value(r.get(c, "")) for c in columns})
    return path


def _gallery_figure(cases: list[GalleryCase], folder: DatasetFolder, path: Path, title: str) -> Path:
    from rabusseg.data.io import load_image, load_mask

    panels = [(c.image_id, c.dice, load_image(folder.image_path(c.image_id)),
               load_mask(folder.mask_path(c.image_id)), c.pred) for c in cases]
    return plot_cases(panels, path, title=title)


def write_evaluation(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    folder: DatasetFolder | None = None,
    gallery: GalleryCases | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the evaluation files into ``out_dir`` and return the path of ``report.html``.

    The gallery needs both ``gallery`` (the kept predicted masks) and ``folder`` (to load the
    images and ground truth); without them the report says it has none.
    """
    out = prepare_out_dir(out_dir, overwrite)
    write_per_image_csv(out / "per_image.csv", rows)
    document = {**summary, "context": dict(context)}
    (out / "summary.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    unit = str(context.get("distance_unit", "px"))
    fig_dir = out / FIGURES
    hist = plot_histogram([float(r.get("dice", math.nan)) for r in rows], fig_dir / "dice_histogram.png")
    sections = [f"<p class='note'>{len(rows)} images. Per-image scores: <a href='per_image.csv'>per_image.csv</a>; "
                "numbers: <a href='summary.json'>summary.json</a>. Metric definitions: docs/metrics.md.</p>",
                "<h2>Settings</h2>", context_table(context), *evaluation_sections(summary, unit),
                "<h2>Dice distribution</h2>", figure(hist.relative_to(out).as_posix(), "Dice histogram"),
                "<h2>Best and worst cases</h2>"]
    if gallery is not None and folder is not None and (gallery.best or gallery.worst):
        for name, cases in (("best", gallery.best), ("worst", gallery.worst)):
            png = _gallery_figure(cases, folder, fig_dir / f"gallery_{name}.png", f"{name} {len(cases)} by Dice")
            sections.append(figure(png.relative_to(out).as_posix(), f"{name} cases"))
        sections.append("<p class='note'>Images with neither a lesion nor a prediction are left out.</p>")
    else:
        sections.append("<p class='note'>No gallery: the predicted masks were not kept.</p>")
    report = out / "report.html"
    report.write_text(page(f"rabusseg evaluation: {context.get('split', '')}", sections), encoding="utf-8")
    return report
