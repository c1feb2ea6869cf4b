"""Pure helpers of the training loop: schedule, EMA, entropy filtering, CutMix, run dirs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rabusseg.engine.augment import cutmix, cutmix_boxes
from rabusseg.engine.ema import ema_decay, ema_update
from rabusseg.engine.pseudo_labels import (
    confidence_mask,
    drop_fraction,
    entropy_filter,
    keep_ratio,
    pixel_entropy,
    pseudo_labels,
    top_k_mask,
)
from rabusseg.engine.run_dir import prepare_run_dir
from rabusseg.engine.schedule import poly_lr
from rabusseg.errors import OutputExistsError, RabussegError


def test_poly_lr_values() -> None:
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100, power=1.0) == pytest.approx(0.005)
    assert poly_lr(0.003, 25, 100, power=0.9) == pytest.approx(0.003 * 0.75**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    assert poly_lr(0.01, 150, 100) == 0.0  # past the end: clamped, never negative


def test_ema_decay_rule() -> None:
    assert ema_decay(0) == 0.0  # first update copies the student
    assert ema_decay(1) == 0.5
    assert ema_decay(9) == pytest.approx(0.9)
    assert ema_decay(10_000) == 0.99


def test_ema_update_averages_parameters_and_copies_buffers() -> None:
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(3.0)
        student.running_mean.fill_(5.0)
        teacher.running_mean.fill_(-5.0)
        student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full((3,), 0.75 * 3.0 + 0.25 * 1.0))
    assert torch.equal(teacher.running_mean, student.running_mean)
    assert teacher.num_batches_tracked.item() == 7
    assert student.weight.eq(1.0).all()  # the student is untouched


def test_drop_fraction_schedule() -> None:
    assert drop_fraction(0, 200, 80) == pytest.approx(0.20)
    assert drop_fraction(100, 200, 80) == pytest.approx(0.10)
    assert drop_fraction(200, 200, 80) == 0.0
    assert drop_fraction(10, 200, 100) == 0.0


def _random_probs(b: int = 3, h: int = 10, w: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 2, h, w, generator=g) * 3).softmax(dim=1)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.55])
def test_entropy_filter_drops_exactly_the_most_uncertain_pixels(fraction: float) -> None:
    probs = _random_probs()
    _, labels = pseudo_labels(probs.log(), probs.shape[-2:])
    filtered = entropy_filter(probs, labels, fraction)
    n = labels.numel()
    dropped = filtered == 255
    assert int(dropped.sum()) == round(fraction * n)
    entropy = pixel_entropy(probs)
    if 0 < fraction:
        assert entropy[dropped].min() >= entropy[~dropped].max()  # the most uncertain ones
    assert torch.equal(filtered[~dropped], labels[~dropped])  # the others keep their label
    assert keep_ratio(filtered).item() == pytest.approx(1 - round(fraction * n) / n)


def test_entropy_filter_per_image_and_existing_ignore() -> None:
    probs = _random_probs(b=2, h=8, w=8)
    labels = probs.argmax(1)
    labels[0, :2] = 255  # 16 padding pixels in image 0: not counted, stay ignored
    filtered = entropy_filter(probs, labels, 0.25, per_image=True)
    assert (filtered == 255).sum(dim=(1, 2)).tolist() == [16 + 12, 16]
    assert (filtered[0, :2] == 255).all()


def test_entropy_filter_per_class_keeps_the_uncertain_lesion() -> None:
    """Ranked together, three of the five lesion pixels (less certain than most background) are
    dropped; ranked per class, each class loses its own most uncertain 20%."""
    lesion = torch.tensor([[[0.05, 0.10, 0.20, 0.30, 0.60, 0.70, 0.95, 0.99, 0.02, 0.5001]]])
    lesion = torch.cat([lesion, torch.full((1, 1, 10), 0.001)], dim=1)  # a confident background row
    probs = torch.stack([1 - lesion, lesion], dim=1)  # (1, 2, 2, 10)
    labels = (lesion > 0.5).long()
    together = entropy_filter(probs, labels, 0.2)  # 4 of 20 pixels, the least certain of all
    assert (together == 255).nonzero()[:, 2].tolist() == [3, 4, 5, 9]
    per_class = entropy_filter(probs, labels, 0.2, per_class=True)  # 3 of 15 background, 1 of 5 lesion
    assert (per_class == 255).nonzero()[:, 2].tolist() == [1, 2, 3, 9]  # background 0.1, 0.2, 0.3; lesion 0.5001
    assert (per_class == 1).sum() == 4 and (together == 1).sum() == 2  # lesion pixels that keep their label


def test_entropy_filter_per_class_and_per_image_counts() -> None:
    probs = _random_probs(b=2, h=8, w=8)
    labels = probs.argmax(1)
    labels[0, :2] = 255  # padding: neither counted nor dropped
    filtered = entropy_filter(probs, labels, 0.25, per_image=True, per_class=True)
    entropy = pixel_entropy(probs)
    for b in range(2):
        for c in range(probs.shape[1]):
            members = labels[b] == c
            dropped = members & (filtered[b] == 255)
            assert int(dropped.sum()) == round(0.25 * int(members.sum()))
            if dropped.any() and (members & ~dropped).any():
                assert entropy[b][dropped].min() >= entropy[b][members & ~dropped].max()
    assert (filtered[0, :2] == 255).all()


def _top_k_by_sort(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The definition: the first k of a stable descending argsort."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return ranks < k.unsqueeze(1)


@pytest.mark.parametrize("seed", range(6))
def test_top_k_mask_is_the_stable_sort_with_ties_infinities_and_signed_zeros(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    groups, n = 3, 97
    scores = torch.round(torch.randn(groups, n, generator=g) * 2) / 2  # many ties
    scores[torch.rand(groups, n, generator=g) < 0.2] = -torch.inf  # padding
    scores[:, :10] = 0.0
    scores[:, 5:10] = -0.0  # entropy of a one-hot pixel; a sort ties it with +0.0
    scores[0, -3:] = torch.inf
    k = torch.randint(0, n + 1, (groups,), generator=g).float()
    k[0] = 0
    assert torch.equal(top_k_mask(scores, k), _top_k_by_sort(scores, k.long()))


def test_top_k_mask_breaks_ties_by_position() -> None:
    scores = torch.tensor([[1.0, 3.0, 1.0, 1.0, 2.0]])
    assert top_k_mask(scores, torch.tensor([3.0])).tolist() == [[True, True, False, False, True]]


def test_confidence_mask() -> None:
    probs = torch.tensor([0.96, 0.5, 0.02]).view(1, 1, 1, 3)
    probs = torch.cat([probs, 1 - probs], dim=1)
    assert confidence_mask(probs, 0.95).tolist() == [[[1.0, 0.0, 1.0]]]


def test_cutmix_mixes_images_and_labels_with_the_same_box() -> None:
    g = torch.Generator().manual_seed(3)
    boxes = cutmix_boxes(4, (16, 20), 1.0, g)
    assert boxes.shape == (4, 16, 20) and boxes.any(dim=(1, 2)).all()
    img_a, img_b = torch.zeros(4, 3, 16, 20), torch.ones(4, 3, 16, 20)
    lab_a, lab_b = torch.zeros(4, 16, 20, dtype=torch.long), torch.ones(4, 16, 20, dtype=torch.long)
    img, lab = cutmix(img_a, img_b, boxes), cutmix(lab_a, lab_b, boxes)
    assert torch.equal(img[:, 0] == 1, boxes) and torch.equal(img[:, 2] == 1, boxes)
    assert torch.equal(lab == 1, boxes)
    # each box is one axis-aligned rectangle
    for box in boxes:
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert box.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert not cutmix_boxes(4, (16, 20), 0.0, g).any()


def test_run_dir_refuses_non_empty_and_moves_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert prepare_run_dir(run).path.is_dir()
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(OutputExistsError, match="--resume"):
        prepare_run_dir(run)
    with pytest.raises(RabussegError, match="last.pt"):
        prepare_run_dir(run, resume=True)
    state = prepare_run_dir(run, overwrite=True)
    assert state.moved_aside is not None and (state.moved_aside / "metrics.jsonl").is_file()
    assert run.is_dir() and not any(run.iterdir())
    with pytest.raises(RabussegError, match="contradict"):
        prepare_run_dir(run, resume=True, overwrite=True)


def test_rampup_shape() -> None:
    from rabusseg.engine.schedule import rampup

    assert rampup(0, 100) == pytest.approx(math.exp(-5)) and rampup(100, 100) == 1.0 and rampup(500, 100) == 1.0
    assert rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert rampup(-3, 100) == pytest.approx(math.exp(-5)) and rampup(7, 0) == 1.0


def test_concat_outputs_is_one_batch() -> None:
    from rabusseg.models.outputs import SegmentationOutput, concat_outputs

    a = SegmentationOutput(pred=torch.zeros(2, 2, 4, 4), features=tuple(torch.zeros(2, c, 2, 2) for c in (1, 2, 3, 4)))
    b = SegmentationOutput(pred=torch.ones(3, 2, 4, 4), features=tuple(torch.ones(3, c, 2, 2) for c in (1, 2, 3, 4)))
    out = concat_outputs([a, b])
    assert out.pred.shape == (5, 2, 4, 4) and out.pred[2:].eq(1).all() and out.arp_pred is None and out.proj is None
    assert [f.shape[:2] for f in out.features] == [(5, 1), (5, 2), (5, 3), (5, 4)]
