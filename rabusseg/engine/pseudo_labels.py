"""Pseudo-labels for unlabelled images: teacher argmax, entropy filtering, FixMatch confidence.

All functions are vectorised over the batch and never read a tensor value on the host, so the
training loop does not synchronise with the device to filter pseudo-labels.
"""

from __future__ import annotations

import torch

from rabusseg.constants import IGNORE_INDEX
from rabusseg.models.resize import upsample_logits


def drop_fraction(epoch: int, epochs: int, drop_percent: float) -> float:
    """Fraction of pixels to drop at ``epoch``: ``(100 - drop_percent) * (1 - epoch / epochs) / 100``.

    With the paper's ``drop_percent = 80`` this is 20% at epoch 0, falling linearly to 0 at the
    end (``epoch`` is the absolute 0-based epoch, as in U2PL's schedule).
    """
    return max(0.0, (100.0 - drop_percent) * (1.0 - epoch / epochs) / 100.0)


def pseudo_labels(logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities upsampled to the crop ``size`` and their argmax.

    logits: (B, K, h, w) -> probs (B, K, H, W) float32, labels (B, H, W) int64.
    """
    logits = upsample_logits(logits.float(), size)
    probs = logits.softmax(dim=1)
    return probs, class_argmax(probs)


def class_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(dim=1)``, (B, K, H, W) -> (B, H, W) int64, the first class on ties.

    For two classes it is one comparison: a reduction over a two-element strided dimension
    took 24 ms for a 4 x 160 x 160 batch on CPU, the comparison 0.2 ms.
    """
    if probs.shape[1] == 2:
        return (probs[:, 1] > probs[:, 0]).long()
    return probs.argmax(dim=1)


def pixel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy per pixel: (B, K, H, W) -> (B, H, W)."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)


def _order_keys(x: torch.Tensor) -> torch.Tensor:
    """Keys in [0, 2**32) with the order of the float32 values of ``x`` (the IEEE bit trick).

    ``+ 0.0`` turns -0.0 (the entropy of a one-hot pixel) into +0.0, which a sort treats as equal.
    """
    bits = (x.float() + 0.0).contiguous().view(torch.int32).long()
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) + 2**31  # negatives: larger magnitude, smaller key


def top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mask of the ``k[g]`` largest entries of each row of ``scores`` (G, N); ties go to the lower index.

    The same pixels as ``argsort(descending=True, stable=True)[:, :k]``, without the sort: each
    row's k-th largest value is found exactly, one bit of its key at a time from the top (32
    counting passes, no host read of ``k``), then the ties at it are taken in index order.
    """
    keys = _order_keys(scores)  # (G, N)
    k = k.to(keys.device).long().unsqueeze(1)  # (G, 1)
    threshold = torch.zeros_like(k)  # the largest t with count(keys >= t) >= k, built bit by bit
    for bit in range(31, -1, -1):
        candidate = threshold + (1 << bit)
        threshold = torch.where((keys >= candidate).sum(dim=1, keepdim=True) >= k, candidate, threshold)
    above = keys > threshold
    tied = keys == threshold
    room = k - above.sum(dim=1, keepdim=True)  # how many of the ties still fit
    return above | (tied & (tied.cumsum(dim=1) <= room))


def entropy_filter(
    probs: torch.Tensor,
    labels: torch.Tensor,
    fraction: float,
    *,
    per_image: bool = False,
    per_class: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Set the ``fraction`` most uncertain (highest-entropy) valid pixels of ``labels`` to ignore.

    Counts are exact: ``round(fraction * n_valid)`` pixels are dropped over the whole batch
    (``per_image=False``, as U2PL's percentile) or in each image.  With ``per_class`` the count
    and the ranking are taken within each pseudo-label class separately, so the kept pixels keep
    the classes' shares: ranked together, a lesion that is uncertain as a whole is dropped whole
    (measured on cpu_small right after warm-up: all the predicted lesion pixels fell in the 20%
    dropped, docs/choices.md).  Pixels already ignored (crop padding) are neither counted nor
    dropped.  Ties are broken by position.

    probs: (B, K, H, W); labels: (B, H, W) -> filtered copy of labels.
    """
    if fraction <= 0.0:
        return labels.clone()
    b = labels.shape[0]
    entropy = pixel_entropy(probs)
    valid = labels != ignore_index
    if per_class:
        classes = torch.arange(probs.shape[1], device=labels.device).view(-1, 1, 1, 1)
        members = valid.unsqueeze(0) & (labels.unsqueeze(0) == classes)  # (K, B, H, W)
    else:
        members = valid.unsqueeze(0)  # (1, B, H, W)
    groups = members.shape[0] * (b if per_image else 1)
    scores = torch.where(members, entropy.unsqueeze(0), torch.full_like(entropy, -torch.inf)).reshape(groups, -1)
    n_drop = torch.round(members.reshape(groups, -1).sum(dim=1) * min(fraction, 1.0))  # (G,)
    drop = top_k_mask(scores, n_drop).reshape(members.shape).any(dim=0)
    return torch.where(drop, torch.full_like(labels, ignore_index), labels)


def keep_ratio(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Share of pixels that keep a pseudo-label (a device scalar, read only when logging)."""
    return (labels != ignore_index).float().mean()


def confidence_mask(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """FixMatch: 1 where the max class probability reaches ``threshold``; (B, H, W) float."""
    return (probs.max(dim=1).values >= threshold).float()
