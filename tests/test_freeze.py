"""Freezing the first feature levels of the encoder (``train.frozen_encoder_levels``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_helpers import make_tiny_dataset, tiny_config

from rabusseg.engine.distributed import DistInfo
from rabusseg.engine.loop import NO_CHECKPOINTS, fit
from rabusseg.engine.streams import load_split_ids
from rabusseg.engine.trainer import prepare_run
from rabusseg.models.encoders import get_encoder


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_layers_through_a_level_are_exactly_the_ones_that_level_depends_on(name: str, level: int) -> None:
    """The listed layers hold every parameter x_level's value depends on, and no other."""
    encoder = get_encoder(name, 16)
    features = encoder(torch.randn(2, 3, 64, 64))
    features[level - 1].square().sum().backward()
    needed = {id(p) for p in encoder.parameters() if p.grad is not None}
    listed = {id(p) for layer in encoder.layers_through(level) for p in layer.parameters()}
    assert listed == needed
    assert len(needed) < len(list(encoder.parameters()))


def test_only_levels_one_to_three_can_be_frozen() -> None:
    encoder = get_encoder("resnet18", 16)
    for level in (0, 4):
        with pytest.raises(ValueError, match="level must be 1, 2 or 3"):
            encoder.layers_through(level)


def test_frozen_layers_keep_their_weights_while_the_rest_trains(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "phantoms")
    cfg = tiny_config(data, train={"frozen_encoder_levels": 2, "max_steps": 2})
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    run = prepare_run(cfg, info, tmp_path / "run", load_split_ids(cfg.data, need_unlabeled=True))
    frozen = {id(p) for layer in run.student.encoder.layers_through(2) for p in layer.parameters()}
    before = {name: p.detach().clone() for name, p in run.student.named_parameters()}
    stats_before = run.student.encoder.bn1.running_mean.clone()  # the stem's BatchNorm, frozen

    in_optimizer = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert frozen and not frozen & in_optimizer
    assert any("x2 frozen at their random initial weights" in note for note in run.notes)  # tiny_config: no weights

    fit(run, NO_CHECKPOINTS)
    assert run.step == 2
    for name, p in run.student.named_parameters():
        if id(p) in frozen:
            assert torch.equal(p, before[name]) and p.grad is None, name
    trained = [n for n, p in run.student.named_parameters() if id(p) not in frozen and not torch.equal(p, before[n])]
    assert any(n.startswith("encoder.layer3") for n in trained) and any(n.startswith("decoder") for n in trained)
    # Batch statistics are still tracked in the frozen layers (only the weights stay).
    assert not torch.equal(run.student.encoder.bn1.running_mean, stats_before)
    # The EMA teacher follows: its copy of the frozen layers equals the student's.
    teacher = dict(run.teacher.named_parameters())
    for name, p in run.student.named_parameters():
        if id(p) in frozen:
            assert torch.equal(teacher[name], p), name
