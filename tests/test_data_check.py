"""`data check` and DatasetFolder: every kind of bad input is reported by file, without a traceback."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rabusseg.cli import main
from rabusseg.data.check import check_dataset
from rabusseg.data.folder import DatasetFolder
from rabusseg.errors import DataError

IDS = {"benign_001": "benign", "benign_002": "benign", "benign_003": "benign", "malignant_001": "malignant",
       "malignant_002": "malignant", "normal_001": "normal"}  # fmt: skip


def make_dataset(root: Path, size: tuple[int, int] = (24, 32)) -> Path:
    """A small valid dataset: gray images, masks (empty for normal), metadata and paper-like splits."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k, (image_id, cls) in enumerate(IDS.items()):
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(root / "images" / f"{image_id}.png")
        mask = np.zeros(size, np.uint8)
        if cls != "normal":
            mask[2 : 6 + k, 3 : 9 + k] = 255
        Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "class", "exact_duplicate_group"])
        writer.writerows([i, c, ""] for i, c in IDS.items())
    (root / "splits" / "1_2").mkdir(parents=True)
    (root / "splits" / "test.txt").write_text("benign_003\nmalignant_002\n")
    (root / "splits" / "1_2" / "labeled.txt").write_text("benign_001\nmalignant_001\n")
    (root / "splits" / "1_2" / "unlabeled.txt").write_text("benign_002\n")
    return root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each defect: (make it, file expected in the message, words expected in the reason)
DEFECTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "truncated png": (lambda r: _truncate(r / "images" / "benign_001.png"), "images/benign_001.png", "truncated or corrupt"),
    "truncated mask": (lambda r: _truncate(r / "masks" / "benign_002.png"), "masks/benign_002.png", "truncated or corrupt"),
    "mask of another size": (
        lambda r: Image.fromarray(np.zeros((10, 10), np.uint8)).save(r / "masks" / "benign_002.png"),
        "masks/benign_002.png",
        "mask is 10x10 but its image benign_002.png is 32x24",
    ),
    "missing mask": (lambda r: (r / "masks" / "malignant_001.png").unlink(), "images/malignant_001.png", "missing mask"),
    "non-image in images/": (
        lambda r: (r / "images" / "benign_004.png").write_text("not an image"),
        "images/benign_004.png",
        "not an image",
    ),
    "unknown id in a split": (
        lambda r: (r / "splits" / "1_2" / "labeled.txt").write_text("benign_001\nbenign_999\n"),
        "splits/1_2/labeled.txt",
        "not in images/: benign_999",
    ),
    "id in train and test": (
        lambda r: (r / "splits" / "1_2" / "unlabeled.txt").write_text("benign_002\nbenign_003\n"),
        "splits/1_2/unlabeled.txt",
        "also in splits/test.txt: benign_003",
    ),
    "split file that is not text": (
        lambda r: (r / "splits" / "1_2" / "labeled.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary"),
        "splits/1_2/labeled.txt",
        "not a text file",
    ),
    "duplicate id": (
        lambda r: Image.fromarray(np.zeros((24, 32), np.uint8)).save(r / "images" / "benign_001.jpg"),
        "images/benign_001.png",
        "duplicate id 'benign_001'",
    ),
    "metadata without id column": (
        lambda r: (r / "metadata.csv").write_text("name,class\nbenign_001,benign\n"),
        "metadata.csv",
        "no 'id' column",
    ),
}


def _defect_file(report_problems: list[tuple[str, str]], file: str) -> list[str]:
    return [reason for f, reason in report_problems if f == file or file in reason]


