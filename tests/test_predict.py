"""predict_inputs / ``rabusseg predict``: files, folders, DICOM, names, CSV, failures, overwrite."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from _dicom_factory import write_dicom
from _tiny_checkpoint import BrightnessNet, tiny_checkpoint  # noqa: F401  (fixture)

from rabusseg.cli import main
from rabusseg.errors import OutputExistsError
from rabusseg.inference.predict import predict_inputs
from rabusseg.inference.segmenter import Segmenter


def _square(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black image with a white rectangle (rows y0:y1, cols x0:x1): BrightnessNet segments it exactly."""
    image = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    image[y0:y1, x0:x1] = 255
    return image


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


@pytest.fixture
def exact() -> Segmenter:
    return Segmenter(BrightnessNet(), size=None)


def test_files_and_recursive_folders_get_unique_names(tmp_path: Path, exact: Segmenter) -> None:
    data = tmp_path / "in"
    for sub in ("a", "b"):
        (data / sub / "deep").mkdir(parents=True)
        cv2.imwrite(str(data / sub / "img.png"), _square(40, 50, (5, 15, 10, 30)))
    cv2.imwrite(str(data / "a" / "deep" / "x.jpg"), _square(30, 30, (0, 0, 0, 0)))
    (data / "a" / "notes.txt").write_text("ignored inside folders")
    other = tmp_path / "other" / "img.png"  # same name as in the folder
    other.parent.mkdir()
    cv2.imwrite(str(other), _square(20, 20, (0, 10, 0, 10)))
    summary = predict_inputs(exact, [data, other], tmp_path / "out", progress=False, batch_size=2)
    assert summary.ok
    rows = _rows(summary.csv_path)
    assert set(rows) == {"a__img", "b__img", "a__deep__x", "img"}
    mask = cv2.imread(str(tmp_path / "out" / "a__img_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (40, 50) and set(np.unique(mask)) == {0, 255}
    assert int((mask > 0).sum()) == 200
    assert rows["a__img"]["lesion_area_px"] == "200" and rows["a__img"]["lesion_area_mm2"] == ""
    assert float(rows["a__img"]["mean_confidence"]) > 0.99
    assert rows["a__deep__x"]["lesion_area_px"] == "0" and rows["a__deep__x"]["mean_confidence"] == ""
    assert rows["img"]["lesion_area_px"] == "100"


def test_colliding_folder_names_get_their_root(tmp_path: Path, exact: Segmenter) -> None:
    for root in ("site1", "site2"):
        (tmp_path / root).mkdir()
        cv2.imwrite(str(tmp_path / root / "scan.png"), _square(16, 16, (0, 4, 0, 4)))
    summary = predict_inputs(exact, [tmp_path / "site1", tmp_path / "site2"], tmp_path / "out", progress=False)
    assert set(_rows(summary.csv_path)) == {"site1__scan", "site2__scan"}


def test_dicom_single_and_cine_with_spacing(tmp_path: Path, exact: Segmenter) -> None:
    single = write_dicom(tmp_path / "single.dcm", _square(32, 32, (4, 14, 4, 14)), pixel_spacing=(0.1, 0.2))
    cine = np.stack([_square(24, 40, (0, 5 + k, 0, 10)) for k in range(3)])  # growing lesion
    loop = write_dicom(tmp_path / "loop_no_suffix", cine, us_delta_cm=(0.03, 0.05))  # detected by DICM marker
    summary = predict_inputs(exact, [single, loop], tmp_path / "out", uncertainty=True, progress=False)
    rows = _rows(summary.csv_path)
    assert set(rows) == {"single", "loop_no_suffix_f0000", "loop_no_suffix_f0001", "loop_no_suffix_f0002"}
    assert rows["single"]["lesion_area_px"] == "100" and rows["single"]["frame"] == ""
    assert float(rows["single"]["lesion_area_mm2"]) == pytest.approx(100 * 0.1 * 0.2)
    assert rows["single"]["spacing_mm"] == "0.1x0.2"
    for k in range(3):
        row = rows[f"loop_no_suffix_f{k:04d}"]
        assert row["frame"] == str(k) and int(row["lesion_area_px"]) == (5 + k) * 10
        assert float(row["lesion_area_mm2"]) == pytest.approx((5 + k) * 10 * 0.5 * 0.3)  # dy=0.5 mm, dx=0.3 mm
    assert (tmp_path / "out" / "loop_no_suffix_f0002_entropy.png").is_file()
    assert not (tmp_path / "out" / "single_variance.png").exists()  # variance only with TTA


def test_optional_maps_and_tta(tmp_path: Path, exact: Segmenter) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), _square(32, 32, (8, 24, 8, 24)))
    summary = predict_inputs(exact, [tmp_path / "a.png"], tmp_path / "out", overlay=True, probs=True,
                             uncertainty=True, tta=True, progress=False)
    for suffix in ("mask", "overlay", "probs", "entropy", "variance"):
        assert (tmp_path / "out" / f"a_{suffix}.png").is_file(), suffix
    overlay = cv2.imread(str(tmp_path / "out" / "a_overlay.png"))[:, :, ::-1]
    assert overlay.shape == (32, 32, 3) and (overlay == [0, 255, 0]).all(axis=2).any()
    probs = cv2.imread(str(tmp_path / "out" / "a_probs.png"), cv2.IMREAD_UNCHANGED)
    assert probs[16, 16] == 255 and probs[0, 0] == 0
    assert _rows(summary.csv_path)["a"]["mean_variance"] != ""


