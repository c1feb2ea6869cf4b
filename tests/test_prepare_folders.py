"""``rabusseg data prepare folders``: any image folder + mask folder into the folder format."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rabusseg.cli import main
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import load_mask
from rabusseg.data.prepare_folders import prepare_folders
from rabusseg.errors import DataError, OutputExistsError


def _box(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def _raw(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Another scanner's set: 'original/' and 'GT/' with '<id>_mask' names, mixed formats."""
    raw = tmp_path / "raw"
    (raw / "original").mkdir(parents=True)
    (raw / "GT").mkdir()
    rng = np.random.default_rng(0)
    expected = {"case1": _box(30, 40, 5, 5, 10), "case10": _box(30, 40, 10, 20, 12), "case1.2": _box(24, 36, 2, 3, 6)}
    for image_id, lesion in expected.items():
        gray = rng.integers(0, 255, lesion.shape, dtype=np.uint8)
        Image.fromarray(gray).save(raw / "original" / f"{image_id}.{'jpg' if image_id == 'case10' else 'png'}")
    Image.fromarray(expected["case1"].astype(np.uint8) * 255).save(raw / "GT" / "case1_mask.png")
    Image.fromarray(expected["case10"].astype(np.uint8) * 255).save(raw / "GT" / "case10_mask.jpg", quality=75)
    rgb = np.zeros((24, 36, 3), np.uint8)
    rgb[expected["case1.2"]] = (255, 0, 0)  # a red RGB mask
    Image.fromarray(rgb).save(raw / "GT" / "case1.2_mask.png")
    return raw, expected


def test_image_and_mask_folders_become_a_dataset(tmp_path: Path) -> None:
    raw, expected = _raw(tmp_path)
    out = tmp_path / "ext"
    result = prepare_folders(raw, out, images="original", masks="GT", mask_name="{id}_mask", optimize_png=False)
    assert sorted(str(r["id"]) for r in result.rows) == sorted(expected)
    folder = DatasetFolder(out)
    assert folder.labeled_ids() == sorted(expected)  # every image has its mask: all can be scored
    for image_id, lesion in expected.items():  # case1 did not take case1.2's or case10's mask
        assert np.array_equal(load_mask(folder.mask_path(image_id)), lesion), image_id
    with (out / "metadata.csv").open() as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    assert rows["case10"]["original_filename"] == "original/case10.jpg"
    assert rows["case10"]["original_mask_files"] == "GT/case10_mask.jpg" and rows["case1"]["class"] == "unknown"
    with pytest.raises(OutputExistsError, match="not empty"):
        prepare_folders(raw, out, images="original", masks="GT", mask_name="{id}_mask")


def test_masks_named_as_their_images_match_whole_names_only(tmp_path: Path) -> None:
    raw, expected = _raw(tmp_path)
    (raw / "masks").mkdir()
    for path in (raw / "GT").iterdir():  # the default layout: masks/<id>.<ext>
        path.rename(raw / "masks" / path.name.replace("_mask", ""))
    prepare_folders(raw, tmp_path / "ext", images="original", optimize_png=False)
    folder = DatasetFolder(tmp_path / "ext")
    for image_id, lesion in expected.items():  # 'case1' is a prefix of 'case10' and 'case1.2'
        assert np.array_equal(load_mask(folder.mask_path(image_id)), lesion), image_id


def test_several_masks_merge_and_classes_come_from_a_table(tmp_path: Path) -> None:
    raw, expected = _raw(tmp_path)
    extra = _box(30, 40, 20, 30, 5)
    Image.fromarray(extra.astype(np.uint8) * 255).save(raw / "GT" / "case1_mask_1.png")
    table = tmp_path / "types.csv"
    table.write_text("filename,class\ncase1.png,Malignant\ncase10.jpg,benign\n")
    out = tmp_path / "ext"
    prepare_folders(raw, out, images="original", masks="GT", mask_name="{id}_mask*", class_table=table)
    folder = DatasetFolder(out)
    assert np.array_equal(load_mask(folder.mask_path("case1")), expected["case1"] | extra)  # union
    assert np.array_equal(load_mask(folder.mask_path("case10")), expected["case10"])  # not case1's
    assert (folder.class_of("case1"), folder.class_of("case10"), folder.class_of("case1.2")) == (
        "malignant", "benign", "unknown")  # fmt: skip


def test_bad_layouts_stop_with_the_files_named(tmp_path: Path) -> None:
    raw, _ = _raw(tmp_path)
    with pytest.raises(DataError, match=r"3 image\(s\) without a mask \{id\}\.<ext>"):
        prepare_folders(raw, tmp_path / "o1", images="original", masks="GT")  # default name: '{id}', none match
    (raw / "original" / "lonely.png").write_bytes((raw / "original" / "case1.png").read_bytes())
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask.*\n.*lonely\.png"):
        prepare_folders(raw, tmp_path / "o2", images="original", masks="GT", mask_name="{id}_mask")
    (raw / "original" / "lonely.png").unlink()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(raw / "GT" / "case1_mask.png")
    with pytest.raises(DataError, match=r"case1_mask\.png: mask is 5x5 but its image case1\.png is 40x30"):
        prepare_folders(raw, tmp_path / "o3", images="original", masks="GT", mask_name="{id}_mask")
    with pytest.raises(DataError, match=r"no such folder of masks \(choose it with --masks\)"):
        prepare_folders(raw, tmp_path / "o4", images="original")
    with pytest.raises(DataError, match=r"must contain \{id\}"):
        prepare_folders(raw, tmp_path / "o5", images="original", masks="GT", mask_name="mask")
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4", "o5"))  # nothing half-written


def test_cli_prepares_then_evaluate_scores_every_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from _tiny_checkpoint import save_tiny_checkpoint

    raw, expected = _raw(tmp_path)
    out = tmp_path / "ext"
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "folders", str(raw), str(out), "--images", "original", "--masks", "GT",
              "--mask-name", "{id}_mask", "--fast-png"])  # fmt: skip
    assert exc.value.code == 0 and f"{len(expected)} cases" in capsys.readouterr().out
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(ckpt), str(out), "--out", str(tmp_path / "eval"), "--size", "32"])
    assert exc.value.code == 0 and f"all: {len(expected)} images" in capsys.readouterr().out
