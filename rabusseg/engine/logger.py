"""What a run tells the world: ``metrics.jsonl``, TensorBoard events and a progress bar.

Only rank 0 builds a :class:`RunLogger`; other ranks get :class:`NullLogger`, so the loop never
asks "am I the main process?" before logging.  Loss values arrive as device tensors and are read
on the host only here, at logging intervals (:class:`LossMeter`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from rabusseg.engine.distributed import DistInfo, all_reduce_mean


class LossMeter:
    """Running sums of the loss terms on the device; one host read per logging interval."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.images = 0
        self.data_seconds = 0.0
        self.started = time.perf_counter()

    def add_data_time(self, seconds: float) -> None:
        """Seconds the step waited for its batch (the loader's share of the wall time)."""
        self.data_seconds += seconds

    def add(self, values: dict[str, torch.Tensor], images: int) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1
        self.images += images

    def restart_clock(self) -> None:
        """Leave time spent outside training steps (validation, checkpoints) out of images/s."""
        self.images, self.started = 0, time.perf_counter()
        self.count, self.sums, self.data_seconds = 0, {}, 0.0

    def read(self, info: DistInfo) -> dict[str, float]:
        """Means since the last read, averaged over ranks, plus images/s of the whole job; resets."""
        names = sorted(self.sums)
        out: dict[str, float] = {}
        if names and self.count:
            means = all_reduce_mean(torch.stack([self.sums[n] for n in names]) / self.count, info).tolist()
            out = dict(zip(names, means, strict=True))
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out["images_per_s"] = self.images * info.world_size / elapsed
        out["data_share"] = self.data_seconds / elapsed
        if self.count:
            out["data_s_per_step"] = self.data_seconds / self.count
        self.sums, self.count, self.images, self.started = {}, 0, 0, time.perf_counter()
        self.data_seconds = 0.0
        return out


class NullLogger:
    """The logger of non-main ranks: accepts everything, writes nothing."""

    def train(self, step: int, epoch: int, values: dict[str, float]) -> None: ...

    def eval(self, split: str, step: int, epoch: int, metrics: dict[str, Any]) -> None: ...

    def advance(self, step: int) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class RunLogger(NullLogger):
    """Rank 0's logger: appends JSON lines, writes TensorBoard scalars, draws the progress bar."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, *, progress: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from torch.utils.tensorboard import SummaryWriter

        self.console = Console(stderr=True)
        self.jsonl = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step or None)
        self.progress = Progress(
            TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
            console=self.console, disable=not progress,
        )  # fmt: skip
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, status="")
        self.progress.start()

    def _write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.jsonl.write(json.dumps(clean) + "\n")
        self.jsonl.flush()

    def train(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self._write({"kind": "train", "step": step, "epoch": epoch, **values})
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        losses = " ".join(f"{k.removeprefix('loss/')} {v:.3f}" for k, v in values.items() if k.startswith("loss/"))
        self.progress.update(self.task, status=f"ep {epoch} {losses} {values.get('images_per_s', 0):.1f} img/s")

    def eval(self, split: str, step: int, epoch: int, metrics: dict[str, Any]) -> None:
        self._write({"kind": "eval", "split": split, "step": step, "epoch": epoch, **metrics})
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{split}/{name}", value, step)

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def close(self) -> None:
        self.progress.stop()
        self.writer.close()
        self.jsonl.close()
