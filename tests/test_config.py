from __future__ import annotations

from pathlib import Path

import pytest

from rabusseg.config import Config, apply_overrides, config_from_dict, load_config
from rabusseg.errors import ConfigError


def test_defaults_follow_the_paper() -> None:
    cfg = Config()
    assert cfg.optim.lr == 0.003 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert cfg.train.epochs == 200 and cfg.train.warmup_epochs == 10 and cfg.train.ema_decay == 0.99
    assert cfg.method.drop_percent == 80 and cfg.method.num_landmarks == 64
    assert cfg.model.encoder == "resnet50_deepstem" and cfg.model.output_stride == 8


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        config_from_dict({"train": {"learning_rate": 0.1}})


def test_negative_lr_is_named() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        config_from_dict({"optim": {"lr": -1}})


def test_warmup_must_be_shorter_than_training() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs"):
        config_from_dict({"train": {"epochs": 5, "warmup_epochs": 5}})


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 20\n")
    cfg = load_config(path, ["train.max_steps=7", "method.arp=false", "data.scale_range=[0.75, 1.5]"])
    assert cfg.train.epochs == 20 and cfg.train.max_steps == 7 and cfg.method.arp is False
    assert cfg.data.scale_range == (0.75, 1.5)


def test_override_into_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


METHOD_SETTINGS_YAML = """\
data: {unlabeled: 1_2/unlabeled}
train: {epochs: 20, warmup_epochs: 2, eval_every_epochs: 4}
method_settings:
  supervised: {train.epochs: 40, train.eval_every_epochs: 8}
  fixmatch: {method.fixmatch_threshold: 0.8}
"""


@pytest.mark.parametrize(
    ("overrides", "epochs", "every"),
    [
        (["method.name=supervised"], 40, 8),  # the method's own settings
        ([], 20, 4),  # the file's method (the default, ra_busseg) has none
        (["method.name=mean_teacher"], 20, 4),
        (["method.name=supervised", "train.epochs=7"], 7, 8),  # --set wins over the method's settings
        (["train.epochs=7", "method.name=supervised"], 7, 8),  # in any order
        (["method.name=fixmatch"], 20, 4),
    ],
)
def test_method_settings_follow_the_run_method(tmp_path: Path, overrides: list[str], epochs: int, every: int) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(METHOD_SETTINGS_YAML)
    cfg = load_config(path, overrides)
    assert (cfg.train.epochs, cfg.train.eval_every_epochs) == (epochs, every)
    assert cfg.method.fixmatch_threshold == (0.8 if cfg.method.name == "fixmatch" else 0.95)
    assert "method_settings" not in cfg.to_dict()  # a run's saved config holds what it ran with, resolved


def test_cpu_small_gives_the_supervised_method_twice_the_steps() -> None:
    """A supervised step costs half a semi-supervised one: the same CPU time buys 2560 steps (docs/choices.md)."""
    sup = load_config("cpu_small", ["method.name=supervised"])
    ra = load_config("cpu_small")
    assert ra.method.name == "ra_busseg" and ra.train.epochs == 20 and ra.train.steps_per_epoch == 64
    assert sup.train.epochs == 40 and sup.train.steps_per_epoch == 64 and sup.precise_bn_enabled
    assert load_config("cpu_small", ["method.name=mean_teacher"]).train.epochs == 20


def test_method_settings_name_unknown_methods_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method_settings:\n  supervized: {train.epochs: 40}\n")
    with pytest.raises(ConfigError, match=r"method_settings\.supervized: unknown method"):
        load_config(path)
    path.write_text("method_settings:\n  supervised: {train.epoch: 40}\n")
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        load_config(path, ["method.name=supervised"])
    path.write_text("method: ra_busseg\nmethod_settings:\n  supervised: {train.epochs: 40}\n")
    with pytest.raises(ConfigError, match="method"):  # a section written as a value: named, no crash
        load_config(path)
    path.write_text("method_settings:\n  supervised: 40\n")
    with pytest.raises(ConfigError, match="must map method names"):
        load_config(path)


def test_missing_config_lists_presets() -> None:
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(__file__).parents[1] / "rabusseg" / "configs").glob("*.yaml")))
def test_every_preset_validates(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.data.root and cfg.data.labeled and cfg.data.test == "test"
    assert cfg.data.crop_size % 8 == 0


def test_paper_preset_matches_method_section_3() -> None:
    cfg = load_config("busi_1-2")
    assert (cfg.model.encoder, cfg.model.output_stride, cfg.data.crop_size) == ("resnet50_deepstem", 8, 512)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.ema_decay) == (2, 200, 10, 0.99)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.poly_power) == (0.003, 0.9, 5e-4, 0.9)
    assert cfg.loss.ohem and cfg.method.name == "ra_busseg" and cfg.method.drop_percent == 80


def test_semi_supervised_methods_need_an_unlabelled_list() -> None:
    with pytest.raises(ConfigError, match=r"data\.unlabeled: method 'mean_teacher'"):
        config_from_dict({"method": {"name": "mean_teacher"}, "data": {"unlabeled": None}})
    assert config_from_dict({"method": {"name": "supervised"}, "data": {"unlabeled": None}}).data.unlabeled is None


def test_validation_list_must_not_be_the_test_list() -> None:
    with pytest.raises(ConfigError, match=r"data\.val"):
        config_from_dict({"data": {"val": "test", "test": "test"}})


def test_bad_enum_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"method\.arp_images"):
        config_from_dict({"method": {"arp_images": "some"}})


def test_paper_presets_keep_the_weak_view() -> None:
    for preset in ("busi_1-2", "busi_1-4", "busi_1-8", "busi_1-16", "udiat_1-2"):
        assert load_config(preset).method.strong_view is False, preset
