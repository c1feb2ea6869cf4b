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


def phantom_learning_setup(root: Path, **train: Any) -> Config:
    """48 phantoms of 64 px (1/2 labelled) and the 50-step supervised MobileNetV2 run that learns them.

    Shared by the tests that need a run whose Dice must rise (test_train, test_precision).
    """
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split

    if not (root / "splits" / "half" / "labeled.txt").is_file():
        synthesize_dataset(root, n=48, seed=0, size=64, test_fraction=0.25)
        make_split(root, "1/2", seed=0, name="half")
    return tiny_config(
        root,
        model={"encoder": "mobilenet_v2", "encoder_weights": "imagenet", "aspp_channels": 64, "decoder_channels": 64,
               "low_level_channels": 32, "proj_channels": 64, "classifier_init_std": 1.0},
        data={"labeled": "half/labeled", "unlabeled": None, "test": "test"},
        method={"name": "supervised"},
        optim={"lr": 0.05},
        train={"epochs": 10, "steps_per_epoch": 5, "batch_size": 6, "log_every_steps": 10, "checkpoint_every_steps": 50,
               **train},
    )  # fmt: skip


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]
