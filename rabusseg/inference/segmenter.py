"""``Segmenter``: a trained network behind a numpy-in, numpy-out interface.

A user holding an ultrasound frame as an array (from a file, a DICOM, a video grabber) calls
``Segmenter.from_checkpoint(path).predict(image)`` and gets the lesion mask and probability map at
the image's own size.  Everything the network needs (resize to the inference size, ImageNet
normalisation, optional TTA, resizing back) happens here, through the same
:func:`~rabusseg.inference.tta.predict_probabilities_with_variance` that evaluation uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rabusseg.checkpoint import (
    FROM_CHECKPOINT,
    inference_geometry,
    inference_tta,
    load_checkpoint,
    model_from_checkpoint,
)
from rabusseg.constants import DEFAULT_INFERENCE_SIZE, LESION_THRESHOLD
from rabusseg.devices import resolve_device
from rabusseg.errors import DataError
from rabusseg.inference.tta import (
    DEFAULT_SCALES,
    entropy_map,
    predict_probabilities_with_variance,
    resize_probabilities,
)


@dataclass(frozen=True)
class SegmenterResult:
    """One image's prediction, all arrays at the image's original ``(H0, W0)``."""

    mask: np.ndarray
    """bool: lesion where the lesion probability exceeds the threshold (0.5)."""
    probabilities: np.ndarray
    """float32 lesion probability (1 - background probability)."""
    entropy: np.ndarray
    """float32 per-pixel entropy of the class probabilities, normalised to [0, 1]."""
    variance: np.ndarray | None = None
    """float32 variance of the lesion probability over TTA views (``None`` without TTA)."""


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any grey/RGB(A) uint8 or uint16 array as contiguous ``uint8 (H, W, 3)``.

    16-bit data keeps its high byte (``v >> 8``), the fixed rule of :func:`rabusseg.data.io.load_image`,
    so an array and the same image loaded from a 16-bit PNG give the same prediction.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise DataError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{name}: expected a uint8 or uint16 array, got {image.dtype}")
    return np.ascontiguousarray(image)


class BaseSegmenter:
    """Pre/post-processing shared by the torch and ONNX Runtime engines."""

    def __init__(self, *, size: int | None = DEFAULT_INFERENCE_SIZE, tta: bool = False, flip: bool = True,
                 scales: Sequence[float] = DEFAULT_SCALES, threshold: float = LESION_THRESHOLD, source: str = "<model>",
                 resize: str = "square") -> None:  # fmt: skip
        from rabusseg.data.transforms import EVAL_RESIZE_MODES

        if size is not None and size < 8:
            raise ValueError(f"inference size must be at least 8 pixels, got {size}")
        if resize not in EVAL_RESIZE_MODES:
            raise ValueError(f"resize must be one of {EVAL_RESIZE_MODES}, got {resize!r}")
        self.size, self.resize, self.tta, self.flip, self.scales = size, resize, tta, flip, tuple(scales)
        self.threshold, self.source = threshold, source

    def _probabilities(self, batch: torch.Tensor, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, K, h, w)`` of the normalised ``batch``; engines override this."""
        raise NotImplementedError

    def _prepare(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize and normalise exactly as evaluation does (``EvalDataset``), so scores carry over;
        also the (h, w) the image fills in the input."""
        from rabusseg.data.transforms import eval_input, normalize_image

        image, valid = eval_input(rgb, self.size, self.resize)
        return normalize_image(image), valid

    def predict(self, image: np.ndarray, *, tta: bool | None = None) -> SegmenterResult:
        """Segment one ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 image."""
        return self.predict_batch([image], tta=tta)[0]

    def predict_batch(self, images: Sequence[np.ndarray], *, tta: bool | None = None) -> list[SegmenterResult]:
        """Segment several images in one forward pass (one pass per image when ``size`` is ``None``)."""
        use_tta = self.tta if tta is None else tta
        if not images:
            return []
        rgbs = [to_rgb_uint8(im, f"image {i}") for i, im in enumerate(images)]
        originals = [rgb.shape[:2] for rgb in rgbs]
        prepared = [self._prepare(rgb) for rgb in rgbs]
        groups = [list(range(len(images)))] if self.size is not None else [[i] for i in range(len(images))]
        results: list[SegmenterResult | None] = [None] * len(images)
        for group in groups:
            mean, var = self._probabilities(torch.stack([prepared[i][0] for i in group]), use_tta)
            for j, i in enumerate(group):
                vh, vw = prepared[i][1]  # crop the padding of an aspect-kept input
                results[i] = self._finish(mean[j : j + 1, :, :vh, :vw], var[j : j + 1, :, :vh, :vw], originals[i], use_tta)
        return [r for r in results if r is not None]

    def _finish(self, mean: torch.Tensor, var: torch.Tensor, size: tuple[int, int], tta: bool) -> SegmenterResult:
        mean = resize_probabilities(mean.float().cpu(), size)  # (1, K, H0, W0)
        lesion = (1.0 - mean[0, 0]).clamp_(0.0, 1.0).numpy().astype(np.float32)
        entropy = entropy_map(mean)[0].numpy().astype(np.float32)
        variance = None
        if tta:
            variance = resize_probabilities(var[:, :1].float().cpu(), size)[0, 0].clamp_min(0).numpy().astype(np.float32)
        return SegmenterResult(mask=lesion > self.threshold, probabilities=lesion, entropy=entropy, variance=variance)


class Segmenter(BaseSegmenter):
    """A PyTorch network rebuilt from a checkpoint, ready to segment numpy images."""

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                        weights: str = "auto", size: int | None | str = FROM_CHECKPOINT,
                        tta: bool | str = FROM_CHECKPOINT,
                        resize: str = FROM_CHECKPOINT, **kwargs: object) -> Segmenter:  # fmt: skip
        """Rebuild the network from the checkpoint alone (its stored config) and load its weights.

        ``weights`` picks ``student``/``teacher``; ``auto`` uses the checkpoint's own choice.
        ``size``/``resize``/``tta`` default to what the run evaluated with (its ``data.eval_size``,
        ``data.eval_resize`` and ``train.eval_tta``).
        """
        path = Path(path)
        payload = load_checkpoint(path, map_location="cpu")
        size, resize = inference_geometry(payload, size, resize)
        model = model_from_checkpoint(payload, weights, source=path)
        return cls(model, device=device, size=size, tta=inference_tta(payload, tta), source=str(path), resize=resize,
                   **kwargs)  # fmt: skip

    def _probabilities(self, batch: torch.Tensor, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return predict_probabilities_with_variance(
            self.model, batch.to(self.device), tta=tta, flip=self.flip, scales=self.scales
        )
