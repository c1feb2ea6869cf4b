"""Tiny data and configs shared by the training tests (phantoms at 64 px, a narrow ResNet-18)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rabusseg.config import Config, config_from_dict


def make_tiny_dataset(root: Path, n: int = 24, fraction: str = "1/4", val: int = 2) -> Path:
    """Phantoms of 64 px with a test list and a seeded labelled/unlabelled/val split ``splits/tiny``."""
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split

    synthesize_dataset(root, n=n, seed=0, size=64, test_fraction=0.25)
    make_split(root, fraction, seed=0, val=val, name="tiny")
    return root


def tiny_config(root: Path, **sections: dict[str, Any]) -> Config:
    """A config that trains in a second or two per step on one CPU thread."""
    base: dict[str, dict[str, Any]] = {
        "model": {"encoder": "resnet18", "output_stride": 16, "aspp_channels": 16, "decoder_channels": 16,
                  "low_level_channels": 8, "proj_channels": 16, "encoder_weights": None},
        "data": {"root": str(root), "labeled": "tiny/labeled", "unlabeled": "tiny/unlabeled", "val": None,
                 "test": None, "crop_size": 64, "eval_size": 64, "num_workers": 0, "scale_range": [0.75, 1.25]},
        "method": {"name": "ra_busseg", "num_landmarks": 8},
        "train": {"epochs": 2, "warmup_epochs": 0, "batch_size": 2, "steps_per_epoch": 2, "log_every_steps": 1,
                  "progress": False, "device": "cpu", "checkpoint_every_steps": 2},
    }  # fmt: skip
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return config_from_dict(base)


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]
