"""Precise BatchNorm statistics: the pure function, the checkpoint copy, the CLI verb and the training option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rabusseg.checkpoint import load_checkpoint, save_checkpoint
from rabusseg.errors import CheckpointError, DataError, OutputExistsError
from rabusseg.models.batchnorm import recalibrate_batchnorm
from tests._tiny_checkpoint import save_tiny_checkpoint
from tests._train_helpers import make_tiny_dataset, tiny_config


class _DropThenNorm(nn.Module):
    """Dropout (p=0.5) before a 2-channel BatchNorm: statistics taken with dropout on would differ."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.drop(x))


def _batches() -> list[torch.Tensor]:
    # Two batches of 2 images of 1x2 pixels.  Channel 0 is constant within a batch (1, then 3);
    # channel 1 holds 0, 2 / 2, 4 (batch 1) and 10, 10 / 10, 10 (batch 2).
    b1 = torch.tensor([[[[1.0, 1.0]], [[0.0, 2.0]]], [[[1.0, 1.0]], [[2.0, 4.0]]]])
    b2 = torch.tensor([[[[3.0, 3.0]], [[10.0, 10.0]]], [[[3.0, 3.0]], [[10.0, 10.0]]]])
    return [b1, b2]


def test_statistics_are_the_equal_weight_average_of_the_batches_with_dropout_off() -> None:
    torch.manual_seed(0)
    net = _DropThenNorm().train()
    net.bn.running_mean.fill_(7.0)
    weight = net.bn.weight.detach().clone()
    assert recalibrate_batchnorm(net, _batches()) == 2
    # Means: channel 0 (1 + 3) / 2 = 2; channel 1 (2 + 10) / 2 = 6.
    assert torch.allclose(net.bn.running_mean, torch.tensor([2.0, 6.0]))
    # Unbiased variances per batch: channel 0 0 and 0; channel 1 var(0, 2, 2, 4) = 8/3 and 0.
    assert torch.allclose(net.bn.running_var, torch.tensor([0.0, 4.0 / 3.0]))
    assert torch.equal(net.bn.weight, weight)  # no learned weight moves
    assert net.training and net.drop.training and net.bn.training  # modes restored
    assert net.bn.momentum == 0.1


def test_a_failing_forward_leaves_the_statistics_as_they_were() -> None:
    net = _DropThenNorm().eval()
    net.bn.running_mean.fill_(7.0)

    def broken(model: nn.Module, x: torch.Tensor) -> None:
        model(x)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        recalibrate_batchnorm(net, _batches(), forward=broken)
    assert torch.equal(net.bn.running_mean, torch.full((2,), 7.0))
    assert not net.training and net.bn.momentum == 0.1
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(net, [])
    assert torch.equal(net.bn.running_mean, torch.full((2,), 7.0))


@pytest.mark.parametrize(("n", "batch", "sizes"), [(65, 16, [13] * 5), (17, 16, [9, 8]), (32, 16, [16, 16]),
                                                   (3, 2, [3]), (5, 1, [3, 2]), (2, 16, [2])])  # fmt: skip
def test_batches_are_even_and_never_a_single_image(n: int, batch: int, sizes: list[int]) -> None:
    from rabusseg.inference.recalibrate import batch_sizes

    assert batch_sizes(n, batch) == sizes
    with pytest.raises(DataError, match="at least 2 images"):
        batch_sizes(1, 16)


