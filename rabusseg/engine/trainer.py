"""Set-up and tear-down around the loop: ``train(config, run_dir)`` is what ``rabusseg train`` runs.

Order: process group -> run directory -> data lists -> networks, optimiser, loader -> resume ->
:func:`rabusseg.engine.loop.fit` -> test evaluation of ``last.pt`` (and ``best.pt``) ->
``summary.json``.  Only rank 0 writes; errors found by rank 0 are broadcast so that every rank
stops with the same message instead of hanging.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from rabusseg.checkpoint import load_checkpoint
from rabusseg.config import Config, save_config
from rabusseg.engine.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    cleanup_distributed,
    convert_sync_batchnorm,
    init_distributed,
)
from rabusseg.engine.logger import NullLogger, RunLogger
from rabusseg.engine.loop import FitHooks, fit
from rabusseg.engine.precision import StepPrecision, flush_denormals, resolve_precision
from rabusseg.engine.run_dir import BEST_CHECKPOINT, LAST_CHECKPOINT, prepare_run_dir
from rabusseg.engine.state import TrainingRun, restore_training_state
from rabusseg.engine.streams import (
    KeyBatchSampler,
    SplitIds,
    build_train_loader,
    decode_training_images,
    load_split_ids,
)
from rabusseg.errors import ConfigError, RabussegError
from rabusseg.evaluation.aggregate import Summary, metric_mean


class RunSummary(TypedDict):
    """``RUN_DIR/summary.json``: the run's facts and its test evaluations."""

    method: str
    step: int
    total_steps: int
    train_seconds: float
    nonfinite_steps: int
    best_val: dict[str, Any]
    checkpoints: dict[str, str | None]
    test_last: Summary | None
    test_best: Summary | None


@dataclass(frozen=True)
class TrainResult:
    """Where a finished (or ``max_steps``-stopped) run left its files, and its headline numbers."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    step: int
    stopped_by_max_steps: bool
    summary: RunSummary
    """Contents of ``summary.json``."""

    @property
    def test_dice(self) -> float | None:
        """Mean test Dice of the last model (``None`` without a test list)."""
        return metric_mean(self.summary.get("test_last"))


def _on_main(info: DistInfo, action: Any) -> Any:
    """Run ``action()`` on rank 0 and share its result; a RabussegError there is raised everywhere."""
    result, error = None, None
    if info.is_main:
        try:
            result = action()
        except RabussegError as err:
            error = err
    error, result = broadcast_object((error, result), info)  # type: ignore[misc]
    if error is not None:
        raise error
    return result


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def freeze_encoder_levels(model: nn.Module, levels: int) -> None:
    """Stop gradients at the encoder layers that compute x1..x``levels`` (``train.frozen_encoder_levels``).
    Optimiser and DDP leave those parameters out (``requires_grad`` is off); 0 freezes nothing."""
    if levels:
        for layer in model.encoder.layers_through(levels):
            layer.requires_grad_(False)


def _build_networks(config: Config, info: DistInfo, precision: StepPrecision) -> tuple[nn.Module, nn.Module | None]:
    """Student (SyncBN when distributed, on the device) and, for mean-teacher methods, its EMA copy."""
    from rabusseg.models import build_model

    m = config.method
    _seed_everything(config.train.seed)  # same initial weights on every rank
    student = build_model(config.model)
    freeze_encoder_levels(student, config.train.frozen_encoder_levels)
    if not m.arp_loss:
        # No loss trains the ARP projection: freeze it so that optimiser and DDP ignore it.
        student.proj.requires_grad_(False)
    student = convert_sync_batchnorm(student, info).to(info.device, memory_format=precision.memory_format)
    teacher = None
    if m.uses_teacher:
        teacher = copy.deepcopy(student).eval().requires_grad_(False)
    return student, teacher


def build_optimizer(config: Config, student: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW with two groups (encoder, head) whose ``lr_scale`` the loop multiplies by the poly rate."""
    o = config.optim
    groups = [
        {"params": [p for p in student.encoder_parameters() if p.requires_grad], "lr_scale": 1.0},
        {"params": [p for p in student.head_parameters() if p.requires_grad], "lr_scale": o.head_lr_multiplier},
    ]
    if o.name == "adamw":
        # foreach for the same reason as SGD below; Adam's state is created lazily per parameter,
        # so the ARP projection joining after warm-up starts its own moments then.
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, o.beta2), weight_decay=o.weight_decay,
                                 foreach=True)  # fmt: skip
    # foreach: one multi-tensor call per operation instead of ~600 small ones (torch picks it by
    # default on CUDA only; the same arithmetic, tests/test_optimizer.py).  Not fused=True: torch's fused
    # SGD fails when a parameter (the ARP projection) first gets a gradient after warm-up, once the
    # others have momentum buffers.
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, foreach=True)


