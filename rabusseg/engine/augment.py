"""CutMix for unlabelled batches, on the device (the strong view's last step).

Intensity jitter and blur come from the data pipeline (``image_strong``, pixel-aligned with the
weak crop); CutMix pastes a box of another image of the batch, in the image and in its
pseudo-labels alike.  Randomness comes from an explicit ``torch.Generator`` seeded by
(seed, step, rank), so a resumed run draws the same boxes.
"""

from __future__ import annotations

import torch


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def cutmix_boxes(
    batch: int,
    size: tuple[int, int],
    prob: float,
    generator: torch.Generator,
    *,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One random box per image (with probability ``prob``, else empty): bool (B, H, W).

    Box area is a uniform share of the image in ``area`` and its aspect ratio uniform in
    ``ratio`` (the UniMatch/FixMatch-seg recipe); the box lies fully inside the image.
    """
    h, w = size
    applied = torch.rand(batch, generator=generator) < prob
    share = _uniform(generator, batch, *area) * h * w
    aspect = _uniform(generator, batch, *ratio)
    box_w = torch.sqrt(share / aspect).clamp(max=w).floor()
    box_h = torch.sqrt(share * aspect).clamp(max=h).floor()
    x0 = (torch.rand(batch, generator=generator) * (w - box_w + 1)).floor()
    y0 = (torch.rand(batch, generator=generator) * (h - box_h + 1)).floor()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= y0.view(-1, 1, 1)) & (rows < (y0 + box_h).view(-1, 1, 1))
        & (cols >= x0.view(-1, 1, 1)) & (cols < (x0 + box_w).view(-1, 1, 1))
    )
    return (inside & applied.view(-1, 1, 1)).to(device)


def cutmix(target: torch.Tensor, source: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Paste ``source`` into ``target`` inside ``boxes`` (bool (B, H, W)); images (B, C, H, W) or
    label-like maps (B, H, W).  Apply the same boxes to images, labels and weights."""
    mask = boxes.unsqueeze(1) if target.dim() == 4 else boxes
    return torch.where(mask, source, target)
