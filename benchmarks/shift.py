"""Robustness to scanner-like image changes: checkpoints' Dice on a validation list under fixed shifts.

    python benchmarks/shift.py --root benchmarks/work/busi --ids benchmarks/work/busi/splits/recipe/1_2/val.txt \\
        --checkpoint base=benchmarks/runs/recipe/1_2/sup_e25_headlr10/checkpoints/last.pt \\
        --checkpoint appearance=benchmarks/runs/recipe/1_2/h10_app/checkpoints/last.pt

Why: users run the model on scans from other machines, which no list here holds; a score on held-out
BUSI images alone cannot tell two recipes apart there.  This benchmark applies the same fixed,
deterministic changes to every image, the kinds by which scanners and their presets differ (overall
gain, dynamic range, resolution, speckle, compression, field of view), and scores each checkpoint at
its own inference settings.  It is a proxy, chosen before any result and never tuned to a dataset:
no claim about a particular external set follows from it.  The first checkpoint is the reference:
every other one gets, per shift, the paired per-image Dice difference with a 95% bootstrap interval.
Geometric shifts (``zoom_out``, ``side_margins``) pad the mask with the image, so the lesion stays
where it was; the others leave the mask alone.  Use images no checkpoint trained on (a carved
validation list, never the test list when the result picks a default).

Prints a table; writes ``--output`` (JSON, with every image's Dice) and a bar chart beside it (PNG).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, command_line, environment, load_average, print_table, write_json

Shift = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _gamma(g: float) -> Shift:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    return lambda im, m, rng: (lut[im], m)


def _contrast(factor: float) -> Shift:
    def f(im: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        mean = float(im.mean())
        return np.clip((im.astype(np.float32) - mean) * factor + mean + 0.5, 0, 255).astype(np.uint8), m

    return f


def _gain(factor: float) -> Shift:
    return lambda im, m, rng: (np.clip(im.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8), m)


def _resolution(scale: float) -> Shift:
    """Fewer pixels across the same field (a coarser scanner or export), back to the original size."""

    def f(im: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = im.shape[:2]
        small = cv2.resize(im, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), m

    return f


def _speckle(sd: float) -> Shift:
    """Multiplicative noise correlated over about two pixels, as speckle is."""

    def f(im: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        noise = cv2.GaussianBlur(rng.standard_normal(im.shape[:2]).astype(np.float32), (0, 0), 1.0)
        noise *= sd / max(float(noise.std()), 1e-6)
        out = im.astype(np.float32) * (1.0 + noise)[..., None]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), m

    return f


def _jpeg(quality: int) -> Shift:
    def f(im: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(im.shape), m

    return f


def _pad(top: float, side: float) -> Shift:
    """Black margins around the image (a wider or deeper field of view): image and mask padded alike."""

    def f(im: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = im.shape[:2]
        t, s = round(h * top), round(w * side)
        widths = ((t, t), (s, s))
        return np.pad(im, widths + ((0, 0),) * (im.ndim - 2)), np.pad(m, widths)

    return f


SHIFTS: dict[str, Shift] = {
    "none": lambda im, m, rng: (im, m),
    "darker_gamma_1.6": _gamma(1.6),
    "brighter_gamma_0.6": _gamma(0.6),
    "low_contrast_0.5": _contrast(0.5),
    "high_gain_1.5": _gain(1.5),
    "resolution_0.35": _resolution(0.35),
    "speckle_0.25": _speckle(0.25),
    "jpeg_q15": _jpeg(15),
    "zoom_out_25%": _pad(0.25, 0.25),
    "side_margins_30%": _pad(0.0, 0.30),
}
"""Fixed before any measurement; each one a single, strong change, so a model's weak spot shows."""


def read_ids(path: Path) -> list[str]:
    """The split list's ids (:func:`rabusseg.data.io.read_split`); an empty list is an error here."""
    from rabusseg.data.io import read_split

    ids = read_split(path)
    if not ids:
        raise SystemExit(f"{path}: no image ids")
    return ids


