"""Read images, masks and split lists of the folder format into one normalised form.

Every reader raises :class:`~rabusseg.errors.DataError` naming the file and the problem, so a
bad file anywhere in a dataset surfaces as a message, never as a traceback from PIL.

Normalisation rules (the contract the rest of the package relies on):

* **Images** become ``uint8`` arrays ``(H, W, 3)`` in RGB order. Grayscale (and 1-bit) is
  replicated to three channels; palette images are expanded to their colours; the alpha channel
  of RGBA / LA images is dropped. **16-bit** samples (gray, RGB, RGBA, PNG or TIFF) keep their
  high byte, ``v8 = v16 >> 8``: one fixed scale for every image, no per-image contrast stretch,
  because echogenicity is an absolute intensity a stretch would change differently in every scan.
  It is also what Pillow does for 16-bit RGB PNGs and it inverts the usual 8->16 conversion
  (``v * 257``) exactly. 32-bit float images are refused (no scale can be assumed).
* **Masks** become ``bool`` arrays ``(H, W)``: lesion wherever the pixel, composited on black,
  is not black. For gray, 16-bit and RGB masks that is "any non-zero sample"; palette masks are
  judged by the palette *colour* (an index pointing to black is background); in RGBA / LA masks a
  fully transparent pixel is background whatever its colour.  **JPEG masks** are the exception:
  lossy compression rings around every edge and leaves faint non-black pixels in the background,
  so there a sample is lesion only above the middle of its range (``> 127`` for 8-bit); "not
  black" would grow a BUSI lesion by a quarter of its area at quality 75.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from rabusseg.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Extensions accepted in ``images/`` (compared case-insensitively)."""

_SIXTEEN_BIT_GRAY_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` and is not hidden."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _decode(path: Path) -> np.ndarray:
    """Decode an image file to its sample values: (H, W) or (H, W, C), uint8/uint16/int32/float.

    Palette images come back as RGB(A) colours. 16-bit multi-channel files are decoded with
    OpenCV because Pillow silently drops their low byte, which would erase faint mask values.
    """
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBomb/metadata warnings
            with Image.open(path) as im:
                sixteen_bit = _is_sixteen_bit(im)  # read before load(), which clears `tile`
                im.load()
                if im.mode in ("P", "PA"):
                    has_alpha = im.mode == "PA" or "transparency" in im.info
                    im = im.convert("RGBA" if has_alpha else "RGB")
                elif im.mode in ("RGB", "RGBA", "LA") and sixteen_bit:
                    return _decode_with_opencv(path)
                elif im.mode not in ("1", "L", "LA", "RGB", "RGBA", "F") and im.mode not in _SIXTEEN_BIT_GRAY_MODES:
                    im = im.convert("RGBA" if "A" in im.mode else "RGB")  # CMYK, YCbCr, RGBX, LAB...
                return np.asarray(im)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: {_unidentified_reason(path)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncation and corrupt chunks as OSError/SyntaxError/ValueError.
        raise DataError(f"{path}: truncated or corrupt image ({err})") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: refused, image is implausibly large ({err})") from None


_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _unidentified_reason(path: Path) -> str:
    """Why Pillow could not identify a file: empty, a damaged known format, or not an image."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head:
        return "empty file (0 bytes), not an image"
    for magic, kind in _SIGNATURES.items():
        if head.startswith(magic):
            return f"truncated or corrupt image (starts like {kind} but cannot be decoded)"
    return "not an image (unrecognised or unsupported file format)"


def _is_sixteen_bit(im: Image.Image) -> bool:
    """True when Pillow will reduce a multi-channel file from 16 to 8 bits per sample."""
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _decode_with_opencv(path: Path) -> np.ndarray:
    buffer = np.fromfile(path, dtype=np.uint8)  # imdecode: works with any path encoding
    array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: truncated or corrupt 16-bit image (OpenCV could not decode it)")
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]  # BGR -> RGB
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f":
        raise DataError(f"{path}: floating-point images are not supported; save it as 8- or 16-bit")
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise DataError(f"{path}: sample values outside 0..65535; expected an 8- or 16-bit image")
        return (array.astype(np.uint32) >> 8).astype(np.uint8)
    raise DataError(f"{path}: unsupported sample type {array.dtype}")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image as ``uint8 (H, W, 3)`` RGB, whatever its mode and bit depth (see module doc)."""
    path = Path(path)
    array = _to_uint8(_decode(path), path)
    if array.ndim == 3 and array.shape[2] in (1, 2):  # gray (+ alpha)
        array = np.ascontiguousarray(array[:, :, 0])
    if array.ndim == 2:  # cvtColor replicates a channel ~15x faster than np.repeat
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    channels = array.shape[2]
    if channels in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise DataError(f"{path}: unsupported image with {channels} channels")


LOSSY_MASK_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")
"""Mask formats read with a mid-range threshold instead of "not black" (module doc)."""


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a lesion mask as ``bool (H, W)``: lesion where the pixel composited on black is not black (JPEG: > 127)."""
    path = Path(path)
    array = _decode(path)
    if path.suffix.lower() in LOSSY_MASK_SUFFIXES:  # compression noise is not lesion (module doc)
        on = array > (np.iinfo(array.dtype).max // 2 if array.dtype.kind in "iu" else 0)
    else:
        on = array != 0
    if on.ndim == 2:
        return on
    channels = on.shape[2]
    if channels in (2, 4):  # colour + alpha: transparent pixels are background
        return np.any(on[:, :, :-1], axis=2) & on[:, :, -1]
    return np.any(on, axis=2)


def image_size(array: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of a decoded image or mask, the order the metadata and messages use."""
    return int(array.shape[1]), int(array.shape[0])


def read_split(path: str | os.PathLike[str]) -> list[str]:
    """Read a split list: one id per line; CRLF, blank lines, surrounding spaces and a BOM are fine."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: split file does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a split list (one id per line)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read split file ({err.strerror})") from None
    if b"\x00" in raw:
        raise DataError(f"{path}: not a text file (binary content); expected one id per line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected one id per line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_split(path: str | os.PathLike[str], ids: list[str]) -> None:
    """Write a split list with LF line ends (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
