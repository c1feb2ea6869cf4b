"""evaluate_model / write_evaluation on a tiny folder-format dataset; the evaluate CLI end to end."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rabusseg.cli import main
from rabusseg.errors import OutputExistsError
from rabusseg.evaluation import evaluate_model, summarize, write_evaluation
from rabusseg.evaluation.gallery import GalleryCases

# id -> (height, width, lesion box (top, bottom, left, right) or None); none of them square
CASES = {
    "benign_001": (37, 53, (10, 25, 15, 40)),
    "malignant_001": (48, 30, (5, 30, 4, 20)),
    "benign_002": (41, 66, (20, 38, 30, 60)),
    "normal_001": (30, 41, None),
}


@dataclass
class Out:
    pred: torch.Tensor


class BrightNet(nn.Module):
    """Lesion wherever the image is bright, at the input resolution: a pixel-exact 'network'."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(5.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> Out:
        lesion = self.gain * x[:, :1]
        return Out(pred=torch.cat([torch.zeros_like(lesion), lesion], dim=1))  # (B, 2, H, W)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    for image_id, (h, w, box) in CASES.items():
        mask = np.zeros((h, w), dtype=bool)
        if box is not None:
            mask[box[0] : box[1], box[2] : box[3]] = True
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(root / "images" / f"{image_id}.png")
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(root / "masks" / f"{image_id}.png")
    with (root / "metadata.csv").open("w") as fh:
        fh.write("id,class\n" + "".join(f"{i},{i.split('_')[0]}\n" for i in CASES))
    (root / "splits" / "test.txt").write_text("\n".join(CASES) + "\n")
    return root


def folder_of(root: Path):
    from rabusseg.data.folder import DatasetFolder

    return DatasetFolder(root)


def test_full_size_evaluation_is_exact(dataset):
    model = BrightNet().train()
    rows = evaluate_model(model, folder_of(dataset), list(CASES), size=None, progress=False)
    assert model.training  # mode restored
    assert [r["id"] for r in rows] == list(CASES)
    for r in rows:
        h, w, box = CASES[r["id"]]
        assert (r["height"], r["width"]) == (h, w)
        assert r["dice"] == 1.0 and r["hd95"] == 0.0
        assert r["class"] == r["id"].split("_")[0]
    assert rows[-1]["empty_case"] == "both_empty"
    assert rows[0]["tp"] == 15 * 25


def test_fixed_size_is_resized_back_to_the_original(dataset):
    gallery = GalleryCases(k=2)
    rows = evaluate_model(BrightNet(), folder_of(dataset), list(CASES), size=64, batch_size=3, progress=False,
                          gallery=gallery)
    for r in rows:
        h, w, _ = CASES[r["id"]]
        assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == h * w  # scored at the original resolution
        assert r["dice"] > 0.85
    assert [c.pred.shape for c in gallery.best] == [CASES[c.image_id][:2] for c in gallery.best]
    assert "normal_001" not in {c.image_id for c in gallery.best + gallery.worst}  # both empty: not shown


def test_tta_path(dataset):
    rows = evaluate_model(BrightNet(), folder_of(dataset), ["benign_001", "malignant_001"], size=48, tta=True,
                          progress=False)
    assert all(r["dice"] > 0.85 for r in rows)


def test_spacing_converts_distances(dataset):
    folder = folder_of(dataset)
    px = evaluate_model(BrightNet(), folder, ["benign_002"], size=16, progress=False)[0]
    mm = evaluate_model(BrightNet(), folder, ["benign_002"], size=16, spacing=(0.5, 0.5), progress=False)[0]
    assert px["hd95"] > 0
    assert mm["hd95"] == pytest.approx(px["hd95"] / 2)


