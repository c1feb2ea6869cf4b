"""``rabusseg predict``: segment files, folders and DICOM cine loops into masks and one CSV.

Outputs in ``out_dir`` for each input (``<stem>`` is the unique flat name, plus ``_fNNNN`` with the
0-based frame number for multi-frame DICOM):

* ``<stem>_mask.png``      lesion mask, 0/255, at the original size;
* ``<stem>_overlay.png``   (``overlay``) the image with the lesion contour drawn in green;
* ``<stem>_probs.png``     (``probs``) lesion probability as 8-bit grey, ``round(255 * p)``: viewable in
  any image viewer, and 1/255 precision is finer than any threshold anyone sets;
* ``<stem>_entropy.png``   (``uncertainty``) normalised entropy, ``round(255 * H / log K)``;
* ``<stem>_variance.png``  (``uncertainty`` with ``tta``) variance of the lesion probability over the
  TTA views, ``round(255 * 4 * var)`` (a probability's variance is at most 0.25);
* ``predictions.csv``      one row per image/frame (columns in :data:`CSV_COLUMNS`).

``mean_confidence`` is the mean lesion probability inside the predicted lesion (blank when none is
found); ``mean_entropy`` and ``mean_variance`` are image means.  Nothing is overwritten unless
``overwrite``; a bad input is skipped with its reason and the others are still processed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from rabusseg.errors import DataError, OutputExistsError, RabussegError
from rabusseg.inference.inputs import InputFailure, PredictInput, collect_inputs, load_frames
from rabusseg.inference.segmenter import SegmenterResult

CSV_NAME = "predictions.csv"
CSV_COLUMNS = ["name", "source", "frame", "height", "width", "lesion_area_px", "lesion_area_mm2",
               "spacing_mm", "mean_confidence", "mean_entropy", "mean_variance"]
CONTOUR_RGB = (0, 255, 0)


class Engine(Protocol):
    """What ``predict_inputs`` needs: :class:`~rabusseg.inference.segmenter.Segmenter` or the ONNX one."""

    def predict_batch(self, images: Sequence[np.ndarray], *, tta: bool | None = None) -> list[SegmenterResult]: ...


@dataclass
class PredictSummary:
    """What was written and what was skipped."""

    out_dir: Path
    csv_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[InputFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class _Unit:
    item: PredictInput
    frame: int
    image: np.ndarray
    spacing: tuple[float, float] | None


def _suffixes(overlay: bool, probs: bool, uncertainty: bool, tta: bool) -> list[str]:
    out = ["mask"] + ["overlay"] * overlay + ["probs"] * probs
    return out + (["entropy"] + ["variance"] * tta) * uncertainty


def _check_free(out_dir: Path, items: list[PredictInput], suffixes: list[str]) -> None:
    planned = [out_dir / CSV_NAME] + [
        out_dir / f"{item.stem(f)}_{s}.png" for item in items for f in range(item.frames) for s in suffixes
    ]
    existing = [p for p in planned if p.exists()]
    if existing:
        more = f" and {len(existing) - 1} more output file(s)" if len(existing) > 1 else ""
        raise OutputExistsError(f"{existing[0]} already exists{more}; pass --overwrite to replace them")


def _write_png(path: Path, image: np.ndarray) -> None:
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(bgr)):
        raise RabussegError(f"cannot write {path} (disk full or folder not writable?)")


def _to_u8(x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    return np.round(np.clip(x * scale, 0.0, 255.0)).astype(np.uint8)


def draw_contour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the outline of each lesion region drawn on it (line width grows with the image)."""
    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(mask.shape) / 256))
    cv2.drawContours(out, contours, -1, CONTOUR_RGB, thickness)
    return out


def _row(unit: _Unit, result: SegmenterResult) -> dict[str, Any]:
    area = int(result.mask.sum())
    spacing = unit.spacing
    return {
        "name": unit.item.stem(unit.frame),
        "source": str(unit.item.path),
        "frame": unit.frame if unit.item.frames > 1 else "",
        "height": result.mask.shape[0],
        "width": result.mask.shape[1],
        "lesion_area_px": area,
        "lesion_area_mm2": f"{area * spacing[0] * spacing[1]:.4f}" if spacing else "",
        "spacing_mm": f"{spacing[0]:g}x{spacing[1]:g}" if spacing else "",
        "mean_confidence": f"{float(result.probabilities[result.mask].mean()):.4f}" if area else "",
        "mean_entropy": f"{float(result.entropy.mean()):.4f}",
        "mean_variance": f"{float(result.variance.mean()):.6f}" if result.variance is not None else "",
    }


def _write_unit(out_dir: Path, unit: _Unit, result: SegmenterResult, suffixes: list[str]) -> None:
    stem = out_dir / unit.item.stem(unit.frame)
    maps = {
        "mask": lambda: result.mask.astype(np.uint8) * 255,
        "overlay": lambda: draw_contour(unit.image, result.mask),
        "probs": lambda: _to_u8(result.probabilities),
        "entropy": lambda: _to_u8(result.entropy),
        "variance": lambda: _to_u8(result.variance if result.variance is not None else 0 * result.entropy, 1020.0),
    }
    for suffix in suffixes:
        _write_png(Path(f"{stem}_{suffix}.png"), maps[suffix]())


def _reason(err: Exception, path: Path) -> str:
    text = str(err)
    return text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text


def _units(items: list[PredictInput], failures: list[InputFailure]) -> Iterator[_Unit]:
    """Load lazily, one input at a time, so a folder of cine loops never sits in memory at once."""
    for item in items:
        try:
            frames, spacing = load_frames(item)
        except DataError as err:
            failures.append(InputFailure(item.path, _reason(err, item.path)))
            continue
        if len(frames) != item.frames:
            item = replace(item, frames=len(frames))
        for f, frame in enumerate(frames):
            yield _Unit(item, f, frame, spacing)


def predict_inputs(engine: Engine, inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                   overlay: bool = False, probs: bool = False, uncertainty: bool = False, tta: bool = False,
                   overwrite: bool = False, batch_size: int = 4, progress: bool = True) -> PredictSummary:
    """Segment every input into ``out_dir`` (see the module doc for the files); returns what happened."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    items, failures = collect_inputs(inputs)
    suffixes = _suffixes(overlay, probs, uncertainty, tta)
    if not overwrite:
        _check_free(out, items, suffixes)
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out_dir=out, csv_path=out / CSV_NAME, failures=failures)
    columns = [TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("predict", total=sum(item.frames for item in items))
        pending: list[_Unit] = []
        for unit in chain(_units(items, failures), [None]):
            if unit is not None:
                pending.append(unit)
            if pending and (unit is None or len(pending) >= batch_size):
                results = engine.predict_batch([u.image for u in pending], tta=tta)
                for u, result in zip(pending, results):
                    _write_unit(out, u, result, suffixes)
                    summary.rows.append(_row(u, result))
                bar.advance(task, len(pending))
                pending = []
    with summary.csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(summary.rows)
    return summary
