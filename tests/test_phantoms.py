"""Synthetic ultrasound phantoms: folder format, determinism, image properties, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label, regionprops

from rabusseg.data.folder import DatasetFolder
from rabusseg.data.io import load_image, load_mask
from rabusseg.data.phantoms import render_phantom, synthesize_dataset
from rabusseg.errors import DataError, OutputExistsError

SIZE = (112, 128)  # (H, W): not square, so a swapped axis shows


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms") / "ds"
    synthesize_dataset(out, n=40, seed=3, size=SIZE)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize_dataset(tmp_path / name, n=5, seed=seed, size=(96, 96))
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    images = [k for k in a if k.startswith("images/")]
    assert len(images) == 5
    assert all(a[k] != c.get(k) for k in images if k in c)


def test_folder_format(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    assert len(folder) == 40
    with open(phantoms / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {"id", "class", "width", "height", "lesion_area_fraction"} <= set(rows[0])
    assert sorted(r["id"] for r in rows) == folder.ids
    for row in rows[:10]:
        pid = row["id"]
        assert pid.startswith(row["class"] + "_") and row["class"] in ("benign", "malignant")
        assert Image.open(folder.image_path(pid)).mode == "L"
        raw_mask = np.asarray(Image.open(folder.mask_path(pid)))
        assert set(np.unique(raw_mask)) <= {0, 255}
        image, mask = load_image(folder.image_path(pid)), load_mask(folder.mask_path(pid))
        assert image.shape == (*SIZE, 3) and mask.shape == SIZE
        assert (int(row["height"]), int(row["width"])) == SIZE
        assert mask.any() and abs(mask.mean() - float(row["lesion_area_fraction"])) < 1e-5
        assert (image[0] == 0).all()  # black above the field of view


def test_test_split_is_stratified(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    test = folder.split("test")
    for cls in ("benign", "malignant"):
        members = [i for i in folder.ids if folder.class_of(i) == cls]
        in_test = [i for i in test if folder.class_of(i) == cls]
        assert len(in_test) == round(0.2 * len(members))
    assert len(set(test)) == len(test)


def test_lesions_are_darker_than_the_tissue_around_them(phantoms: Path) -> None:
    import cv2

    folder = DatasetFolder(phantoms)
    ratios = []
    for pid in folder.ids:
        image = load_image(folder.image_path(pid))[..., 0].astype(float)
        mask = load_mask(folder.mask_path(pid))
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool) & ~mask & (image > 0)
        ratios.append(image[mask].mean() / image[ring].mean())
    ratios = np.array(ratios)
    assert (ratios < 1.0).mean() >= 0.9 and np.median(ratios) < 0.8


def test_malignant_lesions_are_irregular_and_benign_ones_smooth(phantoms: Path) -> None:
    folder = DatasetFolder(phantoms)
    solidity: dict[str, list[float]] = {"benign": [], "malignant": []}
    for pid in folder.ids:
        regions = regionprops(label(load_mask(folder.mask_path(pid))))
        largest = max(regions, key=lambda r: r.area)
        solidity[folder.class_of(pid)].append(largest.solidity)
    assert len(solidity["benign"]) >= 5 and len(solidity["malignant"]) >= 5
    assert min(solidity["benign"]) > 0.9
    assert np.mean(solidity["malignant"]) < np.mean(solidity["benign"]) - 0.05


def test_render_is_a_pure_function_of_the_generator() -> None:
    a = render_phantom(np.random.default_rng(1), (80, 96), "malignant")
    b = render_phantom(np.random.default_rng(1), (80, 96), "malignant")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert a[0].dtype == np.uint8 and a[1].dtype == bool and a[0].shape == (80, 96)


def test_refuses_a_non_empty_output_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    (out / "images").mkdir(parents=True)
    (out / "images" / "stale.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="not empty"):
        synthesize_dataset(out, n=2, size=(64, 64))
    synthesize_dataset(out, n=2, size=(64, 64), overwrite=True)
    assert not (out / "images" / "stale.png").exists()
    assert len(list((out / "images").iterdir())) == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        synthesize_dataset(tmp_path / "file", n=2, size=(64, 64))


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="n must be"):
        synthesize_dataset(tmp_path / "a", n=0)
    with pytest.raises(DataError, match="at least 64"):
        synthesize_dataset(tmp_path / "b", n=2, size=32)


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rabusseg.cli import main

    out = tmp_path / "synth"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", str(out), "--n", "4", "--seed", "1", "--size", "64"])
    assert exit_info.value.code in (0, None)
    assert "wrote 4 phantoms" in capsys.readouterr().out
    assert len(list((out / "masks").glob("*.png"))) == 4
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", str(out), "--n", "4", "--size", "64"])
    assert exit_info.value.code == 1
    assert "not empty" in capsys.readouterr().err


def test_contact_sheet(phantoms: Path, tmp_path: Path) -> None:
    from rabusseg.data.contact_sheet import save_contact_sheet

    png = save_contact_sheet(phantoms, tmp_path / "sheet.png", n=4)
    assert Image.open(png).size[0] > 200
