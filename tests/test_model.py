"""SegmentationModel: output contract, training/inference paths, ARP gradient routing, builder."""

from __future__ import annotations

import logging
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from rabusseg.config import ModelConfig
from rabusseg.models import ENCODERS, SegmentationModel, SegmentationOutput, build_model, upsample_logits
from rabusseg.models.aspp import global_average_pool
from rabusseg.models.encoders import get_encoder
from rabusseg.models.relation import cross_layer_alignment_loss, first_landmarks, select_landmarks_from_features


@lru_cache(maxsize=None)
def meta_model(encoder: str, output_stride: int) -> SegmentationModel:
    with torch.device("meta"):  # shapes only; eval mode keeps meta BatchNorm cheap
        return SegmentationModel(get_encoder(encoder, output_stride)).eval()


@pytest.fixture(scope="module")
def small_model() -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(encoder="resnet18"))


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_output_contract_on_odd_sizes(encoder: str, output_stride: int) -> None:
    model = meta_model(encoder, output_stride)
    out = model(torch.empty(2, 3, 250, 333, device="meta"), relations=True)
    x1, _, _, x4 = out.features
    assert out.pred.shape == (2, 2, *x1.shape[-2:])
    assert out.arp_pred.shape == out.pred.shape
    assert out.proj.shape == (2, 256, *x4.shape[-2:])
    assert x1.shape[-2:] == (63, 84)  # ceil(250 / 4), ceil(333 / 4) for every stem
    assert x4.shape[-2:] == ((32, 42) if output_stride == 8 else (16, 21))


def test_train_step_runs_and_is_finite(small_model: SegmentationModel) -> None:
    model = small_model.train()
    model.zero_grad()
    x = torch.randn(2, 3, 64, 80)
    labels = torch.randint(0, 2, (2, 64, 80))
    out = model(x)
    assert isinstance(out, SegmentationOutput)
    assert out.pred.shape == (2, 2, 16, 20) and out.proj.shape == (2, 256, 8, 10)
    sup = F.cross_entropy(upsample_logits(out.pred, labels.shape[-2:]), labels)
    arp = F.cross_entropy(upsample_logits(out.arp_pred, labels.shape[-2:]), labels)
    small = F.interpolate(labels[:, None].float(), size=(8, 10), mode="nearest")[:, 0].long()
    landmarks = select_landmarks_from_features(out.proj, first_landmarks(small), 16)
    cra = cross_layer_alignment_loss(out.features, landmarks)
    (sup + arp + cra).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_arp_loss_trains_projection_and_encoder_not_classifier(small_model: SegmentationModel) -> None:
    model = small_model.train()
    model.zero_grad()
    out = model(torch.randn(2, 3, 64, 64))
    F.cross_entropy(out.arp_pred, torch.randint(0, 2, (2, 16, 16))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.proj.parameters())
    assert model.encoder.layer4[0].downsample[0].weight.grad.abs().sum() > 0
    assert model.encoder.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*model.decoder.parameters(), *model.aspp.parameters()])


def test_eval_mode_computes_no_relations(small_model: SegmentationModel) -> None:
    model = small_model.eval()
    calls = []
    handle = model.proj.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64))
            assert out.arp_pred is None and out.features is None and out.proj is None
            assert out.pred.shape == (1, 2, 16, 16)
            assert calls == []
            forced = model(torch.randn(1, 3, 64, 64), relations=True)
            assert forced.arp_pred is not None and calls == [1]
        model.train()
        assert model(torch.randn(2, 3, 64, 64), relations=False).proj is None
    finally:
        handle.remove()
        model.train()


def test_paper_model_forward_backward_real_numbers() -> None:
    """The paper network's numbers, not only shapes: the ARP output is the 3x3 propagation of the
    detached prediction on the projection's grid, and the loss reaches the stem."""
    from rabusseg.models.relation import adjacent_propagation

    torch.manual_seed(1)
    model = build_model(ModelConfig()).train()
    out = model(torch.randn(2, 3, 48, 48))
    assert out.pred.shape == (2, 2, 13, 13)  # ceil-mode stem: 48 -> 24 -> 13
    assert out.proj.shape == (2, 256, 7, 7)
    assert torch.isfinite(out.pred).all() and out.pred.std() > 0
    expected = upsample_logits(adjacent_propagation(out.proj, upsample_logits(out.pred.detach(), (7, 7))), (13, 13))
    torch.testing.assert_close(out.arp_pred, expected, rtol=1e-5, atol=1e-6)
    (out.pred.mean() + out.arp_pred.mean()).backward()
    stem = model.encoder.conv1[0].weight.grad
    assert torch.isfinite(stem).all() and stem.abs().sum() > 0


def test_real_forward_on_odd_size_mobilenet() -> None:
    model = build_model(ModelConfig(encoder="mobilenet_v2", output_stride=16)).eval()
    with torch.no_grad():
        pred = model(torch.randn(1, 3, 250, 333)).pred
    assert pred.shape == (1, 2, 63, 84)
    assert upsample_logits(pred, (250, 333)).shape == (1, 2, 250, 333)


def test_upsample_logits_align_corners_and_identity() -> None:
    logits = torch.arange(6.0).view(1, 1, 2, 3)
    up = upsample_logits(logits, (3, 5))
    assert up.shape == (1, 1, 3, 5)
    assert up[0, 0, 0, 0] == 0 and up[0, 0, -1, -1] == 5 and up[0, 0, 0, 2] == 1  # corners kept
    assert upsample_logits(logits, (2, 3)) is logits


