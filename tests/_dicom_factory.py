"""Write small uncompressed DICOM files (explicit VR little endian) for the inference tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_dicom(
    path: Path,
    frames: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    pixel_spacing: tuple[float, float] | None = None,
    us_delta_cm: tuple[float, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """``frames``: (H, W), (N, H, W) grey or (H, W, 3) / (N, H, W, 3) colour, uint8 or uint16.

    ``us_delta_cm`` = (PhysicalDeltaX, PhysicalDeltaY) of one ultrasound region in cm.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    multi = frames.ndim == (4 if colour else 3)
    n, h, w = (frames.shape[0] if multi else 1), frames.shape[-3 if colour else -2], frames.shape[-2 if colour else -1]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = "Phantom^Test"
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    if multi:
        ds.NumberOfFrames = n
    bits = 16 if frames.dtype == np.uint16 else 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{pixel_spacing[0]:g}", f"{pixel_spacing[1]:g}"]
    if us_delta_cm is not None:
        region = Dataset()
        region.RegionSpatialFormat = 1
        region.RegionDataType = 1
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 1, h - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX, region.PhysicalDeltaY = float(us_delta_cm[0]), float(us_delta_cm[1])
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path
