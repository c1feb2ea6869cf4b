"""The training streams the loop actually uses: the key sampler (resume, ranks, resampling) and the leak guards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import make_tiny_dataset

from rabusseg.config import DataConfig
from rabusseg.engine.streams import LABELED, UNLABELED, KeyBatchSampler, load_split_ids, sample_seed, stream_order
from rabusseg.errors import ConfigError, DataError


def _batches(sampler: KeyBatchSampler) -> list[list[tuple[int, int, int]]]:
    return list(sampler)


def test_a_step_holds_the_labelled_then_the_unlabelled_keys() -> None:
    sampler = KeyBatchSampler(5, 12, batch_size=2, steps_per_epoch=6, seed=0)
    batches = _batches(sampler)
    assert len(sampler) == len(batches) == 6
    for batch in batches:
        assert [k[0] for k in batch] == [LABELED, LABELED, UNLABELED, UNLABELED]
    labelled = [k[1] for b in batches for k in b if k[0] == LABELED]
    counts = np.bincount(labelled, minlength=5)
    assert counts.min() >= 2 and counts.max() <= 3  # 5 items resampled to 12 draws: chained permutations
    unlabelled = [k[1] for b in batches for k in b if k[0] == UNLABELED]
    assert sorted(unlabelled) == list(range(12))  # one pass over the unlabelled list per epoch
    seeds = [k[2] for b in batches for k in b]
    assert len(set(seeds)) == len(seeds)  # every sample gets its own augmentation seed


def test_an_epoch_depends_on_seed_and_epoch_only_and_resume_skips_consumed_batches() -> None:
    a, b = KeyBatchSampler(5, 12, 2, 6, seed=3), KeyBatchSampler(5, 12, 2, 6, seed=3)
    assert _batches(a) == _batches(b)
    b.set_position(epoch=1)
    second = _batches(b)
    assert second != _batches(a)
    b.set_position(epoch=1, start_step=4)
    assert len(b) == 2 and _batches(b) == second[4:]  # a resumed epoch replays the rest exactly
    assert _batches(KeyBatchSampler(5, 12, 2, 6, seed=4)) != _batches(a)


def test_ranks_split_each_global_batch() -> None:
    """Two ranks with batch 2 see exactly the samples one process with batch 4 sees, keys and seeds alike."""
    single = _batches(KeyBatchSampler(6, 8, batch_size=4, steps_per_epoch=2, seed=1))
    ranks = [_batches(KeyBatchSampler(6, 8, batch_size=2, steps_per_epoch=2, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(2):
        merged = ranks[0][step] + ranks[1][step]
        assert sorted(merged) == sorted(single[step])
        assert not set(ranks[0][step]) & set(ranks[1][step])


def test_the_key_stream_of_existing_runs_is_unchanged() -> None:
    """Keys and seeds as the sampler of 2026-12-07 gave them (rank 1 of 2, epoch 1): a run resumed
    with a newer version must replay the same samples, so these values may never change."""
    sampler = KeyBatchSampler(5, 12, 2, 2, seed=0, rank=1, world_size=2)
    sampler.set_position(1)
    assert _batches(sampler) == [
        [(0, 3, 2989952719344189027), (0, 0, 6299387022927115695), (1, 4, 84617328061082747), (1, 11, 8852319114989928117)],
        [(0, 3, 7798862969140780453), (0, 4, 1535363461349179554), (1, 1, 7748936886085453865), (1, 8, 8805120135976460648)],
    ]


def test_a_smaller_unlabelled_batch_keeps_the_labelled_stream_and_one_pass_over_the_unlabelled() -> None:
    equal = _batches(KeyBatchSampler(5, 12, batch_size=3, steps_per_epoch=6, seed=2))
    assert _batches(KeyBatchSampler(5, 12, 3, 6, seed=2, unlabeled_batch_size=3)) == equal  # the default, key for key
    fewer = _batches(KeyBatchSampler(5, 12, batch_size=3, steps_per_epoch=6, seed=2, unlabeled_batch_size=2))
    for batch, same in zip(fewer, equal, strict=True):
        assert [k[0] for k in batch] == [LABELED] * 3 + [UNLABELED] * 2
        assert batch[:3] == same[:3]  # labelled keys and their augmentation seeds are unchanged
    assert sorted(k[1] for b in fewer for k in b if k[0] == UNLABELED) == list(range(12))
    single = _batches(KeyBatchSampler(6, 8, batch_size=4, steps_per_epoch=2, seed=1, unlabeled_batch_size=2))
    ranks = [_batches(KeyBatchSampler(6, 8, 2, 2, seed=1, rank=r, world_size=2, unlabeled_batch_size=1)) for r in (0, 1)]
    for step in range(2):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(single[step])


def test_the_trainer_sizes_epochs_and_batches_by_the_unlabelled_batch(tiny: Path, tmp_path: Path) -> None:
    from _train_helpers import tiny_config

    from rabusseg.engine.distributed import DistInfo
    from rabusseg.engine.loop import NO_CHECKPOINTS, fit
    from rabusseg.engine.trainer import prepare_run, train

    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    cfg = tiny_config(tiny, train={"batch_size": 2, "unlabeled_batch_size": 1, "steps_per_epoch": None, "max_steps": 2})
    ids = load_split_ids(cfg.data, need_unlabeled=True)
    run = prepare_run(cfg, info, tmp_path / "run", ids)
    assert run.steps_per_epoch == len(ids.unlabeled)  # one unlabelled image a step, one pass an epoch
    batch_x, batch_u = next(iter(run.loader))
    assert batch_x["image"].shape[0] == 2 and batch_u["image"].shape[0] == 1
    assert fit(run, NO_CHECKPOINTS).step == 2
    too_big = tiny_config(tiny, train={"unlabeled_batch_size": 1000, "steps_per_epoch": None})
    with pytest.raises(ConfigError, match=r"train\.unlabeled_batch_size: 1000 x 1 process"):
        prepare_run(too_big, info, tmp_path / "big", ids)
    lone = tiny_config(tiny, method={"name": "ra_busseg", "separate_forward": True}, train={"unlabeled_batch_size": 1})
    with pytest.raises(ConfigError, match=r"train\.unlabeled_batch_size: 1 unlabelled image in its own forward"):
        train(lone, tmp_path / "lone")
    with pytest.raises(ConfigError, match=r"train\.batch_size: 1000 x 1 process"):  # the key the user set
        prepare_run(tiny_config(tiny, train={"batch_size": 1000, "steps_per_epoch": None}), info, tmp_path / "b2", ids)


def test_supervised_has_no_unlabelled_stream_and_seeds_are_pure() -> None:
    batches = _batches(KeyBatchSampler(4, 0, batch_size=2, steps_per_epoch=3, seed=0))
    assert all(k[0] == LABELED for b in batches for k in b) and all(len(b) == 2 for b in batches)
    assert sample_seed(0, 1, 0, 5) == sample_seed(0, 1, 0, 5) != sample_seed(0, 1, 0, 6)
    assert sample_seed(0, 1, 0, 5) < 2**63
    order = stream_order(3, 7, seed=0, epoch=0, stream=LABELED)
    assert len(order) == 7 and sorted(order[:3].tolist()) == [0, 1, 2] and sorted(order[3:6].tolist()) == [0, 1, 2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("streams") / "ds")


def _data(root: Path, **kw: object) -> DataConfig:
    return DataConfig(root=str(root), labeled="tiny/labeled", unlabeled="tiny/unlabeled", val="tiny/val", test="test", **kw)


def test_split_ids_are_read_and_test_leaks_refused(tiny: Path, tmp_path: Path) -> None:
    ids = load_split_ids(_data(tiny), need_unlabeled=True)
    assert ids.labeled and ids.unlabeled and ids.val and ids.test
    assert not set(ids.test) & (set(ids.labeled) | set(ids.unlabeled) | set(ids.val))
    splits = tiny / "splits"
    for key, name in (("labeled", "labeled"), ("unlabeled", "unlabeled"), ("val", "val")):
        leak = tmp_path / f"leak_{key}"
        (leak / "splits" / "tiny").mkdir(parents=True)
        for entry in ("images", "masks"):
            (leak / entry).symlink_to(tiny / entry, target_is_directory=True)
        (leak / "splits" / "test.txt").write_text((splits / "test.txt").read_text())
        for other in ("labeled", "unlabeled", "val"):
            text = (splits / "tiny" / f"{other}.txt").read_text()
            if other == name:
                text += (splits / "test.txt").read_text().split()[0] + "\n"  # one test image slips in
            (leak / "splits" / "tiny" / f"{other}.txt").write_text(text)
        with pytest.raises(DataError, match=rf"data\.{key}: 1 id\(s\) are also in the test list"):
            load_split_ids(_data(leak), need_unlabeled=True)


def test_validation_overlapping_the_labelled_list_and_empty_lists_are_refused(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    (copy / "splits" / "tiny").mkdir(parents=True)
    for entry in ("images", "masks"):
        (copy / entry).symlink_to(tiny / entry, target_is_directory=True)
    for name in ("labeled", "unlabeled"):
        (copy / "splits" / "tiny" / f"{name}.txt").write_text((tiny / "splits" / "tiny" / f"{name}.txt").read_text())
    (copy / "splits" / "test.txt").write_text((tiny / "splits" / "test.txt").read_text())
    first_labelled = (tiny / "splits" / "tiny" / "labeled.txt").read_text().split()[0]
    (copy / "splits" / "tiny" / "val.txt").write_text(first_labelled + "\n")
    with pytest.raises(DataError, match=r"data\.val: 1 id\(s\) are also labelled"):
        load_split_ids(_data(copy), need_unlabeled=True)
    (copy / "splits" / "tiny" / "unlabeled.txt").write_text("")
    (copy / "splits" / "tiny" / "val.txt").write_text("")
    with pytest.raises(ConfigError, match=r"data\.unlabeled: the list 'tiny/unlabeled' is empty"):
        load_split_ids(_data(copy), need_unlabeled=True)
    assert load_split_ids(_data(copy), need_unlabeled=False).unlabeled == []
    with pytest.raises(ConfigError, match=r"data\.val"):
        load_split_ids(DataConfig(root=str(tiny), labeled="tiny/labeled", unlabeled=None, val="tiny/nope"), need_unlabeled=False)


def test_pad_label_marks_labelled_crop_padding_background_and_unlabelled_padding_stays_invalid(tiny: Path) -> None:
    """Crops of 96 px from 64 px phantoms scaled 0.5-1: every crop has padding (black image pixels)."""
    from rabusseg.constants import IGNORE_INDEX
    from rabusseg.engine.streams import build_train_loader

    batches = {}
    for pad_label in ("ignore", "background"):
        cfg = _data(tiny, crop_size=96, scale_range=(0.5, 1.0), num_workers=0, pad_label=pad_label)
        ids = load_split_ids(cfg, need_unlabeled=True)
        sampler = KeyBatchSampler(len(ids.labeled), len(ids.unlabeled), batch_size=2, steps_per_epoch=1, seed=0)
        batches[pad_label] = next(iter(build_train_loader(cfg, ids, sampler, strong_view=False)))
    (x_ign, u_ign), (x_bg, u_bg) = batches["ignore"], batches["background"]
    padded = x_ign["mask"] == IGNORE_INDEX
    assert padded.any() and not (x_bg["mask"] == IGNORE_INDEX).any()
    assert (x_bg["mask"][padded] == 0).all()  # the padding, and nothing else, became background
    assert torch.equal(x_bg["mask"][~padded], x_ign["mask"][~padded])
    assert torch.equal(x_bg["image"], x_ign["image"])  # same crops: only the label of the padding differs
    assert (~u_bg["valid"]).any() and torch.equal(u_bg["valid"], u_ign["valid"])  # unlabelled: still skipped
