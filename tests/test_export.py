"""ONNX export: torch and ONNX Runtime agree (<= 1e-4 on logits), fixed and dynamic sizes, ORT engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_checkpoint import tiny_checkpoint  # noqa: F401  (fixture)

from rabusseg.checkpoint import load_checkpoint, save_checkpoint
from rabusseg.cli import main
from rabusseg.data.io import load_image
from rabusseg.data.transforms import build_eval_transform, normalize_image
from rabusseg.errors import OutputExistsError, RabussegError
from rabusseg.inference.export import OnnxSegmenter, export_onnx, max_logit_difference, random_images
from rabusseg.inference.segmenter import Segmenter

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixed_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "fixed.onnx", size=64)


@pytest.fixture(scope="module")
def dynamic_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "dynamic.onnx", size=64, dynamic=True)


def test_random_images_fixed_size(tiny_checkpoint: Path, fixed_onnx: Path) -> None:  # noqa: F811
    assert max_logit_difference(tiny_checkpoint, fixed_onnx, random_images(3, 64)) <= TOLERANCE


@pytest.mark.parametrize("hw", [(64, 64), (96, 80)])
def test_random_images_dynamic_sizes(tiny_checkpoint: Path, dynamic_onnx: Path, hw: tuple[int, int]) -> None:  # noqa: F811
    assert max_logit_difference(tiny_checkpoint, dynamic_onnx, random_images(2, hw)) <= TOLERANCE


@pytest.mark.realdata
def test_real_busi_images(busi_dir: Path, tiny_checkpoint: Path, fixed_onnx: Path, dynamic_onnx: Path) -> None:  # noqa: F811
    paths = sorted((busi_dir / "images").glob("*.png"))[:: 260][:3]
    resize = build_eval_transform(64)
    batch = torch.stack([normalize_image(resize(image=load_image(p))["image"]) for p in paths])
    assert max_logit_difference(tiny_checkpoint, fixed_onnx, batch) <= TOLERANCE
    full = torch.stack([normalize_image(load_image(paths[0]))])[..., :160, :200]  # a real crop at another size
    assert max_logit_difference(tiny_checkpoint, dynamic_onnx, full) <= TOLERANCE


def test_onnx_engine_matches_torch_segmenter(tiny_checkpoint: Path, dynamic_onnx: Path, fixed_onnx: Path) -> None:  # noqa: F811
    images = [np.random.default_rng(i).integers(0, 256, (50, 70, 3), dtype=np.uint8) for i in range(3)]
    torch_seg = Segmenter.from_checkpoint(tiny_checkpoint, size=64)
    for onnx_path in (fixed_onnx, dynamic_onnx):
        ort_seg = OnnxSegmenter(onnx_path, size=64, threads=1)
        for got, expected in zip(ort_seg.predict_batch(images), torch_seg.predict_batch(images)):
            np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5)
    # Flip TTA is exact; scaled views differ slightly because ORT's logits are already at the view's
    # input size and get resized twice (documented in rabusseg.inference.export).
    for scales, atol in (((1.0,), 1e-5), ((0.75, 1.0, 1.25), 2e-3)):
        got = OnnxSegmenter(dynamic_onnx, size=64, threads=1, scales=scales).predict(images[0], tta=True)
        expected = Segmenter.from_checkpoint(tiny_checkpoint, size=64, scales=scales).predict(images[0], tta=True)
        assert got.variance is not None and expected.variance is not None
        np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=atol)
        np.testing.assert_allclose(got.variance, expected.variance, atol=atol)


def test_fixed_graph_refuses_other_sizes_and_scales(fixed_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(RabussegError, match="exported for 64x64"):
        OnnxSegmenter(fixed_onnx, size=128)
    with pytest.raises(RabussegError, match="--dynamic"):
        OnnxSegmenter(fixed_onnx, tta=True)
    assert OnnxSegmenter(fixed_onnx).size == 64
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    with pytest.raises(RabussegError, match="not a loadable ONNX model"):
        OnnxSegmenter(tmp_path / "bad.onnx")


def test_cli_export_and_predict_with_onnxruntime(tiny_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    import cv2

    onnx_path = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as exported:
        main(["export", str(tiny_checkpoint), "--onnx", str(onnx_path), "--size", "64"])
    assert exported.value.code == 0 and onnx_path.is_file()
    with pytest.raises(OutputExistsError):
        export_onnx(tiny_checkpoint, onnx_path, size=64)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 60), 128, np.uint8))
    with pytest.raises(SystemExit) as predicted:
        main(["predict", str(onnx_path), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
              "--engine", "onnxruntime", "--size", "64"])
    assert predicted.value.code == 0 and (tmp_path / "out" / "a_mask.png").is_file()


def test_onnx_files_carry_the_checkpoint_tta(tiny_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    payload = load_checkpoint(tiny_checkpoint)
    payload["config"]["train"]["eval_tta"] = True
    ckpt = save_checkpoint(payload, tmp_path / "tta.pt")
    dynamic = export_onnx(ckpt, tmp_path / "tta_dynamic.onnx", size=64, dynamic=True)
    assert OnnxSegmenter(dynamic, threads=1).tta is True
    assert OnnxSegmenter(dynamic, threads=1, tta=False).tta is False
    fixed = export_onnx(ckpt, tmp_path / "tta_fixed.onnx", size=64)
    with pytest.warns(UserWarning, match="without TTA"):
        assert OnnxSegmenter(fixed, threads=1).tta is False
