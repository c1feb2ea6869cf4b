"""Torch datasets over the folder format, and worker seeding (the samplers live in :mod:`rabusseg.engine.streams`).

Dict contracts (docs/ARCHITECTURE.md): labelled ``{"image": float32 (3, h, w), "mask": int64
(h, w) 0/1/255, "id"}``; unlabelled ``{"image", "valid", "id"}`` (+ ``"image_strong"``), where
``valid`` is ``bool (h, w)``, False on crop padding so pseudo-label losses can skip it;
evaluation ``{"image": (3, s, s), "mask": int64 (H0, W0), "id", "original_size": (H0, W0)}``.

Randomness: each ``__getitem__`` draws one integer from torch's RNG and seeds its pipelines from
it (:func:`rabusseg.data.transforms.reseed`).  DataLoader workers get distinct torch seeds
(``base_seed + worker_id``, drawn from the loader's generator every epoch), so augmentation is
deterministic for a seed and a worker count, and never repeats across workers.  This module
imports torch; ``rabusseg.data`` itself stays torch-free.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rabusseg.constants import DEFAULT_INFERENCE_SIZE
from rabusseg.data.cache import DecodedImages
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import load_image, load_mask
from rabusseg.data.transforms import IGNORE_INDEX, build_resize, eval_input, mask_to_tensor, normalize_image, reseed
from rabusseg.errors import DataError

Transform = Callable[..., dict[str, Any]]
FolderLike = DatasetFolder | str | os.PathLike[str]


def _as_folder(folder: FolderLike) -> DatasetFolder:
    return folder if isinstance(folder, DatasetFolder) else DatasetFolder(folder)


def _checked_ids(folder: DatasetFolder, ids: Sequence[str], need_masks: bool) -> list[str]:
    """The ids as a list, after checking they exist (and have masks) so errors surface before training."""
    ids = list(ids)
    if not ids:
        raise DataError(f"{folder.root}: the id list is empty (nothing to load)")
    unknown = [i for i in ids if i not in folder]
    if unknown:
        raise DataError(f"{len(unknown)} id(s) not in {folder.root / 'images'}: {', '.join(unknown[:5])}")
    if need_masks:
        missing = [i for i in ids if folder.mask_path(i) is None]
        if missing:
            where = folder.root / "masks"
            raise DataError(f"{len(missing)} labelled id(s) have no mask in {where}: {', '.join(missing[:5])}")
    return ids


class _Source:
    """Where a training dataset gets its (resized) arrays: the decoded-image cache or the files.

    Both give the same arrays: the resize is the same deterministic step either way.
    """

    def __init__(self, folder: DatasetFolder, resize_to: int | None, images: DecodedImages | None) -> None:
        if images is not None and images.resize_to != resize_to:
            raise ValueError(f"the decoded images were resized to {images.resize_to}, the dataset asks for {resize_to}")
        self.folder, self.images, self.resize = folder, images, build_resize(resize_to)

    def image(self, image_id: str) -> np.ndarray:
        if self.images is not None:
            return self.images.image(image_id)
        image = load_image(self.folder.image_path(image_id))
        return image if self.resize is None else self.resize(image=image)["image"]

    def pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        if self.images is not None:
            mask = self.images.mask(image_id)
            if mask is None:
                raise DataError(f"id '{image_id}': its mask was not decoded with the images")
            return self.images.image(image_id), mask
        image, mask = _load_pair(self.folder, image_id)
        if self.resize is None:
            return image, mask
        out = self.resize(image=image, mask=mask.astype(np.uint8))
        return out["image"], out["mask"].astype(bool)


def _load_pair(folder: DatasetFolder, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = load_image(folder.image_path(image_id))
    mask_path = folder.mask_path(image_id)
    if mask_path is None:
        raise DataError(f"id '{image_id}' has no mask in {folder.root / 'masks'}")
    mask = load_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{folder.image_path(image_id).name} is {image.shape[1]}x{image.shape[0]}"
        )
    return image, mask


def _sample_seed() -> int:
    """One integer from this process's torch RNG (per-worker seeded by the DataLoader)."""
    return int(torch.randint(0, 2**62, (1,)).item())


