"""The quality table from checkpoints already scored on the test list by ``shift.py``.

    python benchmarks/quality_scored.py --scores benchmarks/results/test_methods_fp32.json \\
        --group supervised:1_2=sup12_s0,sup12_s1,sup12_s2 --group mean_teacher:1_2=mt12_s0,mt12_s1,mt12_s2 \\
        --group ra_busseg:1_2=ra12_s0,ra12_s1,ra12_s2 ... --note "why" --output benchmarks/results/quality_fp32.json

Why: ``quality.py table`` reads run folders (``bench.json``, per-image CSVs); checkpoints scored
in one ``shift.py --shifts none`` call (for instance supervised ones replaced by a post-hoc
``rabusseg recalibrate`` copy) keep only their per-image Dice, and run folders on scratch space
do not outlive the machine.  This builds the ``quality.json`` schema from those scores with the
same pairing, bootstrap intervals, target verdicts and forest plot, so ``make_results.py`` renders
it beside the table of complete runs.  Results scored in several calls on the same images merge
(``--scores A.json,B.json``).  Each ``--group METHOD:RATIO=NAME,...`` lists one method's
checkpoints by seed, in seed order; seeds pair by position.  Dice only: IoU, HD95, wall times and
pseudo-label scores are not in a ``shift.py`` result and show as ``-``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, command_line, print_table, repo_relative  # noqa: E402
from pool_shift import read_dice  # noqa: E402
from quality import (  # noqa: E402
    ABLATIONS,
    BASELINES,
    METHODS,
    N_BOOT,
    PRESET,
    RATIOS,
    is_compared,
    paired_statistics,
    protocol,
    variant_name,
    verdicts,
    write_table,
)

VARIANTS = (*METHODS, *(variant_name("ra_busseg", a) for a in ABLATIONS))
SHIFT = "none"


def parse_group(spec: str, dice: dict[str, dict[str, list[float]]]) -> tuple[str, str, list[str]]:
    """``METHOD:RATIO=a,b,c`` -> (ratio, variant, names), every name checked against the scores."""
    head, sep, names_text = spec.partition("=")
    variant, colon, ratio = head.partition(":")
    names = [n for n in names_text.split(",") if n]
    if not sep or not colon or not names:
        raise SystemExit(f"--group {spec!r}: expected METHOD:RATIO=NAME[,NAME...], e.g. ra_busseg:1_8=ra18_s0,ra18_s1")
    if variant not in VARIANTS:
        raise SystemExit(f"--group {spec!r}: unknown method {variant!r} (one of {', '.join(VARIANTS)})")
    if ratio not in RATIOS:
        raise SystemExit(f"--group {spec!r}: unknown ratio {ratio!r} (one of {', '.join(RATIOS)})")
    missing = [n for n in names if n not in dice or SHIFT not in dice[n]]
    if missing:
        raise SystemExit(f"--group {spec!r}: {missing} not scored unshifted in the scores (have: {', '.join(dice)})")
    return ratio, variant, names


def parse_wall(spec: str, groups: list[tuple[str, str, list[str]]]) -> tuple[str, str, list[float]]:
    """``METHOD:RATIO=12.1,11.5,...`` -> (ratio, variant, minutes), one time per checkpoint of that group."""
    head, _, text = spec.partition("=")
    variant, _, ratio = head.partition(":")
    names = next((n for r, v, n in groups if (r, v) == (ratio, variant)), None)
    try:
        minutes = [float(x) for x in text.split(",") if x]
    except ValueError:
        raise SystemExit(f"--wall {spec!r}: expected METHOD:RATIO=MIN[,MIN...], e.g. supervised:1_2=11.6") from None
    if names is None or len(minutes) != len(names):
        raise SystemExit(f"--wall {spec!r}: give one time per checkpoint of a --group {variant}:{ratio}")
    return ratio, variant, minutes


def assemble(dice: dict[str, dict[str, list[float]]], groups: list[tuple[str, str, list[str]]],
             n_boot: int = N_BOOT) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Rows (mean test Dice over seeds, its std) and pairs (against supervised and mean teacher) of ``groups``."""
    scores = {(ratio, variant): np.array([dice[n][SHIFT] for n in names]) for ratio, variant, names in groups}  # (S, N)
    order = {v: k for k, v in enumerate(VARIANTS)}
    rows = []
    for (ratio, variant), per_seed in sorted(scores.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        means = per_seed.mean(axis=1)
        rows.append({"ratio": ratio, "variant": variant, "seeds": list(range(len(means))),
                     "n_images": per_seed.shape[1], "wall_min": None, "dice": float(means.mean()),
                     "dice_seed_std": float(means.std(ddof=1)) if len(means) > 1 else None,
                     "iou": None, "hd95": None, "dice_best": None})  # fmt: skip
    pairs = []
    for (ratio, variant), per_seed in scores.items():
        for baseline in BASELINES:
            base = scores.get((ratio, baseline))
            if base is None or not is_compared(variant, baseline):
                continue
            n = min(len(per_seed), len(base))
            pairs.append(paired_statistics(ratio, variant, baseline, list(range(n)), per_seed[:n] - base[:n], n_boot))
    pairs.sort(key=lambda p: (p["ratio"], order[p["variant"]], BASELINES.index(p["baseline"])))
    return rows, pairs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--scores", required=True,
                   help="a shift.py result on the test list (A.json,B.json: results on the same images, merged)")
    p.add_argument("--group", action="append", required=True, metavar="METHOD:RATIO=NAME,...",
                   help="one method's checkpoints at one ratio, in seed order (repeat)")
    p.add_argument("--wall", action="append", default=[], metavar="METHOD:RATIO=MIN,...",
                   help="the runs' wall times in minutes (bench.json), in seed order, for the floor's limit (repeat)")
    p.add_argument("--note", default=None, help="how the checkpoints were made, stored and shown with the table")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "quality_scored.json")
    args = p.parse_args(argv)
    if not args.output.name.startswith("quality"):
        raise SystemExit(f"--output {args.output}: name it quality*.json so make_results.py renders it")
    paths = [Path(part) for part in args.scores.split(",")]
    dice = read_dice(paths)
    groups = [parse_group(spec, dice) for spec in args.group]
    taken = [(r, v) for r, v, _ in groups]
    if len(set(taken)) != len(taken):
        raise SystemExit("--group: a method and ratio given twice")
    sources = [json.loads(path.read_text()) for path in paths]
    checkpoints = {k: v for doc in sources for k, v in (doc.get("checkpoints") or {}).items()}
    rows, pairs = assemble(dice, groups)
    for spec in args.wall:
        ratio, variant, minutes = parse_wall(spec, groups)
        row = next(r for r in rows if (r["ratio"], r["variant"]) == (ratio, variant))
        row["wall_min"] = sum(minutes) / len(minutes)
    environment = {**(sources[0].get("environment") or {}),  # the scoring call's machine and load
                   **{k: sources[0][k] for k in ("load_average_start", "load_average_end") if k in sources[0]}}
    result = {"benchmark": "quality", "command": command_line(), "environment": environment,
              "preset": PRESET, "source": " + ".join(str(repo_relative(path)) for path in paths),
              "protocol": protocol("last model on the test list, scored by shift.py; paired over images"),
              "checkpoints": {f"{v}:{r}": [checkpoints.get(n, n) for n in names] for r, v, names in groups},
              "rows": rows, "pairs": pairs, "verdicts": verdicts(pairs, rows), "runs": [], "missing": [],
              "note": args.note}  # fmt: skip
    print_table(f"test Dice from {args.scores}: last model, mean over seeds", rows,
                ["ratio", "variant", "seeds", "dice", "dice_seed_std"])
    print_table("paired per-image test Dice differences", [
        {"ratio": q["ratio"], "comparison": f"{q['variant']} - {q['baseline']}", "mean": q["mean_diff"],
         "ci95": f"[{q['ci_low']:+.3f}, {q['ci_high']:+.3f}]", "per seed": q["per_seed_diff"]} for q in pairs],
        ["ratio", "comparison", "mean", "ci95", "per seed"])  # fmt: skip
    print_table("targets", result["verdicts"], ["ratio", "target", "measured", "met"])
    return write_table(result, args.output)


if __name__ == "__main__":
    main()
