"""Training runs under ``--runs``: listing, curves, evaluations, per-image galleries, run-to-run comparison.

A run is a folder (up to two levels below ``--runs``, e.g. ``1_8/ra_busseg_s0``) holding
``metrics.jsonl`` or ``summary.json``.  Everything is read from the files ``rabusseg train`` and
``rabusseg evaluate`` write; predictions for the gallery's contours come from the run's own
checkpoint, and images only from the ``--data`` folder (an evaluation of another folder shows its
scores without pictures).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rabusseg.app.serve.security import NotFound, confined
from rabusseg.engine.monitor import QUALITY_METRICS
from rabusseg.evaluation.aggregate import metric_mean

CURVE_KEYS = ("loss/total", "loss/sup", "loss/unsup", "loss/arp", "loss/cra", "lr", "keep_ratio")
EVAL_KEYS = ("dice", "iou", "precision", "recall", "hd95", "student_dice", "teacher_dice")
PSEUDO_KEYS = QUALITY_METRICS
SUMMARY_METRICS = ("dice", "iou", "precision", "recall", "specificity", "hd95", "assd")


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "metrics.jsonl").is_file() or (path / "summary.json").is_file())


def list_runs(runs_dir: Path | None) -> list[dict[str, Any]]:
    """Every run folder up to two levels down (never following a link out of ``runs_dir``)."""
    if runs_dir is None:
        return []
    root = runs_dir.resolve()
    found = []
    for candidate in sorted([*runs_dir.glob("*"), *runs_dir.glob("*/*")]):
        if not _is_run(candidate) or not candidate.resolve().is_relative_to(root):
            continue
        name = candidate.relative_to(runs_dir).as_posix()
        summary = _json(candidate / "summary.json") or {}
        found.append({"name": name, "method": summary.get("method") or _method_of(candidate),
                      "steps": summary.get("step"), "test_dice": metric_mean(summary.get("test_last")), "evals": evaluations(candidate)})  # fmt: skip
    return found


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _method_of(run: Path) -> str | None:
    import yaml

    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return (config.get("method") or {}).get("name")


def evaluations(run: Path) -> list[str]:
    """Names of the run's evaluations (``eval/<name>/per_image.csv``), test_last first."""
    names = sorted(p.parent.name for p in run.glob("eval/*/per_image.csv"))
    return sorted(names, key=lambda n: (n != "test_last", n))


def run_path(runs_dir: Path | None, name: str) -> Path:
    if runs_dir is None:
        raise NotFound("no runs folder was given: start the server with --runs DIR")
    path = confined(runs_dir, name, kind="run", depth=2)
    if not _is_run(path):
        raise NotFound(f"{name!r} is not a training run (no metrics.jsonl or summary.json)")
    return path


def run_details(run: Path) -> dict[str, Any]:
    """Config text, curves (train, validation, pseudo-labels) and each evaluation's summary."""
    train, val, pseudo = [], [], []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "train":
                train.append({k: rec[k] for k in ("step", *CURVE_KEYS) if k in rec})
            elif rec.get("kind") == "eval" and rec.get("split") == "val":
                val.append({k: rec[k] for k in ("step", *EVAL_KEYS) if k in rec})
            elif rec.get("kind") == "eval" and rec.get("split") == "pseudo":
                pseudo.append({k: rec[k] for k in ("step", *PSEUDO_KEYS) if k in rec})
    evals = {}
    for name in evaluations(run):
        summary = _json(run / "eval" / name / "summary.json") or {}
        evals[name] = {"metrics": {m: {k: (summary.get(m) or {}).get(k) for k in ("mean", "std", "ci95", "n")}
                                   for m in SUMMARY_METRICS if m in summary},
                       "n_images": summary.get("n_images"), "context": summary.get("context") or {}}  # fmt: skip
    config = run / "config.yaml"
    return {"config": config.read_text(encoding="utf-8") if config.is_file() else None,
            "curves": {"train": train, "val": val, "pseudo": pseudo}, "evaluations": evals}  # fmt: skip


def gallery(run: Path, evaluation: str) -> list[dict[str, Any]]:
    """Per-image rows of one evaluation: id, class, dice, iou, hd95, empty case."""
    if evaluation not in evaluations(run):
        raise NotFound(f"run has no evaluation {evaluation!r}; it has {', '.join(evaluations(run)) or 'none'}")
    rows = []
    with (run / "eval" / evaluation / "per_image.csv").open(encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            rows.append({"id": r["id"], "class": r.get("class"), "dice": _float(r.get("dice")), "iou": _float(r.get("iou")),
                         "hd95": _float(r.get("hd95")), "empty_case": r.get("empty_case")})  # fmt: skip
    return rows


def _float(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value == value else None


def compare(run_a: Path, run_b: Path, evaluation: str, top: int = 12) -> dict[str, Any]:
    """Image by image on the same split: Dice pairs, wins/losses/ties and the images that differ most."""
    a = {r["id"]: r for r in gallery(run_a, evaluation)}
    b = {r["id"]: r for r in gallery(run_b, evaluation)}
    split_a = ((_json(run_a / "eval" / evaluation / "summary.json") or {}).get("context") or {}).get("split")
    split_b = ((_json(run_b / "eval" / evaluation / "summary.json") or {}).get("context") or {}).get("split")
    common = sorted(a.keys() & b.keys())
    if not common:
        raise NotFound("the two runs' evaluations share no image: they were scored on different splits")
    pairs = [{"id": i, "class": a[i]["class"], "dice_a": a[i]["dice"], "dice_b": b[i]["dice"]} for i in common]
    diffs = [(p["dice_b"] or 0.0) - (p["dice_a"] or 0.0) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda k: -abs(diffs[k]))
    return {"pairs": pairs, "n": len(pairs), "wins_b": sum(d > 1e-9 for d in diffs), "wins_a": sum(d < -1e-9 for d in diffs),
            "ties": sum(abs(d) <= 1e-9 for d in diffs), "mean_diff": sum(diffs) / len(diffs),
            "same_split": split_a == split_b, "split": split_a,
            "most_different": [{**pairs[k], "diff": diffs[k]} for k in order[:top]]}  # fmt: skip


def run_checkpoint(run: Path) -> Path:
    """The run's own last checkpoint (inside the run folder)."""
    path = run / "checkpoints" / "last.pt"
    if not path.is_file() or not path.resolve().is_relative_to(run.resolve()):
        raise NotFound(f"run {run.name} has no checkpoints/last.pt")
    return path


def evaluated_data(run: Path, evaluation: str) -> Path | None:
    """The dataset folder the evaluation scored (from its summary), when known."""
    context = (_json(run / "eval" / evaluation / "summary.json") or {}).get("context") or {}
    return Path(context["data"]) if context.get("data") else None
