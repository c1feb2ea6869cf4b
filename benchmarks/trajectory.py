"""A fingerprint of training trajectories, to show that a refactor changed no number.

    python benchmarks/trajectory.py --output /tmp/before.json       # on the old code
    python benchmarks/trajectory.py --output /tmp/after.json        # on the new code
    python benchmarks/trajectory.py --compare /tmp/before.json /tmp/after.json

For every method (and RA-BUSSeg with a strong view, FixMatch, separate forwards...) a short CPU
run on synthetic phantoms with a fixed seed: the loss terms of every step and the SHA-256 of the
final student and teacher weights.  Two fingerprints are equal only if every step computed the
same numbers, bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import passive_openmp, write_json  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "supervised": {"method": {"name": "supervised"}},
    "mean_teacher": {"method": {"name": "mean_teacher", "strong_view": False}},
    "fixmatch": {"method": {"name": "fixmatch", "fixmatch_threshold": 0.6}},
    "ra_busseg": {"method": {"name": "ra_busseg"}},
    "ra_busseg_weak_per_image": {"method": {"name": "ra_busseg", "strong_view": False, "filter_per_image": True}},
    "ra_busseg_separate_rampup": {"method": {"name": "ra_busseg", "separate_forward": True}, "loss": {"unsup_rampup_epochs": 1}},
}


def weights_digest(state: dict[str, Any] | None) -> str | None:
    if state is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(work: Path) -> dict[str, Any]:
    from rabusseg.config import config_from_dict
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split
    from rabusseg.engine.trainer import train

    root = work / "phantoms"
    synthesize_dataset(root, n=24, seed=0, size=64, test_fraction=0.25)
    make_split(root, "1/4", seed=0, val=2, name="tiny")
    base = {"model": {"encoder": "mobilenet_v2", "output_stride": 16, "aspp_channels": 16, "decoder_channels": 16,
                      "low_level_channels": 8, "proj_channels": 16, "encoder_weights": None, "classifier_init_std": 0.3},
            "data": {"root": str(root), "labeled": "tiny/labeled", "unlabeled": "tiny/unlabeled", "val": "tiny/val",
                     "test": None, "crop_size": 64, "eval_size": 64, "num_workers": 0},
            "method": {"num_landmarks": 8},
            "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 2, "steps_per_epoch": 3, "log_every_steps": 1,
                      "progress": False, "device": "cpu", "checkpoint_every_steps": 3, "amp": False}}  # fmt: skip
    out: dict[str, Any] = {}
    for name, sections in VARIANTS.items():
        cfg = {k: {**v, **sections.get(k, {})} for k, v in base.items()}
        run = work / name
        result = train(config_from_dict(cfg), run)
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [{k: v for k, v in r.items() if k.startswith("loss/") or k == "keep_ratio"} for r in lines if r["kind"] == "train"]
        import torch

        payload = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
        out[name] = {"steps": steps, "val": [r.get("dice") for r in lines if r["kind"] == "eval"],
                     "student": weights_digest(payload["student"]), "teacher": weights_digest(payload.get("teacher"))}  # fmt: skip
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> bool:
    same = True
    for name in sorted(a.keys() | b.keys()):
        equal = a.get(name) == b.get(name)
        same &= equal
        print(f"{name:28s} {'identical' if equal else 'DIFFERENT'}")
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path)
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        return 0 if compare(a["runs"], b["runs"]) else 1
    import torch

    torch.set_num_threads(1)  # one thread: reductions in a fixed order
    with tempfile.TemporaryDirectory(prefix="rabusseg-trajectory-") as tmp:
        result = {"runs": fingerprint(Path(tmp))}
    if args.output:
        write_json(args.output, result)
    for name, r in result["runs"].items():
        print(f"{name:28s} student {r['student'][:16]}  final loss {r['steps'][-1].get('loss/total'):.6f}")
    return 0


if __name__ == "__main__":
    passive_openmp()
    sys.exit(main())