def test_valid_dataset_passes_with_a_summary(tmp_path: Path) -> None:
    report = check_dataset(make_dataset(tmp_path / "ds"))
    assert report.ok, report.errors
    assert report.warnings == []
    assert report.summary["images"] == 6
    assert report.summary["classes"] == {"benign": 3, "malignant": 2, "normal": 1}
    assert report.summary["empty_masks"] == {"normal": 1}
    assert report.summary["width"]["median"] == 32 and report.summary["height"]["max"] == 24
    assert report.summary["splits"] == {"1_2/labeled": 2, "1_2/unlabeled": 1, "test": 2}
    assert 0 < report.summary["lesion_area_fraction"]["max"] < 1


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_check_reports_each_defect_by_file(tmp_path: Path, defect: str) -> None:
    make, file, reason = DEFECTS[defect]
    root = make_dataset(tmp_path / "ds")
    make(root)
    report = check_dataset(root)
    assert not report.ok
    matching = [(f, r) for f, r in report.errors if f == file]
    assert matching, report.errors
    assert any(reason in r for _, r in matching), matching


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_cli_check_prints_the_file_and_reason_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], defect: str
) -> None:
    make, file, reason = DEFECTS[defect]
    root = make_dataset(tmp_path / "ds")
    make(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(root)])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert f"error: {file}: " in captured.err and reason in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_check_lists_every_bad_file_not_only_the_first(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    for defect in ("truncated png", "mask of another size", "missing mask", "unknown id in a split", "id in train and test"):
        DEFECTS[defect][0](root)
    report = check_dataset(root)
    files = {f for f, _ in report.errors}
    assert {"images/benign_001.png", "masks/benign_002.png", "images/malignant_001.png",
            "splits/1_2/labeled.txt", "splits/1_2/unlabeled.txt"} <= files  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "not a dataset in the rabusseg folder format"),
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: (p / "images").mkdir(parents=True), "holds no images"),
    ],
    ids=["missing folder", "not a dataset", "a file", "empty images"],
)
def test_unusable_roots_fail_clearly_in_api_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Callable[[Path], None], message: str
) -> None:
    root = tmp_path / "ds"
    setup(root)
    with pytest.raises(DataError, match=message):
        check_dataset(root)
    with pytest.raises(DataError, match=message):
        DatasetFolder(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(root)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 1 and message in captured.err and "ds" in captured.err
    assert "Traceback" not in captured.err


def test_duplicates_across_train_and_test_only_warn(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "metadata.csv").write_text(
        "id,class,exact_duplicate_group\n" + "".join(
            f"{i},{c},{'dup1' if i in ('benign_002', 'malignant_002') else ''}\n" for i, c in IDS.items()
        )
    )
    report = check_dataset(root)
    assert report.ok
    assert report.warnings == [
        ("splits/1_2/unlabeled.txt", "exact duplicate(s) of images in splits/test.txt: benign_002~malignant_002")
    ]


def test_warnings_for_ignored_files_orphan_masks_and_empty_lesion_masks(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "images" / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "benign_009.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "benign_001.png")
    report = check_dataset(root)
    assert report.ok
    warned = dict(report.warnings)
    assert "ignored" in warned["images/notes.txt"]
    assert warned["masks/benign_009.png"] == "mask without an image"
    assert "empty mask" in warned["masks/benign_001.png"]


def test_cli_check_succeeds_on_a_valid_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(root)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "benign 3" in out


# --------------------------------------------------------------------------- DatasetFolder


def test_dataset_folder_index(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "masks" / "normal_001.png").unlink()
    (root / "splits" / "crlf.txt").write_bytes(b"benign_001\r\n\r\nnormal_001  \r\n")
    folder = DatasetFolder(root)
    assert folder.ids == sorted(IDS) and len(folder) == 6 and "benign_001" in folder
    assert folder.image_path("benign_001") == root / "images" / "benign_001.png"
    assert folder.mask_path("benign_001") == root / "masks" / "benign_001.png"
    assert folder.mask_path("normal_001") is None
    assert folder.class_of("malignant_002") == "malignant"
    assert folder.metadata[0]["id"] == "benign_001"
    assert folder.split("1_2/labeled") == ["benign_001", "malignant_001"]
    assert folder.split("crlf") == ["benign_001", "normal_001"]
    assert folder.split("splits/test.txt") == ["benign_003", "malignant_002"]
    assert folder.split(root / "splits" / "test.txt") == ["benign_003", "malignant_002"]
    assert folder.available_splits() == ["1_2/labeled", "1_2/unlabeled", "crlf", "test"]


def test_dataset_folder_without_metadata_uses_unknown_class(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "metadata.csv").unlink()
    folder = DatasetFolder(root)
    assert folder.class_of("benign_001") == "unknown" and folder.metadata == []


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda f: f.split("1_4/labeled"), "unknown split '1_4/labeled'.*available: 1_2/labeled"),
        (lambda f: f.split("missing.txt"), "split file 'missing.txt' does not exist"),
        (lambda f: f.image_path("benign_999"), "id 'benign_999' is not in"),
        (lambda f: f.class_of("benign_999"), "id 'benign_999' is not in"),
    ],
)
def test_dataset_folder_errors(tmp_path: Path, action: Callable[[DatasetFolder], object], message: str) -> None:
    folder = DatasetFolder(make_dataset(tmp_path / "ds"))
    with pytest.raises(DataError, match=message):
        action(folder)


def test_dataset_folder_rejects_duplicate_ids_and_unknown_split_ids(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "splits" / "bad.txt").write_text("benign_001\nnope\n")
    with pytest.raises(DataError, match=r"bad\.txt: 1 id\(s\) not in .*nope"):
        DatasetFolder(root).split("bad")
    DEFECTS["duplicate id"][0](root)
    with pytest.raises(DataError, match=r"more than one file \(benign_001: benign_001\.jpg, benign_001\.png\)"):
        DatasetFolder(root)


@pytest.mark.realdata
@pytest.mark.slow
def test_check_passes_on_the_real_busi_dataset(busi_dir: Path) -> None:
    report = check_dataset(busi_dir)
    assert report.ok, report.errors[:10]
    assert report.summary["classes"] == {"benign": 437, "malignant": 210, "normal": 133}
    assert report.summary["splits"] == {"1_2/labeled": 259, "1_2/unlabeled": 259, "test": 129}
    # the known byte-identical pair benign_433 (unlabeled) / malignant_145 (test) is a warning, not an error
    assert report.warnings == [
        ("splits/1_2/unlabeled.txt", "exact duplicate(s) of images in splits/test.txt: benign_433~malignant_145")
    ]
