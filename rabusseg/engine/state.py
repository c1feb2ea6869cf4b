"""Everything the loop needs, in one object, and how it goes to and from ``last.pt``.

A resumed run must continue *exactly*: the checkpoint holds the weights, the optimiser, the
position in the data stream (derived from ``step``), every RNG state of every rank, the best
validation score and the non-finite-step counter.  Stream randomness (augmentation, CutMix
boxes, landmarks) is a pure function of (seed, step), so it needs no state of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from rabusseg.checkpoint import save_checkpoint
from rabusseg.config import Config, config_from_dict
from rabusseg.engine.distributed import DistInfo
from rabusseg.engine.logger import NullLogger
from rabusseg.engine.precision import StepPrecision
from rabusseg.engine.streams import KeyBatchSampler, SplitIds
from rabusseg.errors import CheckpointError

RESUMABLE_KEYS = {("train", "max_steps"), ("train", "progress"), ("data", "num_workers"), ("train", "checkpoint_every_steps"),
                  ("train", "log_every_steps"), ("train", "device"), ("data", "cache"), ("data", "cache_max_mib"),
                  ("train", "monitor_unlabeled")}  # fmt: skip
"""Settings a resumed run may change: they do not alter the numbers it computes."""


@dataclass(kw_only=True)
class TrainingRun:
    """The prepared pieces of a run (built by :mod:`rabusseg.engine.trainer`)."""

    config: Config
    info: DistInfo
    run_dir: Path
    ids: SplitIds
    student: nn.Module
    """The bare network (weights, EMA source, checkpoints)."""
    model: nn.Module
    """What the loop calls for the student's training forward: DDP- and/or compile-wrapped student."""
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: KeyBatchSampler
    steps_per_epoch: int
    logger: NullLogger
    precision: StepPrecision
    """bf16 autocast, memory format and denormal flushing of the steps (:mod:`rabusseg.engine.precision`)."""
    landmark_affinity: str = "rows"
    """CRA landmark path resolved from ``method.landmark_affinity`` (``rows`` or ``full``)."""
    step: int = 0
    """Optimiser steps done (skipped non-finite steps included)."""
    best: dict[str, Any] = field(default_factory=lambda: {"dice": None, "step": None, "epoch": None})
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    monitor: Any = None
    """A :class:`~rabusseg.engine.monitor.PseudoLabelMonitor` when ``train.monitor_unlabeled`` > 0."""
    notes: list[str] = field(default_factory=list)
    """Set-up facts for the log (what the data cache decoded, and in how long)."""

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.train.epochs

    @property
    def warmup_steps(self) -> int:
        return self.steps_per_epoch * self.config.train.warmup_epochs

    def eval_network(self) -> nn.Module:
        """The network that is validated and exported for inference (``train.eval_weights``)."""
        if self.config.train.eval_weights == "teacher" and self.teacher is not None:
            return self.teacher
        return self.student


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as checkpoint-safe plain types and tensors."""
    version, keys, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys_np, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys_np.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: all ranks call it)."""
    mine = _rng_state()
    if not info.distributed:
        return [mine]
    states: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(states, mine)
    return states


def save_training_state(run: TrainingRun, path: Path, epoch: int) -> None:
    """Write ``last.pt``/``best.pt`` (all ranks call it: RNG states are gathered; rank 0 writes)."""
    rng = gather_rng_states(run.info)
    if not run.info.is_main:
        return
    has_teacher = run.teacher is not None
    save_checkpoint(
        {
            "config": run.config.to_dict(),
            "step": run.step,
            "epoch": epoch,
            "student": run.student.state_dict(),
            "teacher": run.teacher.state_dict() if has_teacher else None,
            "inference_weights": run.config.train.eval_weights if has_teacher else "student",
            "optimizer": run.optimizer.state_dict(),
            "rng": rng,
            "world_size": run.info.world_size,
            "sampler": {"epoch": run.step // run.steps_per_epoch, "start": run.step % run.steps_per_epoch},
            "best": dict(run.best),
            "nonfinite": {"in_a_row": run.nonfinite_in_a_row, "total": run.nonfinite_total},
        },
        path,
    )


def check_resumable(saved: dict[str, Any], config: Config, source: Path) -> None:
    """Refuse to resume with settings that change the computation (other than RESUMABLE_KEYS)."""
    old = config_from_dict(saved, source=str(source)).to_dict()
    new = config.to_dict()
    changed = [f"{section}.{key}" for section in new for key in new[section]
               if (section, key) not in RESUMABLE_KEYS and old.get(section, {}).get(key) != new[section][key]]  # fmt: skip
    if changed:
        raise CheckpointError(
            f"cannot resume from {source}: these settings differ from the run's: {', '.join(changed)} "
            "(only train.max_steps, progress, device, logging/checkpoint intervals and data.num_workers may change)"
        )


def restore_training_state(run: TrainingRun, payload: dict[str, Any], source: Path) -> None:
    """Load weights, optimiser, counters and this rank's RNG state from a ``last.pt`` payload."""
    check_resumable(payload["config"], run.config, source)
    if payload.get("world_size", 1) != run.info.world_size:
        raise CheckpointError(
            f"cannot resume from {source}: it was written by {payload.get('world_size')} process(es), "
            f"this run has {run.info.world_size}; resume with the same --nproc_per_node"
        )
    if "optimizer" not in payload:
        raise CheckpointError(f"cannot resume from {source}: it holds no optimiser state (an inference copy, "
                              "such as `rabusseg recalibrate` writes); resume from the run's own last.pt")
    run.student.load_state_dict(payload["student"])
    if run.teacher is not None and payload.get("teacher") is not None:
        run.teacher.load_state_dict(payload["teacher"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.step = int(payload["step"])
    run.best = dict(payload.get("best") or run.best)
    run.nonfinite_in_a_row = int(payload["nonfinite"]["in_a_row"])
    run.nonfinite_total = int(payload["nonfinite"]["total"])
    _set_rng_state(payload["rng"][run.info.rank])
