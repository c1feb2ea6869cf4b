"""read_dicom: every frame as uint8 RGB, colour spaces, grey-level rules, spacing in mm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _dicom_factory import write_dicom

from rabusseg.errors import DataError
from rabusseg.inference.dicom import is_dicom, read_dicom

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
RGB = RNG.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)


def test_grey_single_frame_kept_as_stored(tmp_path: Path) -> None:
    image = read_dicom(write_dicom(tmp_path / "a.dcm", GREY, pixel_spacing=(0.1, 0.2),
                                   extra={"RescaleSlope": 1, "RescaleIntercept": 0}))
    assert image.frames.shape == (1, 20, 30, 3) and image.frames.dtype == np.uint8
    np.testing.assert_array_equal(image.frames[0, :, :, 1], GREY)
    assert image.spacing == (0.1, 0.2)


def test_rgb_and_ybr_cine(tmp_path: Path) -> None:
    from pydicom.pixels import convert_color_space

    rgb = read_dicom(write_dicom(tmp_path / "rgb.dcm", RGB, photometric="RGB"))
    np.testing.assert_array_equal(rgb.frames, RGB)
    ybr = read_dicom(write_dicom(tmp_path / "ybr.dcm", convert_color_space(RGB, "RGB", "YBR_FULL"), photometric="YBR_FULL"))
    assert ybr.num_frames == 3
    assert np.abs(ybr.frames.astype(int) - RGB).max() <= 2  # YCbCr round trip rounding


def test_compressed_cine_is_decoded(tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import RLELossless

    cine = RNG.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    ds = pydicom.dcmread(write_dicom(tmp_path / "raw.dcm", cine))
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(read_dicom(tmp_path / "rle.dcm").frames[..., 0], cine)


def test_grey_levels_window_bits_and_monochrome1(tmp_path: Path) -> None:
    g12 = RNG.integers(0, 4096, (20, 30), dtype=np.uint16)
    bits = read_dicom(write_dicom(tmp_path / "b.dcm", g12, extra={"BitsStored": 12, "HighBit": 11}))
    np.testing.assert_array_equal(bits.frames[0, :, :, 0], np.round(g12.astype(float) * 255 / 4095))
    windowed = read_dicom(write_dicom(tmp_path / "w.dcm", g12, extra={"WindowCenter": 1000, "WindowWidth": 400}))
    low, high = g12 <= 800, g12 >= 1200
    assert (windowed.frames[0, :, :, 0][low] == 0).all() and (windowed.frames[0, :, :, 0][high] == 255).all()
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", GREY, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(inverted.frames[0, :, :, 0], 255 - GREY)


def test_ultrasound_region_spacing_cm_to_mm(tmp_path: Path) -> None:
    image = read_dicom(write_dicom(tmp_path / "us", GREY, us_delta_cm=(0.02, 0.04)))
    assert image.spacing == pytest.approx((0.4, 0.2))  # (row = Y, column = X) in mm
    assert is_dicom(tmp_path / "us") and read_dicom(write_dicom(tmp_path / "n.dcm", GREY)).spacing is None


def test_broken_files(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_text("not dicom")
    with pytest.raises(DataError, match=r"x\.dcm is not a readable DICOM"):
        read_dicom(tmp_path / "x.dcm")
    path = write_dicom(tmp_path / "nopix.dcm", GREY)
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(DataError, match="no pixel data"):
        read_dicom(path)
    assert not is_dicom(tmp_path / "missing.bin")


def test_missing_pydicom_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_dicom(tmp_path / "a.dcm", GREY)
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(DataError, match=r"needs pydicom.*rabusseg\[dicom\]"):
        read_dicom(path)
