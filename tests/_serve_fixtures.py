"""A workbench to test against: phantoms with splits, a small checkpoint, two finished tiny runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from _tiny_checkpoint import save_tiny_checkpoint
from _train_helpers import tiny_config

from rabusseg.checkpoint import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class Workbench:
    data: Path
    runs: Path
    checkpoint: Path


def make_workbench(root: Path) -> Workbench:
    """Phantoms (1/2 split named ``1_2`` + a test list), a 64 px checkpoint and runs ``a`` and ``nested/b``."""
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split
    from rabusseg.engine.trainer import train

    data = root / "data"
    synthesize_dataset(data, n=16, seed=0, size=(64, 80), test_fraction=0.25)
    make_split(data, "1/2", seed=0, name="1_2")
    checkpoint = save_tiny_checkpoint(root / "model.pt")
    payload = load_checkpoint(checkpoint)
    payload["config"]["data"]["eval_size"] = 64
    save_checkpoint(payload, checkpoint)
    runs = root / "runs"
    for name, seed in (("a", 0), ("nested/b", 1)):
        cfg = tiny_config(data, data={"labeled": "1_2/labeled", "unlabeled": "1_2/unlabeled", "test": "test"},
                          method={"name": "supervised"}, train={"max_steps": 2, "seed": seed})  # fmt: skip
        train(cfg, runs / name)
    return Workbench(data, runs, checkpoint)
