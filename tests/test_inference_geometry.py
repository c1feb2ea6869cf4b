"""Inference size and resize mode: taken from the checkpoint by default, aspect-kept inputs cropped back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_checkpoint import BrightnessNet, save_tiny_checkpoint

from rabusseg.checkpoint import inference_geometry, inference_tta, load_checkpoint, save_checkpoint
from rabusseg.data.transforms import eval_input
from rabusseg.errors import CheckpointError
from rabusseg.inference.segmenter import BaseSegmenter, Segmenter


def _with_eval(path: Path, size: int | None, resize: str | None) -> Path:
    """A tiny checkpoint whose run evaluated at ``size`` / ``resize`` (None: key absent, as before)."""
    save_tiny_checkpoint(path)
    payload = load_checkpoint(path)
    payload["config"]["data"]["eval_size"] = size
    if resize is None:
        payload["config"]["data"].pop("eval_resize", None)
    else:
        payload["config"]["data"]["eval_resize"] = resize
    return save_checkpoint(payload, path)


def test_geometry_comes_from_the_checkpoint_unless_given(tmp_path: Path) -> None:
    payload = load_checkpoint(_with_eval(tmp_path / "a.pt", 96, "longest"))
    assert inference_geometry(payload) == (96, "longest")
    assert inference_geometry(payload, 64) == (64, "longest")
    assert inference_geometry(payload, None, "square") == (None, "square")
    old = load_checkpoint(_with_eval(tmp_path / "old.pt", 192, None))
    assert inference_geometry(old) == (192, "square")  # written before eval_resize existed
    with pytest.raises(CheckpointError, match="at least 8"):
        inference_geometry(payload, 4)


def test_segmenter_and_cli_default_to_the_checkpoint_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rabusseg.cli import main
    from rabusseg.data.phantoms import synthesize_dataset

    ckpt = _with_eval(tmp_path / "c.pt", 72, "longest")
    seg = Segmenter.from_checkpoint(ckpt)
    assert (seg.size, seg.resize) == (72, "longest")
    assert Segmenter.from_checkpoint(ckpt, size=None).size is None
    data = tmp_path / "ds"
    synthesize_dataset(data, n=4, seed=0, size=(64, 96), test_fraction=0.5)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(ckpt), str(data), "--out", str(tmp_path / "ev")])
    assert exit_info.value.code == 0
    context = json.loads((tmp_path / "ev" / "summary.json").read_text())["context"]
    assert (context["size"], context["resize"]) == (72, "longest")
    with pytest.raises(SystemExit):
        main(["evaluate", str(ckpt), str(data), "--out", str(tmp_path / "ev2"), "--size", "48", "--resize", "square"])
    context = json.loads((tmp_path / "ev2" / "summary.json").read_text())["context"]
    assert (context["size"], context["resize"]) == (48, "square")


def _with_tta(path: Path, tta: bool | None) -> Path:
    """A tiny checkpoint whose run evaluated with TTA on / off (None: key absent, as before)."""
    save_tiny_checkpoint(path)
    payload = load_checkpoint(path)
    payload["config"]["train"].pop("eval_tta", None)
    if tta is not None:
        payload["config"]["train"]["eval_tta"] = tta
    return save_checkpoint(payload, path)


def test_tta_comes_from_the_checkpoint_unless_given(tmp_path: Path) -> None:
    on, off, old = (load_checkpoint(_with_tta(tmp_path / f"{name}.pt", tta))
                    for name, tta in (("on", True), ("off", False), ("old", None)))  # fmt: skip
    assert (inference_tta(on), inference_tta(off), inference_tta(old)) == (True, False, False)
    assert (inference_tta(on, False), inference_tta(old, True)) == (False, True)
    with pytest.raises(CheckpointError, match="tta"):
        inference_tta(on, "yes")
    assert Segmenter.from_checkpoint(tmp_path / "on.pt").tta is True
    assert Segmenter.from_checkpoint(tmp_path / "on.pt", tta=False).tta is False
    assert Segmenter.from_checkpoint(tmp_path / "old.pt").tta is False


def test_cli_evaluate_and_predict_follow_the_checkpoint_tta(tmp_path: Path) -> None:
    from PIL import Image

    from rabusseg.cli import main
    from rabusseg.data.phantoms import synthesize_dataset

    ckpt = _with_tta(tmp_path / "tta.pt", True)
    data = tmp_path / "ds"
    synthesize_dataset(data, n=4, seed=0, size=(64, 96), test_fraction=0.5)
    for flags, expected in (([], True), (["--no-tta"], False)):
        out = tmp_path / f"ev{len(flags)}"
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", str(ckpt), str(data), "--out", str(out), *flags])
        assert exit_info.value.code == 0
        assert json.loads((out / "summary.json").read_text())["context"]["tta"] is expected
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52), dtype=np.uint8)).save(image)
    for flags, variance in (([], True), (["--no-tta"], False)):
        out = tmp_path / f"pred{len(flags)}"
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", str(ckpt), str(image), "--out", str(out), "--uncertainty", *flags])
        assert exit_info.value.code == 0
        assert (out / "scan_variance.png").is_file() is variance  # the TTA variance map exists only with TTA


def test_eval_input_keeps_the_aspect_and_pads_with_zeros() -> None:
    image = np.full((40, 100, 3), 200, np.uint8)
    padded, valid = eval_input(image, 50, "longest")
    assert padded.shape == (50, 50, 3) and valid == (20, 50)
    assert (padded[:20] == 200).all() and (padded[20:] == 0).all()
    square, valid = eval_input(image, 50, "square")
    assert square.shape == (50, 50, 3) and valid == (50, 50) and (square == 200).all()
    whole, valid = eval_input(image, None, "longest")
    assert whole is image and valid == (40, 100)
    with pytest.raises(ValueError, match="eval resize"):
        eval_input(image, 50, "stretch")


class _Padding(BaseSegmenter):
    """A 'network' that calls lesion exactly where the input is the zero padding (normalised black)."""

    def _probabilities(self, batch: torch.Tensor, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        logits = BrightnessNet()(-batch)  # black (most negative) -> high lesion logit
        probs = logits.softmax(1)
        return probs, torch.zeros_like(probs)


def test_padding_is_cropped_before_resizing_back() -> None:
    """A wide bright image: with the crop no padded row can leak into the mask at the original size."""
    image = np.full((30, 90, 3), 230, np.uint8)
    result = _Padding(size=60, resize="longest").predict(image)
    assert result.mask.shape == (30, 90)
    assert not result.mask.any()
