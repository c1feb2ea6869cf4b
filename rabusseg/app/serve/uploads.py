"""Uploaded scans, held in memory: decoded by content (an image is an image because it decodes).

An upload is read whole (refused past ``max_bytes``), tried as DICOM when it carries the ``DICM``
marker, else as a PNG/JPEG/BMP/TIFF through the same reader as datasets (8/16-bit, gray, RGB(A),
palette).  Nothing is written to disk; a bad file gets a clear message and leaves nothing behind.
The store keeps the last ``capacity`` uploads (least recently used dropped first).
"""

from __future__ import annotations

import io
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rabusseg.errors import DataError

DEFAULT_MAX_BYTES = 64 * 2**20


class TooLarge(DataError):
    """An upload over the size limit (413)."""


@dataclass
class Upload:
    """One uploaded file: its frames as uint8 RGB and what is known about them."""

    id: str
    name: str
    kind: str
    """``image`` or ``dicom``."""
    frames: list[np.ndarray]
    spacing: tuple[float, float] | None
    predictions: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    """Cached results per (frame, checkpoint, tta)."""

    def describe(self) -> dict[str, Any]:
        h, w = self.frames[0].shape[:2]
        return {"id": self.id, "name": self.name, "kind": self.kind, "frames": len(self.frames), "height": h,
                "width": w, "spacing_mm": list(self.spacing) if self.spacing else None}  # fmt: skip

    def frame(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.frames):
            raise DataError(f"{self.name} has {len(self.frames)} frame(s); there is no frame {index}")
        return self.frames[index]


def decode_upload(name: str, payload: bytes) -> tuple[str, list[np.ndarray], tuple[float, float] | None]:
    """(kind, frames, spacing) of an uploaded file, judged by its bytes, not its name."""
    if not payload:
        raise DataError(f"{name}: the file is empty")
    if len(payload) > 132 and payload[128:132] == b"DICM":
        return _decode_dicom(name, payload)
    from rabusseg.data.io import load_image

    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") else ".img"
    with tempfile.TemporaryDirectory(prefix="rabusseg-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(payload)
        try:
            image = load_image(path)
        except DataError as err:
            reason = str(err).split(": ", 1)[-1]
            raise DataError(f"{name}: {reason}") from None
    return "image", [image], None


def _decode_dicom(name: str, payload: bytes) -> tuple[str, list[np.ndarray], tuple[float, float] | None]:
    from rabusseg.inference.dicom import read_dicom

    with tempfile.TemporaryDirectory(prefix="rabusseg-upload-") as tmp:
        path = Path(tmp) / "upload.dcm"
        path.write_bytes(payload)
        try:
            dicom = read_dicom(path)
        except DataError as err:
            raise DataError(f"{name}: {str(err).split(': ', 1)[-1]}") from None
    return "dicom", [np.ascontiguousarray(f) for f in dicom.frames], dicom.spacing


class UploadStore:
    """Thread-safe, size-bounded store of the recent uploads."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, capacity: int = 32) -> None:
        self.max_bytes, self.capacity = max_bytes, capacity
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, name: str, payload: bytes) -> Upload:
        if len(payload) > self.max_bytes:
            raise TooLarge(f"{name}: {len(payload) / 2**20:.1f} MiB is over the upload limit of {self.max_bytes / 2**20:.0f} MiB")
        kind, frames, spacing = decode_upload(name, payload)
        upload = Upload(uuid.uuid4().hex[:12], Path(name).name or "upload", kind, frames, spacing)
        with self._lock:
            self._items[upload.id] = upload
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return upload

    def get(self, upload_id: str) -> Upload:
        from rabusseg.app.serve.security import NotFound

        with self._lock:
            upload = self._items.get(upload_id)
            if upload is None:
                raise NotFound(f"no upload {upload_id!r} (uploads are kept in memory; upload the file again)")
            self._items.move_to_end(upload_id)
            return upload


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 gray or RGB array (lossless, what the pages read back)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
