"""`data prepare busi`: reproduces the shared BUSI pixel for pixel; never writes into RAW."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rabusseg.cli import main
from rabusseg.data.io import read_split
from rabusseg.data.prepare_busi import busi_name_to_id, discover_busi, prepare_busi, prepare_busi_case
from rabusseg.data.prepared import METADATA_COLUMNS, write_case
from rabusseg.data.splits import translate_split_lists
from rabusseg.errors import DataError, OutputExistsError

SAMPLE_IDS = ["benign_001", "benign_002", "benign_004", "benign_006", "benign_195", "benign_433",
              "malignant_001", "malignant_053", "malignant_145", "normal_001", "normal_113"]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {r["id"]: r for r in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def prepared_sample(busi_raw_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = _snapshot(busi_raw_sample_dir)
    out = tmp_path_factory.mktemp("busi_prepared") / "busi"
    prepare_busi(busi_raw_sample_dir, out, optimize_png=False)  # same pixels, faster
    assert _snapshot(busi_raw_sample_dir) == before  # RAW untouched
    return out


@pytest.mark.realdata
def test_prepared_sample_matches_shared_busi_pixel_for_pixel(prepared_sample: Path, busi_dir: Path) -> None:
    ids = sorted(p.stem for p in (prepared_sample / "images").iterdir())
    assert ids == SAMPLE_IDS
    for image_id in ids:
        for sub in ("images", "masks"):
            ours = Image.open(prepared_sample / sub / f"{image_id}.png")
            theirs = Image.open(busi_dir / sub / f"{image_id}.png")
            assert ours.mode == theirs.mode, (sub, image_id)
            assert np.array_equal(np.asarray(ours), np.asarray(theirs)), (sub, image_id)


@pytest.mark.realdata
def test_prepared_sample_metadata_matches_shared_busi(prepared_sample: Path, busi_dir: Path) -> None:
    with (prepared_sample / "metadata.csv").open(newline="") as handle:
        assert next(csv.reader(handle)) == METADATA_COLUMNS
    ours, theirs = _rows(prepared_sample / "metadata.csv"), _rows(busi_dir / "metadata.csv")
    for image_id, row in ours.items():
        assert row == theirs[image_id]
    # the cases the sample was chosen for
    assert ours["benign_195"]["n_mask_files"] == "3"
    assert ours["benign_006"]["mode"] == "RGB" and ours["benign_001"]["mode"] == "L"
    assert ours["normal_001"]["lesion_area_fraction"] == "0.000000"
    assert ours["benign_433"]["exact_duplicate_group"] == ours["malignant_145"]["exact_duplicate_group"] == "dup1"
    with (prepared_sample / "near_duplicate_candidates.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle)) == [
            {"id_a": "benign_433", "id_b": "malignant_145", "dhash256_hamming": "0", "same_pixels": "1"}
        ]
    names = _rows_by(prepared_sample / "name_map.csv", "ra_busseg_name")
    assert names["benign (195).png"]["id"] == "benign_195" and len(names) == len(SAMPLE_IDS)


def _rows_by(path: Path, key: str) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {r[key]: r for r in csv.DictReader(handle)}


@pytest.mark.realdata
def test_paper_lists_translate_to_the_shared_splits(busi_dir: Path) -> None:
    known = {p.stem for p in (busi_dir / "images").iterdir()}
    splits = translate_split_lists(busi_dir / "source" / "ra_busseg_splits", busi_name_to_id, known)
    assert set(splits) == {"test", "1_2/labeled", "1_2/unlabeled"}
    for key, ids in splits.items():
        assert ids == read_split(busi_dir / "splits" / f"{key}.txt")


@pytest.mark.realdata
def test_default_png_encoding_is_byte_identical_to_shared_busi(busi_raw_sample_dir: Path, busi_dir: Path, tmp_path: Path) -> None:
    base = busi_raw_sample_dir / "Dataset_BUSI_with_GT"
    sources, _ = discover_busi(base)
    (source,) = [s for s in sources if s.id == "benign_006"]  # stored RGB
    write_case(tmp_path, prepare_busi_case(source, base))
    sums = dict(line.split()[::-1] for line in (busi_dir / "SHA256SUMS").read_text().splitlines())
    for sub in ("images", "masks"):
        digest = hashlib.sha256((tmp_path / sub / "benign_006.png").read_bytes()).hexdigest()
        assert digest == sums[f"./{sub}/benign_006.png"]


@pytest.mark.realdata
def test_full_paper_lists_are_refused_on_the_sample(busi_raw_sample_dir: Path, busi_dir: Path, tmp_path: Path) -> None:
    # the authors' lists name images the sample lacks: refused, naming the list, before anything is written
    with pytest.raises(DataError, match=r"test\.txt: 127 of 129 name\(s\) not in the raw download"):
        prepare_busi(busi_raw_sample_dir, tmp_path / "out", paper_splits=busi_dir / "source" / "ra_busseg_splits")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- synthetic downloads


def _fake_download(raw: Path) -> Path:
    base = raw / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant"):
        (base / cls).mkdir(parents=True)
    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    Image.fromarray(np.stack([gray] * 3, axis=2)).save(base / "benign" / "benign (2).png")
    colour = np.stack([gray, gray, 255 - gray], axis=2)
    Image.fromarray(colour).save(base / "malignant" / "malignant (10).png")
    first, second = np.zeros((20, 30), bool), np.zeros((20, 30), bool)
    first[2:5, 2:5], second[10:12, 20:25] = True, True
    Image.fromarray(first).save(base / "benign" / "benign (2)_mask.png")
    Image.fromarray(second).save(base / "benign" / "benign (2)_mask_1.png")
    Image.fromarray((second * 255).astype(np.uint8)).save(base / "malignant" / "malignant (10)_mask.png")
    (base / "benign" / "Thumbs.db").write_bytes(b"junk")
    return raw


def test_masks_are_merged_and_colour_is_kept_only_when_channels_differ(tmp_path: Path) -> None:
    raw = _fake_download(tmp_path / "raw")
    result = prepare_busi(raw, tmp_path / "out")
    out = tmp_path / "out"
    assert [r["id"] for r in result.rows] == ["benign_002", "malignant_010"]
    assert Image.open(out / "images" / "benign_002.png").mode == "L"
    assert Image.open(out / "images" / "malignant_010.png").mode == "RGB"
    mask = np.asarray(Image.open(out / "masks" / "benign_002.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask > 0).sum() == 9 + 10
    row = _rows(out / "metadata.csv")["benign_002"]
    assert row["original_mask_files"] == "benign (2)_mask.png;benign (2)_mask_1.png"
    assert row["lesion_area_fraction"] == f"{19 / 600:.6f}"
    assert [p.name for p in result.skipped] == ["Thumbs.db"]


def test_paper_splits_are_translated_and_kept_verbatim(tmp_path: Path) -> None:
    raw = _fake_download(tmp_path / "raw")
    lists = tmp_path / "lists"
    (lists / "1_2").mkdir(parents=True)
    (lists / "test.txt").write_bytes(b"malignant (10).png\r\n")
    (lists / "1_2" / "labeled.txt").write_bytes(b"benign (2).png\r\n\r\n")
    (lists / "1_2" / "unlabeled.txt").write_bytes(b"")
    result = prepare_busi(raw, tmp_path / "out", paper_splits=lists)
    splits = tmp_path / "out" / "splits"
    assert read_split(splits / "test.txt") == ["malignant_010"] and result.splits["1_2/labeled"] == ["benign_002"]
    assert (splits / "1_2" / "unlabeled.txt").read_text() == ""
    assert (tmp_path / "out" / "source" / "ra_busseg_splits" / "test.txt").read_bytes() == b"malignant (10).png\r\n"
    (lists / "1_2" / "unlabeled.txt").write_text("benign (3).png\nnot a name\n")
    with pytest.raises(DataError, match=r"unlabeled\.txt: 1 name\(s\) not of this dataset's form: 'not a name'"):
        prepare_busi(raw, tmp_path / "out2", paper_splits=lists)


def test_refuses_non_empty_output_unless_overwrite(tmp_path: Path) -> None:
    raw = _fake_download(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not empty"):
        prepare_busi(raw, out)
    (out / "images").mkdir()
    (out / "images" / "stale_999.png").write_bytes(b"old")
    prepare_busi(raw, out, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["benign_002.png", "malignant_010.png"]
    assert (out / "old.txt").read_text() == "keep"  # only what a preparer writes is replaced


def test_never_writes_into_raw(tmp_path: Path) -> None:
    raw = _fake_download(tmp_path / "raw")
    before = _snapshot(raw)
    with pytest.raises(DataError, match="inside the raw download"):
        prepare_busi(raw, raw / "prepared")
    with pytest.raises(DataError, match="inside the raw download"):
        prepare_busi(raw, raw, overwrite=True)
    assert _snapshot(raw) == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / "benign" / "benign (2).png").unlink(), r"benign \(2\)_mask\.png: mask without an image"),
        (lambda b: (b / "malignant" / "malignant (10)_mask.png").unlink(), r"malignant \(10\)\.png: image without a mask"),
        (
            lambda b: Image.fromarray(np.zeros((5, 5), np.uint8)).save(b / "benign" / "benign (2)_mask_1.png"),
            r"benign \(2\)_mask_1\.png: mask is 5x5 but its image benign \(2\)\.png is 30x20",
        ),
        (lambda b: (b / "benign" / "benign (2).png").write_bytes(b"\x89PNG\r\n"), r"benign \(2\)\.png: truncated or corrupt"),
    ],
    ids=["mask without image", "image without mask", "mask size", "corrupt image"],
)
def test_broken_downloads_raise_data_error_naming_the_file(tmp_path: Path, damage, message: str) -> None:
    raw = _fake_download(tmp_path / "raw")
    damage(raw / "Dataset_BUSI_with_GT")
    with pytest.raises(DataError, match=message):
        prepare_busi(raw, tmp_path / "out")


def test_not_a_busi_download(tmp_path: Path) -> None:
    (tmp_path / "raw" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="does not look like the BUSI download"):
        prepare_busi(tmp_path / "raw", tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        prepare_busi(tmp_path / "missing", tmp_path / "out")


def test_name_translation() -> None:
    assert busi_name_to_id("benign (101).png") == "benign_101"
    assert busi_name_to_id(" malignant (7).png ") == "malignant_007"
    assert busi_name_to_id("benign (1)_mask.png") is None and busi_name_to_id("000009_Benign.png") is None


def test_cli_prepare_busi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _fake_download(tmp_path / "raw")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "busi", str(raw), str(tmp_path / "out")])
    assert exit_info.value.code == 0
    assert "2 cases" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "busi", str(raw), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "not empty; pass --overwrite" in err and "Traceback" not in err
