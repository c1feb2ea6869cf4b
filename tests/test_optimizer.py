"""The training optimiser: SGD in torch's multi-tensor (foreach) form, equal to the per-parameter loop."""

from __future__ import annotations

import torch
from torch import nn

from rabusseg.config import config_from_dict
from rabusseg.engine.trainer import build_optimizer


class _TwoBranches(nn.Module):
    """``encoder`` and a ``proj`` that, like the ARP projection, first gets a gradient later."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 3)
        self.proj = nn.Linear(3, 2)

    def encoder_parameters(self):  # noqa: ANN201
        return self.encoder.parameters()

    def head_parameters(self):  # noqa: ANN201
        return self.proj.parameters()

    def loss(self, x: torch.Tensor, relations: bool) -> torch.Tensor:
        h = self.encoder(x)
        return (h**2).mean() + (self.proj(h).sum() if relations else 0.0)


def test_foreach_sgd_matches_the_per_parameter_loop_when_a_branch_joins_late() -> None:
    config = config_from_dict({"optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "head_lr_multiplier": 10}})
    torch.manual_seed(0)
    ours_model = _TwoBranches()
    plain_model = _TwoBranches()
    plain_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(config, ours_model)
    assert ours.defaults["foreach"] is True
    plain = torch.optim.SGD(
        [{"params": list(plain_model.encoder.parameters()), "lr": 0.1},
         {"params": list(plain_model.proj.parameters()), "lr": 1.0}],
        lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=False,
    )  # fmt: skip
    for group, scale in zip(ours.param_groups, (1.0, 10.0), strict=True):
        group["lr"] = 0.1 * scale
    x = torch.randn(5, 4)
    proj_start = ours_model.proj.weight.detach().clone()
    for step in range(4):
        for model, opt in ((ours_model, ours), (plain_model, plain)):
            opt.zero_grad(set_to_none=True)
            model.loss(x, relations=step >= 2).backward()  # proj has no gradient in the first two steps
            opt.step()
    for a, b in zip(ours_model.state_dict().values(), plain_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours_model.proj.weight, proj_start)  # the late branch did train


def test_adamw_option_matches_torchs_adamw_per_group_and_trains_a_late_branch() -> None:
    config = config_from_dict({"optim": {"name": "adamw", "lr": 1e-3, "momentum": 0.8, "beta2": 0.99,
                                         "weight_decay": 0.05, "head_lr_multiplier": 10}})  # fmt: skip
    torch.manual_seed(0)
    ours_model, plain_model = _TwoBranches(), _TwoBranches()
    plain_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(config, ours_model)
    assert isinstance(ours, torch.optim.AdamW)
    assert [g["lr_scale"] for g in ours.param_groups] == [1.0, 10]
    plain = torch.optim.AdamW(
        [{"params": list(plain_model.encoder.parameters()), "lr": 1e-3},
         {"params": list(plain_model.proj.parameters()), "lr": 1e-2}],
        betas=(0.8, 0.99), weight_decay=0.05, foreach=False,
    )  # fmt: skip
    for group, scale in zip(ours.param_groups, (1.0, 10.0), strict=True):
        group["lr"] = 1e-3 * scale
    x = torch.randn(5, 4)
    proj_start = ours_model.proj.weight.detach().clone()
    for step in range(4):
        for model, opt in ((ours_model, ours), (plain_model, plain)):
            opt.zero_grad(set_to_none=True)
            model.loss(x, relations=step >= 2).backward()
            opt.step()
    for a, b in zip(ours_model.state_dict().values(), plain_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # foreach vs loop: the same formula, rounding aside
    # Adam's first step moves every weight by about lr (its update is m / sqrt(v) ~ sign(g)); the late
    # branch took two such steps at the head's 10x rate.
    moved = (ours_model.proj.weight - proj_start).abs()
    assert moved.min() > 1e-2 and moved.max() < 2.5e-2
