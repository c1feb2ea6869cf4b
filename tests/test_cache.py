"""The decoded-image cache: same samples as decoding per sample, shared with workers, bad files found first."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rabusseg.data.cache import MIB, DecodedImages, estimate_bytes, resized_shape
from rabusseg.data.datasets import LabeledDataset, UnlabeledDataset
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import load_image, load_mask
from rabusseg.data.phantoms import synthesize_dataset
from rabusseg.data.transforms import build_strong_transform, build_train_transform
from rabusseg.errors import DataError
from tests._train_helpers import make_tiny_dataset, tiny_config


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "ds"
    synthesize_dataset(out, n=6, seed=0, size=(90, 120))
    return out


def _samples(dataset: torch.utils.data.Dataset, seeds: range) -> list[dict]:
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(dataset[seed % len(dataset)])
    return out


def test_cached_arrays_are_the_decoded_and_resized_files(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    images = DecodedImages.load(folder, folder.ids, masks_for=folder.ids[:2], resize_to=60)
    assert len(images) == 6 and images.nbytes == 6 * 45 * 60 * 3 + 2 * 45 * 60
    image = images.image(folder.ids[0])
    assert image.shape == (45, 60, 3) and image.dtype == np.uint8 and not image.flags.writeable
    assert images.mask(folder.ids[0]).shape == (45, 60) and images.mask(folder.ids[0]).dtype == np.bool_
    assert images.mask(folder.ids[3]) is None  # no mask asked for
    whole = DecodedImages.load(folder, folder.ids[:1], masks_for=folder.ids[:1])
    np.testing.assert_array_equal(whole.image(folder.ids[0]), load_image(folder.image_path(folder.ids[0])))
    np.testing.assert_array_equal(whole.mask(folder.ids[0]), load_mask(folder.mask_path(folder.ids[0])))
    with pytest.raises(KeyError, match="not in the decoded-image cache"):
        images.image("nope")


def test_samples_are_identical_with_and_without_the_cache(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    ids = folder.ids
    images = DecodedImages.load(folder, ids, masks_for=ids[:3], resize_to=64)
    transform = build_train_transform(48, scale_range=(0.5, 2.0))
    strong = build_strong_transform()
    pairs = [
        (LabeledDataset(folder, ids[:3], transform, resize_to=64),
         LabeledDataset(folder, ids[:3], transform, resize_to=64, images=images)),
        (UnlabeledDataset(folder, ids[3:], transform, strong, resize_to=64),
         UnlabeledDataset(folder, ids[3:], transform, strong, resize_to=64, images=images)),
    ]  # fmt: skip
    for from_files, from_cache in pairs:
        for a, b in zip(_samples(from_files, range(8)), _samples(from_cache, range(8)), strict=True):
            assert a.keys() == b.keys()
            for key in a:
                if torch.is_tensor(a[key]):
                    assert torch.equal(a[key], b[key]), key
                else:
                    assert a[key] == b[key]


def test_workers_read_the_shared_buffer(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    images = DecodedImages.load(folder, folder.ids, masks_for=folder.ids, resize_to=64)
    ds = LabeledDataset(folder, folder.ids, build_train_transform(32), resize_to=64, images=images)

    def epoch(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(ds, batch_size=2, num_workers=workers, generator=torch.Generator().manual_seed(3))
        return [b["image"] for b in loader]

    for a, b in zip(epoch(0), epoch(2), strict=True):
        assert a.shape == b.shape == (2, 3, 32, 32)


def test_every_bad_file_is_named_before_anything_is_kept(phantoms: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(phantoms, copy)
    folder = DatasetFolder(copy)
    first, second = folder.image_path(folder.ids[1]), folder.image_path(folder.ids[4])
    first.write_bytes(first.read_bytes()[:200])  # truncated PNG
    second.write_bytes(b"")
    with pytest.raises(DataError) as err:
        DecodedImages.load(folder, folder.ids)
    message = str(err.value)
    assert message.startswith("2 training file(s) cannot be read")
    assert str(first) in message and str(second) in message


def test_a_cache_that_would_not_fit_is_refused_with_advice(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    needed = estimate_bytes(folder, folder.ids, set(folder.ids), None)
    assert needed == 6 * 90 * 120 * 4
    with pytest.raises(DataError, match=r"data\.cache_max_mib .*data\.resize_to.*data\.cache=false"):
        DecodedImages.load(folder, folder.ids, max_bytes=needed // 2)
    assert resized_shape(90, 120, 60) == (45, 60) and resized_shape(90, 120, None) == (90, 120)
    assert MIB == 1024 * 1024


@pytest.mark.slow
def test_a_truncated_unlabelled_image_stops_training_before_the_first_step(tmp_path: Path) -> None:
    from rabusseg.engine.trainer import train

    root = make_tiny_dataset(tmp_path / "ds")
    folder = DatasetFolder(root)
    bad = folder.image_path(folder.split("tiny/unlabeled")[-1])
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DataError, match="1 training file.*cannot be read") as err:
        train(tiny_config(root), tmp_path / "run")
    assert str(bad) in str(err.value)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or "train" not in (tmp_path / "run" / "metrics.jsonl").read_text()
