"""Train the paper configuration on BUSI for a bounded wall time and report speed and quality.

    python benchmarks/gpu_train.py                          # CUDA, busi_1-2, about 5 minutes
    python benchmarks/gpu_train.py --device cpu --minutes 0.5 --set data.crop_size=128   # CPU smoke test

1. Calibration on synthetic input of the configured crop: FLOPs of one training step
   (``torch.utils.flop_counter.FlopCounterMode``: student forward + backward on the labelled and
   unlabelled images with the relation branches, teacher forward on the unlabelled ones) and the
   time of a few steps.
2. A real run (``rabusseg.engine.trainer.train``) with ``train.max_steps`` sized to the time
   budget, validating every epoch on 20 images carved from the labelled list (never the test list;
   the carved lists are written under ``--out``, the dataset is not touched).
3. Prints and writes JSON: steps/s, images/s, peak memory, achieved TFLOP/s, MFU against the
   bf16 dense peak (H200: 989 TFLOP/s), the best validation Dice and the last model's test Dice.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rabusseg.config import Config

H200_BF16_DENSE_TFLOPS = 989.0


def _carve_validation(config: Config, out: Path, n_val: int) -> list[str]:
    """Write labelled-minus-val and val lists under ``out``; return the overrides that use them."""
    from rabusseg.data.folder import DatasetFolder
    from rabusseg.paths import resolve_data_root

    folder = DatasetFolder(resolve_data_root(config.data.root))
    labeled = folder.split(config.data.labeled)
    val = labeled[:: max(1, len(labeled) // n_val)][:n_val]  # spread over the (class-sorted) list
    train = [i for i in labeled if i not in set(val)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "labeled.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out / "val.txt").write_text("\n".join(val) + "\n", encoding="utf-8")
    return [f"data.root={folder.root}", f"data.labeled={(out / 'labeled.txt').resolve()}",
            f"data.val={(out / 'val.txt').resolve()}"]  # fmt: skip


def _calibrate(config: Config, device: torch.device, steps: int = 3) -> dict[str, float]:
    """FLOPs of one training step and its time on synthetic input (no data loading)."""
    from torch.utils.flop_counter import FlopCounterMode

    from rabusseg.models import build_model

    b, crop = config.train.batch_size, config.data.crop_size
    student = build_model(config.model).to(device).train()
    teacher = build_model(config.model).to(device).eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(2 * b, 3, crop, crop, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and config.train.amp)

    def step() -> None:
        with autocast:
            with torch.no_grad():
                teacher(x[b:], relations=False)
            out = student(x, relations=True)
            loss = out.pred.float().mean() + out.arp_pred.float().mean() + sum(f.float().mean() for f in out.features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (cuDNN autotuning, allocator)
    with FlopCounterMode(display=False) as counter:
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"flops_per_step": float(counter.get_total_flops()), "calibration_step_s": (time.perf_counter() - start) / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="busi_1-2")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-time budget of the training run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--val", type=int, default=20, help="validation images carved from the labelled list")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_train"))
    args = parser.parse_args()

    from rabusseg.config import load_config
    from rabusseg.engine.trainer import train

    device = torch.device(args.device)
    base = [f"train.device={args.device}", "train.progress=false", "train.log_every_steps=20",
            f"data.num_workers={8 if device.type == 'cuda' else 2}", *args.overrides]  # fmt: skip
    base += _carve_validation(load_config(args.config, base), args.out / "lists", args.val)
    config = load_config(args.config, base)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    calib = _calibrate(config, device)
    steps = max(1, int(0.8 * args.minutes * 60 / calib["calibration_step_s"]))
    log_every = max(1, min(20, steps // 5))  # at least a few throughput readings
    config = load_config(args.config, [*base, f"train.max_steps={steps}", f"train.log_every_steps={log_every}"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = train(config, args.out / "run", overwrite=True)
    wall = time.perf_counter() - started

    lines = [json.loads(line) for line in (args.out / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in lines if r["kind"] == "train"]
    rates = rates[1:] or rates  # the first interval includes start-up
    images_per_step = 2 * config.train.batch_size
    images_per_s = sum(rates) / len(rates) if rates else float("nan")
    steps_per_s = images_per_s / images_per_step
    tflops = calib["flops_per_step"] * steps_per_s / 1e12
    report = {
        "config": args.config, "overrides": args.overrides, "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else platform.processor() or "cpu", "date": time.strftime("%Y-%m-%d %H:%M"),
        "steps": result.step, "wall_s": round(wall, 1), "steps_per_s": steps_per_s, "images_per_s": images_per_s,
        "calibration_step_s": calib["calibration_step_s"], "tflop_per_step": calib["flops_per_step"] / 1e12,
        "achieved_tflops": tflops, "mfu_bf16_h200": tflops / H200_BF16_DENSE_TFLOPS if device.type == "cuda" else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "best_val_dice": result.summary["best_val"]["dice"],
        "val_dice": [(r["step"], r["dice"]) for r in lines if r["kind"] == "eval" and r["split"] == "val"],
        "test_last_dice": result.test_dice,
    }  # fmt: skip
    (args.out / "gpu_train.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for key, value in report.items():
        print(f"{key:>20}: {value:.4g}" if isinstance(value, float) else f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
