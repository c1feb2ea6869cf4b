"""Choosing the cpu_small recipe on BUSI: train a variant, score it on a validation list, compare paired.

    python benchmarks/recipe.py prepare
    python benchmarks/recipe.py run base --method supervised
    python benchmarks/recipe.py run lr02 --method supervised --set optim.lr=0.02
    python benchmarks/recipe.py compare base lr02          # paired differences against the first

Every choice of docs/choices.md was made this way, never on the test list: ``prepare`` holds 86
images of each ratio's *unlabelled* list out as a validation list (every third id of the
class-sorted list, so both classes come in; BUSI has a mask for every image) under
``splits/recipe/<ratio>/{val,unlabeled}.txt`` of the benchmarks' BUSI working copy.  A run trains
``cpu_small`` on the ratio's labelled list (and, for semi-supervised methods, the unlabelled list
without the validation images) and its final evaluation runs on the validation list (given as the
run's ``data.test``), so ``eval/test_last/per_image.csv`` holds the validation Dice of every image.
``compare`` pairs the runs image by image: the mean difference and its 95% bootstrap interval are
much tighter than the difference of two means over 86 images.

Runs go to ``benchmarks/runs/recipe/<ratio>/<name>/`` with ``bench.json`` (command, overrides,
wall time, load average).  One heavy job at a time: wall times are only comparable on idle cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _busi import WORK_ROOT, carve_validation, prepare_data, shared_busi  # noqa: E402
from _common import (  # noqa: E402
    BENCH_DIR,
    command_line,
    cpu_seconds,
    environment,
    load_average,
    passive_openmp,
    print_table,
    write_json,
)

RUNS = BENCH_DIR / "runs" / "recipe"
VAL_IMAGES = 86
PRESET = "cpu_small"


def lists(ratio: str) -> tuple[str, str]:
    """(unlabelled list, validation list) split names of a ratio's recipe carve."""
    return f"recipe/{ratio}/unlabeled", f"recipe/{ratio}/val"


def do_prepare(root: Path = WORK_ROOT) -> Path:
    root = prepare_data(shared_busi(), root)
    for ratio in ("1_2", "1_8"):
        if not (root / "splits" / "recipe" / ratio / "val.txt").is_file():
            carve_validation(root, ratio, VAL_IMAGES, root / "splits" / "recipe" / ratio)
    return root


def do_run(name: str, ratio: str, method: str, overrides: list[str], root: Path, runs: Path, overwrite: bool) -> Path:
    from rabusseg.config import load_config
    from rabusseg.engine.trainer import train

    unlabeled, val = lists(ratio)
    out = runs / ratio / name
    sets = [f"data.root={root}", f"data.labeled={ratio}/labeled", f"data.unlabeled={unlabeled}", f"data.test={val}",
            f"method.name={method}", "train.progress=false", *overrides]  # fmt: skip
    config = load_config(PRESET, sets)
    env = environment("cpu")
    print(f"recipe run {ratio}/{name}: {' '.join(overrides) or '(preset)'} (load {env['load_average_start']})", flush=True)
    started, cpu_start = time.perf_counter(), cpu_seconds()
    result = train(config, out, overwrite=overwrite)
    wall = time.perf_counter() - started
    env["load_average_end"] = load_average()
    env["cpu_cores_used_mean"] = round((cpu_seconds() - cpu_start) / wall, 2)
    dice = result.test_dice
    write_json(out / "bench.json", {"command": command_line(), "name": name, "ratio": ratio, "method": method,
                                    "overrides": overrides, "environment": env, "wall_s": round(wall, 1),
                                    "steps": result.step, "val_dice": dice})  # fmt: skip
    print(f"done in {wall / 60:.1f} min: validation Dice {dice:.4f}", flush=True)
    return out


def per_image_dice(run: Path) -> dict[str, float]:
    with (run / "eval" / "test_last" / "per_image.csv").open(encoding="utf-8") as handle:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}


def paired(base: dict[str, float], other: dict[str, float], n_boot: int = 10000, seed: int = 0) -> dict[str, float]:
    """Mean per-image difference (other - base) and its 95% bootstrap interval over images."""
    import numpy as np

    ids = sorted(base.keys() & other.keys())
    d = np.array([other[i] - base[i] for i in ids])
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"n": len(ids), "mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}  # fmt: skip


def do_compare(names: list[str], ratio: str, runs: Path) -> list[dict[str, Any]]:
    base = per_image_dice(runs / ratio / names[0])
    rows = []
    for name in names:
        run = runs / ratio / name
        bench = json.loads((run / "bench.json").read_text(encoding="utf-8"))
        scores = per_image_dice(run)
        row = {"name": name, "overrides": " ".join(bench["overrides"]) or "-", "method": bench["method"],
               "steps": bench["steps"], "minutes": round(bench["wall_s"] / 60, 1),
               "val_dice": sum(scores.values()) / len(scores)}  # fmt: skip
        if name != names[0]:
            p = paired(base, scores)
            row.update({"diff_vs_first": p["mean_diff"], "ci95": f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
                        "wins/losses": f"{p['wins']}/{p['losses']}"})  # fmt: skip
        rows.append(row)
    print_table(f"validation Dice on {len(base)} held-out images ({ratio}), paired against {names[0]}", rows,
                ["name", "method", "overrides", "steps", "minutes", "val_dice", "diff_vs_first", "ci95", "wins/losses"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("prepare")
    p_run = sub.add_parser("run")
    p_run.add_argument("name")
    p_run.add_argument("--method", default="supervised")
    p_run.add_argument("--set", dest="overrides", action="append", default=[])
    p_run.add_argument("--overwrite", action="store_true")
    p_cmp = sub.add_parser("compare")
    p_cmp.add_argument("names", nargs="+")
    for p in (p_run, p_cmp):
        p.add_argument("--ratio", default="1_2", choices=["1_2", "1_8"])
        p.add_argument("--runs", type=Path, default=RUNS)
        p.add_argument("--root", type=Path, default=WORK_ROOT)
    args = parser.parse_args(argv)
    if args.verb == "prepare":
        print(f"prepared {do_prepare()}")
        return None
    if args.verb == "run":
        return do_run(args.name, args.ratio, args.method, args.overrides, args.root, args.runs, args.overwrite)
    return do_compare(args.names, args.ratio, args.runs)


if __name__ == "__main__":
    passive_openmp()
    main()
