"""Helpers shared by the benchmark scripts: environment record, timing, tables, JSON output.

Benchmarks are scripts, not tests: each prints a table and writes ``benchmarks/results/<name>.json``
holding the command, the hardware, the date and the load average, so that a number can always be
traced to the machine and the moment it was measured.  Machines are shared and noisy: compare
ratios measured in one run, not absolute times across runs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
H200_BF16_DENSE_TFLOPS = 989.0
"""Dense bf16 tensor-core peak of one H200 (SXM), the denominator of MFU."""


def passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless set.

    Call before torch is imported.  On a machine whose cores are shared with other processes, the
    default (active) waiting turns every parallel region into a scheduler time slice: measured here,
    a 64 px cpu_small forward took 1.86 s with 2 threads against 0.036 s with passive waiting and
    0.032 s with 1 thread.  Passive waiting is what a user with other work on the cores gets too.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes compete for the cores)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on, and when (native bf16 decides what ``train.amp`` runs on a CPU)."""
    import torch

    from rabusseg.engine.precision import cpu_has_native_bf16

    cuda = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cuda_device": cuda,
        "load_average_start": load_average(),
    }


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def command_line() -> str:
    """The command as typed, relative to the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when inside it (README links), else as given."""
    full = path.resolve()
    return full.relative_to(REPO_ROOT).as_posix() if full.is_relative_to(REPO_ROOT) else str(path)


def sync(device: Any) -> None:
    """Wait for queued CUDA work so that wall time measures the device."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: Any) -> float:
    """Wall time of one call in seconds, synchronised with the device on both sides."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant figures, ``None`` as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 3) -> str:
    """A GitHub-markdown table of ``columns`` from ``rows`` (missing cells shown as ``-``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c), digits) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    print(f"\n## {title}\n{table(rows, columns) if rows else '(nothing measured)'}", flush=True)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` atomically (a reader never sees half a file)."""
    from rabusseg.files import atomic_write

    text = json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def finite_or_none(x: float | None) -> float | None:
    """JSON has no NaN: undefined numbers are stored as ``null``."""
    return float(x) if x is not None and math.isfinite(x) else None


def _conv_backward_flops(grad_out_shape: Any, x_shape: Any, w_shape: Any, bias: Any, stride: Any, padding: Any,
                         dilation: Any, transposed: bool, output_padding: Any, groups: int, output_mask: Any,
                         out_shape: Any = None, **kwargs: Any) -> int:  # fmt: skip
    """Input and weight gradients of a convolution: each costs what the forward costs.

    torch 2.13's own formula ignores ``groups`` and counts a depthwise convolution's backward as if
    it were dense: 65 times its forward for 64 channels, which would inflate MobileNetV2's FLOPs
    (and MFU) about threefold.  Forward FLOPs = 2 x output elements x (C_in / groups) x kernel.
    """
    from torch.utils.flop_counter import conv_backward_flop

    if transposed:
        return conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                                  output_padding, groups, output_mask, out_shape)  # fmt: skip
    forward = 2 * _prod(grad_out_shape) * _prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _prod(shape: Any) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def flop_counter() -> Any:
    """``FlopCounterMode`` with the groups-aware convolution backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})


def halfwidth95(row: dict[str, Any], key: str = "dice_last") -> float | None:
    """95% half-width of a quality row's mean: 1.96 sd / sqrt(n images) with one seed, else 1.96 x std over seeds."""
    std = row.get(f"{key}_std")
    if std is None:
        return None
    n = row.get("n_images")
    return 1.96 * (std / n ** 0.5 if row.get(f"{key}_std_over") == "images" and n else std)
