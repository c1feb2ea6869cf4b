"""DICOM ultrasound frames as 8-bit RGB arrays, with the pixel spacing in millimetres.

Scanners export ultrasound as single images or multi-frame cine loops, in greyscale or colour
(RGB, or YCbCr ``YBR_*`` that must be converted).  :func:`read_dicom` returns every frame as
``uint8 (H, W, 3)`` so the rest of the pipeline treats DICOM like any other image, and the spacing
so that lesion areas can be reported in mm^2.  pydicom is optional (``pip install rabusseg[dicom]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rabusseg.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
_CM = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)


@dataclass(frozen=True)
class DicomImage:
    """All frames of one DICOM file."""

    path: Path
    frames: np.ndarray
    """uint8 ``(N, H, W, 3)``; ``N`` is 1 for a single image."""
    spacing: tuple[float, float] | None
    """(row, column) pixel size in mm, ``None`` when the file does not say."""

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise DataError("reading DICOM files needs pydicom: pip install 'rabusseg[dicom]'") from None
    return pydicom


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """A ``.dcm``/``.dicom`` suffix, or the ``DICM`` marker after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def pixel_spacing_mm(ds: Any) -> tuple[float, float] | None:
    """(row, column) spacing in mm from ``PixelSpacing``, the enhanced-multiframe pixel measures, or
    the largest ultrasound region calibrated in cm (``PhysicalDeltaY/X`` x 10)."""
    candidates = [ds.get("PixelSpacing")]
    for group in ds.get("SharedFunctionalGroupsSequence") or []:
        for measures in group.get("PixelMeasuresSequence") or []:
            candidates.append(measures.get("PixelSpacing"))
    for value in candidates:
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    regions = []
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        if region.get("PhysicalUnitsXDirection") != _CM or region.get("PhysicalUnitsYDirection") != _CM:
            continue
        dx, dy = abs(float(region.get("PhysicalDeltaX", 0))), abs(float(region.get("PhysicalDeltaY", 0)))
        if dx > 0 and dy > 0:
            width = int(region.get("RegionLocationMaxX1", 0)) - int(region.get("RegionLocationMinX0", 0))
            height = int(region.get("RegionLocationMaxY1", 0)) - int(region.get("RegionLocationMinY0", 0))
            regions.append((width * height, (dy * 10.0, dx * 10.0)))
    if regions:
        return max(regions, key=lambda r: r[0])[1]
    return None


def _first(value: Any) -> float:
    """Window centre/width may be multi-valued; the first pair is the default view."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max over the whole series (not per frame) so a cine loop keeps constant brightness."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _monochrome_to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    if rescaled:
        arr = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds:
        out = _scale_to_uint8(apply_voi_lut(arr, ds, index=0))
    elif "WindowCenter" in ds and "WindowWidth" in ds and _first(ds.WindowWidth) > 0:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        scaled = (arr.astype(np.float64) - (centre - width / 2.0)) / width
        out = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif arr.size and float(arr.min()) >= 0 and float(arr.max()) <= 255:
        out = arr.astype(np.uint8)  # 8-bit data (perhaps with an identity rescale): keep as stored
    elif not rescaled and arr.dtype.kind == "u":
        # Fixed scale by the stored bit depth, like 16-bit PNGs: no per-file contrast stretch.
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
        out = np.round(np.clip(arr, 0, 2**bits - 1) * (255.0 / (2**bits - 1))).astype(np.uint8)
    else:
        out = _scale_to_uint8(arr)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # 0 is white in MONOCHROME1
        out = 255 - out
    return out


def _colour_to_uint8(arr: np.ndarray, ds: Any, pydicom: Any) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "RGB"))
    v2 = int(pydicom.__version__.split(".")[0]) < 3
    if photometric.startswith("YBR") and v2 and not ds.file_meta.TransferSyntaxUID.is_compressed:
        # pydicom 3 already returns RGB; pydicom 2 returns the stored YCbCr values.
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    if arr.dtype != np.uint8:
        arr = _scale_to_uint8(arr)
    return arr


def read_dicom(path: str | os.PathLike[str]) -> DicomImage:
    """Every frame of a DICOM file as ``uint8 (N, H, W, 3)`` RGB, plus its pixel spacing in mm."""
    pydicom = _pydicom()
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # noqa: BLE001  pydicom raises many types for non-DICOM input
        raise DataError(f"{path} is not a readable DICOM file: {err}") from None
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data (a report or structured document?)")
    try:
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001  missing decoder plugins surface as several types
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(f"{path}: cannot decode DICOM pixel data (transfer syntax {syntax}): {err}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[None]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr, samples = apply_color_lut(arr, ds), 3
        arr = _scale_to_uint8(arr) if arr.dtype != np.uint8 else arr
    elif samples == 1:
        arr = _monochrome_to_uint8(arr, ds)
    else:
        arr = _colour_to_uint8(arr, ds, pydicom)
    if arr.ndim == 3:  # (N, H, W) grey
        arr = np.repeat(arr[..., None], 3, axis=3)
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise DataError(f"{path}: unexpected DICOM pixel layout {arr.shape} ({photometric}, {samples} samples)")
    return DicomImage(path=path, frames=np.ascontiguousarray(arr), spacing=pixel_spacing_mm(ds))
