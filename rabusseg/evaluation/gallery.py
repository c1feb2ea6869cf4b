"""Keep the few best and worst predicted masks seen during an evaluation, for the report gallery.

Holding every predicted mask of a split would cost memory proportional to the split; the gallery
only ever shows ``k`` cases each way, so it keeps a bounded set while the images stream past.
Images with no lesion and no prediction (``both_empty``) score a trivial Dice of 1 and are not
offered: they would crowd out the informative best cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GalleryCase:
    """One image's predicted mask at its original size and its Dice."""

    image_id: str
    dice: float
    pred: np.ndarray


class GalleryCases:
    """The ``k`` highest- and ``k`` lowest-Dice cases offered so far (ties keep the earlier image)."""

    def __init__(self, k: int = 4) -> None:
        if k < 1:
            raise ValueError(f"gallery size must be >= 1, got {k}")
        self.k = k
        self.best: list[GalleryCase] = []
        self.worst: list[GalleryCase] = []

    def offer(self, image_id: str, dice: float, pred: np.ndarray, empty_case: str = "none") -> None:
        """Consider one image; the mask is copied only when it is kept."""
        if empty_case == "both_empty" or not math.isfinite(dice):
            return
        keep_best = len(self.best) < self.k or dice > self.best[-1].dice
        keep_worst = len(self.worst) < self.k or dice < self.worst[-1].dice
        if not (keep_best or keep_worst):
            return
        case = GalleryCase(image_id, float(dice), np.array(pred, dtype=bool, copy=True))
        if keep_best:
            self.best = sorted([*self.best, case], key=lambda c: -c.dice)[: self.k]
        if keep_worst:
            self.worst = sorted([*self.worst, case], key=lambda c: c.dice)[: self.k]
