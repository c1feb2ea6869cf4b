"""Quality and speed on a GPU in bounded time: the paper's network and the ImageNet MobileNetV2 variant.

    python benchmarks/gpu_quality.py                       # CUDA, BUSI 1/2, at most 7.5 minutes in all
    python benchmarks/gpu_quality.py --device cpu --train-minutes 0.05 --total-minutes 6 \\
        --set data.crop_size=64 --set data.eval_size=64    # CPU smoke test of the plumbing
    python benchmarks/gpu_quality.py --dry-run             # print the commands only

Runs ``benchmarks/gpu_train.py`` (the engine's bounded-time trainer: calibration, a training run
sized to the budget with validation on 20 images carved from the labelled list, test evaluation
of the last model) once per configuration, one after the other, each in its own process with a
hard timeout taken from what is left of ``--total-minutes``:

* ``paper``: ``busi_1-2`` (ResNet-50 deep stem, output stride 8, 512 px crops), random
  initialisation: no ImageNet ResNet-50 weights are available here;
* ``mobilenet``: ``busi_1-2_mobilenet`` (ImageNet MobileNetV2, output stride 8, 512 px crops).

gpu_train.py counts FLOPs with torch's ``FlopCounterMode``, which counts a depthwise convolution's
backward as a dense one; the ``*_corrected`` figures remove that excess (see
:func:`overcounted_tflop_per_step`), the raw ones are kept beside them.

A few minutes cannot hold the paper's 200-epoch schedule; both runs use a short one
(``train.epochs=6``, ``train.warmup_epochs=1``, poly decay over it, and the ``cpu_small`` recipe's
10x learning rate for the head, ``optim.head_lr_multiplier=10``), cut by the time budget if
the device is slower.  The numbers say what a few minutes give, not what the method reaches.
Prints a table and writes ``benchmarks/results/gpu_quality.json``; run directories go to
``benchmarks/work/gpu/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BENCH_DIR,
    H200_BF16_DENSE_TFLOPS,
    RESULTS_DIR,
    command_line,
    environment,
    flop_counter,
    load_average,
    print_table,
    write_json,
)

CONFIGS = {"paper": "busi_1-2", "mobilenet": "busi_1-2_mobilenet"}
SCHEDULE = ["train.epochs=6", "train.warmup_epochs=1", "optim.head_lr_multiplier=10"]
"""The cpu_small recipe's levers at paper scale: a short schedule and the 10x head rate (docs/choices.md)."""
OVERHEAD_MINUTES = 1.25
"""Per run, outside the training budget: process start, CUDA init, calibration, test evaluation."""
GPU_TRAIN = BENCH_DIR / "gpu_train.py"
KEYS = ("steps", "wall_s", "steps_per_s", "images_per_s", "tflop_per_step", "achieved_tflops", "mfu_bf16_h200",
        "peak_memory_gib", "best_val_dice", "test_last_dice")  # fmt: skip


def train_minutes(total: float, n_runs: int) -> float:
    """Training budget of each run so that all of them, overhead included, fit in ``total`` minutes."""
    return max(0.05, (total - n_runs * OVERHEAD_MINUTES) / n_runs)


def command(name: str, device: str, minutes: float, overrides: list[str], val: int, out: Path) -> list[str]:
    """The gpu_train.py command of one configuration."""
    sets = [arg for o in [*SCHEDULE, *overrides] for arg in ("--set", o)]
    return [sys.executable, str(GPU_TRAIN), "--config", CONFIGS[name], "--device", device, "--minutes", f"{minutes:.3g}",
            "--val", str(val), "--out", str(out / name), *sets]  # fmt: skip


