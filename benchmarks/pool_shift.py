"""Paired comparisons pooled over several checkpoint pairs (seeds, methods) from ``shift.py`` results.

    python benchmarks/pool_shift.py --label "TTA - plain" --output benchmarks/results/pooled_tta.json \\
        --pairs benchmarks/results/shift_tta_val.json suptta_s0=sup_s0 suptta_s1=sup_s1 ... \\
        --pairs benchmarks/results/shift_tta_val_1_8.json r18-sup0_T=r18-sup0_S ...
    python benchmarks/pool_shift.py ... --pairs NEW.json,benchmarks/results/shift_tta_val.json new_s0=sup_s0 ...

Why: one seed cannot rank two recipes, and ``shift.py`` pairs every checkpoint against the first
only.  Here each ``VARIANT=BASELINE`` pair is a per-image Dice difference; within one results file
(one list of images) the differences of its pairs are averaged per image, the files' images are
then put side by side, and the 95% interval is a bootstrap over those images, as
``benchmarks/quality.py`` pairs test images over seeds.  Nothing is re-scored: it reads the
per-image Dice that ``shift.py`` stored.  Prints a table and writes ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, print_table, write_json

N_BOOT = 10_000
SHIFTS_MEAN = "mean of shifted"


def read_dice(paths: list[Path]) -> dict[str, dict[str, list[float]]]:
    """The per-image Dice of one or more ``shift.py`` results on the same image list, merged by name.

    Several files let a new run pair with checkpoints scored in an earlier session (whose run
    folders are gone) as long as both scored the same images in the same order.
    """
    merged: dict[str, dict[str, list[float]]] = {}
    ids: list[str] | None = None
    for path in paths:
        try:
            result = json.loads(path.read_text())["per_image"]
            dice, file_ids = result["dice"], result["ids"]
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"{path}: not a shift.py result with per-image Dice ({err})") from err
        if ids is not None and file_ids != ids:
            raise SystemExit(f"{path}: scores other images than {paths[0]}; only results on one image list merge")
        ids = file_ids
        clash = sorted(set(dice) & set(merged))
        if clash:
            raise SystemExit(f"{path}: checkpoint names {clash} are already in {paths[0]}; rename one of them")
        merged.update(dice)
    return merged


def read_pairs(path: Path | str, specs: list[str]) -> tuple[dict[str, dict[str, list[float]]], list[tuple[str, str]]]:
    """The per-image Dice of a ``shift.py`` result (``A.json,B.json``: several merged) and its pairs, checked."""
    paths = [Path(part) for part in str(path).split(",")]
    dice = read_dice(paths)
    pairs = []
    for spec in specs:
        variant, sep, baseline = spec.partition("=")
        missing = [n for n in (variant, baseline) if n not in dice]
        if not sep or missing:
            raise SystemExit(f"{path}: pair {spec!r} must be VARIANT=BASELINE of its checkpoints "
                             f"({', '.join(dice)}); missing {missing or 'the ='}")  # fmt: skip
        pairs.append((variant, baseline))
    return dice, pairs


def pooled_rows(groups: list[tuple[dict[str, dict[str, list[float]]], list[tuple[str, str]]]],
                seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """One row per shift every paired checkpoint was scored under, and a ``mean of shifted`` row (each
    image's mean over the shifted conditions, as ``shift.py`` reports it): pooled means, mean
    difference, 95% CI, pairs better."""
    used = [dice[name] for dice, pairs in groups for pair in pairs for name in pair]
    shifts = [s for s in used[0] if all(s in scores for scores in used)]
    shifted = [s for s in shifts if s != "none"]
    if shifted:
        groups = [({name: scores | {SHIFTS_MEAN: np.mean([scores[s] for s in shifted], axis=0).tolist()}
                    for name, scores in dice.items() if all(s in scores for s in shifted)}, pairs)
                  for dice, pairs in groups]  # fmt: skip
        shifts = [*shifts, SHIFTS_MEAN]
    rows = []
    for shift in shifts:
        per_image, variant_means, baseline_means, better = [], [], [], 0
        for dice, pairs in groups:
            diffs = np.array([np.subtract(dice[v][shift], dice[b][shift]) for v, b in pairs])  # (pairs, images)
            per_image.append(diffs.mean(axis=0))
            variant_means += [float(np.mean(dice[v][shift])) for v, _ in pairs]
            baseline_means += [float(np.mean(dice[b][shift])) for _, b in pairs]
            better += int((diffs.mean(axis=1) > 0).sum())
        d = np.concatenate(per_image)
        rng = np.random.default_rng(seed)
        lo, hi = np.quantile(d[rng.integers(0, len(d), (N_BOOT, len(d)))].mean(axis=1), [0.025, 0.975])
        rows.append({"shift": shift, "images": len(d), "baseline": round(float(np.mean(baseline_means)), 4),
                     "variant": round(float(np.mean(variant_means)), 4), "mean_diff": round(float(d.mean()), 4),
                     "ci95": [round(float(lo), 4), round(float(hi), 4)],
                     "difference": f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]",
                     "pairs_better": f"{better} of {len(variant_means)}"})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--pairs", nargs="+", action="append", required=True, metavar=("RESULT.json", "VARIANT=BASELINE"),
                   help="a shift.py result (A.json,B.json: results on the same images, merged) and pairs of its "
                        "checkpoint names (repeat for other image lists)")
    p.add_argument("--label", required=True, help="what is compared, e.g. 'TTA - plain'")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    groups, sources = [], {}
    for path, *specs in args.pairs:
        if not specs:
            raise SystemExit(f"--pairs {path}: give at least one VARIANT=BASELINE pair")
        dice, pairs = read_pairs(Path(path), specs)
        groups.append((dice, pairs))
        sources[path] = [f"{v}={b}" for v, b in pairs]
    rows = pooled_rows(groups)
    print_table(f"{args.label}: paired per image, pooled over {sum(len(g[1]) for g in groups)} pairs", rows,
                ["shift", "images", "baseline", "variant", "difference", "pairs_better"])
    write_json(args.output, {"command": command_line(), "label": args.label, "sources": sources, "rows": rows})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