def score(segmenters: dict[str, Any], root: Path, ids: list[str], shifts: list[str], seed: int) -> dict[str, Any]:
    """``dice[model][shift]``: per-image Dice lists in the order of ``ids``."""
    from rabusseg.data.folder import DatasetFolder
    from rabusseg.data.io import load_image, load_mask
    from rabusseg.evaluation.metrics import binary_metrics

    folder = DatasetFolder(root)
    dice: dict[str, dict[str, list[float]]] = {name: {s: [] for s in shifts} for name in segmenters}
    for k, image_id in enumerate(ids):
        mask_path = folder.mask_path(image_id)
        if mask_path is None:
            raise SystemExit(f"{image_id}: no mask in {root / 'masks'}")
        image = load_image(folder.image_path(image_id))
        gt = load_mask(mask_path) == 1
        for s in shifts:
            rng = np.random.default_rng([seed, k])  # the same noise for every model
            shifted, shifted_gt = SHIFTS[s](image, gt, rng)
            for name, seg in segmenters.items():
                pred = seg.predict(shifted).mask
                dice[name][s].append(float(binary_metrics(pred, shifted_gt)["dice"]))
        print(f"\r{k + 1}/{len(ids)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return dice


def paired(a: list[float], b: list[float], seed: int = 0) -> dict[str, float]:
    from rabusseg.evaluation.aggregate import bootstrap_mean_ci

    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    lo, hi = bootstrap_mean_ci(diff, seed=seed)
    return {"mean": float(diff.mean()), "ci95": [float(lo), float(hi)]}


def plot(rows: list[dict[str, Any]], names: list[str], path: Path, title: str) -> Path:
    """Grouped horizontal bars: mean Dice of every checkpoint under every shift."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.45 * len(rows) * max(1, len(names)) ** 0.5 + 1.2))
    ax = fig.add_subplot()
    height = 0.8 / len(names)
    y = np.arange(len(rows))[::-1]
    for j, name in enumerate(names):
        ax.barh(y + (len(names) / 2 - j - 0.5) * height, [r[name] for r in rows], height, label=name)
    ax.set_yticks(y, [r["shift"] for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean Dice")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


CHECKPOINT_SYNTAX = "NAME=PATH[@RESIZE][@tta][@WEIGHTS][@sizeN]"
"""How ``--checkpoint`` names a checkpoint and the inference settings to score it at."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", action="append", required=True, metavar=CHECKPOINT_SYNTAX,
                   help="a checkpoint to score, at its own inference settings or with @square / @longest "
                        "and/or @tta (flip and multi-scale test-time augmentation) and/or @student / @teacher "
                        "and/or @sizeN (inference size N px instead of the checkpoint's data.eval_size); "
                        "the first is the reference of the paired differences")  # fmt: skip
    p.add_argument("--root", type=Path, required=True, help="dataset folder (images/, masks/)")
    p.add_argument("--ids", type=Path, required=True, help="file of image ids (a validation list)")
    p.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    p.add_argument("--seed", type=int, default=0, help="seed of the speckle noise")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "shift.json")
    args = p.parse_args(argv)

    from rabusseg.data.transforms import EVAL_RESIZE_MODES
    from rabusseg.inference.segmenter import Segmenter

    checkpoints: dict[str, Path] = {}
    options: dict[str, dict[str, Any]] = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        options[name] = {}
        while True:  # trailing @RESIZE, @tta, @WEIGHTS and @sizeN, in any order
            head, at, mode = path.rpartition("@")
            if at and mode in EVAL_RESIZE_MODES:
                path, options[name]["resize"] = head, mode
            elif at and mode == "tta":
                path, options[name]["tta"] = head, True
            elif at and mode in ("student", "teacher"):
                path, options[name]["weights"] = head, mode
            elif at and mode.startswith("size") and mode[4:].isdigit() and int(mode[4:]) > 0:
                path, options[name]["size"] = head, int(mode[4:])
            else:
                break
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"--checkpoint {item!r}: expected {CHECKPOINT_SYNTAX} of an existing checkpoint file")
        checkpoints[name] = Path(path)
    ids = read_ids(args.ids)
    load_start, t0 = load_average(), time.perf_counter()
    segmenters = {name: Segmenter.from_checkpoint(path, **options[name]) for name, path in checkpoints.items()}
    dice = score(segmenters, args.root, ids, args.shifts, args.seed)
    names = list(checkpoints)
    ref = names[0]
    conditions = {s: {name: dice[name][s] for name in names} for s in args.shifts}
    shifted = [s for s in args.shifts if s != "none"]
    if shifted:  # each image's mean over the shifted conditions, paired like any condition
        conditions["mean of shifted"] = {
            name: np.mean([dice[name][s] for s in shifted], axis=0).tolist() for name in names
        }
    rows, summary = [], {}
    for label, per_model in conditions.items():
        row: dict[str, Any] = {"shift": label} | {name: float(np.mean(per_model[name])) for name in names}
        for name in names[1:]:
            d = paired(per_model[ref], per_model[name])
            row[f"{name}-{ref}"] = f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            if label == "mean of shifted":
                summary[f"{name}-{ref}"] = d
        rows.append(row)
    columns = ["shift", *names, *(f"{n}-{ref}" for n in names[1:])]
    print_table(f"Dice under image shifts ({len(ids)} images of {args.ids.name}; reference {ref})", rows, columns)
    write_json(args.output, {"command": command_line(), "environment": environment(), "ids": str(args.ids),
                             "checkpoints": {k: str(v) for k, v in checkpoints.items()},
                             "resize": {name: seg.resize for name, seg in segmenters.items()},
                             "size": {name: seg.size for name, seg in segmenters.items()},
                             "tta": {name: seg.tta for name, seg in segmenters.items()},
                             "weights": {name: options[name].get("weights", "auto") for name in names}, "rows": rows,
                             "mean_of_shifted": summary, "per_image": {"ids": ids, "dice": dice},
                             "load_average_start": load_start, "load_average_end": load_average(),
                             "wall_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
    figure = plot(rows, names, args.output.with_suffix(".png"), f"Dice under image shifts ({len(ids)} images)")
    print(f"wrote {args.output} and {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
