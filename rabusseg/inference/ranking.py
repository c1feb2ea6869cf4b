"""Which unlabelled images to annotate next: rank them by how unsure the model is about each.

Semi-supervised training gains most from labelling the images the current model gets wrong,
and those are the ones it is least certain about.  Per image, in a region ``R`` that covers the
candidate lesion and a band around its boundary (where a segmentation is decided):

* ``R`` = pixels whose lesion probability exceeds 0.1 (the predicted lesion plus near-misses),
  dilated by ``band`` = 5% of the image's shorter side; the whole image when that set is empty;
* ``entropy`` = mean normalised entropy in ``R`` (0 = certain, 1 = coin flip);
* ``disagreement`` = mean standard deviation of the lesion probability over the TTA views in
  ``R``, times 2 so that it also spans [0, 1] (not measured without TTA: reported as 0);
* ``score`` = (``entropy`` + ``disagreement``) / 2 with TTA, ``entropy`` alone without; highest first.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rabusseg.data.io import load_image
from rabusseg.errors import refuse_existing
from rabusseg.inference.segmenter import BaseSegmenter, SegmenterResult

CANDIDATE_PROBABILITY = 0.1
BAND_FRACTION = 0.05
RANKING_COLUMNS = ["rank", "id", "score", "entropy", "disagreement", "lesion_area_px", "region_px", "path"]


def uncertainty_region(result: SegmenterResult, band_fraction: float = BAND_FRACTION) -> np.ndarray:
    """Boolean ``R``: candidate lesion pixels dilated by a band; the whole image if there are none."""
    candidate = (result.probabilities > CANDIDATE_PROBABILITY) | result.mask
    if not candidate.any():
        return np.ones_like(candidate)
    band = max(1, round(band_fraction * min(candidate.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    return cv2.dilate(candidate.astype(np.uint8), kernel) > 0


def uncertainty_scores(result: SegmenterResult, band_fraction: float = BAND_FRACTION) -> dict[str, float]:
    """``entropy``, ``disagreement`` and the combined ``score`` of one prediction (module doc)."""
    region = uncertainty_region(result, band_fraction)
    entropy = float(result.entropy[region].mean())
    disagreement, score = 0.0, entropy
    if result.variance is not None:
        disagreement = float(np.clip(2.0 * np.sqrt(result.variance[region]), 0.0, 1.0).mean())
        score = (entropy + disagreement) / 2.0
    return {"score": score, "entropy": entropy, "disagreement": disagreement,
            "lesion_area_px": int(result.mask.sum()), "region_px": int(region.sum())}


def write_ranking(rows: list[dict[str, Any]], path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``ranking.csv``: rank, id, score and its components, predicted lesion area."""
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=RANKING_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def rank_unlabeled(segmenter: BaseSegmenter, folder: Any, ids: Sequence[str], *, top: int | None = 20,
                   tta: bool = True, out: str | os.PathLike[str] | None = None, overwrite: bool = False,
                   batch_size: int = 4, progress: bool = True,
                   on_progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Rank ``ids`` of a :class:`~rabusseg.data.folder.DatasetFolder` by uncertainty, most uncertain first.

    Returns the ``top`` rows (all when ``top`` is ``None`` or 0) and writes them to ``out`` if given.
    ``on_progress(done, total)`` is called after each batch (the web workbench shows it).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if out is not None:
        refuse_existing(out, overwrite)
    rows: list[dict[str, Any]] = []
    ids = list(ids)
    columns = [TextColumn("ranking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("rank", total=len(ids))
        for start in range(0, len(ids), max(1, batch_size)):
            chunk = ids[start : start + max(1, batch_size)]
            paths = [folder.image_path(i) for i in chunk]
            results = segmenter.predict_batch([load_image(p) for p in paths], tta=tta)
            for image_id, path, result in zip(chunk, paths, results):
                rows.append({"id": image_id, **uncertainty_scores(result), "path": str(path)})
            bar.advance(task, len(chunk))
            if on_progress is not None:
                on_progress(len(rows), len(ids))
    rows.sort(key=lambda r: (-r["score"], r["id"]))
    rows = rows[:top] if top else rows
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    if out is not None:
        write_ranking(rows, out, overwrite=True)
    return rows
