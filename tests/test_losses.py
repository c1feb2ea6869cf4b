"""Loss terms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rabusseg.losses import (
    arp_loss,
    cross_entropy,
    labels_to_grid,
    ohem_cross_entropy,
    pseudo_label_cross_entropy,
    soft_dice_loss,
    weighted_pseudo_label_cross_entropy,
)

# Four pixels in a row; true-class probabilities 0.9, 0.6, 0.3 and an ignored pixel.
TRUE_P = [0.9, 0.6, 0.3, 0.5]
LABELS = torch.tensor([[[0, 0, 1, 255]]])


def _logits() -> torch.Tensor:
    """(1, 2, 1, 4) logits whose softmax gives exactly TRUE_P for the labelled class."""
    cols = []
    for p, y in zip(TRUE_P, [0, 0, 1, 0]):
        probs = [p, 1 - p] if y == 0 else [1 - p, p]
        cols.append([math.log(q) for q in probs])
    return torch.tensor(cols).T.reshape(1, 2, 1, 4)


def _nll(*ps: float) -> float:
    return sum(-math.log(p) for p in ps) / len(ps)


@pytest.mark.parametrize(
    ("min_kept", "expected"),
    [
        (0, _nll(0.6, 0.3)),  # only the threshold: p <= 0.7
        (1, _nll(0.6, 0.3)),  # hardest is 0.3 < 0.7: threshold wins
        (3, _nll(0.9, 0.6, 0.3)),  # 3rd hardest is 0.9 > 0.7: all three kept
        (10, _nll(0.9, 0.6, 0.3)),  # fewer valid pixels than min_kept: all kept
    ],
)
def test_ohem_keeps_the_hand_computed_pixels(min_kept: int, expected: float) -> None:
    loss = ohem_cross_entropy(_logits(), LABELS, threshold=0.7, min_kept=min_kept)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_lower_threshold_uses_kth_probability() -> None:
    # threshold 0.2: the 2nd hardest (0.6) sets the cut-off, so 0.6 and 0.3 are kept.
    loss = ohem_cross_entropy(_logits(), LABELS, threshold=0.2, min_kept=2)
    assert loss.item() == pytest.approx(_nll(0.6, 0.3), rel=1e-5)


def test_ohem_upsamples_logits_and_handles_all_ignored() -> None:
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    labels = torch.full((2, 16, 16), 255)
    loss = ohem_cross_entropy(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_soft_dice_by_hand_and_without_the_ignored_pixel() -> None:
    # Lesion probabilities 0.1, 0.4, 0.3 (the ignored fourth: 0.5); one lesion pixel (the third).
    assert soft_dice_loss(_logits(), LABELS, smooth=0.0).item() == pytest.approx(1 - 2 * 0.3 / (0.8 + 1))
    assert soft_dice_loss(_logits(), LABELS).item() == pytest.approx(1 - (2 * 0.3 + 1) / (0.8 + 1 + 1))


def test_soft_dice_is_one_ratio_over_the_batch_and_rewards_the_lesion() -> None:
    lesion = torch.tensor([[[0.8, 0.2]], [[0.3, 0.1]]])  # (2, 1, 2) lesion probabilities
    logits = torch.stack([torch.zeros_like(lesion), torch.logit(lesion)], dim=1)  # softmax -> lesion
    labels = torch.tensor([[[1, 0]], [[0, 0]]])  # the second image has no lesion
    expected = 1 - 2 * 0.8 / (0.8 + 0.2 + 0.3 + 0.1 + 1)  # pooled sums, not a mean of two images
    assert soft_dice_loss(logits, labels, smooth=0.0).item() == pytest.approx(expected, abs=1e-6)
    logits = logits.clone().requires_grad_()
    soft_dice_loss(logits, labels).backward()
    assert logits.grad[0, 1, 0, 0] < 0 < logits.grad[1, 1, 0, 0]  # raise the lesion pixel, lower the rest


def test_cross_entropy_ignores_255() -> None:
    assert cross_entropy(_logits(), LABELS).item() == pytest.approx(_nll(0.9, 0.6, 0.3), rel=1e-5)
    assert arp_loss(_logits(), LABELS).item() == pytest.approx(_nll(0.9, 0.6, 0.3), rel=1e-5)


def test_pseudo_label_loss_is_scaled_by_all_over_valid() -> None:
    # 3 of 4 pixels valid: mean CE over the valid ones times 4/3.
    loss = pseudo_label_cross_entropy(_logits(), LABELS)
    assert loss.item() == pytest.approx(_nll(0.9, 0.6, 0.3) * 4 / 3, rel=1e-5)


def test_weighted_pseudo_label_loss_averages_over_valid_pixels() -> None:
    weights = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])
    loss = weighted_pseudo_label_cross_entropy(_logits(), LABELS, weights)
    assert loss.item() == pytest.approx((-math.log(0.9) - math.log(0.3)) / 3, rel=1e-5)


def test_labels_to_grid_is_nearest_and_drops_ignore() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 1
    labels[0, 4:, 4:] = 255
    grid = labels_to_grid(labels, (2, 2))
    assert grid.tolist() == [[[1, 0], [0, 0]]]
