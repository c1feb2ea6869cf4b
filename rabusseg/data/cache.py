"""Decode every training image once, into one shared buffer, before the first step.

Why: decoding a BUSI PNG and resizing it took most of a DataLoader worker's time, on a 2-core
machine whose other core trains; an epoch decoded each image again.  Here images (already
resized to ``data.resize_to``) and masks are decoded once, in threads, packed into a single
``uint8`` tensor in shared memory, and read back as numpy views, so DataLoader workers (fork
or spawn) share it without copies.  Decoding everything up front also finds a corrupt file
before training starts, with one message that names every bad file.

The random part of the pipeline (scale, flip, crop, strong view) stays per sample, so a
sample is the same array with the cache on or off (:mod:`rabusseg.data.datasets`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import load_image, load_mask
from rabusseg.errors import DataError

MIB = 2**20


@dataclass(frozen=True)
class _Entry:
    offset: int
    height: int
    width: int
    mask_offset: int
    """-1 when the id has no cached mask."""


def resized_shape(height: int, width: int, resize_to: int | None) -> tuple[int, int]:
    """The (height, width) after scaling the longer side to ``resize_to`` (albumentations' rounding)."""
    if resize_to is None:
        return height, width
    scale = resize_to / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def estimate_bytes(folder: DatasetFolder, ids: Sequence[str], masks_for: Collection[str], resize_to: int | None) -> int:
    """Bytes the decoded images (3 bytes a pixel) and masks (1) will take, from the file headers only.

    A file whose header cannot be read counts 0 here: decoding reports it with the others.
    """
    total = 0
    for image_id in ids:
        try:
            with Image.open(folder.image_path(image_id)) as im:
                width, height = im.size
        except Exception:  # noqa: BLE001
            continue
        h, w = resized_shape(height, width, resize_to)
        total += h * w * (4 if image_id in masks_for else 3)
    return total


def available_memory_bytes() -> int | None:
    """MemAvailable of ``/proc/meminfo`` (Linux), or ``None`` when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_fits(needed: int, max_bytes: int, *, what: str = "the decoded training images") -> None:
    """Raise a DataError that says what to do when the cache would not fit."""
    available = available_memory_bytes()
    limit_name = f"data.cache_max_mib ({max_bytes // MIB} MiB)"
    if needed > max_bytes or (available is not None and needed > available // 2):
        over = limit_name if needed > max_bytes else f"half of the available memory ({available // MIB} MiB)"  # type: ignore[operator]
        raise DataError(
            f"{what} would take {needed / MIB:.0f} MiB, more than {over}: set data.resize_to to train on "
            "smaller images, raise data.cache_max_mib, or set data.cache=false to decode each sample from its file"
        )


class DecodedImages:
    """Images and masks of a list of ids, decoded (and resized) once; read them with :meth:`image`/:meth:`mask`."""

    def __init__(self, buffer: torch.Tensor, entries: dict[str, _Entry], resize_to: int | None) -> None:
        self._buffer = buffer
        self._entries = entries
        self.resize_to = resize_to

    @classmethod
    def load(
        cls,
        folder: DatasetFolder,
        ids: Sequence[str],
        *,
        masks_for: Collection[str] = (),
        resize_to: int | None = None,
        max_bytes: int = 4096 * MIB,
        threads: int = 2,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> DecodedImages:
        """Decode ``ids`` (and the masks of ``masks_for``) in ``threads`` threads; a bad file fails here.

        Every unreadable image or mask is listed in one :class:`DataError` before anything is kept.
        """
        from rabusseg.data.transforms import build_resize

        ids = list(dict.fromkeys(ids))
        masks_for = set(masks_for)
        check_fits(estimate_bytes(folder, ids, masks_for, resize_to), max_bytes)
        resize = build_resize(resize_to)

        def decode(image_id: str) -> tuple[np.ndarray, np.ndarray | None]:
            image = load_image(folder.image_path(image_id))
            mask = None
            if image_id in masks_for:
                mask_path = folder.mask_path(image_id)
                if mask_path is None:
                    raise DataError(f"id '{image_id}' has no mask in {folder.root / 'masks'}")
                mask = load_mask(mask_path)
                if mask.shape != image.shape[:2]:
                    raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                    f"{folder.image_path(image_id).name} is {image.shape[1]}x{image.shape[0]}")  # fmt: skip
            if resize is not None:
                out = resize(image=image, mask=mask.astype(np.uint8)) if mask is not None else resize(image=image)
                image = out["image"]
                mask = out["mask"].astype(bool) if mask is not None else None
            return np.ascontiguousarray(image), mask

        decoded: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        errors: list[str] = []

        def run(image_id: str) -> None:
            try:
                decoded[image_id] = decode(image_id)
            except DataError as err:
                errors.append(str(err))
            if on_progress is not None:
                on_progress(len(decoded) + len(errors), len(ids))

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(run, ids))
        if errors:
            errors.sort()
            shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
            raise DataError(f"{len(errors)} training file(s) cannot be read:\n  {shown}")
        return cls._pack(ids, decoded, resize_to)

    @classmethod
    def _pack(cls, ids: list[str], decoded: dict[str, tuple[np.ndarray, np.ndarray | None]],
              resize_to: int | None) -> DecodedImages:  # fmt: skip
        total = sum(img.nbytes + (m.size if m is not None else 0) for img, m in decoded.values())
        buffer = torch.empty(total, dtype=torch.uint8).share_memory_()  # one block, shared with workers
        flat = buffer.numpy()
        entries: dict[str, _Entry] = {}
        offset = 0
        for image_id in ids:
            image, mask = decoded[image_id]
            h, w = image.shape[:2]
            flat[offset : offset + image.nbytes] = image.reshape(-1)
            mask_offset = -1
            if mask is not None:
                mask_offset = offset + image.nbytes
                flat[mask_offset : mask_offset + mask.size] = mask.reshape(-1)
            entries[image_id] = _Entry(offset, h, w, mask_offset)
            offset += image.nbytes + (mask.size if mask is not None else 0)
        return cls(buffer, entries, resize_to)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return int(self._buffer.numel())

    def image(self, image_id: str) -> np.ndarray:
        """``uint8 (H, W, 3)`` read-only view (transforms copy before they change anything)."""
        e = self._entry(image_id)
        view = self._buffer.numpy()[e.offset : e.offset + e.height * e.width * 3].reshape(e.height, e.width, 3)
        view.flags.writeable = False
        return view

    def mask(self, image_id: str) -> np.ndarray | None:
        """``bool (H, W)`` read-only view, or ``None`` when no mask was cached for the id."""
        e = self._entry(image_id)
        if e.mask_offset < 0:
            return None
        view = self._buffer.numpy()[e.mask_offset : e.mask_offset + e.height * e.width].view(np.bool_)
        view = view.reshape(e.height, e.width)
        view.flags.writeable = False
        return view

    def _entry(self, image_id: str) -> _Entry:
        try:
            return self._entries[image_id]
        except KeyError:
            raise KeyError(f"id '{image_id}' is not in the decoded-image cache") from None


def load_with_message(folder: DatasetFolder, ids: Sequence[str], *, masks_for: Collection[str], resize_to: int | None,
                      max_bytes: int) -> tuple[DecodedImages, str]:  # fmt: skip
    """:meth:`DecodedImages.load` plus the one log line that says what it cost."""
    started = time.perf_counter()
    images = DecodedImages.load(folder, ids, masks_for=masks_for, resize_to=resize_to, max_bytes=max_bytes)
    seconds = time.perf_counter() - started
    size = "original size" if resize_to is None else f"longer side {resize_to} px"
    return images, f"decoded {len(images)} training images ({size}, {images.nbytes / MIB:.0f} MiB) in {seconds:.1f} s"
