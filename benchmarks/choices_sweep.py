"""Measure the METHOD's [choice] defaults on a validation split carved from the training pool.

    python benchmarks/choices_sweep.py --out benchmarks/results/choices            # all variants
    python benchmarks/choices_sweep.py --out ... --only ra_default ra_strong       # a subset

Data: 300 synthetic phantoms of 128 px (seed 1, not the demo's seed 0); of the 240 outside the
test list, 1/4 labelled, 30 of which are carved out as validation (``make_split --val 30``);
the test list is never read.  Each variant trains the demo configuration (``configs/demo.yaml``:
ImageNet MobileNetV2, 4 + 4 images a step) made cheaper still for a shared 2-core machine:
images resized to 96 px, 96 px crops, 16 landmarks, 144 steps (6 epochs of 24, 2 of warm-up),
and reports the validation Dice of the last model.  Runs are appended to ``OUT/choices.jsonl`` so an interrupted sweep resumes
where it stopped; the table is printed from whatever exists.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "supervised": ["method.name=supervised"],
    "mean_teacher": ["method.name=mean_teacher", "method.strong_view=false"],
    "ra_weak": ["method.strong_view=false"],
    "ra_strong": ["method.strong_view=true"],
    "ra_strong_rel0.1": ["method.strong_view=true", "loss.arp_weight=0.1", "loss.cra_weight=0.1"],
    "ra_strong_unlabeled": ["method.strong_view=true", "method.arp_images=unlabeled", "method.cra_images=unlabeled"],
    "ra_strong_labeled": ["method.strong_view=true", "method.arp_images=labeled", "method.cra_images=labeled"],
}


def _dataset(out: Path) -> Path:
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split

    root = out / "phantoms"
    if not (root / "splits" / "sweep" / "val.txt").is_file():
        synthesize_dataset(root, n=300, seed=1, size=128, overwrite=True)
        make_split(root, "1/4", seed=1, val=30, name="sweep")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/choices"))
    parser.add_argument("--only", nargs="*", default=None, help=f"variants among {', '.join(VARIANTS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every variant")
    args = parser.parse_args()

    from rabusseg.config import load_config
    from rabusseg.engine.trainer import train

    root = _dataset(args.out)
    log = args.out / "choices.jsonl"
    done = {json.loads(line)["variant"] for line in log.read_text().splitlines()} if log.is_file() else set()
    common = [f"data.root={root}", "data.labeled=sweep/labeled", "data.unlabeled=sweep/unlabeled", "data.val=sweep/val",
              "data.test=null", "train.progress=false", "train.eval_every_epochs=3", "train.steps_per_epoch=24",
              "train.epochs=6", "data.resize_to=96", "data.crop_size=96", "data.eval_size=96", *args.overrides]  # fmt: skip
    for name in args.only or list(VARIANTS):
        if name in done:
            continue
        started = time.perf_counter()
        result = train(load_config("demo", common + VARIANTS[name]), args.out / "runs" / name, overwrite=True)
        evals = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        val = [e for e in evals if e["kind"] == "eval" and e["split"] == "val"]
        record = {"variant": name, "overrides": VARIANTS[name], "steps": result.step, "val_dice_last": val[-1]["dice"],
                  "val_dice_curve": [(e["step"], round(e["dice"], 4)) for e in val],
                  "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    print(f"{'variant':<22} {'val Dice (last)':>16} {'steps':>6} {'s':>6}")
    for line in log.read_text().splitlines():
        r = json.loads(line)
        print(f"{r['variant']:<22} {r['val_dice_last']:>16.4f} {r['steps']:>6} {r['seconds']:>6.0f}")


if __name__ == "__main__":
    main()
