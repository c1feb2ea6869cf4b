"""Segmentation quality on BUSI on a CPU, method by method and seed by seed, compared image by image.

    python benchmarks/quality.py prepare                              # BUSI working copy + the 1/4, 1/8 splits (seed 0)
    python benchmarks/quality.py run --method ra_busseg --ratio 1_8 --seed 0
    python benchmarks/quality.py run --method ra_busseg --ratio 1_8 --seed 0 --ablation no_cra
    python benchmarks/quality.py run ... --hide-test                  # runs a choice rests on: test scored, not printed
    python benchmarks/quality.py plan                                 # every planned run, done or todo
    python benchmarks/quality.py table                                # results/quality.json + quality.png

Protocol (issue 11): the ``cpu_small`` recipe; per ratio (the paper's 1/2 lists, and 1/8 and 1/4
drawn by ``rabusseg data split --labeled 1/8|1/4 --seed 0``, nested) ``supervised``, ``mean_teacher``
and ``ra_busseg`` with 3 seeds, ``fixmatch`` and RA-BUSSeg without ARP / without CRA at 1/8 with
fewer; 1/4 last, as CPU time allows.  Every run
holds 30 images of its unlabelled list out as a validation list (so every method has best.pt
and student/teacher validation curves; the labelled set keeps its size) and monitors the
pseudo-labels of 30 other unlabelled images against their masks (``train.monitor_unlabeled``;
the masks never reach a loss).  The test list is read only by the final evaluation of the last
model, whose per-image scores (``eval/test_last/per_image.csv``) the table pairs.

Table, per ratio: mean over seeds of test Dice / IoU / HD95 (last model) with the std over seeds;
against ``supervised`` and against ``mean_teacher``: the paired per-image Dice difference (each
image's difference averaged over the seeds both methods have), its 95% bootstrap interval over
the test images, and the spread of the per-seed mean differences; the last pseudo-label scores.

Runs go to ``benchmarks/runs/quality/<ratio>/<variant>_s<seed>/`` with ``bench.json`` (command,
hardware, wall time, load average): one heavy job at a time.
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
from _busi import RATIOS, WORK_ROOT, carve_validation, prepare_data, shared_busi  # noqa: E402
from _common import (  # noqa: E402
    BENCH_DIR,
    RESULTS_DIR,
    command_line,
    cpu_seconds,
    environment,
    finite_or_none,
    load_average,
    passive_openmp,
    print_table,
    repo_relative,
    write_json,
)

PRESET = "cpu_small"
METHODS = ("supervised", "mean_teacher", "fixmatch", "ra_busseg")
ABLATIONS = {"no_arp": ["method.arp=false"], "no_cra": ["method.cra=false"]}
METRICS = ("dice", "iou", "hd95")
RUNS_DIR = BENCH_DIR / "runs" / "quality"
VAL_IMAGES = 30
MONITOR_IMAGES = 30
RUN_LIMIT_S = 15 * 60
BASELINES = ("supervised", "mean_teacher")
TARGETS = {"1_8": 0.03, "1_2": 0.015}
"""RA-BUSSeg over supervised, paired Dice difference (issue 11), CI above zero."""
SUPERVISED_FLOOR = {"ratio": "1_2", "dice": 0.72}
"""The recipe's supervised run at 1/2: mean test Dice over seeds, within the run budget (issue 11)."""
N_BOOT = 10000


def planned(seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict[str, Any]]:
    """The benchmark's runs, most informative first (1/8 before 1/2, the three main methods first, 1/4 last)."""
    def main_runs(ratio: str) -> list[tuple[str, str, int, None]]:
        return [(m, ratio, seed, None) for seed in seeds for m in ("supervised", "mean_teacher", "ra_busseg")]

    plan = main_runs("1_8") + main_runs("1_2")
    plan += [("fixmatch", "1_8", 0, None), ("ra_busseg", "1_8", 0, "no_arp"), ("ra_busseg", "1_8", 0, "no_cra"),
             ("fixmatch", "1_2", 0, None)]  # fmt: skip
    plan += main_runs("1_4")  # the issue's "1/4 if time allows": no target of its own, last in line
    return [{"method": m, "ratio": r, "seed": s, "ablation": a, "variant": variant_name(m, a),
             "command": run_command(m, r, s, a)} for m, r, s, a in plan]  # fmt: skip


