"""Segmentation quality on BUSI on a CPU: the cpu_small configuration, method by method.

    python benchmarks/quality.py prepare                     # writable BUSI view + the 1/8 split (seed 0)
    python benchmarks/quality.py run --method ra_busseg --ratio 1_2 --seed 0
    python benchmarks/quality.py run --method ra_busseg --ratio 1_2 --seed 0 --ablation no_cra
    python benchmarks/quality.py run --method ra_busseg --ratio 1_2 --seed 0 --val 30   # + best-on-validation
    python benchmarks/quality.py plan                        # every run's command, done or not
    python benchmarks/quality.py table                       # assemble what exists -> results/quality.json

Data: BUSI from the shared datasets folder is never written to.  ``prepare`` makes
``benchmarks/work/busi``: symbolic links to its images, masks and metadata, a copy of its
``splits/`` (the paper's 1/2 lists and test list), and a 1/8 split drawn there by
``rabusseg data split benchmarks/work/busi --labeled 1/8 --seed 0``.  Both ratios read images
through that folder.

Runs: one at a time (each at most about 30 minutes on 2 cores), with ``rabusseg``'s training
API, into ``benchmarks/runs/<ratio>/<variant>_s<seed>/`` (a standard run directory plus
``bench.json``: command, hardware, wall time, load average).  Every ratio takes the 1/2 split's
number of optimiser steps per epoch (``train.steps_per_epoch``), so a 1/8 run costs what a 1/2
run costs: without it the 1/8 epoch (sized by its larger unlabelled list) would be 1.75 times
longer.  The ablation (``ra_busseg`` with ``method.arp=false`` or ``method.cra=false``) runs at 1/2.

Table: test Dice, IoU and HD95 (pixels of the original image) of the last model, mean over seeds
+- std over seeds (with one seed: +- std over test images, marked ``img``); the best-on-validation
model beside it for the runs with a validation list (``--val N``: N images held out of the
unlabelled list, so the labelled set keeps its size; the variant is then named ``<method>+valN``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _busi import RATIOS, WORK_ROOT, carve_validation, prepare_data, shared_busi  # noqa: E402
from _common import (
    BENCH_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    command_line,
    cpu_seconds,
    environment,
    finite_or_none,
    halfwidth95,
    load_average,
    median,
    passive_openmp,
    print_table,
    write_json,
)

PRESET = "cpu_small"
METHODS = ("supervised", "mean_teacher", "fixmatch", "ra_busseg")
ABLATIONS = {"no_arp": ["method.arp=false"], "no_cra": ["method.cra=false"]}
ABLATION_RATIO = "1_2"
METRICS = ("dice", "iou", "hd95")
RUNS_DIR = BENCH_DIR / "runs"
RUN_LIMIT_S = 30 * 60
VAL_IMAGES = 30
"""Validation images the planned best-on-validation runs hold out (``run --val 30``)."""


# ----------------------------------------------------------------------------- data


def split_sizes(root: Path) -> dict[str, dict[str, int]]:
    """Number of ids in each ratio's labelled and unlabelled list."""
    from rabusseg.data.folder import DatasetFolder

    folder = DatasetFolder(root)
    return {r: {k: len(folder.split(f"{r}/{k}")) for k in ("labeled", "unlabeled")}
            for r in RATIOS if (root / "splits" / r).is_dir()}  # fmt: skip


# ----------------------------------------------------------------------------- runs


def variant_name(method: str, ablation: str | None, val: int = 0) -> str:
    """``ra_busseg``, ``ra_busseg-no_cra``; ``+val30`` when 30 images were held out for validation."""
    return (f"{method}-{ablation}" if ablation else method) + (f"+val{val}" if val else "")


def variant_order(variant: str) -> tuple[int, int]:
    """Table order: methods, then the ablation; runs without a validation list before those with one."""
    order = [*METHODS, *(variant_name("ra_busseg", a) for a in ABLATIONS)]
    base, _, val = variant.partition("+val")
    return (1 if val else 0, order.index(base) if base in order else len(order))


def run_dir_of(runs: Path, ratio: str, method: str, seed: int, ablation: str | None = None, val: int = 0) -> Path:
    return runs / ratio / f"{variant_name(method, ablation, val)}_s{seed}"


