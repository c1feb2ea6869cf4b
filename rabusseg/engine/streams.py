"""Training data streams whose every sample is fixed by (seed, epoch, position).

Why not a plain ``DataLoader(shuffle=True)``: a resumed run must replay the exact stream of an
uninterrupted one, whatever ``num_workers`` is.  Here a batch sampler yields *keys*
``(stream, index, sample_seed)`` computed from (seed, epoch, global position) alone; the dataset
wrapper seeds the augmentation from the key.  Resuming mid-epoch is then just starting the
sampler at the next batch.  Positions are global over ranks (rank r of W takes the r-th slice of
each global batch), so W processes with batch B see the same images as one with batch W*B.

The labelled stream is resampled to the length of the unlabelled one (METHOD section 3): both
are chains of seeded permutations cut to ``steps_per_epoch * batch * world_size``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rabusseg.config import DataConfig
from rabusseg.constants import IGNORE_INDEX
from rabusseg.data.folder import DatasetFolder
from rabusseg.errors import ConfigError, DataError, RabussegError
from rabusseg.paths import resolve_data_root

if TYPE_CHECKING:
    from rabusseg.data.cache import DecodedImages

LABELED, UNLABELED = 0, 1
SampleKey = tuple[int, int, int]
"""(stream, index into that stream's dataset, sample seed)."""


@dataclass(frozen=True)
class SplitIds:
    """The dataset folder and the id lists a run uses."""

    folder: DatasetFolder
    labeled: list[str]
    unlabeled: list[str]
    val: list[str]
    test: list[str]


def load_split_ids(cfg: DataConfig, need_unlabeled: bool) -> SplitIds:
    """Resolve ``data.root`` and read every split list, naming the config key on failure.

    The unlabelled list is read even for the supervised baseline when it is named: it sizes the
    epoch, so every method takes the same number of optimiser steps.

    Also refuses a labelled or unlabelled id that is in the test list (a leak the metrics would
    never show) and a labelled id that is also in the validation list.
    """
    try:
        folder = DatasetFolder(resolve_data_root(cfg.root))
    except RabussegError as err:
        raise ConfigError(f"data.root: {err}") from None

    def read(key: str, name: str | None) -> list[str]:
        if name is None:
            return []
        try:
            return folder.split(name)
        except RabussegError as err:
            raise ConfigError(f"data.{key}: {err}") from None

    ids = SplitIds(folder, read("labeled", cfg.labeled), read("unlabeled", cfg.unlabeled), read("val", cfg.val),
                   read("test", cfg.test))  # fmt: skip
    if not ids.labeled:
        raise ConfigError(f"data.labeled: the list '{cfg.labeled}' is empty")
    if need_unlabeled and not ids.unlabeled:
        raise ConfigError(f"data.unlabeled: the list '{cfg.unlabeled}' is empty")
    test = set(ids.test)
    for key, members in (("labeled", ids.labeled), ("unlabeled", ids.unlabeled), ("val", ids.val)):
        leaked = sorted(test.intersection(members))
        if leaked:
            raise DataError(f"data.{key}: {len(leaked)} id(s) are also in the test list: {', '.join(leaked[:5])}")
    overlap = sorted(set(ids.val).intersection(ids.labeled))
    if overlap:
        raise DataError(f"data.val: {len(overlap)} id(s) are also labelled training images: {', '.join(overlap[:5])}")
    return ids


def sample_seed(seed: int, epoch: int, stream: int, position: int) -> int:
    """A 63-bit seed for one sample, a pure function of its coordinates."""
    return int(np.random.SeedSequence([seed, epoch, stream, position]).generate_state(1, np.uint64)[0] >> 1)


def stream_order(n_items: int, length: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    """``length`` indices from chained permutations of ``n_items`` seeded by (seed, epoch, stream)."""
    rng = np.random.default_rng([seed, epoch, stream])
    rounds = -(-length // n_items)
    return np.concatenate([rng.permutation(n_items) for _ in range(rounds)])[:length]


class KeyBatchSampler(Sampler[list[SampleKey]]):
    """Per step, this rank's labelled keys then its unlabelled keys (none when ``n_unlabeled == 0``).

    ``batch_size`` labelled and ``unlabeled_batch_size`` (default: as many) unlabelled keys a step.
    """

    def __init__(self, n_labeled: int, n_unlabeled: int, batch_size: int, steps_per_epoch: int, *,
                 seed: int, rank: int = 0, world_size: int = 1, unlabeled_batch_size: int | None = None) -> None:  # fmt: skip
        self.sizes = {LABELED: n_labeled, UNLABELED: n_unlabeled}
        self.batches = {LABELED: batch_size, UNLABELED: unlabeled_batch_size or batch_size}
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        """Iterate ``epoch`` from its ``start_step``-th batch (resume skips consumed batches)."""
        self.epoch, self.start = epoch, start_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start

    def __iter__(self) -> Iterator[list[SampleKey]]:
        world, steps = self.world_size, self.steps_per_epoch
        orders = {s: stream_order(n, steps * self.batches[s] * world, self.seed, self.epoch, s)
                  for s, n in self.sizes.items() if n > 0}  # fmt: skip
        for step in range(self.start, steps):
            keys = []
            for s, order in orders.items():
                batch = self.batches[s]
                first = (step * world + self.rank) * batch
                keys += [(s, int(order[p]), sample_seed(self.seed, self.epoch, s, p)) for p in range(first, first + batch)]
            yield keys


class SeededPairDataset(Dataset):
    """Dispatches a key to the labelled or unlabelled dataset with torch's RNG seeded from the key.

    The data layer's datasets draw their augmentation seed from torch's RNG; seeding it per
    sample (inside ``fork_rng`` so the trainer's own stream, e.g. dropout, is untouched when
    ``num_workers == 0``) makes the sample depend on its key only.
    """

    def __init__(self, labeled: Dataset, unlabeled: Dataset | None) -> None:
        self.datasets = {LABELED: labeled, UNLABELED: unlabeled}

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values() if d is not None)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> tuple[int, dict[str, Any]]:
        stream, index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return stream, self.datasets[stream][index]  # type: ignore[index]


def collate_streams(items: list[tuple[int, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split a step's samples into the labelled batch and the unlabelled one (or ``None``)."""
    def stack(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: (torch.stack([s[k] for s in samples]) if torch.is_tensor(samples[0][k]) else [s[k] for s in samples])
                for k in samples[0]}  # fmt: skip

    labeled = [s for stream, s in items if stream == LABELED]
    unlabeled = [s for stream, s in items if stream == UNLABELED]
    return stack(labeled), (stack(unlabeled) if unlabeled else None)


def decode_training_images(cfg: DataConfig, ids: SplitIds, *, semi: bool) -> tuple[DecodedImages | None, str]:
    """The decoded-image cache of a run's training lists (``data.cache``), and the log line about it.

    A corrupt or unreadable training file stops the run here, before the first step.
    """
    from rabusseg.data.cache import MIB, load_with_message

    if not cfg.cache:
        return None, "data.cache is off: every sample is decoded from its file"
    wanted = ids.labeled + (ids.unlabeled if semi else [])
    return load_with_message(ids.folder, wanted, masks_for=ids.labeled, resize_to=cfg.resize_to,
                             max_bytes=cfg.cache_max_mib * MIB)  # fmt: skip


def build_train_loader(cfg: DataConfig, ids: SplitIds, sampler: KeyBatchSampler, *, strong_view: bool,
                       pin_memory: bool = False, images: DecodedImages | None = None) -> DataLoader:  # fmt: skip
    """The one DataLoader of a run: labelled + unlabelled samples of a step in one batch.

    ``images`` (from :func:`decode_training_images`) serves the arrays from memory; without it
    each sample is decoded from its file.  Either way the samples are the same.
    """
    from rabusseg.data.datasets import LabeledDataset, UnlabeledDataset, seed_worker
    from rabusseg.data.transforms import build_appearance_transform, build_strong_transform, build_train_transform

    def geometric(pad_label: int = IGNORE_INDEX) -> Any:
        return build_train_transform(cfg.crop_size, tuple(cfg.scale_range), pad_label=pad_label)  # resize: the source

    # Unlabelled crops always mark their padding IGNORE_INDEX: it becomes their `valid` mask.
    labeled_pad = 0 if cfg.pad_label == "background" else IGNORE_INDEX  # 0: the background class
    labeled = LabeledDataset(ids.folder, ids.labeled, geometric(labeled_pad), resize_to=cfg.resize_to, images=images,
                             appearance=build_appearance_transform(cfg.appearance_p))  # fmt: skip
    unlabeled = None
    if sampler.sizes[UNLABELED] > 0:
        strong = build_strong_transform() if strong_view else None
        unlabeled = UnlabeledDataset(ids.folder, ids.unlabeled, geometric(), strong_transform=strong,
                                     resize_to=cfg.resize_to, images=images)  # fmt: skip
    return DataLoader(
        SeededPairDataset(labeled, unlabeled),
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_streams,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        # Its own generator: creating an epoch's iterator must not consume the global torch RNG.
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )
