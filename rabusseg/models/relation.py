"""ARP and CRA relation modules as pure tensor functions (METHOD sections 1 and 2).

Nothing here holds weights: the model's ``proj`` branch produces the features, the losses
module turns these functions' outputs into loss terms.  Shapes use B (batch), C (channels),
K (classes), h x w (the x4 grid), N = h * w pixels, M landmarks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from rabusseg.config import CraSimilarity
from rabusseg.constants import CRA_COSINE_TEMPERATURE, IGNORE_INDEX
from rabusseg.models.autocast import no_autocast
from rabusseg.models.resize import upsample_logits

# --------------------------------------------------------------------------- ARP


def _check_kernel_size(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")


def _at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 -> float32; float32 and float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _windows(padded: Tensor, h: int, w: int, kernel_size: int) -> list[Tensor]:
    """The kernel_size**2 shifted (B, C, h, w) views of a zero-padded map, row-major over the window."""
    return [padded[:, :, dy : dy + h, dx : dx + w] for dy in range(kernel_size) for dx in range(kernel_size)]


def adjacent_weights(features: Tensor, kernel_size: int = 3) -> Tensor:
    """Softmax weights of each pixel over its kernel_size**2 neighbours: (B, C, h, w) -> (B, k*k, h, w).

    a_ij = <f_i, f_j> / sqrt(C) with zero padding, so a neighbour outside the map has affinity
    0 and still takes part in the softmax (METHOD).  Computed by shifting the padded map rather
    than unfolding it: no k*k copy of the C-channel features is ever held.  Computed in float32
    (also under bf16 autocast: the map is small and the 9-way softmax is sensitive to rounding).
    """
    _check_kernel_size(kernel_size)
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    _, c, h, w = features.shape
    r = kernel_size // 2
    with no_autocast(features.device):
        features = _at_least_float32(features)
        padded = F.pad(features, (r, r, r, r))  # (B, C, h+2r, w+2r)
        affinity = torch.stack(
            [(features * nb).sum(dim=1) for nb in _windows(padded, h, w, kernel_size)], dim=1
        )  # (B, k*k, h, w)
        return (affinity / math.sqrt(c)).softmax(dim=1)


def adjacent_propagation(features: Tensor, logits: Tensor, kernel_size: int = 3) -> Tensor:
    """ARP: re-estimate each pixel's logits as the affinity-weighted mean of its neighbours'.

    features (B, C, h, w), logits (B, K, h, w) -> (B, K, h, w).  p'_i = sum_j w_ij p_j with
    ``w = adjacent_weights(features)``; padded neighbours carry logit 0.  This function does not
    detach anything: the caller passes detached logits so that the ARP loss trains only the
    projection and the encoder (METHOD).
    """
    if logits.dim() != 4 or features.dim() != 4 or logits.shape[0] != features.shape[0] or (
        logits.shape[-2:] != features.shape[-2:]
    ):
        raise ValueError(
            f"features (B, C, h, w) and logits (B, K, h, w) must share B, h, w; got "
            f"{tuple(features.shape)} and {tuple(logits.shape)}"
        )
    weights = adjacent_weights(features, kernel_size)  # (B, k*k, h, w), float32
    h, w = logits.shape[-2:]
    r = kernel_size // 2
    with no_autocast(logits.device):
        padded = F.pad(_at_least_float32(logits), (r, r, r, r))  # (B, K, h+2r, w+2r)
        neighbours = torch.stack(_windows(padded, h, w, kernel_size), dim=1)  # (B, k*k, K, h, w)
        return (weights.unsqueeze(2) * neighbours).sum(dim=1)  # (B, K, h, w)


# --------------------------------------------------------------- landmark selection


def _fixed_point(features: Tensor) -> tuple[Tensor, Tensor]:
    """Features as exact float64 integers plus the per-image factor that turns dot products into A.

    Each image's features are rounded to a grid of step max|f| / 2**b, with b chosen so that
    C * (2**b)**2 <= 2**53: every product and every partial sum of a dot product is then an exact
    float64 integer, whatever order a matmul kernel adds them in.  That is what makes the full
    matrix and the rows-only path agree bit for bit on any device (a float32 matmul does not:
    a 1 x C row and the C x N product round differently, which flips near-tied argmins).  The
    rounding (half a step, 2**-(b+1) of the image's largest feature; b = 22 for C = 256) moves A
    by about as much as float32 rounding would.
    (B, C, h, w) -> q (B, C, N) float64, factor (B,) float64 with A = factor * q^T q.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    c = features.shape[1]
    bits = (53 - math.ceil(math.log2(max(c, 1)))) // 2
    q = features.detach().flatten(2).to(torch.float64, copy=True)  # (B, C, N), our own copy
    amax = q.abs().amax(dim=(1, 2))  # (B,)
    step = torch.where(amax > 0, amax, torch.ones_like(amax)) / 2.0**bits  # (B,)
    q.div_(step[:, None, None]).round_()  # (B, C, N), integers with |q| <= 2**bits
    factor = step * step / math.sqrt(c)  # (B,)
    return q, factor


def global_affinity(features: Tensor) -> Tensor:
    """A = f^T f / sqrt(C) per image: (B, C, h, w) -> (B, N, N) float32, no gradient.

    For landmark selection only (never at inference).  Computed from the fixed-point features
    of :func:`_fixed_point` in float64 and returned as float32, so that
    :func:`select_landmarks_from_features` can reproduce any row exactly.
    """
    with torch.no_grad(), no_autocast(features.device):
        q, factor = _fixed_point(features)  # (B, C, N), (B,)
        affinity = torch.bmm(q.transpose(1, 2), q)  # (B, N, N), exact integers
        return affinity.mul_(factor[:, None, None]).float()


def first_landmarks(labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random lesion pixel per image: labels (B, h, w) -> flat indices (B,).

    Lesion means a label other than 0 (background) and 255 (ignore).  An image without one gets
    a uniformly random pixel.  Vectorised: iid uniform scores, non-candidates pushed to -1,
    argmax.  ``generator`` must live on ``labels.device``.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, h, w), got shape {tuple(labels.shape)}")
    flat = labels.flatten(1)  # (B, N)
    lesion = (flat != 0) & (flat != IGNORE_INDEX)  # (B, N)
    candidates = lesion | ~lesion.any(dim=1, keepdim=True)  # (B, N): lesion pixels, or all pixels
    scores = torch.rand(flat.shape, generator=generator, device=labels.device)  # (B, N)
    return scores.masked_fill(~candidates, -1.0).argmax(dim=1)  # (B,)


def _check_selection_args(first: Tensor, batch: int, n: int, num_landmarks: int) -> None:
    if first.dim() != 1 or first.shape[0] != batch or first.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"first must be integer indices of shape ({batch},), got {first.dtype} {tuple(first.shape)}")
    if not 1 <= num_landmarks <= n:
        raise ValueError(f"num_landmarks must be between 1 and the {n} pixels of the grid, got {num_landmarks}")


def _greedy_selection(rows: Callable[[Tensor], Tensor], first: Tensor, num_landmarks: int, n: int) -> Tensor:
    """METHOD's greedy rule, given ``rows(idx (B,)) -> A[idx, :] (B, N)``.

    S_k = sum of the first k landmarks' rows, R = max_k S_k (both (B, N)); the next landmark is
    the unchosen pixel of smallest R, the lowest index on ties (argmin returns the first).  One
    Python iteration per landmark, batch-vectorised, no host synchronisation.
    """
    first = first.long()
    batch = torch.arange(first.shape[0], device=first.device)  # (B,)
    landmarks = torch.empty(first.shape[0], num_landmarks, dtype=torch.long, device=first.device)  # (B, M)
    landmarks[:, 0] = first
    chosen = torch.zeros(first.shape[0], n, dtype=torch.bool, device=first.device)  # (B, N)
    chosen[batch, first] = True
    running = rows(first)  # (B, N): S_1
    worst = running  # (B, N): max over k of S_k
    for k in range(1, num_landmarks):
        nxt = worst.masked_fill(chosen, math.inf).argmin(dim=1)  # (B,)
        landmarks[:, k] = nxt
        chosen[batch, nxt] = True
        if k + 1 < num_landmarks:
            running = running + rows(nxt)
            worst = torch.maximum(worst, running)
    return landmarks


def select_landmarks(affinity: Tensor, first: Tensor, num_landmarks: int) -> Tensor:
    """Greedy landmark selection on a full affinity: (B, N, N), first (B,) -> (B, M) flat indices.

    Deterministic given ``first``; reads only the M rows of the chosen landmarks.
    """
    if affinity.dim() != 3 or affinity.shape[1] != affinity.shape[2]:
        raise ValueError(f"affinity must be (B, N, N), got shape {tuple(affinity.shape)}")
    b, n, _ = affinity.shape
    _check_selection_args(first, b, n, num_landmarks)
    batch = torch.arange(b, device=affinity.device)  # (B,)
    with torch.no_grad():
        return _greedy_selection(lambda idx: affinity[batch, idx], first, num_landmarks, n)


def select_landmarks_from_features(features: Tensor, first: Tensor, num_landmarks: int) -> Tensor:
    """Same indices as ``select_landmarks(global_affinity(features), first, M)`` without the
    N x N matrix: each step builds the one affinity row it reads (M/N of the work and memory).

    features (B, C, h, w), first (B,) -> (B, M).  Bit-identical to the full path because both
    multiply the same exact fixed-point integers (see :func:`_fixed_point`).
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    b, _, h, w = features.shape
    _check_selection_args(first, b, h * w, num_landmarks)
    batch = torch.arange(b, device=features.device)  # (B,)
    with torch.no_grad(), no_autocast(features.device):
        q, factor = _fixed_point(features)  # (B, C, N), (B,)
        pixels_first = q.transpose(1, 2)  # (B, N, C)

        def rows(idx: Tensor) -> Tensor:
            landmark = pixels_first[batch, idx].unsqueeze(1)  # (B, 1, C)
            row = torch.bmm(landmark, q).squeeze(1)  # (B, N), exact integers
            return row.mul_(factor[:, None]).float()

        return _greedy_selection(rows, first, num_landmarks, h * w)


LandmarkPath = Literal["full", "rows"]


def choose_landmark_path(h: int, w: int, device: torch.device | str) -> LandmarkPath:
    """What ``method.landmark_affinity: auto`` means: the rows-only path, everywhere.

    Measured by ``benchmarks/relation_modules.py --quick`` (CPU, one thread, B = 4, M = 64): the
    rows path is 1.1x faster on a 16 x 16 grid, 2.8x on 32 x 32 and 12.5x on 64 x 64 (a 512 crop),
    where it peaks at 67 MiB against 815 MiB for the full matrix; both give identical indices.
    The full path also needs float64 matmul throughput, which consumer GPUs lack.  The
    arguments stay so that a device-specific rule can follow a GPU measurement.
    """
    del h, w, device
    return "rows"


# --------------------------------------------------------------------------- CRA


def _landmark_features(x: Tensor, rows: Tensor, cols: Tensor, grid: tuple[int, int]) -> Tensor:
    """Gather x (B, C, H, W) at the landmark cells of the (h, w) grid -> (B, C, M), with gradient.

    A grid cell (r, c) maps to (f*r, f*c) on a map f times finer (f = 2 for x1 at output stride
    8: METHOD's (2r, 2c)), clamped to the map for odd sizes.
    """
    b, c, hh, ww = x.shape
    fy = max(1, (hh + grid[0] // 2) // grid[0])
    fx = max(1, (ww + grid[1] // 2) // grid[1])
    flat = (rows * fy).clamp_max(hh - 1) * ww + (cols * fx).clamp_max(ww - 1)  # (B, M)
    return x.flatten(2).gather(2, flat.unsqueeze(1).expand(b, c, flat.shape[1]))  # (B, C, M)


def _kl_mean(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(P || Q) summed elementwise as P (log P - log Q) and averaged over all elements."""
    return (log_p.exp() * (log_p - log_q)).mean()


def cross_layer_alignment_loss(features: Sequence[Tensor], landmarks: Tensor, *, similarity: CraSimilarity = "dot",
                               temperature: float = CRA_COSINE_TEMPERATURE) -> Tensor:  # fmt: skip
    """CRA loss (METHOD section 2, steps 3 to 5): features [x1, x2, x3, x4], landmarks (B, M) on x4's grid.

    Per layer l: P_l(i, n) = softmax over n of <x_l(i), x_l(landmark n)> in float32, where the
    pixel features of x1..x3 are resized (bilinear, align_corners=True) to x4's h x w grid and
    detached, and the landmark features (and all of x4) keep their gradient.
    Returns mean(KL(P2 || P1), KL(P3 || P2), KL(P4 || P3)), with KL(P || Q) = sum P (log P - log Q):
    the deeper layer's distribution is the target P of the shallower one.

    ``similarity="dot"`` is METHOD's raw dot product.  ``"cosine"`` divides the cosine of the two
    vectors by ``temperature`` instead: why, a raw dot product's scale grows with the channel count
    and the activations' size, so on MobileNetV2's 1280-channel x4 P_4 is one-hot in effect (mean
    largest probability 0.994 against 0.58 for x1, docs/choices.md) and the layers' distributions
    are not on one scale; cosine puts every layer on the same one.  It measured worse, though
    (cpu_small RA-BUSSeg, 1/8, three seeds: -0.031 validation Dice), so ``dot`` stays the default.
    """
    if len(features) != 4:
        raise ValueError(f"features must be the four maps [x1, x2, x3, x4], got {len(features)}")
    if similarity not in get_args(CraSimilarity):
        raise ValueError(f"similarity must be one of {get_args(CraSimilarity)}, got {similarity!r}")
    x4 = features[3]
    b, _, h, w = x4.shape
    if landmarks.dim() != 2 or landmarks.shape[0] != b:
        raise ValueError(f"landmarks must be ({b}, M) flat indices on the x4 grid, got {tuple(landmarks.shape)}")
    rows, cols = landmarks // w, landmarks % w  # (B, M) each
    log_probs = []
    with no_autocast(x4.device):
        for level, x in enumerate(features):
            x = x.float()
            pixels = x if level == 3 else upsample_logits(x.detach(), (h, w))  # (B, C, h, w)
            anchors = _landmark_features(x, rows, cols, (h, w))  # (B, C, M)
            if similarity == "cosine":  # the temperature goes on the M anchors, not the N x M logits
                pixels, anchors = F.normalize(pixels, dim=1), F.normalize(anchors, dim=1) / temperature
            logits = torch.bmm(pixels.flatten(2).transpose(1, 2), anchors)  # (B, N, M)
            log_probs.append(logits.log_softmax(dim=2))
        kls = [_kl_mean(log_probs[l + 1], log_probs[l]) for l in range(3)]
    return torch.stack(kls).mean()
