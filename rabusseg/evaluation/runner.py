"""Run a network over a split and score every image at its original resolution.

:func:`evaluate_model` is the in-memory entry (the trainer calls it with its live network);
:func:`evaluate_checkpoint` rebuilds a network from a checkpoint file and writes the outputs
(``per_image.csv``, ``summary.json``, ``report.html``) through :func:`write_evaluation`.

Predictions go through :func:`rabusseg.inference.tta.predict_probabilities` at the inference size,
then the *probabilities* are resized back to each image's original size
(:func:`rabusseg.inference.tta.resize_probabilities`) and thresholded there, exactly as
``rabusseg predict`` does, so evaluation scores the masks a user would get.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rabusseg.checkpoint import FROM_CHECKPOINT
from rabusseg.constants import DEFAULT_INFERENCE_SIZE, LESION_THRESHOLD
from rabusseg.errors import ConfigError, DataError
from rabusseg.evaluation.aggregate import Summary
from rabusseg.evaluation.gallery import GalleryCases
from rabusseg.evaluation.metrics import binary_metrics
from rabusseg.evaluation.output import prepare_out_dir, write_evaluation

if TYPE_CHECKING:
    from rabusseg.data.folder import DatasetFolder

__all__ = ["ALL_IMAGES", "GalleryCases", "evaluate_checkpoint", "evaluate_model", "evaluation_split",
           "write_evaluation"]

ALL_IMAGES = "all"
"""Split name meaning every image that has a mask (unless the folder has its own ``splits/all.txt``)."""
DEFAULT_SPLIT = "test"



def _progress(enabled: bool, total: int, description: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), disable=not enabled, transient=True)
    return progress, progress.add_task(description, total=total)


def evaluate_model(
    model: nn.Module,
    folder: DatasetFolder | str | os.PathLike[str],
    ids: Sequence[str],
    *,
    size: int | None = DEFAULT_INFERENCE_SIZE,
    device: str | torch.device | None = None,
    tta: bool = False,
    batch_size: int = 1,
    spacing: tuple[float, float] | None = None,
    progress: bool = True,
    gallery: GalleryCases | None = None,
    resize: str = "square",
) -> list[dict[str, Any]]:
    """One row per image: ``id``, ``class``, the metrics of :func:`binary_metrics`, ``height``, ``width``.

    ``folder`` is a :class:`~rabusseg.data.folder.DatasetFolder` (or its root); images become
    ``size x size`` network inputs, stretched (``resize="square"``) or aspect-kept and padded
    (``"longest"``); ``None``: full image, one at a time.  ``device=None`` keeps
    the model where it is (the trainer's network is not moved); the model's train/eval mode is
    restored afterwards.  ``spacing`` (row, column) turns HD95/ASSD into physical units; ``None``
    gives pixels.  ``gallery`` collects the best and worst predicted masks for the report.
    """
    from torch.utils.data import DataLoader

    from rabusseg.data.datasets import EvalDataset, eval_collate
    from rabusseg.data.folder import DatasetFolder
    from rabusseg.inference.tta import predict_probabilities, resize_probabilities

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        model.to(device)
    if not isinstance(folder, DatasetFolder):
        folder = DatasetFolder(folder)
    ids = list(ids)
    dataset = EvalDataset(folder, ids, size, resize)
    loader = DataLoader(dataset, batch_size=batch_size if size is not None else 1, shuffle=False,
                        num_workers=0, collate_fn=eval_collate)
    spacing_or_px = tuple(spacing) if spacing is not None else (1.0, 1.0)
    rows: list[dict[str, Any]] = []
    bar, task = _progress(progress, len(ids), "evaluating")
    with bar:
        for batch in loader:
            probs = predict_probabilities(model, batch["image"], tta=tta).float().cpu()  # (B, K, s, s)
            for j, image_id in enumerate(batch["id"]):
                gt = batch["mask"][j].numpy() == 1  # (H0, W0) bool, original size
                vh, vw = batch["valid_size"][j]  # the part of the input the image fills
                full = resize_probabilities(probs[j : j + 1, :, :vh, :vw], tuple(gt.shape))  # (1, K, H0, W0)
                pred = ((1.0 - full[0, 0]) > LESION_THRESHOLD).numpy()
                row = {"id": image_id, "class": folder.class_of(image_id) or "unknown"}
                row.update(binary_metrics(pred, gt, spacing_or_px))
                row.update(height=int(gt.shape[0]), width=int(gt.shape[1]))
                rows.append(row)
                if gallery is not None:
                    gallery.offer(image_id, row["dice"], pred, row["empty_case"])
                bar.advance(task)
    return rows


def evaluation_split(folder: DatasetFolder, split: str | None) -> tuple[str, list[str]]:
    """The split to score and its ids.

    ``None`` is ``test`` when the folder has that list and, when it has no split lists at all (an
    external dataset of ``images/`` and ``masks/`` only), every image with a mask: a user scoring a
    model on new data should not have to write a list first.  ``"all"`` asks for that explicitly.
    """
    lists = folder.available_splits()
    if split is None:
        split = DEFAULT_SPLIT if lists else ALL_IMAGES
    if split == ALL_IMAGES and ALL_IMAGES not in lists:
        ids = folder.labeled_ids()
        if not ids:
            raise DataError(f"{folder.root / 'masks'}: no image of {folder.root / 'images'} has a mask, so there is "
                            "nothing to score (rabusseg predict segments images without masks)")
        return split, ids
    try:
        return split, folder.split(split)
    except DataError as err:
        raise DataError(f"{err}; --split {ALL_IMAGES} scores every image that has a mask") from None


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str | None,
    out_dir: str | os.PathLike[str],
    *,
    tta: bool | str = FROM_CHECKPOINT,
    size: int | None | str = FROM_CHECKPOINT,
    device: str = "cpu",
    overwrite: bool = False,
    batch_size: int = 1,
    weights: str = "auto",
    resize: str = FROM_CHECKPOINT,
    spacing: tuple[float, float] | None = None,
    progress: bool = True,
    n_bootstrap: int = 1000,
) -> Summary:
    """Evaluate a checkpoint on ``DATA_DIR/splits/<split>.txt``, write the outputs, return the summary
    (with ``context``, the settings it scored with, as ``summary.json`` holds them).

    ``split`` is resolved by :func:`evaluation_split` (``None``: ``test``, or every image with a mask
    in a folder without split lists; ``"all"``: every image with a mask).

    ``size``/``resize``/``tta`` default to the checkpoint's own (:func:`~rabusseg.checkpoint.inference_geometry`,
    :func:`~rabusseg.checkpoint.inference_tta`).
    """
    from rabusseg.checkpoint import inference_geometry, inference_tta, load_checkpoint, model_from_checkpoint
    from rabusseg.data.folder import DatasetFolder
    from rabusseg.devices import resolve_device
    from rabusseg.evaluation.aggregate import summarize
    from rabusseg.paths import resolve_data_root

    if isinstance(size, int) and size < 8:
        raise ConfigError(f"inference size must be at least 8 pixels (or None for the full image), got {size}")
    out = prepare_out_dir(out_dir, overwrite, create=False)  # fail before minutes of inference, not after
    root = resolve_data_root(data_dir)
    folder = DatasetFolder(root)
    split, ids = evaluation_split(folder, split)
    payload = load_checkpoint(checkpoint, map_location="cpu")
    size, resize = inference_geometry(payload, size, resize)
    tta = inference_tta(payload, tta)
    model = model_from_checkpoint(payload, weights, source=checkpoint)
    gallery = GalleryCases()
    rows = evaluate_model(model, folder, ids, size=size, device=resolve_device(device), tta=tta,
                          batch_size=batch_size, spacing=spacing, progress=progress, gallery=gallery, resize=resize)
    summary = summarize(rows, n_bootstrap=n_bootstrap)
    context = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "step": payload.get("step"),
        "epoch": payload.get("epoch"),
        "weights": payload.get("inference_weights", "student") if weights == "auto" else weights,
        "data": str(root),
        "split": split,
        "size": size,
        "resize": resize,
        "tta": tta,
        "device": str(device),
        "distance_unit": "px" if spacing is None else "mm",
        "spacing": list(spacing) if spacing is not None else None,
    }
    write_evaluation(out, rows, summary, context, folder=folder, gallery=gallery, overwrite=overwrite)
    summary["context"] = context
    return summary
