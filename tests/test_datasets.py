"""Torch datasets (dict contracts, errors), worker-safe determinism and the resampling sampler."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rabusseg.data.datasets import EvalDataset, LabeledDataset, UnlabeledDataset, eval_collate, seed_worker
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.phantoms import synthesize_dataset
from rabusseg.data.transforms import IGNORE_INDEX, build_strong_transform, build_train_transform
from rabusseg.errors import DataError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("datasets") / "ds"
    synthesize_dataset(out, n=8, seed=0, size=(72, 88))
    return out


def test_labeled_dataset_contract(tiny: Path) -> None:
    folder = DatasetFolder(tiny)
    ds = LabeledDataset(folder, folder.ids[:4], build_train_transform(96, scale_range=(0.5, 1.0)))
    assert len(ds) == 4
    sample = ds[0]
    assert set(sample) == {"image", "mask", "id"} and sample["id"] == folder.ids[0]
    assert sample["image"].shape == (3, 96, 96) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (96, 96) and sample["mask"].dtype == torch.int64
    assert set(sample["mask"].unique().tolist()) <= {0, 1, IGNORE_INDEX}
    assert (sample["mask"] == IGNORE_INDEX).any()  # 88 px at most: the 96 crop is padded
    whole = LabeledDataset(tiny, folder.ids[:1])[0]  # a path works too; no transform: whole image
    assert whole["image"].shape == (3, 72, 88) and set(whole["mask"].unique().tolist()) == {0, 1}


def test_unlabeled_dataset_contract_with_a_pixel_aligned_strong_view(tiny: Path) -> None:
    folder = DatasetFolder(tiny)
    transform = build_train_transform(64)
    ds = UnlabeledDataset(folder, folder.ids, transform, strong_transform=build_strong_transform(blur_p=0.0))
    sample = ds[1]
    assert set(sample) == {"image", "image_strong", "valid", "id"}
    assert sample["image"].shape == sample["image_strong"].shape == (3, 64, 64)
    assert sample["valid"].dtype == torch.bool and sample["valid"].shape == (64, 64)
    plain = UnlabeledDataset(folder, folder.ids, transform)[1]
    assert "image_strong" not in plain
    # Intensity-only strong view of the same crop: the two views are pixel-aligned.
    for seed in range(4):
        torch.manual_seed(seed)
        s = ds[seed]
        weak, strong = s["image"][0].flatten(), s["image_strong"][0].flatten()
        if strong.std() > 0:
            assert torch.corrcoef(torch.stack([weak, strong]))[0, 1] > 0.9


def test_eval_dataset_resizes_and_keeps_the_original_size(tiny: Path) -> None:
    folder = DatasetFolder(tiny)
    ds = EvalDataset(folder, folder.ids[:3], size=48)
    batch = eval_collate([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 48, 48)
    assert [tuple(m.shape) for m in batch["mask"]] == [(72, 88)] * 3
    assert batch["original_size"] == [(72, 88)] * 3 and batch["id"] == folder.ids[:3]
    assert all(m.dtype == torch.int64 and set(m.unique().tolist()) <= {0, 1} for m in batch["mask"])
    full = EvalDataset(folder, folder.ids[:1], size=None)[0]
    assert full["image"].shape == (3, 72, 88)


def _epoch(ds: LabeledDataset, workers: int, torch_seed: int) -> list[dict]:
    torch.manual_seed(torch_seed)
    order = [0, 1, 2, 0, 1, 2, 0, 1]  # 3 items resampled to 8 draws
    return list(DataLoader(ds, batch_size=2, sampler=order, num_workers=workers, worker_init_fn=seed_worker))


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"]) and x["id"] == y["id"]
               for x, y in zip(a, b, strict=True))  # fmt: skip


def test_augmentation_is_deterministic_for_a_seed_with_workers(tiny: Path) -> None:
    folder = DatasetFolder(tiny)
    ds = LabeledDataset(folder, folder.ids[:3], build_train_transform(48))
    first = _epoch(ds, 2, torch_seed=0)
    assert len(first) == 4 and _same(first, _epoch(ds, 2, torch_seed=0))
    assert not _same(first, _epoch(ds, 2, torch_seed=1))
    assert _same(_epoch(ds, 0, torch_seed=0), _epoch(ds, 0, torch_seed=0))
    # Resampling repeats items (3 items, 8 draws) but never their augmentation, across workers too.
    images = [img for batch in first for img in batch["image"]]
    assert len(images) == 8 and all(not torch.equal(images[i], images[j]) for i in range(8) for j in range(i))


def test_bad_inputs_raise_data_errors(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not in"):
        LabeledDataset(tiny, ["no_such_id"])
    with pytest.raises(DataError, match="empty"):
        UnlabeledDataset(tiny, [])
    copy = tmp_path / "ds"
    shutil.copytree(tiny, copy)
    ids = DatasetFolder(copy).ids
    (copy / "masks" / f"{ids[0]}.png").unlink()
    with pytest.raises(DataError, match="no mask"):
        LabeledDataset(copy, ids[:2])
    UnlabeledDataset(copy, ids[:2])  # unlabelled images need no mask
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(copy / "masks" / f"{ids[1]}.png")
    with pytest.raises(DataError, match=rf"{ids[1]}\.png: mask is 12x10"):
        EvalDataset(copy, ids[1:2], size=32)[0]


@pytest.mark.realdata
def test_busi_through_the_pipeline(busi_dir: Path) -> None:
    folder = DatasetFolder(busi_dir)
    labeled = folder.split("1_2/labeled")[:2]
    sample = LabeledDataset(folder, labeled, build_train_transform(128, resize_to=256))[0]
    assert sample["image"].shape == (3, 128, 128) and sample["mask"].dtype == torch.int64
    test_id = folder.split("test")[0]
    item = EvalDataset(folder, [test_id], size=96)[0]
    meta = folder.meta(test_id)
    assert item["original_size"] == (int(meta["height"]), int(meta["width"]))
    assert item["image"].shape == (3, 96, 96) and tuple(item["mask"].shape) == item["original_size"]
