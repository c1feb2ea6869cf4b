"""Speed and memory of training and inference, per model preset and input size, in one run.

    python benchmarks/speed.py                      # default grid, about 10 minutes on 2 idle CPU cores
    python benchmarks/speed.py --quick              # smoke test: cpu_small at 64 px, one repeat
    python benchmarks/speed.py --device cuda        # GPU: adds bf16 inference, achieved TFLOP/s and MFU
    python benchmarks/speed.py --models busi_1-2 --train-sizes 256 --infer-sizes 512

A *model* is a preset of ``rabusseg/configs`` (its model and method sections; random weights):
``cpu_small`` (MobileNetV2, output stride 16, 64-channel head), ``busi_1-2`` (ResNet-50 deep stem,
output stride 8: the paper's network), ``busi_1-2_mobilenet`` (MobileNetV2, output stride 8).

Training: the time of one optimiser step of ``supervised``, ``mean_teacher`` and ``ra_busseg`` at
``--batch`` labelled (+ as many unlabelled) images of ``size`` px.  The step is the product's own:
:func:`rabusseg.engine.loop.fit` runs it on networks and an optimiser built by the trainer's set-up
helpers, fed with in-memory synthetic batches (no data loading), with checkpoint writing switched
off; a logger hook takes the time at the end of each step.  Methods run round-robin, one step
each per round (round 0 warms up), so a change in machine load hits all of them alike; the ARP+CRA
overhead is ``ra_busseg / mean_teacher`` of the medians.

Inference: the eval-mode graph that ``rabusseg predict`` runs (logits resized to the input),
batch 1 latency and ``--infer-batch`` throughput for torch eager, eager channels-last and ONNX
Runtime (a dynamic-size export by :func:`rabusseg.inference.export.export_onnx`); on CUDA, bf16
autocast replaces ONNX Runtime (whose CPU build is what rabusseg ships).  Engines run
round-robin too.  FLOPs per image by ``torch.utils.flop_counter`` (on the meta device), with a
groups-aware convolution backward (torch's own counts a depthwise one as dense; ``_common.flop_counter``).

Memory: CPU, the growth of the peak resident set (VmHWM, reset through /proc/self/clear_refs)
over the first training step of a freshly built run, or over one batch-1 inference, in a child
process whose allocator returns freed memory to the system (``MALLOC_MMAP_THRESHOLD_``), so the
growth is what the step needs beyond the weights (activations, gradients, optimiser state).
CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the step.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): on cores shared with
other processes the default spinning made torch 50 times slower (see ``_common.passive_openmp``).

Writes ``benchmarks/results/speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    H200_BF16_DENSE_TFLOPS,
    RESULTS_DIR,
    command_line,
    cpu_seconds,
    environment,
    flop_counter,
    load_average,
    median,
    passive_openmp,
    print_table,
    time_call,
    write_json,
)

passive_openmp()  # before torch: see _common.passive_openmp
import torch
from _steps import build_run, run_steps  # noqa: E402  (imports torch)

METHODS = ("supervised", "mean_teacher", "ra_busseg")
OVERHEAD_TARGET = 1.15
"""ARP + CRA may cost at most 15% over a mean-teacher step."""
LATENCY_TARGET_S = 0.5
"""CPU inference of a 512 px image with the best engine."""
DEFAULT_GRID: dict[str, dict[str, tuple[int, ...]]] = {
    "cpu_small": {"train": (128, 256, 512), "infer": (128, 256, 512), "throughput": (128, 256, 512)},
    "busi_1-2": {"train": (128,), "infer": (128, 256), "throughput": (128,)},
}
"""Sizes per model: what fits in 10 minutes on 2 CPU cores (measured: 11.2 minutes while another
job held more than one of the two cores, the benchmark itself averaging 0.78 of a core).  The deep-stem ResNet-50 at output stride 8
costs 430 GFLOP per 512 px image, 15 times the cpu_small network: one 512 px training step of it
takes minutes on 2 cores, so it is timed at 128 px here (``--models busi_1-2 --train-sizes 512``)."""
QUICK_GRID: dict[str, dict[str, tuple[int, ...]]] = {"cpu_small": {"train": (64,), "infer": (64,), "throughput": (64,)}}


# ----------------------------------------------------------------------------- training


def bench_training(model: str, size: int, batch: int, repeats: int, device: torch.device, work: Path) -> list[dict[str, Any]]:
    """Round-robin step times of the three methods at one size; FLOPs counted in the warm-up round."""
    runs = {m: build_run(model, m, size, batch, device, work) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    flops: dict[str, float] = {}
    for round_ in range(repeats + 1):
        for method, run in runs.items():
            if round_ == 0:  # warm-up: first-call costs; count FLOPs here
                with flop_counter() as counter:
                    run_steps(run, 1)
                flops[method] = float(counter.get_total_flops())
            else:
                times[method] += run_steps(run, 1)
    rows = []
    for method in METHODS:
        step_s = median(times[method])
        images = batch if method == "supervised" else 2 * batch
        row = {"model": model, "encoder": runs[method].config.model.encoder, "size": size, "batch": batch,
               "method": method, "images_per_step": images, "step_ms": 1e3 * step_s,
               "step_ms_all": [round(1e3 * t, 2) for t in times[method]], "images_per_s": images / step_s,
               "tflop_per_step": flops[method] / 1e12, "achieved_tflops": flops[method] / step_s / 1e12}  # fmt: skip
        if device.type == "cuda":
            row["mfu_bf16"] = row["achieved_tflops"] / H200_BF16_DENSE_TFLOPS
        rows.append(row)
    del runs
    gc.collect()
    return rows


def overhead_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """ARP + CRA cost: ra_busseg over mean_teacher (medians, and the median of per-round ratios)."""
    by = {r["method"]: r for r in rows}
    mt, ra = by["mean_teacher"], by["ra_busseg"]
    paired = median([a / b for a, b in zip(ra["step_ms_all"], mt["step_ms_all"], strict=True)])
    ratio = ra["step_ms"] / mt["step_ms"]
    return {"model": mt["model"], "encoder": mt["encoder"], "size": mt["size"], "batch": mt["batch"],
            "supervised_ms": by["supervised"]["step_ms"], "mean_teacher_ms": mt["step_ms"], "ra_busseg_ms": ra["step_ms"],
            "ra_over_mean_teacher": ratio, "paired_ratio": paired, "target": OVERHEAD_TARGET,
            "met": bool(ratio <= OVERHEAD_TARGET)}  # fmt: skip


# ----------------------------------------------------------------------------- inference


def inference_network(model: str) -> torch.nn.Module:
    """The preset's network in eval mode with random weights, wrapped as ``predict`` runs it."""
    from rabusseg.config import load_config
    from rabusseg.inference.export import InferenceGraph
    from rabusseg.models import build_model

    torch.manual_seed(0)
    return InferenceGraph(build_model(load_config(model, ["model.encoder_weights=null"]).model)).eval()