def run_command(method: str, ratio: str, seed: int, ablation: str | None = None, val: int = 0) -> str:
    extra = (f" --ablation {ablation}" if ablation else "") + (f" --val {val}" if val else "")
    return f"python benchmarks/quality.py run --method {method} --ratio {ratio} --seed {seed}{extra}"


def run_overrides(root: Path, method: str, ratio: str, seed: int, ablation: str | None) -> list[str]:
    """The ``--set`` list of one run: data lists, method, seed, equal steps per epoch, ablation switch."""
    from rabusseg.config import load_config
    from rabusseg.data.folder import DatasetFolder

    batch = load_config(PRESET).train.batch_size
    steps = len(DatasetFolder(root).split("1_2/unlabeled")) // batch
    out = [f"data.root={root}", f"data.labeled={ratio}/labeled", f"data.unlabeled={ratio}/unlabeled",
           f"method.name={method}", f"train.seed={seed}", f"train.steps_per_epoch={steps}", "train.progress=false"]  # fmt: skip
    return out + (ABLATIONS[ablation] if ablation else [])


def do_run(args: argparse.Namespace) -> Path:
    """Train one (method, ratio, seed[, ablation]) with the training API; write ``bench.json`` beside it."""
    from rabusseg.config import load_config
    from rabusseg.engine.trainer import train

    root = args.root or prepare_data(shared_busi())
    out = run_dir_of(args.runs, args.ratio, args.method, args.seed, args.ablation, args.val)
    overrides = run_overrides(root, args.method, args.ratio, args.seed, args.ablation)
    if args.val:
        unlabeled, val = carve_validation(root, args.ratio, args.val, args.runs / "lists" / f"{args.ratio}_val{args.val}")
        overrides += [f"data.unlabeled={unlabeled}", f"data.val={val}"]
    overrides += args.overrides
    config = load_config(args.preset, overrides)
    env = environment("cpu")
    print(f"{run_command(args.method, args.ratio, args.seed, args.ablation, args.val)} -> {out} (load {env['load_average_start']})",
          flush=True)  # fmt: skip
    started, cpu_start = time.perf_counter(), cpu_seconds()
    result = train(config, out, overwrite=args.overwrite)
    wall = time.perf_counter() - started
    env["load_average_end"] = load_average()
    env["cpu_cores_used_mean"] = round((cpu_seconds() - cpu_start) / wall, 2)
    bench = {"command": command_line(), "preset": args.preset, "overrides": overrides, "method": args.method,
             "ratio": args.ratio, "seed": args.seed, "ablation": args.ablation, "val": args.val, "environment": env,
             "wall_s": round(wall, 1), "steps": result.step, "within_30_min": wall <= RUN_LIMIT_S}  # fmt: skip
    write_json(out / "bench.json", bench)
    last = result.summary.get("test_last") or {}
    print(f"done in {wall / 60:.1f} min: test Dice (last) {last.get('dice', {}).get('mean')}", flush=True)
    return out


# ----------------------------------------------------------------------------- table


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def collect_runs(runs: Path) -> list[dict[str, Any]]:
    """One record per run directory ``<ratio>/<variant>_s<seed>`` (finished or not)."""
    out = []
    for run in sorted(runs.glob("*/*_s*")):
        if not run.is_dir() or run.parent.name not in RATIOS:
            continue
        variant, _, seed = run.name.rpartition("_s")
        summary, bench = _read(run / "summary.json"), _read(run / "bench.json") or {}
        record: dict[str, Any] = {"ratio": run.parent.name, "variant": variant, "seed": int(seed) if seed.isdigit() else seed,
                                  "path": str(run), "finished": summary is not None, "wall_s": bench.get("wall_s"),
                                  "steps": (summary or {}).get("step"), "environment": bench.get("environment")}  # fmt: skip
        for which in ("test_last", "test_best"):
            part = (summary or {}).get(which) or {}
            record[which] = {m: {"mean": part[m]["mean"], "std": part[m]["std"]} for m in METRICS if m in part} or None
        record["n_images"] = ((summary or {}).get("test_last") or {}).get("n_images")
        out.append(record)
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (ratio, variant): per metric the mean over seeds and its spread."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["finished"]:
            groups.setdefault((r["ratio"], r["variant"]), []).append(r)
    rows = []
    for (ratio, variant), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], variant_order(kv[0][1]))):
        row: dict[str, Any] = {"ratio": ratio, "variant": variant, "seeds": sorted(r["seed"] for r in runs),
                               "wall_min": median([r["wall_s"] / 60 for r in runs if r["wall_s"]]) if any(r["wall_s"] for r in runs) else None,
                               "n_images": runs[0].get("n_images")}  # fmt: skip
        for which, tag in (("test_last", "last"), ("test_best", "best")):
            for metric in METRICS:
                vals = [r[which][metric]["mean"] for r in runs if r[which] and r[which].get(metric, {}).get("mean") is not None]
                if not vals:
                    continue
                spread = _std(vals)
                by_images = spread is None
                if by_images:
                    spread = (runs[0][which] or {}).get(metric, {}).get("std")
                row[f"{metric}_{tag}"] = finite_or_none(_mean(vals))
                row[f"{metric}_{tag}_std"] = finite_or_none(spread)
                row[f"{metric}_{tag}_std_over"] = "images" if by_images else "seeds"
        rows.append(row)
    return rows


