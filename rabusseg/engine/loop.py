"""THE training loop: supervised, mean teacher, FixMatch and RA-BUSSeg in one function.

Read :func:`fit` top to bottom (METHOD section 3).  Stream suffixes follow UniMatch: ``_x``
labelled, ``_u_w`` unlabelled weak view, ``_u_s`` the view the student trains on (the weak one
or the strong one with CutMix).  The methods differ only in the unlabelled terms, computed by
the pure helpers of :mod:`rabusseg.engine.terms` from properties of the method config:

==============  =====================  =================================  ==========
method          pseudo-labels from      filtering                          ARP / CRA
==============  =====================  =================================  ==========
supervised      --                      --                                 --
mean_teacher    EMA teacher             entropy schedule                   --
fixmatch        student (eval, no grad) confidence >= threshold            --
ra_busseg       EMA teacher             entropy schedule                   switches
==============  =====================  =================================  ==========

The host never waits on the device inside a step except to read the non-finite flag (which
:func:`finite_flag` copies asynchronously) and at logging intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rabusseg.engine.augment import cutmix, cutmix_boxes
from rabusseg.engine.distributed import DistInfo, barrier, broadcast_object
from rabusseg.engine.ema import ema_decay, ema_update
from rabusseg.engine.logger import LossMeter
from rabusseg.engine.precise_bn import recalibrate_run
from rabusseg.engine.pseudo_labels import drop_fraction, pseudo_labels
from rabusseg.engine.run_dir import BEST_CHECKPOINT, LAST_CHECKPOINT
from rabusseg.engine.schedule import poly_lr, rampup
from rabusseg.engine.state import TrainingRun, save_training_state
from rabusseg.engine.terms import (
    cutmix_targets,
    loss_weights,
    relation_terms,
    supervised_terms,
    unlabeled_targets,
    unsupervised_term,
)
from rabusseg.errors import RabussegError
from rabusseg.models.outputs import concat_outputs


class TrainingDiverged(RabussegError):
    """Too many consecutive steps had a non-finite loss."""


@dataclass(frozen=True)
class FitOutcome:
    step: int
    epoch: int
    stopped_by_max_steps: bool


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The randomness of one step (CutMix boxes, first landmarks): a function of (seed, step, rank)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) * 4099 + rank)


def finite_flag(loss: torch.Tensor, info: DistInfo) -> Callable[[], bool]:
    """Start reading "is the loss finite on every rank?" and return the call that finishes it.

    Called before ``backward``, read after: on CUDA the copy runs while backward is queued, so
    the host does not stall the device.  Ranks agree (MIN all-reduce), so they skip together.
    """
    flag = torch.isfinite(loss.detach()).float()
    if info.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if flag.device.type != "cuda":
        return lambda: bool(flag.item() > 0)
    host = torch.empty((), dtype=flag.dtype, pin_memory=True)
    host.copy_(flag, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return lambda: bool(event.synchronize() or host.item() > 0)


def save_training_checkpoint(run: TrainingRun, name: str, epoch: int) -> None:
    """The default checkpoint hook: ``last.pt`` / ``best.pt`` in the run directory (every rank calls it)."""
    save_training_state(run, run.run_dir / name, epoch)


def _val_means(run: TrainingRun, net: torch.nn.Module) -> dict[str, float]:
    from rabusseg.evaluation import evaluate_model, summarize

    d = run.config.data
    rows = evaluate_model(net, run.ids.folder, run.ids.val, size=d.eval_size, resize=d.eval_resize, progress=False)
    summary = summarize(rows, n_bootstrap=0)
    return {k: v["mean"] for k, v in summary.items() if isinstance(v, dict) and "mean" in v}


def validate(run: TrainingRun, epoch: int, save: Callable[[TrainingRun, str, int], None] = save_training_checkpoint) -> float | None:
    """Validation Dice of the evaluated network on ``data.val`` (rank 0; others wait); best.pt on improvement.

    With a teacher, both networks are scored: ``student_dice`` and ``teacher_dice`` sit beside the
    evaluated network's metrics in the log (is the EMA ahead of the student?).
    """
    dice = None
    if run.info.is_main:
        # Evaluation must not consume the training RNG streams (a resumed run would diverge).
        with torch.random.fork_rng(devices=[run.info.device] if run.info.device.type == "cuda" else []):
            means = _val_means(run, run.eval_network())
            if run.teacher is not None and run.step > run.warmup_steps:  # before, the teacher is the initial network
                other = run.student if run.eval_network() is run.teacher else run.teacher
                other_dice = _val_means(run, other).get("dice")
                own = "teacher" if run.eval_network() is run.teacher else "student"
                means[f"{own}_dice"] = means.get("dice")  # type: ignore[assignment]
                means[f"{'student' if own == 'teacher' else 'teacher'}_dice"] = other_dice  # type: ignore[assignment]
        run.logger.eval("val", run.step, epoch, means)
        dice = means.get("dice")
    improved = run.info.is_main and dice is not None and (run.best["dice"] is None or dice > run.best["dice"])
    improved, dice = broadcast_object((improved, dice), run.info)  # every rank saves (RNG states are gathered)
    if improved:
        run.best = {"dice": dice, "step": run.step, "epoch": epoch}
        save(run, BEST_CHECKPOINT, epoch)
    barrier(run.info)
    return dice


def monitor_pseudo_labels(run: TrainingRun, epoch: int) -> None:
    """Score the labeller's filtered pseudo-labels on the monitored unlabelled images (rank 0)."""
    if run.monitor is None or not run.info.is_main:
        return
    m, t = run.config.method, run.config.train
    labeller = run.teacher if run.teacher is not None else run.student
    drop = drop_fraction(epoch, t.epochs, m.drop_percent)
    run.logger.eval("pseudo", run.step, epoch, run.monitor.measure(labeller, run.student, drop))


