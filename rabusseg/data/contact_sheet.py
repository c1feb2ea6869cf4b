"""A PNG grid of dataset samples with their lesion contours, so a reader sees what the data look like."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rabusseg.data.io import is_image_file, load_image, load_mask
from rabusseg.errors import DataError


def _pick_ids(dataset_dir: Path, n: int) -> list[tuple[str, str]]:
    """Up to ``n`` (id, class) pairs alternating classes, in metadata order."""
    meta = dataset_dir / "metadata.csv"
    if meta.is_file():
        with open(meta, newline="", encoding="utf-8") as f:
            rows = [(r["id"], r.get("class", "")) for r in csv.DictReader(f)]
    else:
        rows = [(p.stem, "") for p in sorted((dataset_dir / "images").glob("*")) if is_image_file(p)]
    by_class: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    queues = list(by_class.values())
    picked: list[tuple[str, str]] = []
    for k in range(max((len(q) for q in queues), default=0)):
        picked += [q[k] for q in queues if k < len(q)]
    return picked[:n]


def _image_path(dataset_dir: Path, pid: str) -> Path:
    for p in sorted((dataset_dir / "images").glob(f"{pid}.*")):
        if is_image_file(p):
            return p
    raise DataError(f"no image for id '{pid}' in {dataset_dir / 'images'}")


def save_contact_sheet(dataset_dir: str | Path, out_png: str | Path, n: int = 8, cols: int = 4) -> Path:
    """Save ``n`` images of a dataset folder with the mask outline drawn in colour.

    Why: the docs show the synthetic phantoms next to what they imitate; a quick visual check
    of a prepared dataset (mask alignment, field of view) is also useful.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset_dir = Path(dataset_dir)
    picked = _pick_ids(dataset_dir, n)
    if not picked:
        raise DataError(f"no images found in {dataset_dir / 'images'}")
    rows = int(np.ceil(len(picked) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (pid, cls) in zip(axes.flat, picked):
        image = load_image(_image_path(dataset_dir, pid))
        mask = load_mask(dataset_dir / "masks" / f"{pid}.png")
        ax.imshow(image, interpolation="nearest")
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=["#ff4d4d"], linewidths=0.8)
        ax.set_title(f"{pid} ({cls})" if cls else pid, fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
