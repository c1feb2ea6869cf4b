"""The checkpoints a server runs, loaded once, and one lock around inference.

Checkpoints load with ``weights_only=True`` (through :class:`~rabusseg.inference.segmenter.Segmenter`)
and run at their own inference size and resize mode.  Inference is serialised: torch already
uses every core for one image, and a lock keeps concurrent requests from interleaving state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rabusseg.app.serve.security import NotFound
from rabusseg.errors import RabussegError
from rabusseg.inference.segmenter import Segmenter, SegmenterResult


@dataclass(frozen=True)
class Figures:
    """Per-image numbers of a prediction at a threshold."""

    lesion_area_px: int
    lesion_area_mm2: float | None
    mean_probability: float | None
    """Mean lesion probability inside the predicted lesion (None when there is none)."""
    uncertainty: float
    """Mean normalised entropy over the image (0 certain, 1 a coin flip everywhere)."""

    def as_dict(self) -> dict[str, Any]:
        return {"lesion_area_px": self.lesion_area_px, "lesion_area_mm2": self.lesion_area_mm2,
                "mean_probability": self.mean_probability, "uncertainty": self.uncertainty}  # fmt: skip


def figures(result: SegmenterResult, threshold: float, spacing: tuple[float, float] | None) -> Figures:
    mask = result.probabilities > threshold
    area = int(mask.sum())
    mm2 = area * spacing[0] * spacing[1] if spacing else None
    mean_p = float(result.probabilities[mask].mean()) if area else None
    return Figures(area, mm2, mean_p, float(result.entropy.mean()))


class ModelPool:
    """Named checkpoints (the file name without ``.pt``; made unique), loaded on first use."""

    def __init__(self, checkpoints: list[Path], device: str = "cpu") -> None:
        self.paths: dict[str, Path] = {}
        for path in checkpoints:
            path = Path(path)
            if not path.is_file():
                raise RabussegError(f"--checkpoint {path}: file not found")
            name, n = path.stem, 2
            while name in self.paths:
                name, n = f"{path.stem}-{n}", n + 1
            self.paths[name] = path
        self.device = device
        self._loaded: dict[Path, Segmenter] = {}
        self.lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.paths)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, path in self.paths.items():
            seg = self.segmenter_for(path)
            out.append({"name": name, "file": path.name, "size": seg.size, "resize": seg.resize})
        return out

    def segmenter(self, name: str | None) -> Segmenter:
        if not self.paths:
            raise NotFound("no checkpoint was given: start the server with --checkpoint FILE.pt")
        if name in (None, ""):
            name = next(iter(self.paths))
        if name not in self.paths:
            raise NotFound(f"no checkpoint named {name!r}; loaded: {', '.join(self.paths)}")
        return self.segmenter_for(self.paths[name])

    def segmenter_for(self, path: Path) -> Segmenter:
        """Any checkpoint file the server was given (or a run's own), loaded once."""
        with self.lock:
            if path not in self._loaded:
                self._loaded[path] = Segmenter.from_checkpoint(path, device=self.device)
            return self._loaded[path]

    def predict(self, segmenter: Segmenter, image: np.ndarray, tta: bool = False) -> SegmenterResult:
        with self.lock:
            return segmenter.predict(image, tta=tta)