def end_of_epoch(run: TrainingRun, epoch: int, hooks: FitHooks) -> None:
    """The default epoch-end hook: validation (best.pt on improvement) and the pseudo-label monitor."""
    t = run.config.train
    if (epoch + 1) % t.eval_every_epochs == 0 or epoch + 1 == t.epochs:
        if run.ids.val:
            validate(run, epoch, hooks.save)
        if run.config.method.semi_supervised and epoch >= t.warmup_epochs:
            monitor_pseudo_labels(run, epoch)


@dataclass(frozen=True)
class FitHooks:
    """What :func:`fit` calls besides the steps: the I/O of a run, replaceable (the speed
    benchmark trains without writing checkpoints; tests keep each rank's weights)."""

    save: Callable[[TrainingRun, str, int], None] = save_training_checkpoint
    """``save(run, name, epoch)`` for ``last.pt`` / ``best.pt``."""
    epoch_end: Callable[[TrainingRun, int, FitHooks], None] = end_of_epoch
    """``epoch_end(run, epoch, hooks)`` after each complete epoch, before its checkpoint."""
    finished: Callable[[TrainingRun], None] | None = None
    """Called once when the loop ends (after the final ``last.pt``)."""


NO_CHECKPOINTS = FitHooks(save=lambda run, name, epoch: None)
"""Train without writing ``last.pt`` / ``best.pt``."""