def variant_name(method: str, ablation: str | None) -> str:
    return f"{method}-{ablation}" if ablation else method


def run_command(method: str, ratio: str, seed: int, ablation: str | None = None) -> str:
    return f"python benchmarks/quality.py run --method {method} --ratio {ratio} --seed {seed}" + (
        f" --ablation {ablation}" if ablation else "")


def run_dir_of(runs: Path, ratio: str, variant: str, seed: int) -> Path:
    return runs / ratio / f"{variant}_s{seed}"


# ----------------------------------------------------------------------------- runs


def run_overrides(root: Path, method: str, ratio: str, seed: int, ablation: str | None, lists: Path,
                  val: int = VAL_IMAGES, monitor: int = MONITOR_IMAGES) -> list[str]:  # fmt: skip
    """Data lists (validation carved from the unlabelled list), method, seed, monitor, ablation switch."""
    unlabeled, val_list = carve_validation(root, ratio, val, lists / ratio)
    out = [f"data.root={root}", f"data.labeled={ratio}/labeled", f"data.unlabeled={unlabeled}", f"data.val={val_list}",
           "data.test=test", f"method.name={method}", f"train.seed={seed}", "train.progress=false",
           f"train.monitor_unlabeled={monitor if method != 'supervised' else 0}"]  # fmt: skip
    return out + (ABLATIONS[ablation] if ablation else [])


def do_run(args: argparse.Namespace) -> Path:
    """Train one (method, ratio, seed[, ablation]) with the training API; ``bench.json`` beside it."""
    from rabusseg.config import load_config
    from rabusseg.engine.trainer import train

    root = args.root or prepare_data(shared_busi())
    variant = variant_name(args.method, args.ablation)
    out = run_dir_of(args.runs, args.ratio, variant, args.seed)
    overrides = run_overrides(root, args.method, args.ratio, args.seed, args.ablation, args.runs / "lists",
                              args.val, args.monitor) + args.overrides  # fmt: skip
    config = load_config(args.preset, overrides)
    env = environment("cpu")
    print(f"{run_command(args.method, args.ratio, args.seed, args.ablation)} -> {out} (load {env['load_average_start']})",
          flush=True)  # fmt: skip
    started, cpu_start = time.perf_counter(), cpu_seconds()
    result = train(config, out, overwrite=args.overwrite)
    wall = time.perf_counter() - started
    env["load_average_end"] = load_average()
    env["cpu_cores_used_mean"] = round((cpu_seconds() - cpu_start) / wall, 2)
    write_json(out / "bench.json", {"command": command_line(), "preset": args.preset, "overrides": overrides,
                                    "method": args.method, "ratio": args.ratio, "seed": args.seed,
                                    "ablation": args.ablation, "environment": env, "wall_s": round(wall, 1),
                                    "steps": result.step, "within_budget": wall <= RUN_LIMIT_S})  # fmt: skip
    last = result.summary.get("test_last") or {}
    shown = "not shown (--hide-test)" if args.hide_test else last.get("dice", {}).get("mean")
    print(f"done in {wall / 60:.1f} min: test Dice (last) {shown}", flush=True)
    return out


# ----------------------------------------------------------------------------- table


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def per_image(run: Path, metric: str = "dice") -> dict[str, float]:
    path = run / "eval" / "test_last" / "per_image.csv"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as handle:
        return {r["id"]: float(r[metric]) for r in csv.DictReader(handle) if r.get(metric) not in (None, "", "nan")}