def test_checkpoint_copy_changes_only_the_statistics_and_never_its_input(tmp_path) -> None:  # noqa: ANN001
    from rabusseg.inference.recalibrate import recalibrate_checkpoint

    root = make_tiny_dataset(tmp_path / "data")
    source = save_tiny_checkpoint(tmp_path / "tiny.pt", teacher=True)
    before = source.read_bytes()
    out = tmp_path / "recal.pt"
    result = recalibrate_checkpoint(source, root, ["tiny/labeled", "tiny/unlabeled"], out, size=64)
    assert source.read_bytes() == before
    assert result.networks == ("student", "teacher") and result.size == 64
    old, new = load_checkpoint(source), load_checkpoint(out)
    for name in ("student", "teacher"):
        stats = [k for k in old[name] if k.endswith(("running_mean", "running_var"))]
        assert stats and all(not torch.equal(old[name][k], new[name][k]) for k in stats[:5])
        learned = [k for k in old[name] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert all(torch.equal(old[name][k], new[name][k]) for k in learned)
    assert new["precise_bn"]["images"] == result.images > 0
    with pytest.raises(OutputExistsError):
        recalibrate_checkpoint(source, root, ["tiny/labeled"], out)
    with pytest.raises(DataError, match="other than its input"):
        recalibrate_checkpoint(source, root, ["tiny/labeled"], source, overwrite=True)
    with pytest.raises(DataError, match="unknown split"):
        recalibrate_checkpoint(source, root, ["no/such"], tmp_path / "x.pt")
    with pytest.raises(DataError, match="fixed inference size"):
        recalibrate_checkpoint(source, root, [], tmp_path / "x.pt", size=None)
    # 3 images in batches of 2 would leave one alone, which the ASPP pooling branch cannot normalise.
    assert recalibrate_checkpoint(source, root, [], tmp_path / "odd.pt", max_images=3, batch_size=2).images == 3


def test_the_statistics_follow_the_inference_geometry(tmp_path) -> None:  # noqa: ANN001
    """The same images at another size give other statistics: the copy is made at the checkpoint's own."""
    from rabusseg.inference.recalibrate import recalibrate_checkpoint

    root = make_tiny_dataset(tmp_path / "data")
    source = save_tiny_checkpoint(tmp_path / "tiny.pt")
    small = recalibrate_checkpoint(source, root, [], tmp_path / "a.pt", size=32)
    large = recalibrate_checkpoint(source, root, [], tmp_path / "b.pt", size=96)
    assert small.images == large.images == 24  # no split: every image of the folder
    a, b = load_checkpoint(small.path)["student"], load_checkpoint(large.path)["student"]
    first_var = next(k for k in a if k.endswith("running_var"))
    assert not torch.allclose(a[first_var], b[first_var])


def test_the_default_subset_is_the_one_the_run_would_have_drawn(tmp_path) -> None:  # noqa: ANN001
    """``max_images`` draws with the checkpoint's ``train.seed`` unless told otherwise, as ``train.precise_bn``
    does: a post-hoc copy of a seed-5 run equals an explicit ``seed=5`` and differs from ``seed=0``."""
    from rabusseg.inference.recalibrate import recalibrate_checkpoint

    root = make_tiny_dataset(tmp_path / "data")
    source = save_tiny_checkpoint(tmp_path / "tiny.pt")
    payload = load_checkpoint(source)
    payload["config"]["train"]["seed"] = 5
    seeded = save_checkpoint(payload, tmp_path / "seed5.pt")
    runs = {name: recalibrate_checkpoint(seeded, root, [], tmp_path / f"{name}.pt", max_images=4, size=48, seed=seed)
            for name, seed in (("default", None), ("five", 5), ("zero", 0))}  # fmt: skip
    stats = {name: load_checkpoint(r.path) for name, r in runs.items()}
    assert stats["default"]["precise_bn"]["seed"] == 5
    var = next(k for k in stats["five"]["student"] if k.endswith("running_var"))
    assert torch.equal(stats["default"]["student"][var], stats["five"]["student"][var])
    assert not torch.allclose(stats["default"]["student"][var], stats["zero"]["student"][var])


def test_cli_verb_writes_the_copy(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from rabusseg.cli.app import app

    root = make_tiny_dataset(tmp_path / "data")
    source = save_tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "recal.pt"
    result = CliRunner().invoke(app, ["recalibrate", str(source), str(root), "--out", str(out), "--split",
                                      "tiny/labeled", "--max-images", "2", "--size", "48"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 images at 48 px" in " ".join(result.output.split())
    assert load_checkpoint(out)["precise_bn"]["images"] == 2


def test_resume_refuses_an_inference_copy_without_optimiser_state(tmp_path) -> None:  # noqa: ANN001
    from rabusseg.engine.state import restore_training_state

    class _Run:
        config = None

    payload = load_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt"))
    payload.pop("format"), payload.pop("format_version")
    path = save_checkpoint(payload, tmp_path / "copy.pt")
    from rabusseg.config import config_from_dict

    run = _Run()
    run.config = config_from_dict(payload["config"])  # type: ignore[assignment]
    run.info = type("Info", (), {"world_size": 1})()  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="no optimiser state"):
        restore_training_state(run, load_checkpoint(path), path)  # type: ignore[arg-type]


def test_precise_bn_images_exclude_validation_and_test_and_unlabelled_for_supervised() -> None:
    from rabusseg.engine.precise_bn import precise_bn_ids
    from rabusseg.engine.streams import SplitIds

    ids = SplitIds(folder=None, labeled=["a", "b", "v"], unlabeled=["c", "b", "t", "d"], val=["v"], test=["t"])  # type: ignore[arg-type]
    assert precise_bn_ids(ids, semi_supervised=True) == ["a", "b", "c", "d"]
    assert precise_bn_ids(ids, semi_supervised=False) == ["a", "b"]


@pytest.mark.slow
def test_training_with_precise_bn_ships_the_recalibrated_model(tmp_path, capfd) -> None:  # noqa: ANN001
    """last.pt equals the same run without the option, recalibrated afterwards on the same images."""
    from rabusseg.data.io import write_split
    from rabusseg.engine.precise_bn import precise_bn_ids
    from rabusseg.engine.streams import load_split_ids
    from rabusseg.engine.trainer import train
    from rabusseg.inference.recalibrate import recalibrate_checkpoint

    root = make_tiny_dataset(tmp_path / "data")
    plain_cfg = tiny_config(root, method={"name": "mean_teacher"}, data={"val": "tiny/val"})
    on_cfg = tiny_config(root, method={"name": "mean_teacher"}, data={"val": "tiny/val"},
                         train={"precise_bn": True, "precise_bn_images": None})  # fmt: skip
    plain = train(plain_cfg, tmp_path / "plain")
    on = train(on_cfg, tmp_path / "on")
    ids = precise_bn_ids(load_split_ids(on_cfg.data, need_unlabeled=True), semi_supervised=True)
    assert f"of the student from {len(ids)} training images at 64 px" in " ".join(capfd.readouterr().err.split())
    write_split(tmp_path / "pool.txt", ids)
    after = recalibrate_checkpoint(plain.last_checkpoint, root, [str(tmp_path / "pool.txt")], tmp_path / "after.pt")
    a, b = load_checkpoint(on.last_checkpoint), load_checkpoint(after.path)
    for key, value in b["student"].items():  # the evaluated network
        torch.testing.assert_close(a["student"][key], value, rtol=1e-5, atol=1e-6)
    raw = load_checkpoint(plain.last_checkpoint)
    variances = [k for k in raw["student"] if k.endswith("running_var")]
    assert any(not torch.allclose(raw["student"][k], b["student"][k]) for k in variances)
    for key, value in raw["teacher"].items():  # the teacher is left as training left it
        torch.testing.assert_close(a["teacher"][key], value, rtol=1e-5, atol=1e-6)
    # The final validation and the test evaluation saw the recalibrated model.
    assert on.summary["best_val"]["step"] is not None


def test_config_refuses_precise_bn_on_whole_images() -> None:
    from rabusseg.config import config_from_dict
    from rabusseg.errors import ConfigError

    with pytest.raises(ConfigError, match="train.precise_bn: needs a fixed inference size"):
        config_from_dict({"data": {"eval_size": None}, "train": {"precise_bn": True}})


@pytest.mark.parametrize(
    ("setting", "method", "enabled"),
    [("false", "supervised", False), ("true", "ra_busseg", True), ("supervised", "supervised", True),
     ("supervised", "ra_busseg", False), ("supervised", "mean_teacher", False)],
)  # fmt: skip
def test_precise_bn_supervised_applies_to_the_supervised_method_only(setting: str, method: str, enabled: bool) -> None:
    """``train.precise_bn: supervised`` (cpu_small): on for the baseline, off for every semi-supervised method."""
    from rabusseg.config import apply_overrides, config_from_dict

    data = apply_overrides({}, [f"train.precise_bn={setting}", f"method.name={method}", "data.unlabeled=u"])
    assert config_from_dict(data).precise_bn_enabled is enabled


def test_precise_bn_refuses_other_words_and_whole_images_only_when_it_applies() -> None:
    from rabusseg.config import config_from_dict
    from rabusseg.errors import ConfigError

    with pytest.raises(ConfigError, match="train.precise_bn"):
        config_from_dict({"train": {"precise_bn": "semi"}})
    # Off for RA-BUSSeg, so whole-image inference is allowed; on for the baseline, so it is not.
    config_from_dict({"data": {"eval_size": None, "unlabeled": "u"}, "train": {"precise_bn": "supervised"}})
    with pytest.raises(ConfigError, match="needs a fixed inference size"):
        config_from_dict({"data": {"eval_size": None}, "method": {"name": "supervised"},
                          "train": {"precise_bn": "supervised"}})  # fmt: skip
