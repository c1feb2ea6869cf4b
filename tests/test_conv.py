"""The exact rewrites of dilated convolutions give the plain convolution's outputs and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rabusseg.config import ModelConfig
from rabusseg.models import build_model
from rabusseg.models.conv import LIVE_TAPS_MAX_SHARE, Conv2d, conv2d, live_tap_share, set_conv_rewrites

CASES = [
    # (cin, cout, groups, kernel, dilation, h, w): which rewrite each one takes
    (960, 960, 960, 3, 2, 10, 10),  # depthwise, space to batch
    (48, 48, 48, 3, 2, 11, 9),  # depthwise, odd sizes: zero-padded to a multiple of d
    (32, 32, 32, 3, 4, 7, 13),  # depthwise, d > h/2
    (64, 16, 1, 3, 12, 10, 10),  # dense: centre tap only (d >= h and d >= w)
    (64, 16, 1, 3, 12, 10, 30),  # dense: centre row only
    (64, 16, 1, 3, 12, 30, 8),  # dense: centre column only
    (24, 24, 24, 5, 3, 2, 20),  # depthwise 5x5, rows pruned
    (64, 16, 1, 3, 6, 10, 10),  # dense, nothing to prune: per-tap weight gradient when channels-last
    (16, 8, 1, 3, 4, 5, 11),  # dense, odd sizes: a whole tap row reads padding, the columns partly
    (16, 8, 1, 3, 2, 9, 9),  # dense, most taps read the map: plain path
]


def _reference(conv: Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("cin", "cout", "groups", "kernel", "dilation", "h", "w"), CASES)
def test_rewrites_match_the_plain_convolution(cin, cout, groups, kernel, dilation, h, w, channels_last) -> None:
    torch.manual_seed(0)
    conv = conv2d(cin, cout, kernel, dilation=dilation, groups=groups, bias=True)
    assert isinstance(conv, Conv2d)
    x = torch.randn(3, cin, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref = x.clone().requires_grad_()
    x_fast = x.clone().requires_grad_()
    grad_out = torch.randn(3, cout, h, w)

    ref = _reference(conv, x_ref)
    (ref * grad_out).sum().backward()
    ref_grads = (x_ref.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
    conv.zero_grad()
    out = conv(x_fast)
    (out * grad_out).sum().backward()

    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_fast.grad, ref_grads[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, ref_grads[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.bias.grad, ref_grads[2], rtol=1e-4, atol=1e-4)


def test_pruned_taps_get_exactly_zero_gradient() -> None:
    """Off-centre taps only ever read padding: their gradient is 0 in both forms."""
    conv = conv2d(8, 4, 3, dilation=12)
    conv(torch.randn(2, 8, 10, 10)).sum().backward()
    grad = conv.weight.grad
    assert grad[:, :, 1, 1].abs().sum() > 0
    off_centre = grad.clone()
    off_centre[:, :, 1, 1] = 0
    assert torch.count_nonzero(off_centre) == 0


def test_the_expected_rewrite_is_chosen() -> None:
    """Guard against a silent fallback to the slow form on the shapes the CPU presets train on."""
    depthwise = conv2d(16, 16, 3, dilation=2, groups=16)
    dense = conv2d(16, 8, 3, dilation=12)
    assert depthwise.rewrite_for(10, 10) == "space_to_batch"
    assert dense.rewrite_for(10, 10) == "centre_taps"
    assert dense.rewrite_for(10, 13) == "centre_taps"  # rows only
    assert dense.rewrite_for(13, 13) == "live_taps_weight_grad"  # 15% of the (pixel, tap) pairs read the map
    assert dense.rewrite_for(40, 40) == "plain"  # 64%
    aspp_6 = conv2d(16, 8, 3, dilation=6)  # cpu_small's ASPP branch on its 10 x 10 grid
    assert aspp_6.rewrite_for(10, 10) == "live_taps_weight_grad"
    assert aspp_6.rewrite_for(40, 40) == "plain"
    assert depthwise.rewrite_for(1, 1) == "centre_taps"
    assert set_conv_rewrites(torch.nn.Sequential(depthwise, dense), False) == 2
    assert depthwise.rewrite_for(10, 10) == dense.rewrite_for(10, 10) == "plain"


def test_undilated_and_strided_convolutions_stay_plain() -> None:
    assert type(conv2d(8, 8, 3)) is torch.nn.Conv2d
    strided = conv2d(8, 8, 3, stride=2, dilation=2)
    x = torch.randn(1, 8, 9, 9)
    torch.testing.assert_close(strided(x), _reference(strided, x))


def test_trace_uses_the_plain_convolution() -> None:
    """A trace must not freeze a size-dependent rewrite: traced at 10 px, run at 40 px."""
    torch.manual_seed(0)
    conv = conv2d(4, 4, 3, dilation=12).eval()
    traced = torch.jit.trace(conv, torch.randn(1, 4, 10, 10))
    big = torch.randn(1, 4, 40, 40)
    torch.testing.assert_close(traced(big), _reference(conv, big))


def test_model_outputs_do_not_depend_on_the_switch() -> None:
    """cpu_small's network at its 160 px crop (10 x 10 grid): rewrites on and off agree."""
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="mobilenet_v2", output_stride=16, aspp_channels=16, decoder_channels=16,
                      low_level_channels=8, proj_channels=16)  # fmt: skip
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        fast = model(x).pred
        assert set_conv_rewrites(model, False) > 0
        plain = model(x).pred
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_depthwise_runs_in_float32_under_cpu_autocast() -> None:
    """A precision policy: bf16 for dense convolutions, float32 for depthwise ones (faster on oneDNN)."""
    torch.manual_seed(0)
    depthwise = conv2d(8, 8, 3, dilation=2, groups=8)
    dense = conv2d(8, 8, 3, dilation=2)
    x = torch.randn(2, 8, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_dw = depthwise(x.bfloat16())
        out_dense = dense(x)
    assert out_dw.dtype == torch.float32 and out_dense.dtype == torch.bfloat16
    torch.testing.assert_close(out_dw, _reference(depthwise, x.bfloat16().float()))


def test_live_tap_share_counts_the_taps_that_read_the_map() -> None:
    # Dilation 6 on 10 pixels: the centre tap reads all 10, each side tap 4 of them.
    assert live_tap_share(10, 3, 6) == pytest.approx((10 + 4 + 4) / 30)
    assert live_tap_share(10, 3, 12) == pytest.approx(10 / 30)
    assert live_tap_share(10, 1, 6) == 1.0
    assert live_tap_share(10, 3, 6) ** 2 <= LIVE_TAPS_MAX_SHARE < live_tap_share(16, 3, 4) ** 2


def test_live_taps_path_under_cpu_autocast_matches_the_plain_convolution() -> None:
    """bf16 autocast, channels-last: the per-tap weight gradient reaches the float32 weight."""
    torch.manual_seed(0)
    conv = conv2d(32, 8, 3, dilation=6, bias=True)
    x = torch.randn(2, 32, 10, 10).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 8, 10, 10)
    grads = []
    for rewrites in (True, False):
        set_conv_rewrites(conv, rewrites)
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(xi)
        assert out.dtype == torch.bfloat16
        (out.float() * grad_out).sum().backward()
        assert xi.grad.is_contiguous(memory_format=torch.channels_last)
        grads.append((out.float(), xi.grad.float(), conv.weight.grad.clone(), conv.bias.grad.clone()))
    # bf16 rounds each sum to ~3 significant digits, and the weight gradient sums 200 products (its
    # entries reach ~40), so the tolerance scales with each tensor's size: hosts without native
    # bf16 emulate it with a different summation order.
    for fast, plain in zip(*grads, strict=True):
        torch.testing.assert_close(fast, plain, rtol=2e-2, atol=1e-2 * plain.abs().max().item())
    assert grads[0][2].dtype == torch.float32
