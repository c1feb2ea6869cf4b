"""rank-unlabeled: the most uncertain image comes first, scores are sorted, CSV and CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from _tiny_checkpoint import BrightnessNet, tiny_checkpoint  # noqa: F401  (fixture)

from rabusseg.cli import main
from rabusseg.data.folder import DatasetFolder
from rabusseg.errors import OutputExistsError
from rabusseg.inference.ranking import rank_unlabeled, uncertainty_region, uncertainty_scores
from rabusseg.inference.segmenter import Segmenter, SegmenterResult

# BrightnessNet: 0 -> certain background, 255 -> certain lesion, 124 -> coin flip.
IMAGES = {
    "clean": (0, (8, 24, 8, 24), 255),  # black with a bright square: confident everywhere
    "blank": (0, None, 0),  # all black: confidently nothing
    "grey": (124, None, 0),  # the model cannot decide anywhere
    "faint": (0, (8, 24, 8, 24), 140),  # a faint square: unsure inside the candidate lesion
}


@pytest.fixture
def dataset(tmp_path: Path) -> DatasetFolder:
    (tmp_path / "images").mkdir()
    for name, (background, box, value) in IMAGES.items():
        image = np.full((32, 32), background, np.uint8)
        if box is not None:
            image[box[0] : box[1], box[2] : box[3]] = value
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), image)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "unlabeled.txt").write_text("\n".join(IMAGES) + "\n")
    return DatasetFolder(tmp_path)


def test_most_uncertain_first_and_sorted(dataset: DatasetFolder, tmp_path: Path) -> None:
    seg = Segmenter(BrightnessNet(), size=None)
    out = tmp_path / "ranking.csv"
    rows = rank_unlabeled(seg, dataset, dataset.split("unlabeled"), top=0, tta=False, out=out, progress=False)
    order = [r["id"] for r in rows]
    assert order[0] == "grey" and order[1] == "faint"
    assert set(order[2:]) == {"clean", "blank"}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9 and scores[-1] < 0.05
    with out.open(newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [r["id"] for r in written] == order and written[0]["rank"] == "1"
    assert {"score", "entropy", "disagreement", "lesion_area_px"} <= set(written[0])
    assert int(next(r for r in written if r["id"] == "clean")["lesion_area_px"]) == 256
    with pytest.raises(OutputExistsError):
        rank_unlabeled(seg, dataset, ["grey"], out=out, progress=False)


def test_top_and_tta_disagreement(dataset: DatasetFolder) -> None:
    seg = Segmenter(BrightnessNet(), size=32)
    rows = rank_unlabeled(seg, dataset, dataset.split("unlabeled"), top=2, tta=True, progress=False)
    assert len(rows) == 2 and [r["rank"] for r in rows] == [1, 2]
    assert all(r["score"] == pytest.approx((r["entropy"] + r["disagreement"]) / 2) for r in rows)  # TTA enters the score


def test_disagreement_and_score_by_hand() -> None:
    """Variance 0.01 everywhere: disagreement 2 * sqrt(0.01) = 0.2; score = (entropy + 0.2) / 2."""
    probs = np.zeros((20, 20), np.float32)
    probs[5:10, 5:10] = 0.9
    entropy = np.full((20, 20), 0.4, np.float32)
    result = SegmenterResult(mask=probs > 0.5, probabilities=probs, entropy=entropy, variance=np.full((20, 20), 0.01, np.float32))
    scores = uncertainty_scores(result)
    assert scores["disagreement"] == pytest.approx(0.2) and scores["entropy"] == pytest.approx(0.4)
    assert scores["score"] == pytest.approx(0.3) and scores["lesion_area_px"] == 25
    no_tta = uncertainty_scores(SegmenterResult(mask=result.mask, probabilities=probs, entropy=entropy))
    assert no_tta["disagreement"] == 0.0 and no_tta["score"] == pytest.approx(0.4)


def test_region_covers_lesion_and_band() -> None:
    probs = np.zeros((40, 40), np.float32)
    probs[10:20, 10:20] = 0.9
    result = SegmenterResult(mask=probs > 0.5, probabilities=probs, entropy=np.zeros_like(probs))
    region = uncertainty_region(result)  # band = 5% of 40 = 2 px
    assert region[10:20, 10:20].all() and region[8, 15] and not region[5, 15]
    empty = SegmenterResult(mask=probs < 0, probabilities=probs * 0, entropy=np.zeros_like(probs))
    assert uncertainty_region(empty).all()


def test_cli(tmp_path: Path, tiny_checkpoint: Path, dataset: DatasetFolder) -> None:  # noqa: F811
    out = tmp_path / "r.csv"
    with pytest.raises(SystemExit) as done:
        main(["rank-unlabeled", str(tiny_checkpoint), str(dataset.root), "--split", "unlabeled", "--top", "3",
              "--out", str(out), "--size", "64", "--no-tta"])
    assert done.value.code == 0
    assert len(out.read_text().strip().splitlines()) == 4
