"""predict_probabilities: input-size softmax, flip/scale TTA averaging, variance, mode restore."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rabusseg.inference.tta import entropy_map, predict_probabilities, predict_probabilities_with_variance


@dataclass
class _Out:
    pred: torch.Tensor


class QuarterNet(nn.Module):
    """1x1 conv then 4x4 average pooling: quarter-resolution logits like the real decoder."""

    def __init__(self, ramp: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 1)
        self.ramp = ramp

    def forward(self, x: torch.Tensor) -> _Out:
        logits = F.avg_pool2d(self.conv(x), 4)
        if self.ramp:  # breaks flip symmetry: logits grow to the right
            logits = logits + torch.linspace(-3, 3, logits.shape[-1])
        return _Out(pred=logits)


def test_plain_prediction_is_softmax_of_upsampled_logits() -> None:
    model = QuarterNet().eval()
    x = torch.randn(2, 3, 32, 48)
    probs = predict_probabilities(model, x)
    assert probs.shape == (2, 2, 32, 48)
    expected = torch.softmax(F.interpolate(model(x).pred, size=(32, 48), mode="bilinear", align_corners=True), 1)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 48))


def test_flip_tta_of_a_flip_symmetric_model_changes_nothing() -> None:
    model = QuarterNet()
    x = torch.randn(1, 3, 32, 32)
    plain = predict_probabilities(model, x)
    mean, var = predict_probabilities_with_variance(model, x, tta=True, scales=(1.0,))
    torch.testing.assert_close(mean, plain, atol=1e-5, rtol=0)
    assert float(var.max()) < 1e-6


def test_tta_views_disagree_on_an_asymmetric_model() -> None:
    model = QuarterNet(ramp=True)
    x = torch.randn(1, 3, 32, 32)
    _, var_plain = predict_probabilities_with_variance(model, x)
    mean, var = predict_probabilities_with_variance(model, x, tta=True)
    assert torch.count_nonzero(var_plain) == 0
    assert float(var.max()) > 1e-3
    torch.testing.assert_close(mean.sum(1), torch.ones(1, 32, 32))
    assert mean.shape == var.shape == (1, 2, 32, 32)


def test_model_mode_is_restored_and_plain_tensor_outputs_work() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2)).train()
    probs = predict_probabilities(model, torch.randn(1, 3, 16, 16), tta=True, scales=(0.5, 1.0))
    assert model.training
    assert probs.shape == (1, 2, 16, 16)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        predict_probabilities(QuarterNet(), torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="positive"):
        predict_probabilities(QuarterNet(), torch.randn(1, 3, 16, 16), tta=True, scales=(0.0,))


def test_entropy_is_normalised() -> None:
    p = torch.tensor([[0.5, 1.0], [0.5, 0.0]]).reshape(1, 2, 1, 2)
    torch.testing.assert_close(entropy_map(p), torch.tensor([[[1.0, 0.0]]]), atol=1e-6, rtol=0)
