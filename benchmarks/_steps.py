"""Training steps for the benchmarks: the product's own loop on in-memory batches.

:func:`build_run` builds a :class:`~rabusseg.engine.state.TrainingRun` with the trainer's public
:func:`~rabusseg.engine.trainer.prepare_run` (networks, optimiser, precision exactly as ``rabusseg
train``), fed with a fixed synthetic batch and writing no checkpoints; :func:`run_steps` runs
:func:`~rabusseg.engine.loop.fit` for a few steps and returns their times.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import sync


class _StepClock:
    """Logger stand-in for :func:`fit`: ``advance`` is called once at the end of every step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self.last = time.perf_counter()

    def mark(self) -> None:
        sync(self.device)
        self.last = time.perf_counter()

    def advance(self, step: int) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now

    def train(self, *args: Any) -> None: ...

    def eval(self, *args: Any) -> None: ...

    def message(self, text: str) -> None:
        print(f"    [loop] {text}", flush=True)

    def close(self) -> None: ...


class _Position:
    """Sampler stand-in: the synthetic stream has no position."""

    def set_position(self, epoch: int, start_step: int = 0) -> None: ...


@dataclass
class _Repeat:
    """A loader that yields the same (labelled, unlabelled) batch for ever."""

    pair: tuple[dict[str, Any], dict[str, Any]]

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        return itertools.repeat(self.pair)


def synthetic_batches(batch: int, size: int, pin: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Normalised-looking images and an elliptic lesion mask, shaped like the data loader's."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    lesion = ((yy - c) / (0.25 * size)) ** 2 + ((xx - c) / (0.35 * size)) ** 2 <= 1  # (S, S)
    batch_x = {"image": torch.randn(batch, 3, size, size, generator=g),
               "mask": lesion.long().expand(batch, size, size).clone(), "id": [f"x{i}" for i in range(batch)]}
    batch_u = {"image": torch.randn(batch, 3, size, size, generator=g),
               "image_strong": torch.randn(batch, 3, size, size, generator=g),
               "valid": torch.ones(batch, size, size, dtype=torch.bool), "id": [f"u{i}" for i in range(batch)]}  # fmt: skip
    if pin:
        for b in (batch_x, batch_u):
            for k, v in b.items():
                if torch.is_tensor(v):
                    b[k] = v.pin_memory()
    return batch_x, batch_u


def step_config(model: str, method: str, size: int, batch: int, device: torch.device,
                overrides: list[str] | None = None) -> Any:  # fmt: skip
    """The preset's model/method/loss sections at ``size`` px; a schedule that never ends an epoch."""
    from rabusseg.config import load_config

    return load_config(model, [
        f"method.name={method}", f"data.crop_size={size}", f"data.eval_size={size}", f"train.batch_size={batch}",
        "train.warmup_epochs=0", "train.epochs=1", "train.steps_per_epoch=1000000", "model.encoder_weights=null",
        f"train.device={device}", "data.val=null", "train.progress=false", "train.log_every_steps=1000000",
        "train.checkpoint_every_steps=1000000", *(overrides or [])])  # fmt: skip


def build_run(model: str, method: str, size: int, batch: int, device: torch.device, run_dir: Path,
              overrides: list[str] | None = None) -> Any:  # fmt: skip
    """A :class:`TrainingRun` built the way ``rabusseg train`` builds one, minus data and files."""
    from rabusseg.engine.distributed import DistInfo
    from rabusseg.engine.trainer import prepare_run

    config = step_config(model, method, size, batch, device, overrides)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    loader = _Repeat(synthetic_batches(batch, size, pin=device.type == "cuda"))
    run = prepare_run(config, info, run_dir, None, loader=loader, sampler=_Position(),
                      steps_per_epoch=config.train.steps_per_epoch)  # fmt: skip
    run.logger = _StepClock(device)
    return run


def run_steps(run: Any, n: int) -> list[float]:
    """Run ``n`` steps of the training loop; seconds per step."""
    from rabusseg.engine.loop import NO_CHECKPOINTS, fit

    run.config.train.max_steps = run.step + n
    run.logger.mark()
    fit(run, NO_CHECKPOINTS)
    return run.logger.times[-n:]