class LabeledDataset(Dataset):
    """Images with masks, augmented by a geometric ``transform`` (``None``: the whole image).

    ``resize_to`` scales the longer side first (once per image when ``images``, the decoded
    cache, is given; per sample from the file otherwise: the samples are the same).
    """

    def __init__(self, folder: FolderLike, ids: Sequence[str], transform: Transform | None = None, *,
                 resize_to: int | None = None, images: DecodedImages | None = None,
                 appearance: Transform | None = None) -> None:  # fmt: skip
        self.folder = _as_folder(folder)
        self.ids = _checked_ids(self.folder, ids, need_masks=True)
        self.transform = transform
        self.appearance = appearance
        """Intensity-only changes after the geometric ones (``data.appearance_p``)."""
        self.source = _Source(self.folder, resize_to, images)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image, mask = self.source.pair(image_id)
        label = mask.astype(np.uint8)
        if self.transform is not None:
            seed = _sample_seed()
            reseed(self.transform, seed)
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
            if self.appearance is not None:
                reseed(self.appearance, seed ^ 0x2545F491)
                image = self.appearance(image=image)["image"]
        return {"image": normalize_image(image), "mask": mask_to_tensor(label), "id": image_id}


class UnlabeledDataset(Dataset):
    """Images without labels: the weak crop and, when ``strong_transform`` is given, a strong view of it."""

    def __init__(
        self,
        folder: FolderLike,
        ids: Sequence[str],
        transform: Transform | None = None,
        strong_transform: Transform | None = None,
        *,
        resize_to: int | None = None,
        images: DecodedImages | None = None,
    ) -> None:
        self.folder = _as_folder(folder)
        self.ids = _checked_ids(self.folder, ids, need_masks=False)
        self.transform = transform
        self.strong_transform = strong_transform
        self.source = _Source(self.folder, resize_to, images)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image = self.source.image(image_id)
        padding = np.zeros(image.shape[:2], np.uint8)  # 255 marks padding after the crop
        seed = _sample_seed()
        if self.transform is not None:
            reseed(self.transform, seed)
            out = self.transform(image=image, mask=padding)
            image, padding = out["image"], out["mask"]
        valid = torch.from_numpy(padding != IGNORE_INDEX)
        sample: dict[str, Any] = {"image": normalize_image(image), "valid": valid, "id": image_id}
        if self.strong_transform is not None:
            reseed(self.strong_transform, seed ^ 0x5DEECE66D)
            sample["image_strong"] = normalize_image(self.strong_transform(image=image)["image"])
        return sample


class EvalDataset(Dataset):
    """Images as the network sees them at ``size`` (``None``: kept whole) with masks at the original size.

    ``resize`` is ``square`` (stretched) or ``longest`` (aspect kept, zero-padded): see
    :func:`rabusseg.data.transforms.eval_input`; ``valid_size`` is the (h, w) the image fills.
    """

    def __init__(self, folder: FolderLike, ids: Sequence[str], size: int | None = DEFAULT_INFERENCE_SIZE, resize: str = "square") -> None:
        self.folder = _as_folder(folder)
        self.ids = _checked_ids(self.folder, ids, need_masks=True)
        self.size, self.resize = size, resize

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image, mask = _load_pair(self.folder, image_id)
        original_size = (int(mask.shape[0]), int(mask.shape[1]))
        image, valid_size = eval_input(image, self.size, self.resize)
        image_t, mask_t = normalize_image(image), mask_to_tensor(mask)
        return {"image": image_t, "mask": mask_t, "id": image_id, "original_size": original_size,
                "valid_size": valid_size}  # fmt: skip


def eval_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the (equally sized) images; keep masks, ids, original and valid sizes as lists."""
    shapes = {tuple(s["image"].shape) for s in batch}
    if len(shapes) > 1:
        raise DataError(f"cannot batch images of different sizes {sorted(shapes)}: set an eval size or batch size 1")
    return {
        "image": torch.stack([s["image"] for s in batch]),
        "mask": [s["mask"] for s in batch],
        "id": [s["id"] for s in batch],
        "original_size": [s["original_size"] for s in batch],
        "valid_size": [s["valid_size"] for s in batch],
    }


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``numpy`` and ``random`` from the worker's torch seed.

    Why: torch seeds each worker differently every epoch, but numpy/``random`` global state is
    copied from the parent, so any code using them would repeat the same numbers in every worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
