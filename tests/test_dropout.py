"""The cheap-random-number dropout: torch's distribution and scaling, x's layout, torch's generator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rabusseg.models.dropout import Dropout, dropout, keep_mask_like


def test_keep_rate_is_one_minus_p_in_every_word_of_the_draws() -> None:
    torch.manual_seed(0)
    x = torch.empty(3 * 200_000)
    keep = keep_mask_like(x, 0.1)
    assert keep.dtype == x.dtype and set(keep.unique().tolist()) == {0.0, 1.0}
    # Each generator draw feeds three neighbouring elements, one per 16-bit word: every word is uniform.
    sd = (0.9 * 0.1 / 200_000) ** 0.5
    for part in keep.view(-1, 3).T:
        assert abs(part.mean().item() - 0.9) < 5 * sd
    # Independence: neighbours agree as often as two independent coin flips do (0.9^2 + 0.1^2).
    agree = (keep[1:] == keep[:-1]).float().mean().item()
    assert abs(agree - 0.82) < 0.005


def test_scaling_and_gradient_match_torch_dropout_given_the_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 8, 10, 10, requires_grad=True)
    out = dropout(x, 0.25, training=True)
    kept = out != 0
    assert 0.65 < kept.float().mean().item() < 0.85
    torch.testing.assert_close(out[kept], (x / 0.75)[kept])
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)


def test_layout_eval_and_p_zero() -> None:
    x = torch.randn(2, 16, 6, 5).contiguous(memory_format=torch.channels_last)
    mask = keep_mask_like(x, 0.5)
    assert mask.shape == x.shape and mask.stride() == x.stride() and mask.dtype == x.dtype
    assert dropout(x, 0.5, training=True).is_contiguous(memory_format=torch.channels_last)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and dropout(x, 0.0, training=True) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_torch_generator_makes_it_reproducible() -> None:
    x = torch.ones(3, 4, 5, 6)
    torch.manual_seed(7)
    a = dropout(x, 0.3, training=True)
    torch.manual_seed(7)
    b = dropout(x, 0.3, training=True)
    c = dropout(x, 0.3, training=True)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_the_network_uses_it_and_keeps_its_state_dict() -> None:
    from rabusseg.config import ModelConfig
    from rabusseg.models import build_model

    model = build_model(ModelConfig(encoder="resnet18", aspp_channels=8, decoder_channels=8, low_level_channels=8,
                                    proj_channels=8))  # fmt: skip
    layers = [m for m in model.modules() if isinstance(m, (nn.Dropout, Dropout))]
    assert layers and all(isinstance(m, Dropout) for m in layers)
    assert not any("dropout" in k.lower() for k in model.state_dict())


def test_bf16_input_matches_f_dropout_scaling() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 4, 8, 8).bfloat16()
    out = dropout(x, 0.1, training=True)
    kept = out != 0
    ref = F.dropout(x, 0.1, training=True)  # torch scales in the input dtype too
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out[kept], (x * torch.tensor(1 / 0.9, dtype=torch.bfloat16))[kept])
