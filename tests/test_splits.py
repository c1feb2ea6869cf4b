"""`data split`: stratified, nested across ratios, duplicate-safe, never overwriting paper splits."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from rabusseg.cli import main
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import read_split
from rabusseg.data.splits import make_split, parse_fraction
from rabusseg.errors import ConfigError, DataError, OutputExistsError

RATIOS = ("1/16", "1/8", "1/4", "1/2")
COUNTS = {"benign": 90, "malignant": 45, "normal": 12}
# exact-duplicate groups: two inside the pool, one straddling the test list
GROUPS = {"benign_005": "dup1", "benign_006": "dup1", "malignant_010": "dup2", "benign_050": "dup2",
          "benign_001": "dup3", "malignant_001": "dup3"}  # fmt: skip
TEST = ["benign_001", "benign_002", "benign_003", "malignant_002", "malignant_003", "normal_001"]


def make_index(root: Path) -> Path:
    """A folder-format index (images are never decoded by the splitter, so empty files suffice)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for cls, n in COUNTS.items():
        for k in range(1, n + 1):
            image_id = f"{cls}_{k:03d}"
            (root / "images" / f"{image_id}.png").touch()
            rows.append({"id": image_id, "class": cls, "exact_duplicate_group": GROUPS.get(image_id, "")})
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "class", "exact_duplicate_group"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "splits").mkdir()
    (root / "splits" / "test.txt").write_bytes("\r\n".join(TEST).encode() + b"\r\n")
    return root


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return make_index(tmp_path / "ds")


def _classes(ids: list[str]) -> Counter[str]:
    return Counter(i.split("_")[0] for i in ids)


def test_split_is_a_partition_of_the_pool_and_stratified(index: Path) -> None:
    result = make_split(index, "1/4", seed=0)
    labeled, unlabeled = read_split(index / "splits" / "1_4" / "labeled.txt"), read_split(index / "splits" / "1_4" / "unlabeled.txt")
    assert labeled == result.labeled == sorted(labeled) and unlabeled == result.unlabeled
    assert not set(labeled) & set(unlabeled) and not (set(labeled) | set(unlabeled)) & set(TEST)
    pool = {i for i in DatasetFolder(index).ids if not i.startswith("normal")} - set(TEST) - {"malignant_001"}
    assert set(labeled) | set(unlabeled) == pool
    assert result.excluded["malignant_001"].startswith("exact duplicate (dup3)")
    # stratified: per class a quarter of the pool, within one duplicate group's size
    pool_classes = _classes(sorted(pool))
    for cls, n in pool_classes.items():
        assert abs(_classes(labeled)[cls] - n / 4) <= 1.5, (cls, _classes(labeled), pool_classes)
    assert "normal" not in _classes(labeled + unlabeled)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_labelled_sets_are_nested_across_ratios(index: Path, seed: int) -> None:
    sets = [set(make_split(index, ratio, seed=seed, name=f"s{seed}/{ratio.replace('/', '_')}").labeled) for ratio in RATIOS]
    assert all(small < large for small, large in zip(sets, sets[1:]))
    assert [len(s) for s in sets] == sorted(len(s) for s in sets)


def test_duplicate_groups_stay_on_one_side(index: Path) -> None:
    for seed in range(6):
        for ratio in RATIOS:
            result = make_split(index, ratio, seed=seed, name=f"d{seed}_{ratio.replace('/', '_')}")
            labeled = set(result.labeled)
            for group in ("dup1", "dup2"):
                members = {i for i, g in GROUPS.items() if g == group}
                assert members <= labeled or not members & labeled, (seed, ratio, group)


def test_seed_changes_the_draw_and_is_reproducible(index: Path) -> None:
    first = make_split(index, "1/8", seed=3, name="a").labeled
    assert make_split(index, "1/8", seed=3, name="b").labeled == first
    assert make_split(index, "1/8", seed=4, name="c").labeled != first