def last_pseudo(run: Path) -> dict[str, Any] | None:
    """The last pseudo-label monitor row of a run (``metrics.jsonl``), or None."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if '"pseudo"' in line]
    return rows[-1] if rows else None


def collect_runs(runs: Path) -> list[dict[str, Any]]:
    """One record per finished run directory ``<ratio>/<variant>_s<seed>``."""
    from rabusseg.evaluation.aggregate import metric_mean

    out = []
    for run in sorted(runs.glob("*/*_s*")):
        summary = _read_json(run / "summary.json")
        if not run.is_dir() or run.parent.name not in RATIOS or summary is None:
            continue
        variant, _, seed = run.name.rpartition("_s")
        bench = _read_json(run / "bench.json") or {}
        last = summary.get("test_last") or {}
        record = {"ratio": run.parent.name, "variant": variant, "seed": int(seed), "path": str(run),
                  "wall_s": bench.get("wall_s"), "steps": summary.get("step"), "environment": bench.get("environment"),
                  "n_images": last.get("n_images"), "pseudo": last_pseudo(run)}  # fmt: skip
        for metric in METRICS:
            record[metric] = finite_or_none(metric_mean(last, metric))
        record["dice_best"] = finite_or_none(metric_mean(summary.get("test_best")))
        out.append(record)
    return out


PER_RUN_KEYS = ("data.root", "data.labeled", "data.unlabeled", "data.val", "data.test", "method.name", "method.arp",
                "method.cra", "train.seed", "train.progress", "train.monitor_unlabeled")  # fmt: skip
"""Settings a quality run sets itself (lists, method, ablation switch, seed); every other one is the recipe."""


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_differences(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Recipe settings on which the runs' ``config.yaml`` disagree: ``{key: {value: number of runs}}``.

    Why: the table pairs runs across methods and seeds as if one recipe trained them all; a run
    trained before a preset changed would otherwise mix in silently.
    """
    from collections import Counter

    import yaml

    from rabusseg.config import load_config, method_settings
    from rabusseg.errors import ConfigError

    configs = []
    for r in records:
        path = Path(r["path"]) / "config.yaml"
        if not path.is_file():
            continue
        try:  # validated: a setting added since the run counts at its default, the value it ran with
            tree = load_config(path).to_dict()
        except ConfigError:  # a setting since removed: compare the file as written
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        configs.append(_flat(tree))
    by_method = {str(k) for block in method_settings(PRESET).values() for k in block}  # e.g. supervised's epochs
    values = {}
    for key in sorted({k for c in configs for k in c} - set(PER_RUN_KEYS)):
        if key in by_method:  # the preset sets it per method: runs of one method must agree
            pairs = Counter((c.get("method.name"), json.dumps(c.get(key, "<absent>"))) for c in configs)
            methods = [method for method, _ in pairs]
            if len(methods) > len(set(methods)):
                values[key] = {f"{method}: {value}": n for (method, value), n in pairs.items()}
            continue
        counts = Counter(json.dumps(c.get(key, "<absent>")) for c in configs)
        if len(counts) > 1:
            values[key] = dict(counts)
    return values


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (ratio, variant): mean and std over seeds of each metric, wall time, pseudo-label scores."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["ratio"], r["variant"]), []).append(r)
    order = [*METHODS, *(variant_name("ra_busseg", a) for a in ABLATIONS)]
    rows = []
    for (ratio, variant), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]) if kv[0][1] in order else 99)):
        row: dict[str, Any] = {"ratio": ratio, "variant": variant, "seeds": sorted(r["seed"] for r in runs),
                               "n_images": runs[0]["n_images"],
                               "wall_min": _mean([r["wall_s"] / 60 for r in runs if r["wall_s"]])}  # fmt: skip
        for metric in (*METRICS, "dice_best"):
            vals = [r[metric] for r in runs if r[metric] is not None]
            row[metric], row[f"{metric}_seed_std"] = _mean(vals), _std(vals)
        pseudo = [r["pseudo"] for r in runs if r["pseudo"]]
        for key in ("pl_dice", "student_dice", "kept_share", "kept_accuracy", "dropped_accuracy", "lesion_share",
                    "kept_lesion_share"):
            vals = [p[key] for p in pseudo if isinstance(p.get(key), (int, float))]
            row[f"pseudo_{key}"] = _mean(vals)
        rows.append(row)
    return rows