def _wrap(student: nn.Module, config: Config, info: DistInfo) -> nn.Module:
    """DDP when distributed, then ``torch.compile`` when asked."""
    model = student
    if info.distributed and config.method.separate_forward:
        raise ConfigError("method.separate_forward: two forward passes per step do not work under DDP; set it to false")
    if info.distributed:
        m = config.method
        # The ARP projection trains only after warm-up (relations=False before): DDP must look for
        # unused parameters exactly when that set changes during the run.
        varies = m.arp_loss and config.train.warmup_epochs > 0
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(student, device_ids=device_ids, find_unused_parameters=varies)
    if config.train.compile:
        model = torch.compile(model)
    return model


def _check_batch_norm_batch(config: Config, info: DistInfo) -> None:
    """Labelled-only steps with one image per BatchNorm batch cannot train (ASPP's pooled branch)."""
    labelled_only = not config.method.semi_supervised or config.train.warmup_epochs > 0
    synced = info.distributed and info.device.type == "cuda"  # SyncBatchNorm pools the ranks' images
    if config.train.batch_size == 1 and labelled_only and not synced:
        raise ConfigError(
            "train.batch_size: 1 labelled image per step cannot train BatchNorm (the ASPP image-pooling branch "
            "sees a single value per channel); use 2 or more"
        )
    m = config.method
    if m.semi_supervised and m.separate_forward and config.train.unlabeled_batch_size == 1 and not synced:
        raise ConfigError(
            "train.unlabeled_batch_size: 1 unlabelled image in its own forward (method.separate_forward) cannot "
            "train BatchNorm; use 2 or more, or one forward for both streams"
        )


def _steps_per_epoch(config: Config, n_labeled: int, n_unlabeled: int, world_size: int) -> int:
    if config.train.steps_per_epoch is not None:
        return config.train.steps_per_epoch
    # The labelled list is resampled to the unlabelled stream's length.
    key, batch = "batch_size", config.train.batch_size
    if n_unlabeled and config.train.unlabeled_batch_size is not None:
        key, batch = "unlabeled_batch_size", config.train.unlabeled_batch_size
    pool = n_unlabeled or n_labeled
    steps = pool // (batch * world_size)
    if steps < 1:
        raise ConfigError(
            f"train.{key}: {batch} x {world_size} process(es) is more than the {pool} "
            "training images of an epoch; lower it or set train.steps_per_epoch"
        )
    return steps


def _landmark_path(config: Config, device: torch.device) -> str:
    from rabusseg.models.relation import choose_landmark_path

    choice = config.method.landmark_affinity
    if choice != "auto":
        return choice
    grid = config.data.crop_size // config.model.output_stride
    return choose_landmark_path(grid, grid, device)


def _evaluate_test(run: TrainingRun, checkpoint: Path, name: str) -> Summary:
    """Evaluate a checkpoint of this run on ``data.test`` into ``RUN_DIR/eval/<name>/``."""
    from rabusseg.evaluation import evaluate_checkpoint

    cfg = run.config
    summary = evaluate_checkpoint(checkpoint, run.ids.folder.root, cfg.data.test, run.run_dir / "eval" / name,  # type: ignore[arg-type]
                                  tta=cfg.train.eval_tta, size=cfg.data.eval_size, resize=cfg.data.eval_resize,
                                  device=str(run.info.device), overwrite=True, progress=cfg.train.progress,
                                  n_bootstrap=1000)  # fmt: skip
    run.logger.eval(name, run.step, run.step // run.steps_per_epoch, {
        k: v["mean"] for k, v in summary.items() if isinstance(v, dict) and "mean" in v})  # fmt: skip
    return summary


def _write_summary(run: TrainingRun, seconds: float) -> RunSummary:
    last, best = run.run_dir / LAST_CHECKPOINT, run.run_dir / BEST_CHECKPOINT
    summary: RunSummary = {
        "method": run.config.method.name,
        "step": run.step,
        "total_steps": run.total_steps,
        "train_seconds": round(seconds, 1),
        "nonfinite_steps": run.nonfinite_total,
        "best_val": run.best,
        "checkpoints": {"last": str(last), "best": str(best) if best.is_file() else None},
        "test_last": None,
        "test_best": None,
    }
    if run.ids.test:
        summary["test_last"] = _evaluate_test(run, last, "test_last")
        if best.is_file():
            summary["test_best"] = _evaluate_test(run, best, "test_best")
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        keep = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line).get("step", 0) <= step]
        path.write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")