def test_write_evaluation_files_and_overwrite(dataset, tmp_path):
    folder = folder_of(dataset)
    gallery = GalleryCases(k=2)
    rows = evaluate_model(BrightNet(), folder, list(CASES), size=32, progress=False, gallery=gallery)
    summary = summarize(rows, n_bootstrap=100)
    context = {"checkpoint": "none", "data": str(dataset), "split": "test", "size": 32, "tta": False,
               "distance_unit": "px"}
    out = tmp_path / "eval"
    report = write_evaluation(out, rows, summary, context, folder=folder, gallery=gallery)

    with (out / "per_image.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["id"] for r in table] == list(CASES)
    assert list(table[0])[:5] == ["id", "class", "empty_case", "dice", "iou"]
    assert {"hd95", "assd", "specificity", "tp", "height", "width"} <= set(table[0])
    assert float(table[0]["dice"]) == pytest.approx(rows[0]["dice"])

    doc = json.loads((out / "summary.json").read_text())
    assert doc["context"]["split"] == "test"
    assert doc["dice"]["mean"] == pytest.approx(np.mean([r["dice"] for r in rows]))
    assert doc["empty_cases"]["both_empty"] == 1
    assert set(doc["per_class"]) == {"benign", "malignant", "normal"}

    html = report.read_text()
    srcs = re.findall(r"<img src='([^']+)'", html)
    assert {"figures/dice_histogram.png", "figures/gallery_best.png", "figures/gallery_worst.png"} <= set(srcs)
    assert all((out / s).is_file() for s in srcs)
    assert "per_image.csv" in html and "malignant" in html

    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_evaluation(out, rows, summary, context)
    (out / "keep.txt").write_text("user file")
    write_evaluation(out, rows, summary, context, overwrite=True)  # no gallery this time
    assert (out / "keep.txt").is_file()
    assert "No gallery" in (out / "report.html").read_text()


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_evaluate_cli_on_a_tiny_checkpoint(dataset, tmp_path, capsys):
    from _tiny_checkpoint import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "cli_eval"
    assert run_cli(["evaluate", str(ckpt), str(dataset), "--out", str(out), "--size", "64"]) == 0
    stdout = capsys.readouterr().out
    assert "dice" in stdout and "pooled dice" in stdout
    doc = json.loads((out / "summary.json").read_text())
    assert doc["n_images"] == len(CASES)
    assert doc["context"]["checkpoint"] == str(ckpt.resolve()) and doc["context"]["size"] == 64
    assert doc["context"]["weights"] == "student"
    with (out / "per_image.csv").open() as fh:
        assert all(0.0 <= float(r["dice"]) <= 1.0 for r in csv.DictReader(fh))
    assert (out / "report.html").is_file()

    assert run_cli(["evaluate", str(ckpt), str(dataset), "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert run_cli(["evaluate", str(ckpt), str(dataset), "--out", str(out), "--full-size", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["context"]["size"] is None
    assert run_cli(["evaluate", str(ckpt), str(dataset), "--out", str(tmp_path / "o2"), "--split", "nope"]) == 1
    assert "unknown split" in capsys.readouterr().err


def without_split_lists(dataset: Path, unmasked: str) -> Path:
    """The fixture as an external dataset arrives: images/ and masks/ only, one image without a mask."""
    import shutil

    shutil.rmtree(dataset / "splits")
    (dataset / "metadata.csv").unlink()
    (dataset / "masks" / f"{unmasked}.png").unlink()
    return dataset


def test_the_split_defaults_to_test_and_to_every_masked_image_without_lists(dataset):
    from rabusseg.errors import DataError
    from rabusseg.evaluation import evaluation_split

    (dataset / "splits" / "test.txt").write_text("benign_002\nnormal_001\n")
    assert evaluation_split(folder_of(dataset), None) == ("test", ["benign_002", "normal_001"])
    assert evaluation_split(folder_of(dataset), "all") == ("all", sorted(CASES))  # the folder's list is not used
    with pytest.raises(DataError, match="--split all"):
        evaluation_split(folder_of(dataset), "val")

    without_split_lists(dataset, "malignant_001")
    expected = sorted(set(CASES) - {"malignant_001"})  # an image without a mask cannot be scored
    assert evaluation_split(folder_of(dataset), None) == ("all", expected)
    assert evaluation_split(folder_of(dataset), "all") == ("all", expected)
    with pytest.raises(DataError, match="unknown split 'test'"):
        evaluation_split(folder_of(dataset), "test")  # asked for by name: no silent fallback

    import shutil

    shutil.rmtree(dataset / "masks")
    with pytest.raises(DataError, match="nothing to score"):
        evaluation_split(folder_of(dataset), None)


def test_evaluate_cli_scores_a_folder_without_split_lists(dataset, tmp_path, capsys):
    from _tiny_checkpoint import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt")
    root = without_split_lists(dataset, "benign_001")
    out = tmp_path / "external"
    assert run_cli(["evaluate", str(ckpt), str(root), "--out", str(out), "--size", "32"]) == 0
    assert f"all: {len(CASES) - 1} images" in capsys.readouterr().out
    doc = json.loads((out / "summary.json").read_text())
    assert doc["n_images"] == len(CASES) - 1 and doc["context"]["split"] == "all"
    with (out / "per_image.csv").open() as fh:
        assert sorted(r["id"] for r in csv.DictReader(fh)) == sorted(set(CASES) - {"benign_001"})
