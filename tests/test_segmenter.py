"""Segmenter: rebuilt from the checkpoint alone, numpy in/out at the original size, TTA fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_checkpoint import BrightnessNet, tiny_checkpoint  # noqa: F401  (fixture)

import rabusseg
from rabusseg.checkpoint import load_checkpoint, model_from_checkpoint
from rabusseg.data.transforms import normalize_image
from rabusseg.errors import CheckpointError, DataError
from rabusseg.inference.segmenter import Segmenter, SegmenterResult, to_rgb_uint8
from rabusseg.inference.tta import predict_probabilities


def test_from_checkpoint_returns_original_size_maps(tiny_checkpoint: Path) -> None:  # noqa: F811
    seg = rabusseg.Segmenter.from_checkpoint(tiny_checkpoint, size=64)
    image = np.random.default_rng(0).integers(0, 256, (50, 70), dtype=np.uint8)
    result = seg.predict(image)
    assert isinstance(result, SegmenterResult)
    assert result.mask.shape == result.probabilities.shape == result.entropy.shape == (50, 70)
    assert result.mask.dtype == bool and result.probabilities.dtype == np.float32
    assert 0.0 <= result.probabilities.min() and result.probabilities.max() <= 1.0
    assert result.variance is None
    np.testing.assert_array_equal(result.mask, result.probabilities > 0.5)


def test_matches_the_shared_probability_path(tiny_checkpoint: Path) -> None:  # noqa: F811
    """At the inference size, Segmenter's map is exactly predict_probabilities of the rebuilt model."""
    seg = Segmenter.from_checkpoint(tiny_checkpoint, size=64)
    model = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = 1.0 - predict_probabilities(model, normalize_image(image)[None])[0, 0]
    np.testing.assert_allclose(seg.predict(image).probabilities, expected.numpy(), atol=1e-6)


def test_batch_equals_single_and_tta_gives_variance(tiny_checkpoint: Path) -> None:  # noqa: F811
    seg = Segmenter.from_checkpoint(tiny_checkpoint, size=64)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), rng.integers(0, 65535, (30, 30), dtype=np.uint16)]
    batch = seg.predict_batch(images)
    for image, got in zip(images, batch):
        np.testing.assert_allclose(got.probabilities, seg.predict(image).probabilities, atol=1e-5)
    with_tta = seg.predict(images[0], tta=True)
    assert with_tta.variance is not None and with_tta.variance.shape == (40, 60)
    assert float(with_tta.variance.max()) > 0.0


def test_full_size_inference_and_uint16_rule() -> None:
    seg = Segmenter(BrightnessNet(), size=None)
    image = np.zeros((20, 30), np.uint16)
    image[5:10, 5:15] = 65535
    result = seg.predict(image)
    assert int(result.mask.sum()) == 50  # exact: no resize when size is None
    same = seg.predict((image >> 8).astype(np.uint8))
    np.testing.assert_array_equal(result.probabilities, same.probabilities)


def test_bad_arrays_are_data_errors() -> None:
    with pytest.raises(DataError, match="uint8 or uint16"):
        to_rgb_uint8(np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def test_missing_or_foreign_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Segmenter.from_checkpoint(tmp_path / "none.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a rabusseg checkpoint"):
        Segmenter.from_checkpoint(tmp_path / "other.pt")
