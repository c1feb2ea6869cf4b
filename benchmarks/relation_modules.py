"""Cost of RA-BUSSeg's relation modules, measured in one run so that the ratios are comparable.

1. Greedy landmark selection: batch-vectorised ``select_landmarks`` vs a straightforward loop
   over images and landmarks (B = 4, 64 x 64 grid, M = 64).
2. Full hw x hw affinity vs the rows-only path: time and peak memory per grid size.
3. ARP and CRA forward + backward, alone and inside a training step, vs the plain model step.

    python benchmarks/relation_modules.py [--quick] [--device cuda] [--threads N]

Prints a table and writes ``benchmarks/results/relation_modules.json``.  CPU peak memory is the
growth of the resident set in a fresh process (Linux /proc VmHWM); CUDA uses the allocator's peak.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from rabusseg.config import ModelConfig
from rabusseg.models import build_model, upsample_logits
from rabusseg.models.relation import (
    adjacent_propagation,
    cross_layer_alignment_loss,
    first_landmarks,
    global_affinity,
    select_landmarks,
    select_landmarks_from_features,
)

RESULTS = Path(__file__).resolve().parent / "results" / "relation_modules.json"
SECTIONS = ("selection_vectorised_vs_loop", "selection_full_vs_rows", "relation_functions", "model_step")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def loop_select(affinity: torch.Tensor, first: torch.Tensor, num_landmarks: int) -> torch.Tensor:
    """The straightforward version: one image at a time, one landmark at a time, with a host
    round trip (``int(...)``) per step to keep a Python list of chosen pixels."""
    out = []
    for b in range(affinity.shape[0]):
        chosen = [int(first[b])]
        mask = torch.zeros(affinity.shape[1], dtype=torch.bool, device=affinity.device)
        mask[chosen[0]] = True
        running = affinity[b, chosen[0]].clone()
        worst = running.clone()
        for _ in range(num_landmarks - 1):
            nxt = int(worst.masked_fill(mask, math.inf).argmin())
            chosen.append(nxt)
            mask[nxt] = True
            running += affinity[b, nxt]
            worst = torch.maximum(worst, running)
        out.append(chosen)
    return torch.tensor(out, device=affinity.device)


def make_features(b: int, h: int, w: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(b, 256, h, w, generator=g).relu().to(device)  # (B, 256, h, w) like proj


# ----------------------------------------------------------------------------- 1


def bench_selection_loop(device: torch.device, repeats: int) -> dict:
    f = make_features(4, 64, 64, device)
    affinity = global_affinity(f)  # (4, 4096, 4096)
    first = torch.tensor([0, 100, 2000, 4095], device=device)
    vec = select_landmarks(affinity, first, 64)
    assert torch.equal(vec, loop_select(affinity, first, 64)), "vectorised and loop selections differ"
    t_vec = timeit(lambda: select_landmarks(affinity, first, 64), device, repeats)
    t_loop = timeit(lambda: loop_select(affinity, first, 64), device, repeats)
    return {"batch": 4, "grid": "64x64", "landmarks": 64, "vectorised_ms": t_vec, "loop_ms": t_loop,
            "speedup": t_loop / t_vec, "identical": True}


# ----------------------------------------------------------------------------- 2


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _selection_peak_child(path: str, b: int, side: int, queue: mp.Queue) -> None:
    """Runs in a fresh process: peak resident-set growth (MiB) of one selection.

    Uses /proc's VmHWM after resetting it (``clear_refs`` 5); ``ru_maxrss`` would not do, as it
    keeps the forking parent's size across exec."""
    torch.set_num_threads(1)
    f = make_features(b, side, side, torch.device("cpu"))
    first = torch.zeros(b, dtype=torch.long)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    if path == "full":
        select_landmarks(global_affinity(f), first, 64)
    else:
        select_landmarks_from_features(f, first, 64)
    queue.put((_status_kib("VmHWM") - base) / 1024)