def test_val_is_carved_from_the_labelled_set_and_shared_by_ratios(index: Path) -> None:
    eighth = make_split(index, "1/8", seed=0, val=6, name="v8")
    half = make_split(index, "1/2", seed=0, val=6, name="v2")
    plain = make_split(index, "1/8", seed=0, name="p8")
    assert len(eighth.val) == 6 and _classes(eighth.val) == Counter({"benign": 4, "malignant": 2})
    assert eighth.val == half.val
    assert set(eighth.labeled) | set(eighth.val) == set(plain.labeled)  # the labelled budget includes val
    assert not set(eighth.val) & set(eighth.labeled + eighth.unlabeled)
    assert set(eighth.labeled) < set(half.labeled)
    assert read_split(index / "splits" / "v8" / "val.txt") == eighth.val
    with pytest.raises(DataError, match="--val 60"):
        make_split(index, "1/16", val=60, name="too_many")


def test_include_normal_and_explicit_test_list(index: Path) -> None:
    (index / "splits" / "other_test.txt").write_text("normal_002\nbenign_010\n")
    result = make_split(index, "1/2", test_list="splits/other_test.txt", include_normal=True, name="n")
    assert "normal" in _classes(result.labeled) and "normal_002" not in result.labeled + result.unlabeled
    assert "benign_001" in result.labeled + result.unlabeled  # not in this test list


def test_never_overwrites_paper_splits_or_existing_lists(index: Path) -> None:
    (index / "splits" / "1_2").mkdir()
    (index / "splits" / "1_2" / "labeled.txt").write_text("benign_004\n")
    with pytest.raises(OutputExistsError, match="not written by 'rabusseg data split'"):
        make_split(index, "1/2", overwrite=True)
    assert (index / "splits" / "1_2" / "labeled.txt").read_text() == "benign_004\n"
    make_split(index, "1/8", val=4)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        make_split(index, "1/8")
    make_split(index, "1/8", seed=5, overwrite=True)
    provenance = json.loads((index / "splits" / "1_8" / "split.json").read_text())
    assert provenance["seed"] == 5 and not (index / "splits" / "1_8" / "val.txt").exists()
    assert (index / "splits" / "test.txt").read_bytes().count(b"\r\n") == len(TEST)  # untouched


@pytest.mark.parametrize(
    ("text", "value"), [("1/8", Fraction(1, 8)), ("0.125", Fraction(1, 8)), ("12.5%", Fraction(1, 8)), (0.25, Fraction(1, 4))]
)
def test_parse_fraction(text: str, value: Fraction) -> None:
    assert parse_fraction(text) == value


@pytest.mark.parametrize("text", ["0", "1", "3/2", "abc", "1/0", "-0.1"])
def test_parse_fraction_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_fraction(text)


def test_bad_split_requests(index: Path) -> None:
    with pytest.raises(ConfigError, match="relative folder name"):
        make_split(index, "1/8", name="../escape")
    with pytest.raises(DataError, match="split file 'nope.txt' does not exist"):
        make_split(index, "1/8", test_list="nope.txt")


def test_cli_split(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "split", str(index), "--labeled", "1/8", "--seed", "0", "--test", "splits/test.txt", "--val", "4"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "splits/1_8" in out and "labeled" in out
    assert len(read_split(index / "splits" / "1_8" / "val.txt")) == 4
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "split", str(index), "--labeled", "1/8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "--overwrite" in err and "Traceback" not in err


@pytest.mark.realdata
def test_splits_on_real_busi_are_nested_stratified_and_duplicate_safe(busi_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "busi"
    root.mkdir()
    (root / "images").symlink_to(busi_dir / "images")  # read-only data, writable splits/
    shutil.copy(busi_dir / "metadata.csv", root / "metadata.csv")
    shutil.copytree(busi_dir / "splits", root / "splits")
    folder = DatasetFolder(root)
    test = set(folder.split("test"))
    previous: set[str] = set()
    for ratio in RATIOS:
        result = make_split(root, ratio, seed=0, name=f"seed0/{ratio.replace('/', '_')}")
        labeled, unlabeled = set(result.labeled), set(result.unlabeled)
        assert previous < labeled and not labeled & unlabeled and not (labeled | unlabeled) & test
        pool = labeled | unlabeled
        assert len(pool) == 517 and "benign_433" not in pool  # duplicate of test image malignant_145
        fraction = float(Fraction(ratio))
        for cls in ("benign", "malignant"):
            n = sum(folder.class_of(i) == cls for i in pool)
            assert abs(sum(folder.class_of(i) == cls for i in labeled) - fraction * n) <= 1
        previous = labeled
    assert (root / "splits" / "1_2" / "labeled.txt").read_text() == (busi_dir / "splits" / "1_2" / "labeled.txt").read_text()
