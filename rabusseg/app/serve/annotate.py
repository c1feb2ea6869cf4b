"""Correcting predicted masks into new labels: the ranking queue and the safe save.

The rules a save follows (and the tests check):

* the mask goes to ``masks/<id>.png`` atomically (a temporary file in the same folder, then a
  rename); an existing mask is replaced only when the request says ``overwrite`` (the page asks);
* the id moves into a *new* labelled list: ``splits/<target>/`` starts as a copy of the base
  split's lists, then the id goes from ``unlabeled.txt`` to ``labeled.txt``.  The base split, the
  test list and every other list are never written;
* an id of the test list cannot be annotated into training (400), an unknown id is 404;
* the mask must have the image's size and decode as an image; nothing is written otherwise.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rabusseg.app.serve.security import SPLIT_NAME, Forbidden, NotFound
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import read_split
from rabusseg.errors import DataError, OutputExistsError
from rabusseg.files import atomic_write

SPLIT_FILES = ("labeled.txt", "unlabeled.txt", "val.txt")


def unlabeled_lists(folder: DatasetFolder) -> list[str]:
    """Split names that end in ``unlabeled`` (``1_8/unlabeled``): what can be annotated from."""
    return [name for name in folder.available_splits() if name.rsplit("/", 1)[-1] == "unlabeled"]


def base_of(split: str) -> str:
    """``1_8/unlabeled`` -> ``1_8``: the split folder whose lists a new one copies."""
    if not split.endswith("/unlabeled"):
        raise NotFound(f"{split!r} is not an unlabelled list (expected <split>/unlabeled)")
    return split.rsplit("/", 1)[0]


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def decode_mask(payload: bytes, shape: tuple[int, int]) -> np.ndarray:
    """A posted mask (any image mode; non-black = lesion) as ``bool (H, W)`` of the image's size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            array = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"the mask does not decode as an image ({err})") from None
    if array.shape != tuple(shape):
        raise DataError(f"the mask is {array.shape[1]}x{array.shape[0]} but the image is {shape[1]}x{shape[0]}")
    return array > 0


@dataclass
class RankJob:
    """A ranking of one unlabelled list, computed in a background thread."""

    split: str
    checkpoint: str
    state: str = "running"
    done: int = 0
    total: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"split": self.split, "checkpoint": self.checkpoint, "state": self.state, "done": self.done,
                "total": self.total, "error": self.error,
                "rows": [{k: r[k] for k in ("rank", "id", "score", "entropy", "disagreement", "lesion_area_px")}
                         for r in self.rows]}  # fmt: skip


class _Locked:
    """A segmenter whose every batch takes the server's inference lock (other requests interleave)."""

    def __init__(self, segmenter: Any, lock: threading.Lock) -> None:
        self.segmenter, self.lock = segmenter, lock

    def predict_batch(self, images: Any, *, tta: bool | None = None) -> Any:
        with self.lock:
            return self.segmenter.predict_batch(images, tta=tta)