def selection_peak_mib(path: str, b: int, side: int, device: torch.device) -> float:
    if device.type == "cuda":
        f = make_features(b, side, side, device)
        first = torch.zeros(b, dtype=torch.long, device=device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        if path == "full":
            select_landmarks(global_affinity(f), first, 64)
        else:
            select_landmarks_from_features(f, first, 64)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_selection_peak_child, args=(path, b, side, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def bench_full_vs_rows(device: torch.device, repeats: int, sides: list[int]) -> list[dict]:
    rows_out = []
    for side in sides:
        f = make_features(4, side, side, device)
        first = torch.zeros(4, dtype=torch.long, device=device)
        full_idx = select_landmarks(global_affinity(f), first, 64)
        rows_idx = select_landmarks_from_features(f, first, 64)
        t_full = timeit(lambda: select_landmarks(global_affinity(f), first, 64), device, repeats)
        t_rows = timeit(lambda: select_landmarks_from_features(f, first, 64), device, repeats)
        rows_out.append({
            "batch": 4, "grid": f"{side}x{side}", "landmarks": 64,
            "full_ms": t_full, "rows_ms": t_rows, "full_over_rows": t_full / t_rows,
            "full_peak_mib": selection_peak_mib("full", 4, side, device),
            "rows_peak_mib": selection_peak_mib("rows", 4, side, device),
            "identical": bool(torch.equal(full_idx, rows_idx)),
        })
    return rows_out


# ----------------------------------------------------------------------------- 3


def bench_relation_functions(device: torch.device, repeats: int, crops: list[int]) -> list[dict]:
    """ARP and CRA alone (forward + backward) on tensors shaped like the deep-stem model's."""
    out = []
    for crop in crops:
        h = crop // 8 + 1  # deep stem, ceil-mode pool: 256 -> 33, 512 -> 65
        g = torch.Generator(device="cpu").manual_seed(0)

        def leaf(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g).to(device).requires_grad_(True)

        proj, logits = leaf(2, 256, h, h), torch.randn(2, 2, h, h, device=device)
        feats = [leaf(2, 256, 2 * h - 1, 2 * h - 1), leaf(2, 512, h, h), leaf(2, 1024, h, h), leaf(2, 2048, h, h)]
        first = torch.zeros(2, dtype=torch.long, device=device)

        def arp() -> None:
            adjacent_propagation(proj, logits).square().mean().backward()

        def cra() -> None:
            landmarks = select_landmarks_from_features(proj, first, 64)
            cross_layer_alignment_loss(feats, landmarks).backward()

        out.append({"crop": crop, "grid": f"{h}x{h}", "arp_fwd_bwd_ms": timeit(arp, device, repeats),
                    "cra_fwd_bwd_ms": timeit(cra, device, repeats)})
    return out


def bench_model_step(device: torch.device, repeats: int, crops: list[int], encoder: str) -> list[dict]:
    """Training step (forward + backward, no optimiser) of the plain model vs with ARP and CRA."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=encoder)).to(device).train()
    out = []
    for crop in crops:
        x = torch.randn(2, 3, crop, crop, device=device)
        labels = torch.randint(0, 2, (2, crop, crop), device=device)

        def step(arp: bool, cra: str | None) -> None:
            model.zero_grad(set_to_none=True)
            o = model(x, relations=arp or cra is not None)
            loss = F.cross_entropy(upsample_logits(o.pred, (crop, crop)), labels)
            if arp:
                loss = loss + F.cross_entropy(upsample_logits(o.arp_pred, (crop, crop)), labels)
            if cra is not None:
                small = F.interpolate(labels[:, None].float(), size=o.proj.shape[-2:], mode="nearest")[:, 0].long()
                first = first_landmarks(small)
                if cra == "rows":
                    landmarks = select_landmarks_from_features(o.proj, first, 64)
                else:
                    landmarks = select_landmarks(global_affinity(o.proj), first, 64)
                loss = loss + cross_layer_alignment_loss(o.features, landmarks)
            loss.backward()

        variants = {"plain": (False, None), "arp": (True, None), "rows": (True, "rows"), "full": (True, "full")}
        # Round-robin over the variants so that a change in machine load hits all of them alike.
        times: dict[str, list[float]] = {k: [] for k in variants}
        for round_ in range(repeats + 1):
            for key, (arp, cra) in variants.items():
                sync(device)
                start = time.perf_counter()
                step(arp, cra)
                sync(device)
                if round_ > 0:  # round 0 warms up
                    times[key].append((time.perf_counter() - start) * 1e3)
        plain, with_arp, with_rows, with_full = (statistics.median(times[k]) for k in variants)
        out.append({"encoder": encoder, "crop": crop, "batch": 2, "plain_ms": plain, "arp_ms": with_arp,
                    "arp_cra_rows_ms": with_rows, "arp_cra_full_ms": with_full,
                    "arp_over_plain": with_arp / plain, "arp_cra_rows_over_plain": with_rows / plain,
                    "arp_cra_full_over_plain": with_full / plain})
    return out


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}", flush=True)
    if not rows:
        return
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 256 px model step only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--encoder", default="resnet50_deepstem")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, help="run only these (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    crops = [256] if args.quick else [256, 512]

    sections: dict[str, Callable[[], list[dict]]] = {
        "selection_vectorised_vs_loop": lambda: [bench_selection_loop(device, repeats)],
        "selection_full_vs_rows": lambda: bench_full_vs_rows(device, repeats, [16, 32, 64]),
        "relation_functions": lambda: bench_relation_functions(device, repeats, [256, 512]),
        "model_step": lambda: bench_model_step(device, repeats, crops, args.encoder),
    }
    chosen = args.sections or list(sections)
    results: dict[str, object] = {
        "environment": {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                        "cpu": platform.processor() or platform.machine(), "quick": args.quick,
                        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
    }
    for name in chosen:
        results[name] = sections[name]()
        print_table(name, results[name])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
