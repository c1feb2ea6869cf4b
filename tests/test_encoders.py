"""Encoder contract (x1..x4 widths and sizes) for every registered encoder, plus structure facts."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from rabusseg.errors import ConfigError
from rabusseg.models.encoders import ENCODERS, get_encoder
from rabusseg.models.encoders.resnet import BasicBlock, Bottleneck

SIZES = [(64, 64), (250, 333), (513, 512)]
CEIL_MODE_STEM = {"resnet50_deepstem"}


@lru_cache(maxsize=None)
def meta_encoder(name: str, output_stride: int) -> nn.Module:
    """Built once per test session on the meta device (shapes only, no memory, no init cost)."""
    with torch.device("meta"):
        return get_encoder(name, output_stride).eval()  # eval: BN shape checks are cheaper


def _half(n: int) -> int:
    """A stride-2 conv with 'same' padding (k3 p1, k7 p3): ceil(n / 2)."""
    return (n + 1) // 2


def expected_sizes(name: str, output_stride: int, n: int) -> list[int]:
    """Sizes of x1..x4 along one axis of an n-pixel input."""
    stem = _half(n)
    x1 = stem // 2 + 1 if name in CEIL_MODE_STEM else _half(stem)
    x2 = _half(x1)
    x3 = x2 if output_stride == 8 else _half(x2)
    return [x1, x2, x3, x3]


@pytest.mark.parametrize("name", sorted(ENCODERS))
class TestEncoderContract:
    """One base of contract tests that every encoder in the registry must pass."""

    @pytest.mark.parametrize("output_stride", [8, 16])
    def test_shapes(self, name: str, output_stride: int) -> None:
        # Shape arithmetic on the meta device: every size at no compute cost.  resnet101 shares
        # resnet50's arithmetic and is checked at the smallest size only.
        encoder = meta_encoder(name, output_stride)
        assert encoder.strides == ((4, 8, 8, 8) if output_stride == 8 else (4, 8, 16, 16))
        for size in SIZES[:1] if name == "resnet101" else SIZES:
            feats = encoder(torch.empty(2, 3, *size, device="meta"))
            assert len(feats) == 4
            assert tuple(f.shape[1] for f in feats) == encoder.out_channels
            hs, ws = expected_sizes(name, output_stride, size[0]), expected_sizes(name, output_stride, size[1])
            assert [tuple(f.shape[-2:]) for f in feats] == list(zip(hs, ws)), size

    def test_real_forward_matches_contract(self, name: str) -> None:
        encoder = get_encoder(name, 8).eval()
        with torch.no_grad():
            feats = encoder(torch.randn(1, 3, 50, 67))
        assert [tuple(f.shape[-2:]) for f in feats] == list(
            zip(expected_sizes(name, 8, 50), expected_sizes(name, 8, 67))
        )
        assert all(torch.isfinite(f).all() for f in feats)


def test_unknown_encoder_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="resnet50_deepstem") as info:
        get_encoder("resnet52")
    assert "mobilenet_v2" in str(info.value)


def test_bad_output_stride() -> None:
    with pytest.raises(ConfigError, match="output_stride"):
        get_encoder("resnet18", 32)


@pytest.mark.parametrize(
    "name, params",
    [
        # torchvision's counts minus the classifier (fc / classifier.1).
        ("resnet18", 11_689_512 - 513_000),
        ("resnet34", 21_797_672 - 513_000),
        ("resnet50", 25_557_032 - 2_049_000),
        ("resnet101", 44_549_160 - 2_049_000),
        ("mobilenet_v2", 3_504_872 - 1_281_000),
        # minus the last 1x1 conv (320 -> 1280) and its BatchNorm's weight and bias.
        ("mobilenet_v2_320", 3_504_872 - 1_281_000 - 320 * 1280 - 2 * 1280),
        # resnet50 - 7x7 stem (9408) + three 3x3 convs (1728 + 36864 + 73728) + two extra BNs
        # (128 + 256) + 128-wide input to layer1.0.conv1 and its downsample (4096 + 16384).
        ("resnet50_deepstem", 25_557_032 - 2_049_000 - 9408 + 112_320 + 384 + 20_480),
    ],
)
def test_parameter_counts(name: str, params: int) -> None:
    encoder = meta_encoder(name, 8)
    assert sum(p.numel() for p in encoder.parameters()) == params


def test_torchvision_key_layout() -> None:
    keys = set(meta_encoder("resnet50", 8).state_dict())
    # torchvision's resnet50 has 320 state-dict entries, two of them fc.weight / fc.bias.
    assert len(keys) == 318
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.bn3.num_batches_tracked"} <= keys
    deep = set(meta_encoder("resnet50_deepstem", 8).state_dict())
    assert {"conv1.0.weight", "conv1.1.weight", "conv1.3.weight", "conv1.4.weight", "conv1.6.weight"} <= deep
    assert "bn1.weight" in deep and "layer1.0.conv1.weight" in deep


@pytest.fixture(scope="module")
def deepstem() -> nn.Module:
    return get_encoder("resnet50_deepstem", 8)


def test_deepstem_structure(deepstem: nn.Module) -> None:
    assert [m.kernel_size for m in deepstem.conv1 if isinstance(m, nn.Conv2d)] == [(3, 3)] * 3
    assert [m.stride for m in deepstem.conv1 if isinstance(m, nn.Conv2d)] == [(2, 2), (1, 1), (1, 1)]
    assert deepstem.maxpool.ceil_mode is True
    assert [len(s) for s in (deepstem.layer1, deepstem.layer2, deepstem.layer3, deepstem.layer4)] == [3, 4, 6, 3]
    # Output stride 8: stage 3 dilation 2, stage 4 dilation 4 times multi-grid (2, 2, 4).
    assert {b.conv2.dilation for b in deepstem.layer3} == {(2, 2)}
    assert [b.conv2.dilation for b in deepstem.layer4] == [(8, 8), (8, 8), (16, 16)]
    assert all(b.conv2.stride == (1, 1) for b in [*deepstem.layer3, *deepstem.layer4])
    assert deepstem.layer2[0].conv2.stride == (2, 2)


def test_deepstem_output_stride_16_dilations() -> None:
    enc = meta_encoder("resnet50_deepstem", 16)
    assert enc.layer3[0].conv2.stride == (2, 2) and {b.conv2.dilation for b in enc.layer3} == {(1, 1)}
    assert [b.conv2.dilation for b in enc.layer4] == [(4, 4), (4, 4), (8, 8)]


def test_zero_init_last_bn_of_each_residual_branch(deepstem: nn.Module) -> None:
    blocks = [m for m in deepstem.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert all(torch.all(b.bn2.weight == 1) for b in blocks)
    basic = [m for m in get_encoder("resnet18").modules() if isinstance(m, BasicBlock)]
    assert basic and all(torch.count_nonzero(b.bn2.weight) == 0 for b in basic)


def test_mobilenet_dilation_schedule() -> None:
    os8, os16 = meta_encoder("mobilenet_v2", 8), meta_encoder("mobilenet_v2", 16)

    def depthwise(enc: nn.Module, i: int) -> nn.Conv2d:
        return next(m for m in enc.features[i].modules() if isinstance(m, nn.Conv2d) and m.groups > 1)

    assert depthwise(os8, 7).stride == (1, 1) and depthwise(os8, 7).dilation == (2, 2)
    assert depthwise(os8, 14).dilation == (4, 4) and depthwise(os8, 17).dilation == (4, 4)
    assert depthwise(os16, 7).stride == (2, 2) and depthwise(os16, 14).dilation == (2, 2)