def fit(run: TrainingRun, hooks: FitHooks | None = None) -> FitOutcome:
    """Train from ``run.step`` to the end (or ``train.max_steps``), checkpointing on the way."""
    hooks = hooks or FitHooks()
    cfg, m, info = run.config, run.config.method, run.info
    dev, spe = info.device, run.steps_per_epoch
    student, teacher, model, optimizer = run.student, run.teacher, run.model, run.optimizer
    crop = (cfg.data.crop_size, cfg.data.crop_size)
    autocast, memory_format = run.precision.autocast, run.precision.memory_format
    meter, stopped = LossMeter(), False
    epoch = run.step // spe

    while epoch < cfg.train.epochs and not stopped:
        run.sampler.set_position(epoch, run.step % spe)
        warm = epoch < cfg.train.warmup_epochs
        drop = drop_fraction(epoch, cfg.train.epochs, m.drop_percent)
        student.train()
        waiting_since = time.perf_counter()
        for batch_x, batch_u in run.loader:
            meter.add_data_time(time.perf_counter() - waiting_since)
            lr = poly_lr(cfg.optim.lr, run.step, run.total_steps, cfg.optim.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            if teacher is not None and run.step == run.warmup_steps:
                teacher.load_state_dict(student.state_dict())  # warm-up over: teacher <- student
            generator = step_generator(cfg.train.seed, run.step, info.rank, dev)

            img_x = batch_x["image"].to(dev, non_blocking=True).contiguous(memory_format=memory_format)
            mask_x = batch_x["mask"].to(dev, non_blocking=True)
            terms: dict[str, torch.Tensor] = {}
            extra: dict[str, torch.Tensor] = {}
            if warm or not m.semi_supervised:
                # Warm-up (and the supervised baseline): labelled images only, L_sup only.
                with autocast():
                    pred_x = model(img_x, relations=False).pred
                    terms |= supervised_terms(pred_x, mask_x, cfg.loss)
                n_images = img_x.shape[0]
            else:
                img_u_w = batch_u["image"].to(dev, non_blocking=True).contiguous(memory_format=memory_format)
                # 1. Pseudo-labels on the weak view: the teacher (eval mode, no grad), or the student for FixMatch.
                labeller = teacher if teacher is not None else student
                was_training = labeller.training
                labeller.eval()
                with torch.no_grad(), autocast():
                    probs_u_w, argmax_u = pseudo_labels(labeller(img_u_w, relations=False).pred, crop)
                labeller.train(was_training)
                # 2. Filtering: confidence (FixMatch) or the entropy schedule (mean teacher, RA-BUSSeg).
                targets = unlabeled_targets(probs_u_w, argmax_u, batch_u["valid"].to(dev, non_blocking=True), m, drop)
                # 3. The student's view: weak, or strong intensity + CutMix with the next image of the batch.
                img_u_s = img_u_w
                if m.uses_strong_view:
                    img_u_s = batch_u["image_strong"].to(dev, non_blocking=True).contiguous(memory_format=memory_format)
                    boxes = cutmix_boxes(img_u_s.shape[0], crop, m.cutmix_prob, generator, device=dev)
                    img_u_s = cutmix(img_u_s, img_u_s.roll(1, dims=0), boxes)
                    targets = cutmix_targets(targets, boxes)
                # 4. The student forward on [labelled; unlabelled]: one pass (shared BatchNorm
                #    statistics), or one pass per stream (method.separate_forward, as UniMatch).
                n_x, n_u = img_x.shape[0], img_u_s.shape[0]
                with autocast():
                    if m.separate_forward:
                        out = concat_outputs([model(img_x, relations=m.relations), model(img_u_s, relations=m.relations)])
                    else:
                        out = model(torch.cat((img_x, img_u_s)), relations=m.relations)
                    pred_x, pred_u_s = out.pred.split([n_x, n_u])
                    terms |= supervised_terms(pred_x, mask_x, cfg.loss)
                    terms["unsup"], extra["keep_ratio"] = unsupervised_term(pred_u_s, targets)
                    labels = torch.cat((mask_x, targets.labels))  # GT on labelled, filtered pseudo-labels on unlabelled
                    terms |= relation_terms(out, labels, n_x, n_u, m, generator=generator, affinity=run.landmark_affinity)
                n_images = n_x + n_u
            weights = loss_weights(cfg, rampup(run.step - run.warmup_steps, cfg.loss.unsup_rampup_epochs * spe))
            total = sum(weights[name] * value for name, value in terms.items())

            # 5. Backward and update, unless the loss is not finite (skip; give up after N in a row).
            is_finite = finite_flag(total, info)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if is_finite():
                optimizer.step()
                if teacher is not None and run.step >= run.warmup_steps:
                    ema_update(teacher, student, ema_decay(run.step - run.warmup_steps, cfg.train.ema_decay))
                run.nonfinite_in_a_row = 0
            else:
                run.nonfinite_in_a_row += 1
                run.nonfinite_total += 1
                run.logger.message(f"step {run.step}: non-finite loss, update skipped ({run.nonfinite_in_a_row} in a row)")
                if run.nonfinite_in_a_row >= cfg.train.max_nonfinite_steps:
                    raise TrainingDiverged(
                        f"training diverged: {run.nonfinite_in_a_row} consecutive steps had a non-finite loss at step "
                        f"{run.step} (train.max_nonfinite_steps); lower optim.lr or check the data"
                    )
            run.step += 1

            # 6. Bookkeeping: logs, progress, periodic checkpoint (deferred to after validation at epoch end).
            meter.add({f"loss/{k}": v for k, v in terms.items()} | {"loss/total": total} | extra, n_images)
            if run.step % cfg.train.log_every_steps == 0:
                run.logger.train(run.step, epoch, {"lr": lr, **meter.read(info), "nonfinite_steps": run.nonfinite_total})
            run.logger.advance(run.step)
            stopped = cfg.train.max_steps is not None and run.step >= cfg.train.max_steps
            if stopped:
                break
            if run.step % cfg.train.checkpoint_every_steps == 0 and run.step % spe != 0:
                hooks.save(run, LAST_CHECKPOINT, epoch)
            waiting_since = time.perf_counter()

        if run.step % spe == 0:  # the epoch is complete
            if cfg.precise_bn_enabled and epoch + 1 == cfg.train.epochs:
                recalibrate_run(run)  # the final model's BatchNorm statistics, before its validation
            hooks.epoch_end(run, epoch, hooks)
            if run.step % cfg.train.checkpoint_every_steps == 0:
                hooks.save(run, LAST_CHECKPOINT, epoch)
            meter.restart_clock()
            epoch += 1
    hooks.save(run, LAST_CHECKPOINT, min(epoch, cfg.train.epochs - 1))
    if hooks.finished is not None:
        hooks.finished(run)
    return FitOutcome(run.step, epoch, stopped)