def paired_difference(records: list[dict[str, Any]], ratio: str, variant: str, baseline: str,
                      n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any] | None:  # fmt: skip
    """Per-image Dice of ``variant`` minus ``baseline`` on the same test images, averaged over their common seeds.

    Returns the mean difference, its 95% bootstrap interval over images, the per-seed mean
    differences and their std, wins / losses (images better / worse), or None without common seeds.
    """
    import numpy as np

    by_seed = {k: {r["seed"]: r for r in records if r["ratio"] == ratio and r["variant"] == k} for k in (variant, baseline)}
    seeds = sorted(by_seed[variant].keys() & by_seed[baseline].keys())
    if not seeds:
        return None
    scores = {k: [per_image(Path(by_seed[k][s]["path"])) for s in seeds] for k in (variant, baseline)}
    ids = sorted(set.intersection(*(set(d) for d in scores[variant] + scores[baseline])))
    if not ids:
        return None
    diffs = np.array([[scores[variant][j][i] - scores[baseline][j][i] for i in ids] for j in range(len(seeds))])  # (S, N)
    return paired_statistics(ratio, variant, baseline, seeds, diffs, n_boot, seed)


def is_compared(variant: str, baseline: str) -> bool:
    """Whether the table pairs ``variant`` against ``baseline`` (every method against supervised, the
    semi-supervised ones also against mean teacher)."""
    return variant != baseline and not (baseline == "mean_teacher" and variant == "supervised")


def protocol(reported: str) -> dict[str, Any]:
    """The protocol stored with a table: validation and monitor lists, what is reported, bootstrap, budget."""
    return {"validation": f"{VAL_IMAGES} images held out of each run's unlabelled list",
            "monitor": f"pseudo-labels of {MONITOR_IMAGES} unlabelled images scored against their masks",
            "reported": reported, "bootstrap": N_BOOT, "budget_s": RUN_LIMIT_S}  # fmt: skip


