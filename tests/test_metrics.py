"""binary_metrics on masks whose scores can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rabusseg.evaluation.metrics import binary_metrics, empty_case, pooled_dice


def square(top: int, left: int, side: int = 10, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


def disc(cy: float, cx: float, r: float, shape: tuple[int, int] = (300, 300)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def lens_area(r: float, d: float) -> float:
    """Area of intersection of two discs of radius r whose centres are d apart."""
    return 2 * r * r * math.acos(d / (2 * r)) - 0.5 * d * math.sqrt(4 * r * r - d * d)


def test_squares_shifted_by_two_columns():
    # 10x10 squares, 2 columns apart: overlap 10x8 = 80 px, each square 100 px.
    m = binary_metrics(square(5, 5), square(5, 7))
    assert m["tp"] == 80 and m["fp"] == 20 and m["fn"] == 20 and m["tn"] == 1600 - 120
    assert m["dice"] == pytest.approx(2 * 80 / 200)
    assert m["iou"] == pytest.approx(80 / 120)
    assert m["precision"] == pytest.approx(0.8)
    assert m["recall"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(1480 / 1500)
    # Edge pixels of one square (36) to the other's edge: 16 at 0, 4 at 1, 16 at 2 px, both ways.
    assert m["hd95"] == pytest.approx(2.0)
    assert m["assd"] == pytest.approx((4 * 1 + 16 * 2) / 36)
    assert m["empty_case"] == "none"


def test_one_pixel_shift_has_hd95_one():
    # 18 of the 36 edge pixels move by 1 px, the rest lie on the other edge.
    m = binary_metrics(square(5, 5), square(5, 6))
    assert m["hd95"] == pytest.approx(1.0)
    assert m["assd"] == pytest.approx(18 / 36)


@pytest.mark.parametrize("k", [3, 4])
def test_shift_by_k_gives_hd95_k(k):
    m = binary_metrics(square(5, 5, side=20), square(5, 5 + k, side=20))
    assert m["hd95"] == pytest.approx(float(k))


def test_spacing_scales_distances():
    iso = binary_metrics(square(5, 5), square(5, 7), spacing=(0.5, 0.5))
    assert iso["hd95"] == pytest.approx(1.0)
    assert iso["assd"] == pytest.approx(0.5)
    assert iso["dice"] == pytest.approx(0.8)  # overlap does not depend on spacing
    # Rows 3 units apart, columns 0.5: every moved edge pixel is now nearest along its row:
    # 18 pixels at 2 * 0.5 = 1.0, two at 0.5, the rest 0.
    aniso = binary_metrics(square(5, 5), square(5, 7), spacing=(3.0, 0.5))
    assert aniso["hd95"] == pytest.approx(1.0)
    assert aniso["assd"] == pytest.approx((18 * 1.0 + 2 * 0.5) / 36)


def test_hd95_ignores_a_few_outliers_but_not_the_max():
    # A 20x20 square plus one stray pixel 20 px away: 1 of 77 edge pixels is an outlier,
    # below the 5% that the 95th percentile discards; a plain Hausdorff distance would be 20.
    gt = square(5, 5, side=20, shape=(60, 60))
    pred = gt.copy()
    pred[14, 44] = True
    assert binary_metrics(pred, gt)["hd95"] == pytest.approx(0.0)


def test_discs_match_the_analytic_overlap():
    r, d = 60.0, 30.0
    a, b = disc(150, 120, r), disc(150, 120 + d, r)
    inter = lens_area(r, d)
    area = math.pi * r * r
    m = binary_metrics(a, b)
    assert m["dice"] == pytest.approx(inter / area, rel=0.01)
    assert m["iou"] == pytest.approx(inter / (2 * area - inter), rel=0.01)
    # Concentric discs radius 60 and 50: every distance between the edges is about 10 px.
    c = binary_metrics(disc(150, 150, 60), disc(150, 150, 50))
    assert c["hd95"] == pytest.approx(10.0, abs=0.7)
    assert c["assd"] == pytest.approx(10.0, abs=0.7)
    assert c["recall"] == pytest.approx(1.0)
    assert c["precision"] == pytest.approx(50**2 / 60**2, rel=0.02)


def test_identical_masks_are_perfect():
    m = binary_metrics(square(5, 5), square(5, 5))
    assert (m["dice"], m["iou"], m["hd95"], m["assd"]) == (1.0, 1.0, 0.0, 0.0)


def test_both_empty():
    z = np.zeros((8, 9), dtype=bool)
    m = binary_metrics(z, z)
    assert m["empty_case"] == "both_empty"
    assert (m["dice"], m["iou"], m["precision"], m["recall"], m["specificity"]) == (1.0,) * 5
    assert (m["hd95"], m["assd"]) == (0.0, 0.0)


def test_false_alarm_on_an_empty_ground_truth():
    m = binary_metrics(square(2, 2, side=3, shape=(10, 10)), np.zeros((10, 10), dtype=bool))
    assert m["empty_case"] == "empty_gt"
    assert (m["dice"], m["iou"], m["precision"]) == (0.0, 0.0, 0.0)
    assert math.isnan(m["recall"]) and math.isnan(m["hd95"]) and math.isnan(m["assd"])
    assert m["specificity"] == pytest.approx(91 / 100)


def test_missed_lesion():
    m = binary_metrics(np.zeros((10, 10), dtype=bool), square(2, 2, side=3, shape=(10, 10)))
    assert m["empty_case"] == "empty_pred"
    assert (m["dice"], m["iou"], m["recall"], m["specificity"]) == (0.0, 0.0, 0.0, 1.0)
    assert math.isnan(m["precision"]) and math.isnan(m["hd95"]) and math.isnan(m["assd"])


def test_empty_case_labels():
    assert [empty_case(1, 1), empty_case(0, 0), empty_case(5, 0), empty_case(0, 5)] == [
        "none", "both_empty", "empty_gt", "empty_pred"]


def test_accepts_01_integers_and_rejects_bad_input():
    assert binary_metrics(square(5, 5).astype(np.uint8), square(5, 7).astype(np.int64))["dice"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="same shape"):
        binary_metrics(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2-D"):
        binary_metrics(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="0/1"):
        binary_metrics(np.full((4, 4), 255), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(square(5, 5), square(5, 7), spacing=(1.0, -1.0))


def test_pooled_dice_weights_pixels_not_images():
    rows = [{"tp": 90, "fp": 10, "fn": 0}, {"tp": 0, "fp": 0, "fn": 10}]
    # per-image Dice 180/190 and 0 (mean 0.47); pooled 180 / (180 + 10 + 10) = 0.9
    assert pooled_dice(rows) == pytest.approx(0.9)
    assert pooled_dice([{"tp": 0, "fp": 0, "fn": 0}]) == 1.0
    assert math.isnan(pooled_dice([]))