def test_bad_inputs_are_skipped_with_reasons(tmp_path: Path, exact: Segmenter) -> None:
    cv2.imwrite(str(tmp_path / "good.png"), _square(16, 16, (0, 8, 0, 8)))
    (tmp_path / "broken.png").write_bytes(b"not really a png")
    (tmp_path / "table.csv").write_text("a,b\n")
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 200)
    inputs = [tmp_path / n for n in ("good.png", "broken.png", "table.csv", "bad.dcm", "missing.png")]
    summary = predict_inputs(exact, inputs, tmp_path / "out", progress=False)
    assert set(_rows(summary.csv_path)) == {"good"}
    reasons = {f.path.name: f.reason for f in summary.failures}
    assert set(reasons) == {"broken.png", "table.csv", "bad.dcm", "missing.png"}
    assert "not an image" in reasons["broken.png"] and "not an image or DICOM" in reasons["table.csv"]
    assert "DICOM" in reasons["bad.dcm"] and reasons["missing.png"] == "does not exist"


def test_nothing_is_overwritten_without_the_flag(tmp_path: Path, exact: Segmenter) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), _square(16, 16, (0, 8, 0, 8)))
    out = tmp_path / "out"
    predict_inputs(exact, [tmp_path / "a.png"], out, progress=False)
    before = (out / "a_mask.png").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match=r"predictions\.csv already exists.*--overwrite"):
        predict_inputs(exact, [tmp_path / "a.png"], out, progress=False)
    (out / "predictions.csv").unlink()
    with pytest.raises(OutputExistsError, match=r"a_mask\.png already exists"):
        predict_inputs(exact, [tmp_path / "a.png"], out, progress=False)
    assert (out / "a_mask.png").stat().st_mtime_ns == before
    predict_inputs(exact, [tmp_path / "a.png"], out, progress=False, overwrite=True)


def test_cli_exit_codes(tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    cv2.imwrite(str(tmp_path / "good.png"), _square(48, 64, (10, 30, 10, 40)))
    (tmp_path / "broken.png").write_bytes(b"garbage")
    args = ["predict", str(tiny_checkpoint), str(tmp_path / "good.png"), "--size", "64", "--batch-size", "2"]
    with pytest.raises(SystemExit) as ok:
        main([*args, "--out", str(tmp_path / "o1"), "--overlay"])
    assert ok.value.code == 0 and (tmp_path / "o1" / "good_overlay.png").is_file()
    with pytest.raises(SystemExit) as failed:
        main([*args, str(tmp_path / "broken.png"), "--out", str(tmp_path / "o2")])
    assert failed.value.code == 1
    assert "broken.png" in capsys.readouterr().err
    assert set(_rows(tmp_path / "o2" / "predictions.csv")) == {"good"}
    with pytest.raises(SystemExit) as exists:
        main([*args, "--out", str(tmp_path / "o1")])
    assert exists.value.code == 1 and "already exists" in capsys.readouterr().err
