"""Self-contained HTML reports: plain HTML tables plus PNGs next to the page, no JavaScript.

Two pages: the evaluation report of one split (``OUT/report.html``, written by
:func:`rabusseg.evaluation.runner.write_evaluation`) and the run report (``RUN_DIR/report.html``,
:func:`render_run_report`) with training curves from ``metrics.jsonl`` and the last test evaluation.
The pages link their figures by relative path, so a folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rabusseg.errors import DataError
from rabusseg.evaluation.metrics import EMPTY_CASES, METRIC_NAMES
from rabusseg.evaluation.plots import Series, plot_curves

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#111}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:90%}pre{background:#f9fafb;padding:1em;overflow:auto}"""

DISTANCE_METRICS = ("hd95", "assd")


def fmt(x: Any, digits: int = 4) -> str:
    """A table cell: numbers rounded, missing values as an en dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "&ndash;"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: Sequence[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")


def figure(src: str, alt: str) -> str:
    return f"<p><img src='{html.escape(src)}' alt='{html.escape(alt)}'></p>"


def metrics_table(summary: Mapping[str, Any], unit: str = "px") -> str:
    """Per metric: mean, std, median, bootstrap 95% interval, images used and NaN skipped."""
    rows = []
    for name in METRIC_NAMES:
        s = summary.get(name)
        if not isinstance(s, Mapping):
            continue
        label = f"{name} ({unit})" if name in DISTANCE_METRICS else name
        lo, hi = (s.get("ci95") or [None, None])[:2]
        rows.append([label, s.get("mean"), s.get("std"), s.get("median"), lo, hi, s.get("n"), s.get("n_nan")])
    rows.append(["pooled dice (all pixels)", summary.get("pooled_dice"), None, None, None, None,
                 summary.get("n_images"), None])
    return html_table(["metric", "mean", "std", "median", "ci95 low", "ci95 high", "n", "NaN skipped"], rows)


def empty_table(summary: Mapping[str, Any]) -> str:
    cases = summary.get("empty_cases") or {}
    labels = {"both_empty": "no lesion, none predicted", "empty_gt": "no lesion, some predicted (false alarm)",
              "empty_pred": "lesion, none predicted (missed)"}
    return html_table(["empty case", "meaning", "images"], [[c, labels[c], cases.get(c, 0)] for c in EMPTY_CASES])


def per_class_table(summary: Mapping[str, Any]) -> str:
    """One row per class: mean (std) of each metric, pooled Dice and empty-case counts."""
    headers = ["class", "images", *METRIC_NAMES, "pooled dice", *EMPTY_CASES]
    rows = []
    for cls, s in (summary.get("per_class") or {}).items():
        cells: list[Any] = [cls, s.get("n_images")]
        for name in METRIC_NAMES:
            m = s.get(name) or {}
            mean, std = m.get("mean"), m.get("std")
            cells.append(None if mean is None else f"{mean:.4f}" + ("" if std is None else f" ({std:.4f})"))
        cells.append(s.get("pooled_dice"))
        cells.extend((s.get("empty_cases") or {}).get(c, 0) for c in EMPTY_CASES)
        rows.append(cells)
    return html_table(headers, rows) + "<p class='note'>Cells: mean (standard deviation) over images.</p>"


def context_table(context: Mapping[str, Any]) -> str:
    rows = [[k, v if isinstance(v, (str, int, float)) or v is None else json.dumps(v)] for k, v in context.items()]
    return html_table(["setting", "value"], rows)


def evaluation_sections(summary: Mapping[str, Any], unit: str) -> list[str]:
    return [
        "<h2>Metrics</h2>", metrics_table(summary, unit),
        "<h2>Empty masks</h2>", empty_table(summary),
        "<h2>Per class</h2>", per_class_table(summary),
    ]


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a ``metrics.jsonl`` and how many lines were unreadable (e.g. cut by a crash)."""
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _series(records: Sequence[Mapping[str, Any]], key: str) -> Series:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _training_figures(records: list[dict[str, Any]], run_dir: Path) -> list[str]:
    """Loss terms, schedule (lr, keep ratio) and validation curves as PNGs under ``RUN_DIR/report/``."""
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "eval" and r.get("split", "val") == "val"]
    pseudo = [r for r in records if r.get("kind") == "eval" and r.get("split") == "pseudo"]
    losses = sorted({k for r in train for k in r if k.startswith("loss/")}, key=lambda k: (k != "loss/total", k))
    figures = {
        "losses": {k: {k: _series(train, k)} for k in losses},
        "schedule": {"learning rate": {"lr": _series(train, "lr")},
                     "keep ratio (entropy filter)": {"keep_ratio": _series(train, "keep_ratio")}},
        "validation": {f"validation {m}": {m: _series(val, m)} for m in METRIC_NAMES if any(m in r for r in val)},
    }
    if any("teacher_dice" in r for r in val):
        figures["validation"]["validation Dice: student vs EMA teacher"] = {
            "student": _series(val, "student_dice"), "teacher": _series(val, "teacher_dice")}
    if pseudo:
        figures["pseudo-labels"] = {
            "pseudo-label vs mask (monitored unlabelled images)": {
                "pseudo-label Dice": _series(pseudo, "pl_dice"), "student Dice": _series(pseudo, "student_dice"),
                "precision": _series(pseudo, "pl_precision"), "recall": _series(pseudo, "pl_recall")},
            "entropy / confidence filter": {
                "kept share": _series(pseudo, "kept_share"), "accuracy of kept pixels": _series(pseudo, "kept_accuracy"),
                "accuracy of dropped pixels": _series(pseudo, "dropped_accuracy"),
                "lesion share, all pixels": _series(pseudo, "lesion_share"),
                "lesion share, kept pixels": _series(pseudo, "kept_lesion_share")},
        }  # fmt: skip
    out = []
    for name, panels in figures.items():
        png = plot_curves(panels, run_dir / "report" / f"{name}.png")
        out.append(figure(png.relative_to(run_dir).as_posix(), name))
    return out


