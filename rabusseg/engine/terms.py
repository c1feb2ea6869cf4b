"""The pieces of a semi-supervised step in which the methods differ, as pure functions (each tested).

:func:`rabusseg.engine.loop.fit` reads as the method; what changes from one method to another is
here, decided by properties of :class:`~rabusseg.config.MethodConfig`:

==============  ==============================  ============================  ==========
method          targets on unlabelled pixels     unsupervised term             relations
==============  ==============================  ============================  ==========
mean_teacher    teacher argmax, entropy drop     CE x (all / kept pixels)      --
fixmatch        student argmax, confidence       CE on confident pixels        --
ra_busseg       teacher argmax, entropy drop     CE x (all / kept pixels)      ARP, CRA
==============  ==============================  ============================  ==========
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rabusseg.config import Config, LossConfig, MethodConfig
from rabusseg.constants import IGNORE_INDEX
from rabusseg.engine.augment import cutmix
from rabusseg.engine.pseudo_labels import confidence_mask, entropy_filter, keep_ratio
from rabusseg.losses import (
    arp_loss,
    cra_loss,
    cross_entropy,
    ohem_cross_entropy,
    pseudo_label_cross_entropy,
    soft_dice_loss,
    weighted_pseudo_label_cross_entropy,
)
from rabusseg.models.outputs import SegmentationOutput
from rabusseg.models.resize import upsample_logits


@dataclass(frozen=True)
class UnlabeledTargets:
    """What the student learns on unlabelled pixels: labels (255 = no label) and, for FixMatch, weights."""

    labels: torch.Tensor
    """(B, H, W) int64."""
    confidence: torch.Tensor | None = None
    """(B, H, W) float 0/1: pixels whose confidence passed ``fixmatch_threshold`` (FixMatch only)."""


def unlabeled_targets(probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, method: MethodConfig,
                      drop: float) -> UnlabeledTargets:  # fmt: skip
    """The labeller's argmax, with crop padding unlabelled, filtered by confidence or by entropy."""
    labels = torch.where(valid, labels, IGNORE_INDEX)  # crop padding carries no label
    if method.confidence_filter:
        return UnlabeledTargets(labels, confidence_mask(probs, method.fixmatch_threshold))
    return UnlabeledTargets(entropy_filter(probs, labels, drop, per_image=method.filter_per_image,
                                           per_class=method.filter_per_class))


def cutmix_targets(targets: UnlabeledTargets, boxes: torch.Tensor) -> UnlabeledTargets:
    """The targets of a CutMixed batch: the same boxes pasted from the next image as in the images."""

    def mix(x: torch.Tensor) -> torch.Tensor:
        return cutmix(x, x.roll(1, dims=0), boxes)

    confidence = mix(targets.confidence) if targets.confidence is not None else None
    return replace(targets, labels=mix(targets.labels), confidence=confidence)


def unsupervised_term(pred_u: torch.Tensor, targets: UnlabeledTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_unsup, the share of pixels that carry a target), both device scalars."""
    if targets.confidence is not None:
        kept = (targets.confidence * (targets.labels != IGNORE_INDEX)).mean()
        return weighted_pseudo_label_cross_entropy(pred_u, targets.labels, targets.confidence), kept
    return pseudo_label_cross_entropy(pred_u, targets.labels), keep_ratio(targets.labels)


def supervised_terms(pred_x: torch.Tensor, mask_x: torch.Tensor, loss: LossConfig) -> dict[str, torch.Tensor]:
    """``L_sup`` on the labelled images (OHEM or plain cross-entropy) and, when ``loss.dice_weight``
    is set, the soft Dice term beside it.  The logits are resized to the masks once, for both."""
    if loss.dice_weight > 0:
        pred_x = upsample_logits(pred_x, mask_x.shape[-2:])  # (B, K, H, W); the losses' own resize is then a no-op
    if loss.ohem:
        terms = {"sup": ohem_cross_entropy(pred_x, mask_x, threshold=loss.ohem_threshold, min_kept=loss.ohem_min_kept)}
    else:
        terms = {"sup": cross_entropy(pred_x, mask_x)}
    if loss.dice_weight > 0:
        terms["dice"] = soft_dice_loss(pred_x, mask_x)
    return terms


def stream_slice(which: str, n_x: int, n_u: int) -> slice:
    """Rows of a [labelled; unlabelled] batch that feed a relation term (``method.*_images``)."""
    return {"labeled": slice(0, n_x), "unlabeled": slice(n_x, n_x + n_u), "both": slice(0, n_x + n_u)}[which]


def take_rows(x: torch.Tensor, rows: slice) -> torch.Tensor:
    """``x[rows]``, or ``x`` itself when ``rows`` is the whole batch.

    Why: the backward of a slice writes the gradient into a new contiguous (NCHW) tensor even
    when ``x`` is channels-last, and CRA's slice of x4 then made every gradient accumulation
    into x4 (and the BN and ReLU6 backward behind it) take torch's slow mixed-layout path: in a
    cpu_small RA-BUSSeg step with ``cra_images: both`` the additions alone fell from 17 to 5 ms.
    """
    return x if rows.indices(x.shape[0]) == (0, x.shape[0], 1) else x[rows]


def relation_terms(out: SegmentationOutput, labels: torch.Tensor, n_x: int, n_u: int, method: MethodConfig, *,
                   generator: torch.Generator, affinity: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """ARP and CRA losses on the rows ``method.arp_images`` / ``method.cra_images`` name (RA-BUSSeg)."""
    terms = {}
    if method.arp_loss:
        rows = stream_slice(method.arp_images, n_x, n_u)
        terms["arp"] = arp_loss(take_rows(out.arp_pred, rows), labels[rows])  # type: ignore[arg-type]
    if method.cra_loss:
        rows = stream_slice(method.cra_images, n_x, n_u)
        features = tuple(take_rows(f, rows) for f in out.features)  # type: ignore[union-attr]
        terms["cra"] = cra_loss(features, take_rows(out.proj, rows), labels[rows],  # type: ignore[arg-type]
                                num_landmarks=method.num_landmarks, generator=generator, affinity=affinity,
                                similarity=method.cra_similarity, temperature=method.cra_temperature)  # fmt: skip
    return terms


def loss_weights(config: Config, ramp: float) -> dict[str, float]:
    """``L = L_sup + w_d L_dice + w_u ramp L_unsup + w_arp L_arp + w_cra L_cra`` (METHOD section 2).

    With ``loss.relation_rampup`` the relation weights follow the same ramp as ``w_u``.
    """
    w = config.loss
    relation_ramp = ramp if w.relation_rampup else 1.0
    return {
        "sup": 1.0,
        "dice": w.dice_weight,
        "unsup": w.unsup_weight * ramp,
        "arp": w.arp_weight * relation_ramp,
        "cra": w.cra_weight * relation_ramp,
    }