def test_builder_uses_config_and_logs_random_init(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ModelConfig(encoder="mobilenet_v2", output_stride=16, num_classes=3, low_level_channels=48, proj_channels=64)
    with caplog.at_level(logging.INFO, logger="rabusseg"):
        model = build_model(cfg)
    assert "encoder mobilenet_v2 starts from random initialisation" in caplog.text
    assert model.aspp.rates == (6, 12, 18)
    assert model.decoder.low_level[0].out_channels == 48
    assert model.decoder.classifier.out_channels == 3
    assert model.proj[0][0].out_channels == 64 and model.proj[0][0].in_channels == 1280
    assert build_model(ModelConfig(encoder="resnet18")).aspp.rates == (12, 24, 36)
    own = {id(p) for p in model.encoder_parameters()} | {id(p) for p in model.head_parameters()}
    assert own == {id(p) for p in model.parameters()}


def test_model_rejects_bad_arguments() -> None:
    with torch.device("meta"):
        encoder = get_encoder("resnet18")
        with pytest.raises(ValueError, match="num_classes"):
            SegmentationModel(encoder, 1)
        with pytest.raises(ValueError, match="dropout"):
            SegmentationModel(encoder, dropout=1.0)


def test_untrained_model_starts_near_chance() -> None:
    """The classifier starts with small weights: initial logits near 0, cross-entropy near ln 2.

    He init with fan_out = 2 gave logits of std ~10 and an initial loss of ~2 on BUSI.
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="mobilenet_v2", output_stride=16, aspp_channels=32,
                                    decoder_channels=32, low_level_channels=16, proj_channels=32)).eval()  # fmt: skip
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64)).pred
    labels = torch.randint(0, 2, (2, *logits.shape[-2:]))
    assert logits.abs().max() < 0.5
    assert F.cross_entropy(logits, labels).item() == pytest.approx(0.6931, abs=0.05)


@pytest.mark.parametrize("std", [0.01, 1.0])
def test_classifier_init_std_is_honoured(std: float) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="mobilenet_v2", output_stride=16, aspp_channels=32, decoder_channels=256,
                                    low_level_channels=16, proj_channels=32, classifier_init_std=std))  # fmt: skip
    weight = model.decoder.classifier.weight  # (2, 256, 1, 1): 512 draws
    assert weight.std().item() == pytest.approx(std, rel=0.15)
    assert model.decoder.classifier.bias.abs().max().item() == 0.0


@pytest.mark.parametrize("channels_last", [True, False])
def test_global_average_pool_keeps_the_gradient_layout_of_its_input(channels_last: bool) -> None:
    """ASPP's image-level branch: the mean, and a gradient in x4's own memory format (a mixed
    layout made x4's gradient accumulation take torch's slow path)."""
    x = torch.randn(2, 5, 3, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    pooled = global_average_pool(x)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, 1))
    # autograd.grad, not backward: a leaf's .grad is re-strided to the leaf's layout on accumulation.
    (grad,) = torch.autograd.grad((pooled * torch.arange(10.0).view(2, 5, 1, 1)).sum(), x)
    torch.testing.assert_close(grad, torch.arange(10.0).view(2, 5, 1, 1).expand(2, 5, 3, 4) / 12)
    assert grad.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_separable_decoder_computes_depthwise_then_pointwise_at_a_fraction_of_the_multiply_adds() -> None:
    """``model.decoder_separable``: each fusing 3x3 conv becomes depthwise 3x3 -> 1x1 -> BN -> ReLU."""
    shape = dict(encoder="mobilenet_v2", output_stride=16, aspp_channels=64, decoder_channels=64,
                 low_level_channels=48, proj_channels=64)  # fmt: skip
    torch.manual_seed(0)
    dense = build_model(ModelConfig(**shape)).eval()
    torch.manual_seed(0)
    separable = build_model(ModelConfig(**shape, decoder_separable=True)).eval()
    block = separable.decoder.fuse[0]
    depthwise, pointwise, bn = block[0], block[1], block[2]
    assert (depthwise.groups, depthwise.in_channels, depthwise.kernel_size) == (112, 112, (3, 3))
    assert (pointwise.in_channels, pointwise.out_channels, pointwise.kernel_size) == (112, 64, (1, 1))
    x = torch.randn(2, 112, 9, 11)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        mid = F.conv2d(x, depthwise.weight, padding=1, groups=112)  # (2, 112, 9, 11)
        expected = F.relu(F.batch_norm(F.conv2d(mid, pointwise.weight), bn.running_mean, bn.running_var,
                                       bn.weight, bn.bias, eps=bn.eps))  # fmt: skip
        torch.testing.assert_close(block(x), expected)

    def fuse_multiply_adds(model: SegmentationModel) -> int:
        total = 0

        def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            nonlocal total
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw

        hooks = [m.register_forward_hook(count) for m in model.decoder.fuse.modules() if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            out = model(torch.randn(1, 3, 160, 160))
        for h in hooks:
            h.remove()
        assert out.pred.shape == (1, 2, 40, 40)
        return total

    # dense: 40*40*64*(112+64)*9 = 162 M; separable: 40*40*(112+64)*(9+64) = 20.6 M, an eighth
    assert fuse_multiply_adds(dense) == 40 * 40 * 64 * (112 + 64) * 9
    assert fuse_multiply_adds(separable) == 40 * 40 * ((112 + 64) * 9 + 64 * (112 + 64))
