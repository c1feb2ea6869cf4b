"""The method-specific pieces of a step (rabusseg.engine.terms), by hand."""

from __future__ import annotations

import pytest
import torch

from rabusseg.config import Config, LossConfig, MethodConfig
from rabusseg.constants import IGNORE_INDEX
from rabusseg.engine.terms import (
    UnlabeledTargets,
    cutmix_targets,
    loss_weights,
    relation_terms,
    stream_slice,
    supervised_terms,
    take_rows,
    unlabeled_targets,
    unsupervised_term,
)
from rabusseg.losses import (
    cross_entropy,
    labels_to_grid,
    ohem_cross_entropy,
    pseudo_label_cross_entropy,
    soft_dice_loss,
)
from rabusseg.models.outputs import SegmentationOutput
from rabusseg.models.relation import cross_layer_alignment_loss, first_landmarks, select_landmarks_from_features


def _probs(lesion: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - lesion, lesion], dim=1)  # (B, 2, H, W)


def test_method_properties_name_what_each_method_computes() -> None:
    assert [MethodConfig(name=n).semi_supervised for n in ("supervised", "mean_teacher")] == [False, True]
    ra = MethodConfig(name="ra_busseg")
    assert ra.relations and ra.arp_loss and ra.cra_loss and ra.uses_teacher and not ra.confidence_filter
    assert not MethodConfig(name="ra_busseg", arp=False, cra=False).relations
    assert not MethodConfig(name="mean_teacher").relations  # the ARP/CRA switches belong to RA-BUSSeg
    fix = MethodConfig(name="fixmatch", strong_view=False)
    assert fix.confidence_filter and fix.uses_strong_view and not fix.uses_teacher


def test_padding_is_unlabelled_and_fixmatch_keeps_confident_pixels() -> None:
    lesion = torch.tensor([[[0.99, 0.6], [0.2, 0.01]]])
    labels = (lesion > 0.5).long()
    valid = torch.tensor([[[True, True], [True, False]]])
    fix = unlabeled_targets(_probs(lesion), labels, valid, MethodConfig(name="fixmatch", fixmatch_threshold=0.9), 0.0)
    assert fix.labels.tolist() == [[[1, 1], [0, IGNORE_INDEX]]]
    assert fix.confidence.tolist() == [[[1.0, 0.0], [0.0, 1.0]]]  # 0.6 and 0.8 are not confident
    ent = unlabeled_targets(_probs(lesion), labels, valid, MethodConfig(name="ra_busseg"), drop=1 / 3)
    assert ent.confidence is None
    assert ent.labels.tolist() == [[[1, IGNORE_INDEX], [0, IGNORE_INDEX]]]  # 1 of 3 valid pixels dropped: 0.6


def test_per_image_filtering_drops_a_share_of_each_image() -> None:
    lesion = torch.tensor([[[0.5, 0.5, 0.5, 0.5]], [[0.99, 0.98, 0.97, 0.6]]])  # image 0 is all uncertain
    labels, valid = (lesion > 0.5).long(), torch.ones_like(lesion, dtype=torch.bool)
    batch = unlabeled_targets(_probs(lesion), labels, valid, MethodConfig(filter_per_image=False), drop=0.5)
    per_image = unlabeled_targets(_probs(lesion), labels, valid, MethodConfig(filter_per_image=True), drop=0.5)
    assert (batch.labels == IGNORE_INDEX).sum(dim=(1, 2)).tolist() == [4, 0]  # the batch's 4 most uncertain
    assert (per_image.labels == IGNORE_INDEX).sum(dim=(1, 2)).tolist() == [2, 2]


def test_cutmix_moves_labels_and_confidence_with_the_image() -> None:
    labels = torch.tensor([[[1, 1]], [[0, 0]]])
    confidence = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])
    boxes = torch.tensor([[[True, False]], [[False, False]]])  # image 0 takes pixel 0 from image 1
    mixed = cutmix_targets(UnlabeledTargets(labels, confidence), boxes)
    assert mixed.labels.tolist() == [[[0, 1]], [[0, 0]]] and mixed.confidence.tolist() == [[[0.0, 1.0]], [[0.0, 0.0]]]