def flops_per_image(graph: torch.nn.Module, size: int) -> float:
    """Forward FLOPs of one image (counted on the meta device: no compute)."""
    meta = copy.deepcopy(graph).to("meta")
    with flop_counter() as counter, torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return float(counter.get_total_flops())


def export_for_ort(model: str, graph: torch.nn.Module, size: int, work: Path) -> torch.nn.Module:
    """Save the network as a checkpoint, export it (dynamic size) and open it in ONNX Runtime."""
    from rabusseg.checkpoint import save_checkpoint
    from rabusseg.config import load_config
    from rabusseg.inference.export import OnnxSegmenter, export_onnx

    config = load_config(model, ["model.encoder_weights=null"])
    ckpt = save_checkpoint({"config": config.to_dict(), "student": graph.model.state_dict(), "teacher": None,
                            "inference_weights": "student", "step": 0, "epoch": 0}, work / f"{model}.pt")  # fmt: skip
    path = export_onnx(ckpt, work / f"{model}.onnx", dynamic=True, size=size, overwrite=True)
    return OnnxSegmenter(path).module


def engines(model: str, graph: torch.nn.Module, device: torch.device, trace_size: int, work: Path) -> dict[str, Any]:
    """name -> callable(images) for each inference engine of this device."""
    eager = graph.to(device)
    last = copy.deepcopy(graph).to(device, memory_format=torch.channels_last)
    out: dict[str, Any] = {
        "eager": lambda x: eager(x),
        "channels_last": lambda x: last(x.contiguous(memory_format=torch.channels_last)),
    }
    if device.type == "cuda":
        def bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return last(x.contiguous(memory_format=torch.channels_last))

        out["bf16_channels_last"] = bf16
    else:
        out["onnxruntime"] = export_for_ort(model, graph, trace_size, work)
    return out


