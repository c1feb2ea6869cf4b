"""A run stopped by ``train.max_steps`` and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_helpers import make_tiny_dataset, read_metrics, tiny_config

from rabusseg.checkpoint import load_checkpoint
from rabusseg.engine.trainer import train
from rabusseg.errors import CheckpointError

pytestmark = pytest.mark.slow  # end-to-end training: still run in CI


def _assert_same_state(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{where}.{key} differs"


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "phantoms")
    # RA-BUSSeg with the strong view (CutMix) so every random stream of the loop is exercised;
    # warm-up ends at step 2, the stop at step 3 falls mid-epoch right after the teacher starts.
    sections = {
        "method": {"name": "ra_busseg", "strong_view": True},
        "data": {"val": "tiny/val"},
        "train": {"epochs": 3, "warmup_epochs": 1, "steps_per_epoch": 2, "checkpoint_every_steps": 2},
    }
    full = train(tiny_config(data, **sections), tmp_path / "full")
    stopped_cfg = tiny_config(data, **{**sections, "train": {**sections["train"], "max_steps": 3}})
    stopped = train(stopped_cfg, tmp_path / "split")
    assert stopped.step == 3 and stopped.stopped_by_max_steps
    # Resume with a data-loader worker: samples depend on their (seed, epoch, position) only.
    resumed_cfg = tiny_config(data, **{**sections, "data": {"val": "tiny/val", "num_workers": 1}})
    resumed = train(resumed_cfg, tmp_path / "split", resume=True)
    assert resumed.step == full.step == 6

    a, b = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    _assert_same_state(a["student"], b["student"], "student")
    _assert_same_state(a["teacher"], b["teacher"], "teacher")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["best"] == b["best"]
    # The logs of the two halves add up to the uninterrupted run's.
    losses = lambda run: [(r["step"], r["loss/total"]) for r in read_metrics(run)]
    assert losses(tmp_path / "split") == losses(tmp_path / "full")


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "phantoms")
    cfg = tiny_config(data, method={"name": "supervised"}, train={"max_steps": 1})
    train(cfg, tmp_path / "run")
    changed = tiny_config(data, method={"name": "supervised"}, optim={"lr": 0.1})
    with pytest.raises(CheckpointError, match=r"optim\.lr"):
        train(changed, tmp_path / "run", resume=True)