class Annotator:
    """The ``--data`` folder, its ranking jobs and the mask/list writes."""

    def __init__(self, root: Path) -> None:
        self.folder = DatasetFolder(root)
        self.root = self.folder.root
        self.jobs: dict[tuple[str, str], RankJob] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Re-index the folder (a saved mask is then seen by the data index)."""
        self.folder = DatasetFolder(self.root)

    def known_id(self, image_id: str) -> str:
        if image_id not in self.folder:
            raise NotFound(f"no image {image_id!r} in {self.root / 'images'}")
        return image_id

    def test_ids(self) -> set[str]:
        try:
            return set(self.folder.split("test"))
        except Exception:  # noqa: BLE001  no test list: nothing to protect
            return set()

    def start_ranking(self, split: str, checkpoint: str, pool: Any, tta: bool) -> RankJob:
        """Start (or return the running) ranking of ``split`` with ``checkpoint``."""
        from rabusseg.inference.ranking import rank_unlabeled

        if split not in unlabeled_lists(self.folder):
            raise NotFound(f"no unlabelled list {split!r}; available: {', '.join(unlabeled_lists(self.folder)) or 'none'}")
        segmenter = pool.segmenter(checkpoint)
        key = (split, checkpoint)
        with self._lock:
            job = self.jobs.get(key)
            if job is not None and job.state == "running":
                return job
            ids = self.folder.split(split)
            job = RankJob(split, checkpoint, total=len(ids))
            self.jobs[key] = job

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def run() -> None:
            try:
                job.rows = rank_unlabeled(_Locked(segmenter, pool.lock), self.folder, ids, top=0, tta=tta,
                                          progress=False, on_progress=progress)  # fmt: skip
                job.state = "done"
            except Exception as err:  # noqa: BLE001  reported to the page
                job.state, job.error = "failed", str(err)

        threading.Thread(target=run, name=f"rank-{split}", daemon=True).start()
        return job

    def job(self, split: str, checkpoint: str) -> RankJob:
        job = self.jobs.get((split, checkpoint))
        if job is None:
            raise NotFound(f"no ranking of {split!r} with {checkpoint!r} has been started")
        return job

    def save(self, image_id: str, payload: bytes, *, split: str, target: str, overwrite: bool) -> dict[str, Any]:
        """Write the mask and move the id into ``splits/<target>/``; see the module docstring for the rules."""
        self.known_id(image_id)
        base = base_of(split)
        if image_id in self.test_ids():
            raise DataError(f"{image_id} is in the test list: it cannot be annotated into training")
        if not SPLIT_NAME.match(target) or target in (base, "test") or target.startswith("test/"):
            raise Forbidden(f"new list name {target!r}: use letters, digits, _ . - (one or two parts), not {base!r} or test")
        image = self.folder.image_path(image_id)
        from PIL import Image

        with Image.open(image) as im:
            shape = (im.height, im.width)
        mask = decode_mask(payload, shape)
        target_dir = (self.root / "splits" / target).resolve()
        if not target_dir.is_relative_to((self.root / "splits").resolve()):
            raise Forbidden(f"new list name {target!r} leaves {self.root / 'splits'}")
        mask_path = self.root / "masks" / f"{image_id}.png"
        existing = self.folder.mask_path(image_id)
        if existing is not None and not overwrite:
            raise OutputExistsError(f"{existing} already exists; confirm to replace it")
        lists = self._moved_lists(base, target_dir, image_id)
        from rabusseg.app.serve.uploads import png_bytes

        _atomic_write(mask_path, png_bytes((mask * 255).astype(np.uint8)))
        if existing is not None and existing != mask_path and existing.exists():
            existing.unlink()  # the same id's mask under another extension would shadow the new one
        for name, ids in lists.items():
            _atomic_write(target_dir / name, "".join(f"{i}\n" for i in ids).encode("utf-8"))
        self.refresh()
        labeled = f"{target}/labeled"
        return {"mask": str(mask_path), "lesion_px": int(mask.sum()), "labeled": labeled, "labeled_count": len(lists["labeled.txt"]),
                "command": (f"rabusseg train cpu_small --out runs/{target.replace('/', '_')} --set data.root={self.root} "
                            f"--set data.labeled={labeled} --set data.unlabeled={target}/unlabeled")}  # fmt: skip

    def _moved_lists(self, base: str, target_dir: Path, image_id: str) -> dict[str, list[str]]:
        """The target's lists after moving ``image_id`` (copied from the base on the first save)."""
        source = target_dir if (target_dir / "labeled.txt").is_file() else self.root / "splits" / base
        lists = {}
        for name in SPLIT_FILES:
            path = source / name
            if path.is_file():
                lists[name] = read_split(path)
        if "labeled.txt" not in lists:
            raise NotFound(f"split {base!r} has no labeled.txt to start the new list from")
        lists["labeled.txt"] = [*[i for i in lists["labeled.txt"] if i != image_id], image_id]
        lists["unlabeled.txt"] = [i for i in lists.get("unlabeled.txt", []) if i != image_id]
        if "val.txt" in lists:
            lists["val.txt"] = [i for i in lists["val.txt"] if i != image_id]
        return lists
