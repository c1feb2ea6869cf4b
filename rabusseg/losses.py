"""Loss terms of the training loop (METHOD section 2), as pure tensor functions.

``L = L_sup + w_u L_unsup + w_arp L_arp + w_cra L_cra``.  Every function takes logits at any
resolution and resizes them to the label size itself, so the loop never repeats that step.
None of them synchronises with the host: thresholds are found with ``topk``/``gather`` on the
device and "no valid pixel" is handled by clamping denominators, not by ``if`` on a tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rabusseg.config import CraSimilarity, LossConfig
from rabusseg.constants import CRA_COSINE_TEMPERATURE, IGNORE_INDEX
from rabusseg.models.resize import upsample_logits

_LOSS_DEFAULTS = LossConfig()
"""Defaults are written once, in config.py."""


def _to_label_size(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bilinear resize (align_corners=True, as the decoder does) of (B, K, h, w) to labels' (H, W)."""
    return upsample_logits(logits, labels.shape[-2:])


def ohem_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    threshold: float = _LOSS_DEFAULTS.ohem_threshold,
    min_kept: int = _LOSS_DEFAULTS.ohem_min_kept,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Online hard-example mining cross-entropy over the whole batch.

    Among valid pixels keep those whose true-class probability is ``<= max(threshold, p_k)``,
    where ``p_k`` is the probability of the ``min_kept``-th hardest valid pixel (all valid
    pixels are kept when there are fewer than ``min_kept``).  The loss is the mean
    cross-entropy over the kept pixels; 0 when there is none.

    logits: (B, K, h, w) any resolution; labels: (B, H, W) int64 with ``ignore_index``.
    """
    logits = _to_label_size(logits, labels)
    valid = labels != ignore_index  # (B, H, W)
    target = torch.where(valid, labels, torch.zeros_like(labels))
    log_probs = F.log_softmax(logits.float(), dim=1)
    nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)  # (B, H, W)
    prob = torch.exp(-nll.detach())
    cutoff = torch.tensor(threshold, device=prob.device, dtype=prob.dtype)
    if min_kept > 0:
        # Invalid pixels get probability 2 so that they come after every valid one.  The k-th
        # smallest is then the k-th hardest valid pixel; when fewer than k are valid it is a 2,
        # and the cutoff keeps every valid pixel, as "the easiest valid one" would.  kthvalue
        # selects in linear time (a top-k of 100000 of 102400 pixels was a near-full sort).
        prob_flat = torch.where(valid, prob, torch.full_like(prob, 2.0)).flatten()
        k = min(min_kept, prob_flat.numel())
        cutoff = torch.maximum(cutoff, torch.kthvalue(prob_flat, k).values)
    keep = valid & (prob <= cutoff)
    keep_f = keep.to(nll.dtype)
    return (nll * keep_f).sum() / keep_f.sum().clamp(min=1.0)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over valid pixels (0 when none); logits are resized to the labels."""
    logits = _to_label_size(logits, labels)
    valid = labels != ignore_index
    target = torch.where(valid, labels, torch.zeros_like(labels))
    nll = F.cross_entropy(logits.float(), target, reduction="none")
    valid_f = valid.to(nll.dtype)
    return (nll * valid_f).sum() / valid_f.sum().clamp(min=1.0)


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, *, smooth: float = 1.0,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:  # fmt: skip
    """``1 - Dice`` of the softmax probabilities of the lesion classes (1..K-1) over the whole batch.

    Why: cross-entropy weighs every pixel alike, so a small lesion contributes little; the Dice
    term weighs the lesion against its own size, as the metric does.  One ratio over the batch
    (nnU-Net's batch Dice) rather than per image, so that a crop without lesion does not push its
    image's probabilities to zero on its own.  Ignored pixels count in neither sum; the classes'
    losses are averaged.  logits: (B, K, h, w) any resolution; labels: (B, H, W) int64.
    """
    logits = _to_label_size(logits, labels)
    valid = (labels != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    probs = F.softmax(logits.float(), dim=1)[:, 1:] * valid
    classes = torch.arange(1, logits.shape[1], device=labels.device).view(1, -1, 1, 1)
    target = ((labels.unsqueeze(1) == classes) & valid).to(probs.dtype)  # (B, K-1, H, W)
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


def pseudo_label_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Unsupervised term: mean CE over kept pixels, scaled by (all pixels / kept pixels).

    The scale follows METHOD section 2 (and U2PL): when entropy filtering drops pixels the term
    is boosted rather than shrunk, keeping its weight comparable to the supervised one.
    """
    valid = (labels != ignore_index).to(torch.float32)
    scale = valid.numel() / valid.sum().clamp(min=1.0)
    return cross_entropy(logits, labels, ignore_index) * scale


def weighted_pseudo_label_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """FixMatch term: CE on pixels whose confidence passed the threshold, averaged over all
    valid pixels (``weights`` is 1 where confident, 0 elsewhere), as FixMatch and UniMatch do."""
    logits = _to_label_size(logits, labels)
    valid = labels != ignore_index
    target = torch.where(valid, labels, torch.zeros_like(labels))
    nll = F.cross_entropy(logits.float(), target, reduction="none")
    valid_f = valid.to(nll.dtype)
    return (nll * weights.to(nll.dtype) * valid_f).sum() / valid_f.sum().clamp(min=1.0)


def arp_loss(arp_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """ARP term: CE of the propagated prediction (``corr_out``) against GT or pseudo-labels."""
    return cross_entropy(arp_logits, labels, ignore_index)


def labels_to_grid(labels: torch.Tensor, size: tuple[int, int], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Nearest-resize (B, H, W) labels to the h x w relation grid for CRA's first landmark.

    Ignored pixels (padding, filtered pseudo-labels) become background: the first landmark
    must sit on a pixel we believe is lesion, not on one we know nothing about.
    """
    grid = F.interpolate(labels.unsqueeze(1).float(), size=size, mode="nearest").squeeze(1).long()
    return torch.where(grid == ignore_index, torch.zeros_like(grid), grid)


def cra_loss(
    features: tuple[torch.Tensor, ...],
    proj: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_landmarks: int,
    generator: torch.Generator,
    affinity: str = "rows",
    similarity: CraSimilarity = "dot",
    temperature: float = CRA_COSINE_TEMPERATURE,
) -> torch.Tensor:
    """CRA term: landmarks picked on ``proj``'s affinity from a labelled first pixel, then the KL
    alignment of x1..x4's pixel-to-landmark distributions (METHOD section 2).

    ``labels`` (B, H, W) are GT or filtered pseudo-labels; ``affinity`` is ``rows`` (one affinity
    row per greedy step) or ``full`` (the N x N matrix); both pick the same landmarks.  The
    number of landmarks is capped at the grid size (tiny crops in tests).  ``similarity`` and
    ``temperature`` shape the distributions (``method.cra_similarity``, ``cross_layer_alignment_loss``).
    """
    from rabusseg.models.relation import (
        cross_layer_alignment_loss,
        first_landmarks,
        global_affinity,
        select_landmarks,
        select_landmarks_from_features,
    )

    h, w = proj.shape[-2:]
    m = min(num_landmarks, h * w)
    first = first_landmarks(labels_to_grid(labels, (h, w)), generator)  # (B,)
    if affinity == "full":
        landmarks = select_landmarks(global_affinity(proj), first, m)
    else:
        landmarks = select_landmarks_from_features(proj, first, m)  # (B, M)
    return cross_layer_alignment_loss(features, landmarks, similarity=similarity, temperature=temperature)
