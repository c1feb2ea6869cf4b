"""Precise BatchNorm statistics for a network or a checkpoint, from images at the inference geometry.

The training loop calls :func:`recalibrate_network` on its final model (``train.precise_bn``);
``rabusseg recalibrate`` calls :func:`recalibrate_checkpoint` on a checkpoint file, for models
trained without it, or to re-estimate the statistics on a new scanner's unlabelled images
(AdaBN, Li et al. 2016).  Only images are read: masks are never needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rabusseg.checkpoint import inference_geometry, load_checkpoint, model_from_checkpoint, save_checkpoint
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import load_image
from rabusseg.data.transforms import eval_input, normalize_image
from rabusseg.errors import DataError, refuse_existing
from rabusseg.models.batchnorm import recalibrate_batchnorm
from rabusseg.paths import resolve_data_root

DEFAULT_BATCH = 16
"""Images per statistics batch: small enough for a CPU, large enough that a batch's variance is a
fair estimate (its between-image part is what the per-batch average would otherwise lose)."""


def choose_images(ids: Sequence[str], limit: int | None, seed: int = 0) -> list[str]:
    """The images to estimate on, in a seeded random order (batches mix the classes of a sorted list);
    at most ``limit`` of them."""
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [ids[i] for i in order]
    return chosen if limit is None else chosen[:limit]


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """Split ``n`` images into the fewest batches of at most ``batch_size``, as equal as possible,
    none of a single image (a batch may then exceed ``batch_size`` by one).

    Why: a BatchNorm layer in training mode cannot normalise a batch of one image at a 1x1 map
    (ASPP's image-pooling branch), and a small remainder batch would weigh as much as a full one in
    the average.  65 images in batches of 16 become five of 13; 3 in batches of 2 one of 3.
    """
    if n < 2:
        raise DataError(f"BatchNorm statistics need at least 2 images, got {n}")
    count = min(-(-n // batch_size), n // 2)
    base, extra = divmod(n, count)
    return [base + 1] * extra + [base] * (count - extra)


def eval_geometry_batches(folder: DatasetFolder, ids: Sequence[str], size: int, resize: str = "square",
                          batch_size: int = DEFAULT_BATCH, memory_format: torch.memory_format = torch.contiguous_format,
                          device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:  # fmt: skip
    """Normalised (B, 3, size, size) batches of the images as inference feeds them (``size``, ``resize``)."""
    start = 0
    for n in batch_sizes(len(ids), batch_size):
        chunk = ids[start:start + n]
        start += n
        tensors = [normalize_image(eval_input(load_image(folder.image_path(i)), size, resize)[0]) for i in chunk]
        yield torch.stack(tensors).to(device).contiguous(memory_format=memory_format)


def recalibrate_network(networks: nn.Module | Sequence[nn.Module], folder: DatasetFolder, ids: Sequence[str],
                        size: int | None, resize: str = "square", *, batch_size: int = DEFAULT_BATCH,
                        memory_format: torch.memory_format = torch.contiguous_format,
                        device: torch.device | str = "cpu") -> int:  # fmt: skip
    """Re-estimate the BatchNorm statistics of one network, or of several in one pass over the images
    (a student and its teacher: each image is decoded once), on ``ids`` at the inference geometry;
    the batch count.  Each network's statistics are those it would get on its own.

    Needs a fixed inference ``size``: whole images differ in size and could only come one at a time.
    """
    if size is None:
        raise DataError("BatchNorm statistics need a fixed inference size: whole images differ in size and cannot "
                        "be batched (give --size N, or data.eval_size)")
    if len(ids) < 2:
        raise DataError(f"{folder.root}: BatchNorm statistics need at least 2 images, got {len(ids)}")
    group = nn.ModuleList([networks] if isinstance(networks, nn.Module) else networks)
    batches = eval_geometry_batches(folder, ids, size, resize, batch_size, memory_format, device)
    return recalibrate_batchnorm(group, batches, forward=lambda nets, x: [net(x, relations=False) for net in nets])


@dataclass(frozen=True)
class RecalibrationResult:
    """What :func:`recalibrate_checkpoint` wrote."""

    path: Path
    images: int
    networks: tuple[str, ...]
    """``student`` and, when the checkpoint has one, ``teacher``."""
    size: int
    resize: str
    seconds: float


def recalibrate_checkpoint(checkpoint: str | os.PathLike[str], data_root: str | os.PathLike[str],
                           splits: Sequence[str], out: str | os.PathLike[str], *, max_images: int | None = None,
                           size: int | None | str = "checkpoint", resize: str = "checkpoint",
                           batch_size: int = DEFAULT_BATCH, overwrite: bool = False, seed: int | None = None,
                           device: str = "cpu") -> RecalibrationResult:  # fmt: skip
    """A copy of ``checkpoint`` whose networks' BatchNorm statistics come from the images of ``splits``.

    ``splits`` are list names under ``splits/`` or ``.txt`` paths (all images of the folder when empty); ``size`` and
    ``resize`` default to the checkpoint's own inference geometry.  ``max_images`` keeps a subset drawn
    with ``seed``, by default the run's ``train.seed`` (the subset ``train.precise_bn`` would have
    used on the same list).  The learned weights are
    untouched; the optimiser state is dropped (the copy is for inference).  ``out`` must differ
    from ``checkpoint`` and is written atomically; an existing file needs ``overwrite``.
    """
    source, target = Path(checkpoint), Path(out)
    if target.resolve() == source.resolve():
        raise DataError(f"{target}: recalibrate writes a new checkpoint; choose an output other than its input")
    refuse_existing(target, overwrite)
    started = time.perf_counter()
    payload = load_checkpoint(source)
    folder = DatasetFolder(resolve_data_root(data_root))
    ids = [i for name in splits for i in folder.split(name)] if splits else list(folder.ids)
    if seed is None:
        seed = int(((payload.get("config") or {}).get("train") or {}).get("seed", 0))
    ids = choose_images(list(dict.fromkeys(ids)), max_images, seed=seed)
    inference_size, inference_resize = inference_geometry(payload, size, resize)
    networks = tuple(name for name in ("student", "teacher") if isinstance(payload.get(name), dict))
    new = {k: v for k, v in payload.items() if k not in ("format", "format_version", "optimizer")}
    models = {name: model_from_checkpoint(payload, name, source).to(device) for name in networks}
    recalibrate_network(list(models.values()), folder, ids, inference_size, inference_resize,
                        batch_size=batch_size, device=device)  # fmt: skip
    for name, model in models.items():
        new[name] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    new["precise_bn"] = {"images": len(ids), "splits": list(splits), "data": str(folder.root), "seed": seed}
    save_checkpoint(new, target)
    return RecalibrationResult(target, len(ids), networks, inference_size, inference_resize,
                               time.perf_counter() - started)  # fmt: skip