def overcounted_tflop_per_step(config_name: str, overrides: list[str]) -> float:
    """TFLOP per step that torch's ``FlopCounterMode`` (used by gpu_train.py) adds to a training step.

    torch counts a grouped (depthwise) convolution's backward as if it were dense; the excess is
    the difference of its count and the groups-aware one (``_common.flop_counter``) over the
    student's forward + backward of the step's 2 x batch images, counted on the meta device.
    Zero for the ResNets; about two thirds of the reported FLOPs for MobileNetV2.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rabusseg.config import load_config
    from rabusseg.models import build_model

    config = load_config(config_name, [*SCHEDULE, *overrides, "model.encoder_weights=null"])
    crop, images = config.data.crop_size, 2 * config.train.batch_size
    model = build_model(config.model).to("meta").train()
    counts = []
    for counter in (FlopCounterMode(display=False), flop_counter()):
        with counter:
            model(torch.empty(images, 3, crop, crop, device="meta"), relations=False).pred.float().mean().backward()
        counts.append(counter.get_total_flops())
        model.zero_grad(set_to_none=True)
    return (counts[0] - counts[1]) / 1e12


def corrected(report: dict[str, Any], excess_tflop: float) -> dict[str, Any]:
    """gpu_train.py's FLOP-based figures with the grouped-convolution excess removed."""
    if not report.get("tflop_per_step") or not report.get("steps_per_s"):
        return {}
    tflop = report["tflop_per_step"] - excess_tflop
    achieved = tflop * report["steps_per_s"]
    return {"tflop_per_step_corrected": tflop, "achieved_tflops_corrected": achieved,
            "mfu_bf16_h200_corrected": achieved / H200_BF16_DENSE_TFLOPS if report.get("mfu_bf16_h200") is not None else None}  # fmt: skip


def run_one(cmd: list[str], timeout_s: float, report: Path) -> dict[str, Any]:
    """Run one gpu_train.py; its JSON report, or why there is none."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=max(1.0, timeout_s), check=False)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout_s:.0f} s"
    wall = time.perf_counter() - started
    data = json.loads(report.read_text(encoding="utf-8")) if status == "ok" and report.is_file() else {}
    return {"status": status, "process_wall_s": round(wall, 1), **{k: data.get(k) for k in KEYS}, "report": data or None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--total-minutes", type=float, default=7.5, help="hard limit for everything this script runs")
    parser.add_argument("--train-minutes", type=float, default=None, help="training budget per run (default: from the total)")
    parser.add_argument("--val", type=int, default=20, help="validation images carved from the labelled list")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for every run")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / "work" / "gpu")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "gpu_quality.json")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = parser.parse_args(argv)

    minutes = args.train_minutes or train_minutes(args.total_minutes, len(args.configs))
    commands = {name: command(name, args.device, minutes, args.overrides, args.val, args.work) for name in args.configs}
    if args.dry_run:
        for cmd in commands.values():
            print(" ".join(cmd))
        return {"commands": commands}
    started = time.perf_counter()
    env = environment(args.device) if args.device.startswith("cuda") else environment("cpu")
    runs = {}
    for name, cmd in commands.items():
        left = args.total_minutes * 60 - (time.perf_counter() - started)
        print(f"\n=== {name}: {CONFIGS[name]} ({left / 60:.1f} min left)\n{' '.join(cmd)}", flush=True)
        run = run_one(cmd, left - 5, args.work / name / "gpu_train.json")
        excess = overcounted_tflop_per_step(CONFIGS[name], args.overrides)
        runs[name] = {"config": CONFIGS[name], **run, "flop_overcount_tflop_per_step": excess, **corrected(run, excess)}
    env["load_average_end"] = load_average()
    result = {"benchmark": "gpu_quality", "command": command_line(), "environment": env, "dataset": "busi, 1/2 (paper lists)",
              "schedule": SCHEDULE + args.overrides, "train_minutes_each": minutes, "total_minutes_limit": args.total_minutes,
              "wall_s": round(time.perf_counter() - started, 1), "runs": runs}  # fmt: skip
    print_table("GPU quality in bounded time (test Dice of the last model)", [{"name": n, **r} for n, r in runs.items()],
                ["name", "config", "status", "steps", "images_per_s", "achieved_tflops_corrected",
                 "mfu_bf16_h200_corrected", "peak_memory_gib", "best_val_dice", "test_last_dice", "process_wall_s"])  # fmt: skip
    write_json(args.output, result)
    print(f"\nwrote {args.output}")
    return result


if __name__ == "__main__":
    main()