def render_run_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` (figures in ``RUN_DIR/report/``) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} does not exist")
    metrics_path = run_dir / "metrics.jsonl"
    evals = [(name, run_dir / "eval" / name) for name in ("test_last", "test_best")]
    evals = [(n, d) for n, d in evals if (d / "summary.json").is_file()]
    if not metrics_path.is_file() and not evals:
        raise DataError(f"{run_dir} is not a training run: it has neither metrics.jsonl nor eval/*/summary.json")

    sections: list[str] = [f"<p class='note'>Run directory: {html.escape(str(run_dir.resolve()))}</p>"]
    if metrics_path.is_file():
        records, bad = _read_jsonl(metrics_path)
        sections.append("<h2>Training</h2>")
        if bad:
            sections.append(f"<p class='note'>{bad} unreadable line(s) of metrics.jsonl were skipped.</p>")
        sections.extend(_training_figures(records, run_dir))
    else:
        sections.append("<p class='note'>No metrics.jsonl: no training curves.</p>")
    for name, eval_dir in evals:
        try:
            summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{eval_dir / 'summary.json'} is not valid JSON: {err}") from None
        unit = (summary.get("context") or {}).get("distance_unit", "px")
        link = f"<p><a href='eval/{name}/report.html'>Full {name} report</a></p>"
        sections += [f"<h2>Evaluation: {name}</h2>", link, *evaluation_sections(summary, unit)]
    if not evals:
        sections.append("<p class='note'>No evaluation yet (eval/test_last/summary.json is missing).</p>")
    config = run_dir / "config.yaml"
    if config.is_file():
        sections.append(f"<h2>Config</h2><pre>{html.escape(config.read_text(encoding='utf-8'))}</pre>")
    out = run_dir / "report.html"
    out.write_text(page(f"rabusseg run report: {run_dir.name}", sections), encoding="utf-8")
    return out
