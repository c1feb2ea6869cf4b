"""`data prepare udiat` on a Dataset B layout generated here (UDIAT itself cannot be shared)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rabusseg.cli import main
from rabusseg.data.check import check_dataset
from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import read_split
from rabusseg.data.prepare_udiat import paper_name_to_id, prepare_udiat, read_type_table, read_xlsx_rows
from rabusseg.errors import DataError, OutputExistsError

TYPES = {"000001": "Benign", "000002": "Malignant", "000003": "Benign", "000004": "Benign", "000005": "Malignant"}


def make_udiat(raw: Path, table: str | None = "csv") -> Path:
    """original/ and GT/ PNGs (gray, one stored as RGB with equal channels), plus a type table."""
    (raw / "original").mkdir(parents=True)
    (raw / "GT").mkdir()
    rng = np.random.default_rng(1)
    for k, image_id in enumerate(TYPES):
        gray = rng.integers(0, 255, (20, 26), dtype=np.uint8)
        pixels = np.stack([gray] * 3, axis=2) if k == 1 else gray
        Image.fromarray(pixels).save(raw / "original" / f"{image_id}.png")
        mask = np.zeros((20, 26), np.uint8)
        mask[3 : 6 + k, 4 : 10 + k] = 255
        Image.fromarray(mask).save(raw / "GT" / f"{image_id}.png")
    if table == "csv":  # the spreadsheet's usual shape: numbers lose their zero padding
        rows = [["Image", "Type", "Histology"]] + [[str(int(i)), t, "X"] for i, t in TYPES.items()]
        with (raw / "DatasetB.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    elif table == "xlsx":
        write_xlsx(raw / "DatasetB.xlsx", [["Image", "Type"]] + [[int(i), t] for i, t in TYPES.items()])
    return raw


def write_xlsx(path: Path, rows: list[list[object]]) -> None:
    """A minimal but valid .xlsx: strings in sharedStrings.xml, numbers inline."""
    strings: list[str] = []
    cells = []
    for r, row in enumerate(rows, start=1):
        parts = []
        for c, value in enumerate(row):
            ref = f"{chr(65 + c)}{r}"
            if isinstance(value, str):
                strings.append(value)
                parts.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
            else:
                parts.append(f'<c r="{ref}"><v>{value}</v></c>')
        cells.append(f'<row r="{r}">{"".join(parts)}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", f"<workbook {ns}><sheets><sheet name='S' sheetId='1'/></sheets></workbook>")
        archive.writestr("xl/sharedStrings.xml", f"<sst {ns}>" + "".join(f"<si><t>{s}</t></si>" for s in strings) + "</sst>")
        archive.writestr("xl/worksheets/sheet1.xml", f"<worksheet {ns}><sheetData>{''.join(cells)}</sheetData></worksheet>")


def test_prepare_udiat_with_csv_table(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "raw")
    result = prepare_udiat(raw, tmp_path / "out")
    out = tmp_path / "out"
    folder = DatasetFolder(out)
    assert folder.ids == sorted(TYPES)
    assert {i: folder.class_of(i) for i in folder.ids} == {i: t.lower() for i, t in TYPES.items()}
    assert Image.open(out / "images" / "000002.png").mode == "L"  # RGB with equal channels stored gray
    source = np.asarray(Image.open(raw / "original" / "000003.png"))
    assert np.array_equal(np.asarray(Image.open(out / "images" / "000003.png")), source)
    mask = np.asarray(Image.open(out / "masks" / "000003.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask > 0).sum() == 5 * 8
    row = {r["id"]: r for r in result.rows}["000003"]
    assert row["original_filename"] == "original/000003.png" and row["original_mask_files"] == "GT/000003.png"
    assert row["lesion_area_fraction"] == f"{40 / 520:.6f}"
    assert check_dataset(out).ok


def test_prepare_udiat_with_xlsx_table_found_in_raw(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "raw", table="xlsx")
    assert read_xlsx_rows(raw / "DatasetB.xlsx")[:2] == [["Image", "Type"], ["1", "Benign"]]
    prepare_udiat(raw, tmp_path / "out")
    assert DatasetFolder(tmp_path / "out").class_of("000002") == "malignant"


def test_paper_lists_give_ids_and_classes_without_a_table(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "raw", table=None)
    lists = tmp_path / "lists"
    (lists / "1_2").mkdir(parents=True)
    (lists / "test.txt").write_bytes(b"000005_Malignant.png\r\n")
    (lists / "1_2" / "labeled.txt").write_bytes(b"000001_Benign.png\r\n000002_Malignant.png\r\n")
    (lists / "1_2" / "unlabeled.txt").write_bytes(b"000003_Benign.png\r\n")
    result = prepare_udiat(raw, tmp_path / "out", paper_splits=lists)
    folder = DatasetFolder(tmp_path / "out")
    assert read_split(tmp_path / "out" / "splits" / "1_2" / "labeled.txt") == ["000001", "000002"]
    assert result.splits["test"] == ["000005"]
    assert folder.class_of("000002") == "malignant" and folder.class_of("000004") == "unknown"


def test_table_and_lists_must_agree(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "raw")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "test.txt").write_text("000001_Malignant.png\n")
    with pytest.raises(DataError, match="000001: the type table says benign but the paper lists say malignant"):
        prepare_udiat(raw, tmp_path / "out", paper_splits=tmp_path / "lists")
    (tmp_path / "lists" / "test.txt").write_text("000009_Benign.png\n")
    with pytest.raises(DataError, match=r"test\.txt: 1 of 1 name\(s\) not in the raw download"):
        prepare_udiat(raw, tmp_path / "out", paper_splits=tmp_path / "lists")


def test_explicit_type_table_and_its_errors(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "raw", table=None)
    ids = set(TYPES)
    table = tmp_path / "types.csv"
    table.write_text("file;x\n" + "".join(f"{i}.png,{t.upper()}\n" for i, t in TYPES.items()))
    assert read_type_table(table, ids) == {i: t.lower() for i, t in TYPES.items()}
    prepare_udiat(raw, tmp_path / "out", type_table=table)
    assert DatasetFolder(tmp_path / "out").class_of("000005") == "malignant"
    table.write_text("a,b\nfoo,bar\n")
    with pytest.raises(DataError, match="no column of image ids"):
        read_type_table(table, ids)
    with pytest.raises(DataError, match="unsupported type table"):
        read_type_table(table.rename(tmp_path / "types.xls"), ids)
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"broken\.xlsx: not a readable \.xlsx"):
        read_type_table(tmp_path / "broken.xlsx", ids)


def test_layout_errors_name_the_files(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "raw")
    (raw / "GT" / "000004.png").unlink()
    with pytest.raises(DataError, match=r"without a GT mask:\s+\S*original/000004\.png"):
        prepare_udiat(raw, tmp_path / "out")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(raw / "GT" / "000004.png")
    with pytest.raises(DataError, match=r"GT/000004\.png: mask is 5x5 but its image 000004\.png is 26x20"):
        prepare_udiat(raw, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="does not look like UDIAT Dataset B"):
        prepare_udiat(tmp_path / "empty", tmp_path / "out")


def test_nested_raw_folder_and_output_rules(tmp_path: Path) -> None:
    raw = make_udiat(tmp_path / "download" / "BUS_Dataset_B")
    prepare_udiat(tmp_path / "download", tmp_path / "out")
    with pytest.raises(OutputExistsError):
        prepare_udiat(tmp_path / "download", tmp_path / "out")
    with pytest.raises(DataError, match="inside the raw download"):
        prepare_udiat(raw, raw / "out")
    assert sorted(p.name for p in raw.iterdir()) == ["DatasetB.csv", "GT", "original"]


def test_paper_name_translation() -> None:
    assert paper_name_to_id("000009_Benign.png") == "000009"
    assert paper_name_to_id("000120_malignant.png") == "000120"
    assert paper_name_to_id("000009.png") == "000009"


def test_cli_prepare_udiat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_udiat(tmp_path / "raw", table=None)
    (tmp_path / "t.csv").write_text("id,type\n1,benign\n2,malignant\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "udiat", str(raw), str(tmp_path / "out"), "--type-table", str(tmp_path / "t.csv")])
    assert exit_info.value.code == 0
    assert "5 cases" in capsys.readouterr().out
    assert DatasetFolder(tmp_path / "out").class_of("000002") == "malignant"