def cell(row: dict[str, Any], key: str, digits: int) -> str:
    """``0.712 +- 0.031`` (``img`` when the spread is over test images, not seeds)."""
    if row.get(key) is None:
        return "-"
    std = row.get(f"{key}_std")
    mark = " img" if row.get(f"{key}_std_over") == "images" else ""
    return f"{row[key]:.{digits}f} +- {std:.{digits}f}{mark}" if std is not None else f"{row[key]:.{digits}f}"


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = {"ratio": r["ratio"], "variant": r["variant"], "seeds": ",".join(map(str, r["seeds"])),
             "min/run": f"{r['wall_min']:.1f}" if r.get("wall_min") else "-"}  # fmt: skip
        for metric, digits in (("dice", 3), ("iou", 3), ("hd95", 1)):
            d[f"{metric} (last)"] = cell(r, f"{metric}_last", digits)
        d["dice (best val)"] = cell(r, "dice_best", 3)
        out.append(d)
    return out


def planned(seeds: list[int], val: int = 0) -> list[dict[str, Any]]:
    """Every run of the benchmark: methods x ratios x seeds, the ablation at one ratio; with ``val``
    the methods x ratios x seeds again with a validation list (the best-on-validation column)."""
    plan = [(m, r, s, None, 0) for r in RATIOS for m in METHODS for s in seeds]
    plan += [("ra_busseg", ABLATION_RATIO, s, a, 0) for a in ABLATIONS for s in seeds]
    if val:
        plan += [(m, r, s, None, val) for r in RATIOS for m in METHODS for s in seeds]
    return [{"method": m, "ratio": r, "seed": s, "ablation": a, "val": v, "variant": variant_name(m, a, v),
             "command": run_command(m, r, s, a, v)} for m, r, s, a, v in plan]  # fmt: skip