def bench_inference(model: str, sizes: tuple[int, ...], throughput_sizes: tuple[int, ...], infer_batch: int,
                    repeats: int, device: torch.device, work: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Batch-1 latency and batch-N throughput per engine and size, engines round-robin."""
    from rabusseg.config import load_config

    encoder = load_config(model).model.encoder
    graph = inference_network(model)
    flops = {s: flops_per_image(graph, s) for s in sizes}
    fns = engines(model, graph, device, min(sizes), work)
    rows = []
    for size in sizes:
        x1 = torch.randn(1, 3, size, size, device=device)
        xb = torch.randn(infer_batch, 3, size, size, device=device)
        lat: dict[str, list[float]] = {e: [] for e in fns}
        thr: dict[str, list[float]] = {e: [] for e in fns}
        with torch.inference_mode():
            for round_ in range(repeats + 1):
                for name, fn in fns.items():
                    t = time_call(lambda fn=fn, x=x1: fn(x), device)
                    if round_:
                        lat[name].append(t)
            if size in throughput_sizes:
                for round_ in range(repeats + 1):
                    for name, fn in fns.items():
                        t = time_call(lambda fn=fn, x=xb: fn(x), device)
                        if round_:
                            thr[name].append(t)
        for name in fns:
            b1 = median(lat[name])
            per_image = median(thr[name]) / infer_batch if thr[name] else None
            row = {"model": model, "encoder": encoder, "size": size, "engine": name,
                   "gflop_per_image": flops[size] / 1e9, "batch1_ms": 1e3 * b1,
                   "batch1_ms_all": [round(1e3 * t, 2) for t in lat[name]], "throughput_batch": infer_batch,
                   "images_per_s": 1 / per_image if per_image else None,
                   "achieved_tflops": flops[size] / (per_image or b1) / 1e12}  # fmt: skip
            if device.type == "cuda":
                row["mfu_bf16"] = row["achieved_tflops"] / H200_BF16_DENSE_TFLOPS if name.startswith("bf16") else None
            rows.append(row)
    return rows


def latency_targets(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """Per model: the best engine's seconds per 512 px image (batch 1 or batched), against 0.5 s."""
    out = []
    for model in models:
        at512 = [r for r in rows if r["model"] == model and r["size"] == 512]
        if not at512:
            out.append({"model": model, "size": 512, "measured": False, "target_s": LATENCY_TARGET_S, "met": None})
            continue
        candidates = [(r["batch1_ms"] / 1e3, r["engine"], "batch 1") for r in at512]
        candidates += [(1 / r["images_per_s"], r["engine"], f"batch {r['throughput_batch']}") for r in at512 if r["images_per_s"]]
        best = min(candidates)
        out.append({"model": model, "size": 512, "measured": True, "best_engine": best[1], "best_mode": best[2],
                    "best_s_per_image": best[0], "target_s": LATENCY_TARGET_S, "met": bool(best[0] <= LATENCY_TARGET_S)})  # fmt: skip
    return out


# ----------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


@contextlib.contextmanager
def peak_growth(device: torch.device, box: dict[str, float]) -> Iterator[None]:
    """Peak memory above the level at entry, in MiB, stored in ``box["mib"]``."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield
        torch.cuda.synchronize(device)
        box["mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        base = _status_kib("VmRSS")
        yield
        box["mib"] = (_status_kib("VmHWM") - base) / 1024


def measure_memory(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """First-step training peaks per method and size, and batch-1 inference peaks (fresh objects)."""
    device = torch.device(spec["device"])
    work = Path(spec["work"])
    rows = []
    if spec["train"]:  # first-call costs of the process (thread pools, kernels) belong to no method
        run_steps(build_run(spec["model"], "supervised", min(spec["train"]), spec["batch"], device, work), 1)
    for size in spec["train"]:
        for method in METHODS:
            run = build_run(spec["model"], method, size, spec["batch"], device, work)
            state = sum(t.numel() * t.element_size() for t in itertools.chain(run.student.parameters(), run.student.buffers()))
            box: dict[str, float] = {}
            with peak_growth(device, box):
                run_steps(run, 1)
            rows.append({"model": spec["model"], "kind": "train", "method": method, "size": size, "batch": spec["batch"],
                         "peak_mib": box["mib"], "weights_mib": state / 2**20 * (2 if run.teacher is not None else 1)})  # fmt: skip
            del run
    graph = inference_network(spec["model"]).to(device)
    for size in spec["infer"]:
        x = torch.randn(1, 3, size, size, device=device)
        box = {}
        with torch.inference_mode(), peak_growth(device, box):
            graph(x)
        rows.append({"model": spec["model"], "kind": "infer", "method": "eager", "size": size, "batch": 1,
                     "peak_mib": box["mib"], "weights_mib": None})  # fmt: skip
    return rows


def memory_in_child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run :func:`measure_memory` in a fresh process whose allocator unmaps freed blocks."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run([sys.executable, __file__, "--_memory-child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke test: cpu_small at 64 px, one repeat")
    parser.add_argument("--models", nargs="+", help=f"model presets (default: {', '.join(DEFAULT_GRID)})")
    parser.add_argument("--train-sizes", type=int, nargs="*", help="training crop sizes for every model")
    parser.add_argument("--infer-sizes", type=int, nargs="*", help="inference sizes for every model")
    parser.add_argument("--throughput-sizes", type=int, nargs="*", help="sizes that also get batched throughput")
    parser.add_argument("--batch", type=int, default=2, help="labelled images per training step (+ as many unlabelled)")
    parser.add_argument("--infer-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds after one warm-up round (default 2; quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "speed.json")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def grid_from_args(args: argparse.Namespace) -> dict[str, dict[str, tuple[int, ...]]]:
    """The default (or quick) grid, restricted to ``--models`` and with sizes replaced where given."""
    base = QUICK_GRID if args.quick else DEFAULT_GRID
    grid = {}
    for model in args.models or list(base):
        sizes = dict(base.get(model, DEFAULT_GRID.get(model, {"train": (128,), "infer": (128, 256), "throughput": (128,)})))
        for key, given in (("train", args.train_sizes), ("infer", args.infer_sizes), ("throughput", args.throughput_sizes)):
            if given is not None:
                sizes[key] = tuple(given)
        grid[model] = sizes
    return grid


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(measure_memory(json.loads(args.memory_child))))
        return {}
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    repeats = args.repeats or (1 if args.quick else 2)
    infer_batch = 2 if args.quick and args.infer_batch == 8 else args.infer_batch
    grid = grid_from_args(args)
    env = environment(args.device)
    started, cpu_start = time.perf_counter(), cpu_seconds()
    training, overhead, inference, memory = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="rabusseg-speed-") as tmp:
        work = Path(tmp)
        for model, sizes in grid.items():
            for size in sizes["train"]:
                print(f"training step: {model} {size} px ...", flush=True)
                rows = bench_training(model, size, args.batch, repeats, device, work)
                training += rows
                overhead.append(overhead_row(rows))
            if sizes["infer"]:
                print(f"inference: {model} {', '.join(map(str, sizes['infer']))} px ...", flush=True)
                inference += bench_inference(model, sizes["infer"], sizes["throughput"], infer_batch, repeats, device, work)
            if not args.no_memory:
                print(f"memory: {model} ...", flush=True)
                spec = {"model": model, "train": sizes["train"], "infer": sizes["infer"], "batch": args.batch,
                        "device": args.device, "work": str(work)}  # fmt: skip
                memory += measure_memory(spec) if device.type == "cuda" else memory_in_child(spec)
    env["load_average_end"] = load_average()
    env["cpu_cores_used_mean"] = round((cpu_seconds() - cpu_start) / (time.perf_counter() - started), 2)
    result = {
        "benchmark": "speed",
        "command": command_line(),
        "environment": env,
        "settings": {"grid": {m: {k: list(v) for k, v in s.items()} for m, s in grid.items()}, "batch": args.batch,
                     "infer_batch": infer_batch, "repeats": repeats, "warmup_rounds": 1, "quick": args.quick,
                     "methods": list(METHODS)},
        "targets": {"ra_over_mean_teacher_max": OVERHEAD_TARGET, "cpu_512px_s_per_image_max": LATENCY_TARGET_S},
        "training": training,
        "training_overhead": overhead,
        "inference": inference,
        "inference_target": latency_targets(inference, list(grid)) if device.type == "cpu" else [],
        "memory": memory,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print_table("training step (median ms)", training,
                ["model", "size", "batch", "method", "step_ms", "images_per_s", "tflop_per_step", "achieved_tflops"]
                + (["mfu_bf16"] if device.type == "cuda" else []))  # fmt: skip
    print_table("ARP + CRA overhead (ra_busseg / mean_teacher, target <= 1.15)", overhead,
                ["model", "size", "mean_teacher_ms", "ra_busseg_ms", "ra_over_mean_teacher", "paired_ratio", "met"])
    print_table("inference", inference, ["model", "size", "engine", "gflop_per_image", "batch1_ms", "images_per_s",
                                         "achieved_tflops"] + (["mfu_bf16"] if device.type == "cuda" else []))  # fmt: skip
    if result["inference_target"]:
        print_table("512 px CPU inference (target <= 0.5 s per image)", result["inference_target"],
                    ["model", "measured", "best_engine", "best_mode", "best_s_per_image", "met"])
    print_table("peak memory growth (MiB)", memory, ["model", "kind", "method", "size", "batch", "peak_mib", "weights_mib"])
    write_json(args.output, result)
    print(f"\nwrote {args.output} in {result['wall_s']} s; load average {env['load_average_start']} -> {env['load_average_end']}")
    return result


if __name__ == "__main__":
    main()