def prepare_run(config: Config, info: DistInfo, run_dir: Path, ids: SplitIds | None, *,
                loader: Iterable[Any] | None = None, sampler: Any = None, steps_per_epoch: int | None = None) -> TrainingRun:  # fmt: skip
    """The pieces of a run as ``rabusseg train`` builds them: networks, optimiser, precision, data.

    ``loader``/``sampler``/``steps_per_epoch`` replace the dataset stream built from ``ids``
    (the speed benchmark feeds in-memory batches and passes ``ids=None``).  The logger is a
    :class:`NullLogger` until the caller installs one.
    """
    semi = config.method.semi_supervised
    notes: list[str] = []
    if loader is None:
        if ids is None:
            raise ValueError("prepare_run needs the split ids or a loader")
        images, note = decode_training_images(config.data, ids, semi=semi)
        notes.append(note)
        steps_per_epoch = _steps_per_epoch(config, len(ids.labeled), len(ids.unlabeled), info.world_size)
        sampler = KeyBatchSampler(len(ids.labeled), len(ids.unlabeled) if semi else 0, config.train.batch_size,
                                  steps_per_epoch, seed=config.train.seed, rank=info.rank, world_size=info.world_size,
                                  unlabeled_batch_size=config.train.unlabeled_batch_size)  # fmt: skip
        loader = build_train_loader(config.data, ids, sampler, strong_view=config.method.uses_strong_view,
                                    pin_memory=info.device.type == "cuda", images=images)  # fmt: skip
    if steps_per_epoch is None:
        raise ValueError("prepare_run: give steps_per_epoch with a custom loader")
    t = config.train
    precision = resolve_precision(info.device, amp=t.amp, channels_last=t.channels_last, flush_denormal=t.flush_denormal)
    student, teacher = _build_networks(config, info, precision)
    if t.frozen_encoder_levels:
        frozen = sum(p.numel() for p in student.encoder.parameters() if not p.requires_grad)
        weights = "their loaded weights" if config.model.encoder_weights else "their random initial weights"
        notes.append(f"encoder layers through x{t.frozen_encoder_levels} frozen at {weights} "
                     f"({frozen:,} parameters, train.frozen_encoder_levels)")  # fmt: skip
    optimizer = build_optimizer(config, student)
    model = _wrap(student, config, info)
    monitor = None
    if config.train.monitor_unlabeled and semi and ids is not None and info.is_main:
        from rabusseg.engine.monitor import PseudoLabelMonitor, monitor_ids

        chosen = monitor_ids(ids.unlabeled, config.train.monitor_unlabeled, [ids.folder.class_of(i) for i in ids.unlabeled])
        monitor = PseudoLabelMonitor(config, ids.folder, chosen, info.device, precision.memory_format)
        notes.append(f"monitoring the pseudo-labels of {len(chosen)} unlabelled images against their masks "
                     "(train.monitor_unlabeled; the masks never reach a loss)")  # fmt: skip
    _seed_everything(config.train.seed * 1009 + info.rank)  # per-rank dropout streams
    return TrainingRun(config=config, info=info, run_dir=run_dir, ids=ids, student=student, model=model,  # type: ignore[arg-type]
                       teacher=teacher, optimizer=optimizer, loader=loader, sampler=sampler,
                       steps_per_epoch=steps_per_epoch, logger=NullLogger(), precision=precision,
                       landmark_affinity=_landmark_path(config, info.device), notes=notes, monitor=monitor)  # fmt: skip


def train(config: Config, run_dir: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False,
          hooks: FitHooks | None = None) -> TrainResult:  # fmt: skip
    """Train ``config`` into ``run_dir`` (see docs/training.md); works alone or under torchrun.

    ``hooks`` replace what the loop does besides the steps (:class:`~rabusseg.engine.loop.FitHooks`:
    checkpoint writing, the epoch-end validation, a callback when the loop ends).
    """
    # Before any tensor work, so that torch's threads inherit it (engine/precision.py).
    pool_flushes = flush_denormals() if config.train.flush_denormal else True
    info = init_distributed(config.train.device)
    run_dir = Path(run_dir)
    try:
        _check_batch_norm_batch(config, info)
        state = _on_main(info, lambda: prepare_run_dir(run_dir, resume=resume, overwrite=overwrite))
        ids = _on_main(info, lambda: load_split_ids(config.data, need_unlabeled=config.method.semi_supervised))
        run = prepare_run(config, info, run_dir, ids)
        if state.resume_from is not None:
            restore_training_state(run, load_checkpoint(state.resume_from, map_location=info.device), state.resume_from)
        if info.is_main:
            if state.resume_from is not None:
                _truncate_metrics(run_dir, run.step)
            save_config(config, run_dir / "config.yaml")
            run.logger = RunLogger(run_dir, run.total_steps, run.step, progress=config.train.progress)
            if state.moved_aside is not None:
                run.logger.message(f"the previous contents of {run_dir} were moved to {state.moved_aside}")
            for note in [*run.notes, run.precision.describe(config.train.amp, pool_flushes)]:
                run.logger.message(note)
        started = time.perf_counter()
        try:
            outcome = fit(run, hooks)
            summary = _on_main(info, lambda: _write_summary(run, time.perf_counter() - started))
        finally:
            run.logger.close()
        barrier(info)
        best = run_dir / BEST_CHECKPOINT
        return TrainResult(run_dir, run_dir / LAST_CHECKPOINT, best if best.is_file() else None, outcome.step,
                           outcome.stopped_by_max_steps, summary)  # fmt: skip
    finally:
        cleanup_distributed()