def plot_quality(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Bar chart of test Dice (last) per variant, grouped by ratio; error bars: 95% of the mean.

    With one seed the bar is 1.96 sd / sqrt(n test images); with several, 1.96 x the std over
    seeds.  Written beside ``quality.json`` so the README can show it.
    """
    from matplotlib.figure import Figure

    rows = [r for r in rows if r.get("dice_last") is not None]
    # The runs with a validation list repeat the others' training (less N unlabelled images): one set of bars.
    rows = [r for r in rows if "+val" not in r["variant"]] or rows
    if not rows:
        return None
    ratios = sorted({r["ratio"] for r in rows})
    variants = sorted({r["variant"] for r in rows}, key=variant_order)
    width = 0.8 / len(variants)
    fig = Figure(figsize=(1.6 + 1.3 * len(ratios) * max(1, len(variants)) * 0.45, 3.6))
    ax = fig.subplots()
    for k, variant in enumerate(variants):
        xs, ys, errs = [], [], []
        for i, ratio in enumerate(ratios):
            row = next((r for r in rows if r["ratio"] == ratio and r["variant"] == variant), None)
            if row is None:
                continue
            xs.append(i + (k - (len(variants) - 1) / 2) * width)
            ys.append(row["dice_last"])
            errs.append(halfwidth95(row) or 0.0)
        ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=3, label=variant)
    ax.set_xticks(range(len(ratios)), [f"{r.replace('_', '/')} labelled" for r in ratios])
    ax.set_ylabel("test Dice (last model)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8, ncols=2)
    ax.set_title("BUSI, cpu_small: test Dice by method (95% interval of the mean)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def do_table(args: argparse.Namespace) -> dict[str, Any]:
    """Assemble the runs that exist into ``quality.json`` and print the table."""
    records = collect_runs(args.runs)
    rows = aggregate(records)
    finished = {(r["ratio"], r["variant"], r["seed"]) for r in records if r["finished"]}
    missing = [p for p in planned(args.seeds, args.val) if (p["ratio"], p["variant"], p["seed"]) not in finished]
    root = WORK_ROOT if WORK_ROOT.is_dir() else None
    result = {
        "benchmark": "quality",
        "command": command_line(),
        "environment": environment("cpu"),
        "preset": args.preset,
        "data": {"source": "busi (shared datasets folder, read through benchmarks/work/busi)",
                 "splits": split_sizes(root) if root else None, "test_list": "test",
                 "ratios": {r: ("the paper's lists" if o == "paper" else f"rabusseg data split --labeled {o} --seed 0")
                            for r, o in RATIOS.items()}},
        "metrics": {"dice": "mean over test images", "iou": "mean over test images",
                    "hd95": "pixels of the original image, mean over images where defined"},
        "rows": rows,
        "runs": records,
        "missing": missing,
        "note": args.note,
    }
    print_table(f"test quality, {args.preset} (mean +- std over seeds; 'img': over test images)", display_rows(rows),
                ["ratio", "variant", "seeds", "min/run", "dice (last)", "iou (last)", "hd95 (last)", "dice (best val)"])  # fmt: skip
    if missing:
        print(f"\n{len(missing)} planned run(s) not done, e.g.:\n  " + "\n  ".join(p["command"] for p in missing[:4]))
    figure = plot_quality(rows, args.output.with_suffix(".png"))
    if figure is not None:
        resolved = figure.resolve()
        result["figure"] = str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(resolved)
    write_json(args.output, result)
    print(f"\nwrote {args.output}" + (f" and {figure}" if figure else ""))
    return result


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("prepare", help="make benchmarks/work/busi and draw the 1/8 split")
    p_run = sub.add_parser("run", help="train and evaluate one run")
    p_run.add_argument("--method", choices=METHODS, required=True)
    p_run.add_argument("--ratio", choices=list(RATIOS), required=True)
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--ablation", choices=list(ABLATIONS), default=None, help="ra_busseg with ARP or CRA off")
    p_run.add_argument("--overwrite", action="store_true", help="move an existing run directory aside and start again")
    p_run.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override key=value")
    for p in (p_run, sub.add_parser("table", help="assemble results/quality.json"), sub.add_parser("plan", help="list the runs")):
        p.add_argument("--runs", type=Path, default=RUNS_DIR)
        p.add_argument("--preset", default=PRESET)
        p.add_argument("--root", type=Path, default=None, help="dataset folder (default: benchmarks/work/busi)")
        p.add_argument("--seeds", type=int, nargs="+", default=[0])
        p.add_argument("--val", type=int, default=0 if p is p_run else VAL_IMAGES,
                       help="run: hold this many unlabelled images out as a validation list (best.pt); "
                            f"plan/table: the runs planned with such a list (default {VAL_IMAGES}; 0: none)")
        p.add_argument("--output", type=Path, default=RESULTS_DIR / "quality.json")
        p.add_argument("--note", default=None, help="table: a remark stored with the results (why runs are missing)")
    args = parser.parse_args(argv)
    if args.verb == "prepare":
        print(f"prepared {prepare_data(shared_busi(), WORK_ROOT)}")
        return None
    if args.verb == "run":
        if args.ablation and args.method != "ra_busseg":
            parser.error("--ablation applies to --method ra_busseg")
        return do_run(args)
    if args.verb == "plan":
        done = {(r["ratio"], r["variant"], r["seed"]) for r in collect_runs(args.runs) if r["finished"]}
        for p in planned(args.seeds, args.val):
            state = "done" if (p["ratio"], p["variant"], p["seed"]) in done else "todo"
            print(f"[{state}] {p['command']}")
        return None
    return do_table(args)


if __name__ == "__main__":
    passive_openmp()
    main()
