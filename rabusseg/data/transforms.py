"""Augmentation and normalisation pipelines (albumentations 2.x) for training, evaluation and inference.

Training follows METHOD section 3: optional resize of the longer side, random scale 0.5-2.0,
horizontal flip, random crop with the image padded with 0 and the label with 255 (ignored).
Geometric pipelines work on ``uint8`` arrays and stop before normalisation, so a *strong*
intensity view can be drawn from the very same crop (pixel-aligned with the weak view; CutMix is
the training loop's business).  :func:`normalize_image` is the one place ImageNet statistics are
applied, shared by datasets and inference code.

albumentations 2.x draws from generators owned by each transform and seeded from OS entropy
unless told otherwise; :func:`reseed` gives every transform of a pipeline its own stream from one
integer, which the datasets call once per sample (see :mod:`rabusseg.data.datasets`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.composition import BaseCompose

from rabusseg.constants import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` RGB -> ``float32 (3, H, W)`` with ImageNet mean/std (what the encoders expect)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"normalize_image expects a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    out = (image.astype(np.float32) - _MEAN) * _INV_STD
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """Label array (0/1, 255 = ignore) -> ``int64 (H, W)`` tensor for cross-entropy."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))


def build_train_transform(
    crop_size: int,
    scale_range: tuple[float, float] = (0.5, 2.0),
    resize_to: int | None = None,
    hflip_p: float = 0.5,
    pad_label: int = IGNORE_INDEX,
) -> A.Compose:
    """Weak geometric view: resize, random scale, flip, pad (image 0, label ``pad_label``) and random crop.

    Why: the METHOD's augmentation; ``image`` stays ``uint8`` and ``mask`` is ``uint8`` with values
    0/1 and ``pad_label`` (:data:`IGNORE_INDEX`, or 0 for ``data.pad_label: background``) where the
    scaled image was smaller than the crop.  Called with an image only (unlabelled data) it works
    the same way.
    """
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be two positive numbers, low <= high; got {scale_range}")
    steps: list[A.BasicTransform] = []
    if resize_to is not None:
        steps.append(A.LongestMaxSize(max_size=resize_to, interpolation=cv2.INTER_LINEAR))
    steps += [
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.HorizontalFlip(p=hflip_p),
        A.PadIfNeeded(
            min_height=crop_size, min_width=crop_size, position="random",
            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=pad_label,
        ),
        A.RandomCrop(height=crop_size, width=crop_size),
    ]  # fmt: skip
    return _seeded(A.Compose(steps))


def build_resize(resize_to: int | None) -> A.Compose | None:
    """Scale the longer side to ``resize_to`` (image bilinear, mask nearest); ``None``: no resize.

    Deterministic, so the training pipeline applies it once per image when decoding
    (:mod:`rabusseg.data.cache`) instead of once per sample.
    """
    if resize_to is None:
        return None
    if resize_to <= 0:
        raise ValueError(f"resize_to must be positive or None, got {resize_to}")
    return A.Compose([A.LongestMaxSize(max_size=resize_to, interpolation=cv2.INTER_LINEAR)])


def build_strong_transform(
    jitter: float = 0.5,
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
) -> A.Compose:
    """Strong intensity view for unlabelled images: colour jitter, grayscale, Gaussian blur.

    Why: intensity-only, so it can be applied to the weak crop and the teacher's pseudo-label on
    the weak view stays pixel-aligned with the student's input (the UniMatch/FixMatch recipe).
    """
    steps = [
        A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 2, p=jitter_p),
        A.ToGray(num_output_channels=3, p=gray_p),
        A.GaussianBlur(blur_limit=0, sigma_limit=blur_sigma, p=blur_p),
    ]
    return _seeded(A.Compose(steps))


def build_appearance_transform(p: float) -> A.Compose | None:
    """Scanner-appearance changes for labelled crops: gain, contrast, gamma, blur, speckle.

    Why: BUSI comes from one scanner family; other machines (and presets of the same one) differ
    in overall gain, dynamic range (gamma), resolution (blur) and speckle.  Each change is drawn
    with probability ``p``; intensity-only, so the mask is untouched.  ``p = 0``: none (``None``).
    """
    if p <= 0:
        return None
    steps = [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=p),
        A.RandomGamma(gamma_limit=(70, 150), p=p),
        A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, 1.2), p=p / 2),
        A.MultiplicativeNoise(multiplier=(0.85, 1.15), per_channel=False, elementwise=True, p=p / 2),
    ]
    return _seeded(A.Compose(steps))


def build_eval_transform(size: int | None) -> A.Compose | None:
    """Resize the image (not the mask) to ``size`` x ``size`` for inference; ``None`` keeps it whole.

    Why: batches of a fixed shape; predictions are resized back to the original size, where the
    metrics are computed (METHOD section 4).
    """
    if size is None:
        return None
    if size <= 0:
        raise ValueError(f"eval size must be positive or None, got {size}")
    return A.Compose([A.Resize(height=size, width=size, interpolation=cv2.INTER_LINEAR)])  # deterministic


EVAL_RESIZE_MODES = ("square", "longest")
"""``square``: stretch to size x size; ``longest``: keep the aspect ratio (longer side = size, as
training's ``data.resize_to`` does) and pad the rest with 0 (as training pads crops)."""


def eval_input(image: np.ndarray, size: int | None, resize: str = "square") -> tuple[np.ndarray, tuple[int, int]]:
    """The network input of an evaluation/inference image and the (h, w) the image fills inside it.

    ``square`` stretches to ``size x size`` (fills it all); ``longest`` scales the longer side to
    ``size`` with the training resize's rounding and pads the bottom/right to ``size x size`` with
    zeros, so the network sees lesions with the proportions it was trained on.  ``size=None``
    keeps the image.  Predictions are cropped to the filled (h, w) before being resized back.
    """
    if size is None:
        return image, (int(image.shape[0]), int(image.shape[1]))
    if resize not in EVAL_RESIZE_MODES:
        raise ValueError(f"eval resize must be one of {EVAL_RESIZE_MODES}, got {resize!r}")
    if resize == "square":
        return build_eval_transform(size)(image=image)["image"], (size, size)  # type: ignore[misc]
    scaled = build_resize(size)(image=image)["image"]  # type: ignore[misc]
    h, w = scaled.shape[:2]
    padded = np.zeros((size, size, *scaled.shape[2:]), dtype=scaled.dtype)
    padded[:h, :w] = scaled
    return padded, (h, w)


def _seeded(pipeline: A.Compose) -> A.Compose:
    """A fixed default seed (albumentations would draw one from OS entropy); datasets reseed per sample."""
    reseed(pipeline, 0)
    return pipeline


def _walk(transform: Any) -> Iterator[Any]:
    """The pipeline and every transform nested in it, parents before children."""
    yield transform
    if isinstance(transform, BaseCompose):  # (ColorJitter also has a `transforms` list: of functions)
        for child in transform.transforms:
            yield from _walk(child)


def reseed(transform: Any, seed: int) -> None:
    """Seed every transform of a pipeline from one integer, each with an independent stream.

    Why: ``Compose.set_random_seed`` hands all children the *same* seed, which correlates their
    decisions (e.g. the flip with the scale); here each transform gets its own word of
    ``SeedSequence(seed).generate_state``.
    """
    nodes = list(_walk(transform))
    states = np.random.SeedSequence(seed).generate_state(len(nodes), dtype=np.uint32)
    for node, state in zip(nodes, states):  # parents first: a Compose resets its children
        if hasattr(node, "set_random_seed"):
            node.set_random_seed(int(state))