def paired_statistics(ratio: str, variant: str, baseline: str, seeds: list[int], diffs: Any,
                      n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The pair's entry of the table from its per-image differences ``diffs`` (seeds x images)."""
    import numpy as np

    diffs = np.asarray(diffs, dtype=float)
    per_image_diff = diffs.mean(axis=0)  # (N,)
    n_images = per_image_diff.shape[0]
    rng = np.random.default_rng(seed)
    boots = per_image_diff[rng.integers(0, n_images, (n_boot, n_images))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    per_seed = diffs.mean(axis=1).tolist()
    return {"ratio": ratio, "variant": variant, "baseline": baseline, "seeds": seeds, "n_images": n_images,
            "mean_diff": float(per_image_diff.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "per_seed_diff": [round(d, 4) for d in per_seed], "per_seed_std": _std(per_seed),
            "wins": int((per_image_diff > 0).sum()), "losses": int((per_image_diff < 0).sum())}  # fmt: skip


def floor_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The supervised floor: mean test Dice over >= 3 seeds at 1/2 at least the target, each run within budget."""
    ratio, floor = SUPERVISED_FLOOR["ratio"], SUPERVISED_FLOOR["dice"]
    target = f"supervised >= {floor:.2f} mean test Dice in <= {RUN_LIMIT_S // 60} min"
    row = next((r for r in rows if r["ratio"] == ratio and r["variant"] == "supervised"), None)
    if row is None or row["dice"] is None:
        return {"ratio": ratio, "target": target, "measured": None, "met": None}
    seeds_ok = len(row["seeds"]) >= 3
    within = row["wall_min"] is not None and row["wall_min"] * 60 <= RUN_LIMIT_S
    wall = "wall time not recorded" if row["wall_min"] is None else f"{row['wall_min']:.1f} min a run"
    return {"ratio": ratio, "target": target, "met": bool(row["dice"] >= floor and within and seeds_ok),
            "measured": f"{row['dice']:.3f} over {len(row['seeds'])} seed(s), {wall}",
            "seeds_complete": seeds_ok}  # fmt: skip


def verdicts(pairs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets: the supervised floor, and per ratio RA-BUSSeg over supervised (paired, CI > 0) and
    above mean teacher."""
    out = [floor_verdict(rows)]
    for ratio, target in TARGETS.items():
        sup = next((p for p in pairs if p["ratio"] == ratio and p["variant"] == "ra_busseg" and p["baseline"] == "supervised"), None)
        mt = next((p for p in pairs if p["ratio"] == ratio and p["variant"] == "ra_busseg" and p["baseline"] == "mean_teacher"), None)
        if sup is None:
            out.append({"ratio": ratio, "target": f"+{target:.3f} over supervised, CI > 0; above mean teacher", "measured": None, "met": None})
            continue
        met = sup["mean_diff"] >= target and sup["ci_low"] > 0 and (mt is None or mt["mean_diff"] > 0)
        seeds_ok = len(sup["seeds"]) >= 3
        out.append({"ratio": ratio, "target": f"+{target:.3f} over supervised, CI > 0; above mean teacher",
                    "measured": f"{sup['mean_diff']:+.3f} [{sup['ci_low']:+.3f}, {sup['ci_high']:+.3f}] over {len(sup['seeds'])} seed(s)"
                                + (f"; vs mean teacher {mt['mean_diff']:+.3f} [{mt['ci_low']:+.3f}, {mt['ci_high']:+.3f}]" if mt else ""),
                    "met": bool(met and seeds_ok), "seeds_complete": seeds_ok})  # fmt: skip
    return out


def plot_differences(pairs: list[dict[str, Any]], path: Path) -> Path | None:
    """Forest plot: each method's paired Dice difference from the baselines, with its 95% interval."""
    from matplotlib.figure import Figure

    if not pairs:
        return None
    fig = Figure(figsize=(7.5, 0.5 + 0.42 * len(pairs)))
    ax = fig.subplots()
    labels = []
    for k, p in enumerate(pairs):
        color = "#2563eb" if p["baseline"] == "supervised" else "#f59e0b"
        ax.errorbar(p["mean_diff"], k, xerr=[[p["mean_diff"] - p["ci_low"]], [p["ci_high"] - p["mean_diff"]]],
                    fmt="o", color=color, capsize=3)  # fmt: skip
        ax.plot(p["per_seed_diff"], [k] * len(p["per_seed_diff"]), "x", color="0.45", markersize=5)
        labels.append(f"{p['ratio'].replace('_', '/')}  {p['variant']} - {p['baseline']}  ({len(p['seeds'])} seed{'s' if len(p['seeds']) > 1 else ''})")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("paired test Dice difference (per image, mean over seeds; 95% bootstrap interval; x: each seed)")
    ax.set_title("BUSI, cpu_small: what the unlabelled images add", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def do_table(args: argparse.Namespace) -> dict[str, Any]:
    """Assemble the finished runs into ``quality.json`` (+ the plot) and print the tables."""
    records = collect_runs(args.runs)
    rows = aggregate(records)
    pairs = []
    for ratio in sorted({r["ratio"] for r in records}):
        for variant in sorted({r["variant"] for r in records if r["ratio"] == ratio}):
            for baseline in BASELINES:
                if is_compared(variant, baseline):
                    p = paired_difference(records, ratio, variant, baseline)
                    if p:
                        pairs.append(p)
    done = {(r["ratio"], r["variant"], r["seed"]) for r in records}
    missing = [p for p in planned(tuple(args.seeds)) if (p["ratio"], p["variant"], p["seed"]) not in done]
    result = {"benchmark": "quality", "command": command_line(), "environment": environment("cpu"), "preset": args.preset,
              "protocol": protocol("last model on the test list (129 images); paired over images"),
              "rows": rows, "pairs": pairs, "verdicts": verdicts(pairs, rows), "runs": records, "missing": missing,
              "recipe_differences": recipe_differences(records), "note": args.note}  # fmt: skip
    shown = [{"ratio": r["ratio"].replace("_", "/"), "variant": r["variant"], "seeds": ",".join(map(str, r["seeds"])),
              "min/run": r["wall_min"], "dice": r["dice"], "dice sd(seeds)": r["dice_seed_std"], "iou": r["iou"],
              "hd95": r["hd95"], "pseudo-label dice": r["pseudo_pl_dice"], "student dice (unl.)": r["pseudo_student_dice"]}
             for r in rows]  # fmt: skip
    print_table(f"test quality, {args.preset}: last model, mean over seeds", shown, list(shown[0]) if shown else ["ratio"])
    print_table("paired per-image test Dice differences", [
        {"ratio": p["ratio"], "comparison": f"{p['variant']} - {p['baseline']}", "seeds": ",".join(map(str, p["seeds"])),
         "mean": p["mean_diff"], "ci95": f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]", "per seed": p["per_seed_diff"],
         "wins/losses": f"{p['wins']}/{p['losses']}"} for p in pairs], ["ratio", "comparison", "seeds", "mean", "ci95", "per seed", "wins/losses"])  # fmt: skip
    print_table("targets", result["verdicts"], ["ratio", "target", "measured", "met"])
    for key, counts in result["recipe_differences"].items():
        print(f"WARNING: the runs differ in {key}: " + ", ".join(f"{v} ({n} runs)" for v, n in counts.items()))
    if missing:
        print(f"\n{len(missing)} planned run(s) not done, next:\n  " + "\n  ".join(p["command"] for p in missing[:4]))
    return write_table(result, args.output)


def write_table(result: dict[str, Any], output: Path) -> dict[str, Any]:
    """Draw the forest plot of ``result["pairs"]`` beside ``output``, then write ``output`` (JSON)."""
    figure = plot_differences(result["pairs"], output.with_suffix(".png"))
    if figure is not None:
        result["figure"] = repo_relative(figure)
    write_json(output, result)
    print(f"\nwrote {output}" + (f" and {figure}" if figure else ""))
    return result


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("prepare", help="make benchmarks/work/busi and draw the 1/4 and 1/8 splits")
    p_run = sub.add_parser("run", help="train and evaluate one run")
    p_run.add_argument("--method", choices=METHODS, required=True)
    p_run.add_argument("--ratio", choices=list(RATIOS), required=True)
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--ablation", choices=list(ABLATIONS), default=None, help="ra_busseg with ARP or CRA off")
    p_run.add_argument("--overwrite", action="store_true", help="move an existing run directory aside and start again")
    p_run.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override key=value")
    p_run.add_argument("--val", type=int, default=VAL_IMAGES, help="unlabelled images held out as the validation list")
    p_run.add_argument("--monitor", type=int, default=MONITOR_IMAGES, help="unlabelled images whose pseudo-labels are scored")
    p_run.add_argument("--hide-test", action="store_true",
                       help="score the test list for the table but do not print it (runs that feed a decision)")
    for p in (p_run, sub.add_parser("table", help="assemble results/quality.json"), sub.add_parser("plan", help="list the runs")):
        p.add_argument("--runs", type=Path, default=RUNS_DIR)
        p.add_argument("--preset", default=PRESET)
        p.add_argument("--root", type=Path, default=None, help="dataset folder (default: benchmarks/work/busi)")
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
        done = {(r["ratio"], r["variant"], r["seed"]) for r in collect_runs(args.runs)}
        for p in planned(tuple(args.seeds)):
            print(f"[{'done' if (p['ratio'], p['variant'], p['seed']) in done else 'todo'}] {p['command']}")
        return None
    return do_table(args)


if __name__ == "__main__":
    passive_openmp()
    main()
