"""How good are the pseudo-labels?  Measured on unlabelled images whose masks exist (BUSI has them all).

Why: a semi-supervised run that does not beat its supervised twin either hands the student bad
pseudo-labels or filters out the useful ones; both show here.  ``train.monitor_unlabeled: N``
picks N fixed images of the unlabelled list; at every validation the labeller (the EMA teacher,
or the student for FixMatch) labels each whole image at the training resolution, the filter of
the current epoch is applied, and the result is scored against the mask:

* ``pl_dice``, ``pl_precision``, ``pl_recall``: the pseudo-label's lesion against the mask (all pixels);
* ``kept_share``: pixels the filter keeps; ``kept_accuracy`` / ``dropped_accuracy``: how often the
  pseudo-label is right on the kept and on the dropped pixels (a good filter drops the wrong ones);
* ``lesion_share`` / ``kept_lesion_share``: the share of lesion in the pseudo-label over all pixels
  and over the kept ones (a filter that drops lesions first shows as a kept share far below the
  whole: right after a cpu_small warm-up the 20% entropy drop kept no lesion pixel at all);
* ``student_dice``: the student's own Dice on the same images, for the "is the teacher ahead of
  the student?" question.

The masks are read by this module only and never reach a loss: the monitor runs in
``fork_rng`` under ``no_grad`` with both networks in eval mode, so a run with the monitor on
trains exactly as one with it off (tests/test_monitor.py compares the weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rabusseg.config import Config
from rabusseg.engine.pseudo_labels import IGNORE_INDEX, confidence_mask, entropy_filter

QUALITY_METRICS = ("pl_dice", "pl_precision", "pl_recall", "kept_share", "kept_accuracy", "dropped_accuracy",
                   "lesion_share", "kept_lesion_share", "student_dice")
"""What a ``pseudo`` line of ``metrics.jsonl`` holds (:func:`summarize_quality` with the student's sums)."""


def monitor_ids(ids: Sequence[str], n: int, classes: Sequence[str] | None = None) -> list[str]:
    """``n`` ids spread evenly over the list sorted by (class, id): both classes come in, always the same ones."""
    if n <= 0 or not ids:
        return []
    order = sorted(range(len(ids)), key=lambda i: ((classes[i] if classes else ""), ids[i]))
    picks = np.linspace(0, len(ids) - 1, num=min(n, len(ids))).round().astype(int)
    return [ids[order[i]] for i in dict.fromkeys(picks.tolist())]


def pseudo_label_quality(pseudo: torch.Tensor, filtered: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over a batch that :func:`summarize_quality` turns into rates (pure, vectorised).

    pseudo: (B, H, W) labeller argmax 0/1; filtered: the same after the filter (255 = dropped);
    truth: (B, H, W) bool mask.  Returns per-image tensors (B,).
    """
    lesion, gt = pseudo == 1, truth.bool()
    kept = filtered != IGNORE_INDEX
    correct = lesion == gt
    return {
        "tp": (lesion & gt).flatten(1).sum(1).float(),
        "fp": (lesion & ~gt).flatten(1).sum(1).float(),
        "fn": (~lesion & gt).flatten(1).sum(1).float(),
        "kept": kept.flatten(1).sum(1).float(),
        "lesion": lesion.flatten(1).sum(1).float(),
        "kept_lesion": (kept & lesion).flatten(1).sum(1).float(),
        "pixels": torch.full((pseudo.shape[0],), float(pseudo[0].numel()), device=pseudo.device),
        "kept_correct": (kept & correct).flatten(1).sum(1).float(),
        "dropped_correct": (~kept & correct).flatten(1).sum(1).float(),
    }


def _dice(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Per-image Dice with both-empty = 1 (the evaluation's rule, docs/metrics.md)."""
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.ones_like(tp))


def summarize_quality(sums: dict[str, torch.Tensor], student: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Means over images of the per-image rates; precision/recall pooled over pixels."""
    tp, fp, fn = sums["tp"], sums["fp"], sums["fn"]
    dropped = sums["pixels"] - sums["kept"]
    out = {
        "pl_dice": _dice(tp, fp, fn).mean().item(),
        "pl_precision": (tp.sum() / (tp.sum() + fp.sum()).clamp_min(1)).item(),
        "pl_recall": (tp.sum() / (tp.sum() + fn.sum()).clamp_min(1)).item(),
        "kept_share": (sums["kept"].sum() / sums["pixels"].sum()).item(),
        "lesion_share": (sums["lesion"].sum() / sums["pixels"].sum()).item(),
        "kept_lesion_share": (sums["kept_lesion"].sum() / sums["kept"].sum().clamp_min(1)).item(),
        "kept_accuracy": (sums["kept_correct"].sum() / sums["kept"].sum().clamp_min(1)).item(),
        "dropped_accuracy": (sums["dropped_correct"].sum() / dropped.sum().clamp_min(1)).item()
        if dropped.sum() > 0 else float("nan"),
    }
    if student is not None:
        out["student_dice"] = _dice(student["tp"], student["fp"], student["fn"]).mean().item()
    return out


class PseudoLabelMonitor:
    """The monitored images (decoded once, at the training resolution) and the scoring pass."""

    def __init__(self, config: Config, folder: Any, ids: Sequence[str], device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:  # fmt: skip
        from rabusseg.data.cache import DecodedImages
        from rabusseg.data.transforms import normalize_image

        self.config, self.ids, self.device, self.memory_format = config, list(ids), device, memory_format
        images = DecodedImages.load(folder, self.ids, masks_for=self.ids, resize_to=config.data.resize_to)
        self.samples = [(normalize_image(np.array(images.image(i))), torch.from_numpy(np.array(images.mask(i))))
                        for i in self.ids]  # fmt: skip

    @torch.no_grad()
    def measure(self, labeller: nn.Module, student: nn.Module, drop: float) -> dict[str, float]:
        """Score the labeller's filtered pseudo-labels and the student on every monitored image."""
        m = self.config.method
        modes = (labeller.training, student.training)
        labeller.eval()
        student.eval()
        totals: dict[str, list[torch.Tensor]] = {}
        student_totals: dict[str, list[torch.Tensor]] = {}
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for image, mask in self.samples:
                    x = image.unsqueeze(0).to(self.device).contiguous(memory_format=self.memory_format)
                    gt = mask.unsqueeze(0).to(self.device)
                    probs, pseudo = _probabilities(labeller, x)
                    if m.confidence_filter:
                        keep = confidence_mask(probs, m.fixmatch_threshold).bool()
                        filtered = torch.where(keep, pseudo, IGNORE_INDEX)
                    else:
                        filtered = entropy_filter(probs, pseudo, drop, per_image=True, per_class=m.filter_per_class)
                    for k, v in pseudo_label_quality(pseudo, filtered, gt).items():
                        totals.setdefault(k, []).append(v)
                    _, own = _probabilities(student, x)
                    for k, v in pseudo_label_quality(own, own, gt).items():
                        student_totals.setdefault(k, []).append(v)
        finally:
            labeller.train(modes[0])
            student.train(modes[1])
        return summarize_quality(_concat(totals), _concat(student_totals))


def _concat(parts: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat(v).cpu() for k, v in parts.items()}


def _probabilities(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax at the input size and its argmax, as the training loop makes pseudo-labels."""
    from rabusseg.engine.pseudo_labels import pseudo_labels

    probs, labels = pseudo_labels(model(x, relations=False).pred, tuple(x.shape[-2:]))
    return probs, labels