def test_unsupervised_terms() -> None:
    logits = torch.zeros(1, 2, 1, 4)  # p = 0.5 everywhere: CE = ln 2 on every pixel
    labels = torch.tensor([[[1, 0, IGNORE_INDEX, IGNORE_INDEX]]])
    loss, kept = unsupervised_term(logits, UnlabeledTargets(labels))
    assert loss == pytest.approx(pseudo_label_cross_entropy(logits, labels)) and loss == pytest.approx(2 * 0.6931, abs=1e-3)
    assert kept == pytest.approx(0.5)  # scaled by all / kept pixels = 2
    weighted, kept_w = unsupervised_term(logits, UnlabeledTargets(labels, torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])))
    assert weighted == pytest.approx(0.6931 / 2, abs=1e-3)  # one confident pixel of two valid
    assert kept_w == pytest.approx(0.25)


def test_stream_rows_and_loss_weights() -> None:
    assert stream_slice("labeled", 2, 3) == slice(0, 2) and stream_slice("unlabeled", 2, 3) == slice(2, 5)
    assert stream_slice("both", 2, 3) == slice(0, 5)
    cfg = Config.model_validate({"loss": {"unsup_weight": 2.0, "arp_weight": 0.25, "cra_weight": 0.1}})
    assert loss_weights(cfg, ramp=0.5) == {"sup": 1.0, "dice": 0.0, "unsup": 1.0, "arp": 0.25, "cra": 0.1}
    ramped = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"relation_rampup": True})})
    assert loss_weights(ramped, ramp=0.5) == {"sup": 1.0, "dice": 0.0, "unsup": 1.0, "arp": 0.125, "cra": 0.05}


def test_supervised_terms_add_the_dice_term_only_when_weighted() -> None:
    logits = torch.randn(2, 2, 4, 4)
    labels = torch.randint(0, 2, (2, 8, 8))
    plain = supervised_terms(logits, labels, LossConfig())
    assert set(plain) == {"sup"}
    assert torch.equal(plain["sup"], ohem_cross_entropy(logits, labels))
    both = supervised_terms(logits, labels, LossConfig(ohem=False, dice_weight=1.0))
    assert set(both) == {"sup", "dice"}
    assert torch.equal(both["sup"], cross_entropy(logits, labels))
    assert torch.equal(both["dice"], soft_dice_loss(logits, labels))


def test_take_rows_keeps_a_whole_batch_and_its_channels_last_gradient() -> None:
    """A slice's backward writes a contiguous gradient; the whole batch must stay a channels-last one."""
    x = torch.randn(4, 6, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert take_rows(x, slice(0, 4)) is x
    assert torch.equal(take_rows(x, slice(1, 3)), x[1:3])
    weight = torch.randn(4, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    (grad,) = torch.autograd.grad((take_rows(x, slice(0, 4)) * weight).sum(), x)  # as computed, not re-strided
    assert grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous()


def test_relation_terms_pass_the_cra_similarity_of_the_config() -> None:
    """``method.cra_similarity`` and ``cra_temperature`` reach the CRA loss (and ``dot`` stays METHOD's)."""
    g = torch.Generator().manual_seed(3)
    feats = tuple(torch.randn(2, c, s, s, generator=g) for c, s in ((4, 10), (5, 5), (6, 5), (7, 5)))
    proj = torch.randn(2, 8, 5, 5, generator=g)
    out = SegmentationOutput(pred=torch.randn(2, 2, 10, 10, generator=g), features=feats, proj=proj)  # type: ignore[arg-type]
    labels = torch.zeros(2, 20, 20, dtype=torch.long)
    labels[:, 4:12, 6:14] = 1
    first = first_landmarks(labels_to_grid(labels, (5, 5)), torch.Generator().manual_seed(0))  # as cra_loss draws it
    landmarks = select_landmarks_from_features(proj, first, 6)
    for similarity, temperature in (("dot", 0.1), ("cosine", 0.1), ("cosine", 0.3)):
        method = MethodConfig(name="ra_busseg", arp=False, num_landmarks=6, cra_similarity=similarity,
                              cra_temperature=temperature)  # fmt: skip
        terms = relation_terms(out, labels, 1, 1, method, generator=torch.Generator().manual_seed(0), affinity="rows")
        expected = cross_layer_alignment_loss(feats, landmarks, similarity=similarity, temperature=temperature)  # type: ignore[arg-type]
        torch.testing.assert_close(terms["cra"], expected)
    with pytest.raises(ValueError):
        MethodConfig(cra_temperature=0)
