"""summarize: statistics against numpy, bootstrap behaviour, per-class split, empty-case counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rabusseg.evaluation.aggregate import bootstrap_mean_ci, describe, summarize


def make_rows(dice: list[float], classes: list[str] | None = None) -> list[dict]:
    rows = []
    for i, d in enumerate(dice):
        rows.append({"id": f"img{i}", "class": classes[i] if classes else "benign", "dice": d, "iou": d / (2 - d),
                     "hd95": 2.0, "tp": 10, "fp": 0, "fn": 0, "empty_case": "none"})
    return rows


def test_mean_std_median_match_numpy():
    rng = np.random.default_rng(1)
    values = rng.uniform(0.3, 0.95, size=37)
    s = summarize(make_rows(list(values)))
    d = s["dice"]
    assert d["mean"] == pytest.approx(values.mean())
    assert d["std"] == pytest.approx(values.std(ddof=1))
    assert d["median"] == pytest.approx(np.median(values))
    assert d["n"] == 37 and d["n_nan"] == 0
    assert s["n_images"] == 37
    assert set(s) >= {"dice", "iou", "hd95", "pooled_dice", "empty_cases", "per_class", "bootstrap"}
    assert "precision" not in s  # only metrics present in the rows


def test_ci95_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(2)
    small = rng.uniform(0, 1, size=20)
    large = rng.uniform(0, 1, size=2000)
    lo_s, hi_s = describe(small)["ci95"]
    lo_l, hi_l = describe(large)["ci95"]
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 4  # width shrinks ~ 1/sqrt(n): 10x here
    # the percentile interval of the mean of U(0,1) is about mean +- 1.96 * 0.2887 / sqrt(n)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * 0.2887 / math.sqrt(2000), rel=0.15)


def test_bootstrap_is_seeded_and_handles_tiny_inputs():
    x = np.array([0.1, 0.5, 0.9, 0.7])
    assert bootstrap_mean_ci(x, seed=3) == bootstrap_mean_ci(x, seed=3)
    assert bootstrap_mean_ci(np.array([0.4])) == (0.4, 0.4)
    lo, hi = bootstrap_mean_ci(np.array([]))
    assert math.isnan(lo) and math.isnan(hi)


def test_nan_values_are_skipped_and_counted():
    rows = make_rows([0.8, 0.6, 0.4])
    rows[1]["hd95"] = float("nan")
    rows[2]["hd95"] = 4.0
    s = summarize(rows)
    assert s["hd95"]["n"] == 2 and s["hd95"]["n_nan"] == 1
    assert s["hd95"]["mean"] == pytest.approx(3.0)
    all_nan = summarize([{"id": "a", "class": "x", "hd95": float("nan")}])["hd95"]
    assert all_nan["mean"] is None and all_nan["n"] == 0 and all_nan["ci95"] == [None, None]


def test_per_class_split():
    rows = make_rows([0.9, 0.7, 0.2, 0.4, 0.6], ["benign", "benign", "malignant", "malignant", "malignant"])
    rows.append({"id": "x", "class": None, "dice": 0.5, "tp": 1, "fp": 1, "fn": 0, "empty_case": "none"})
    s = summarize(rows)
    assert sorted(s["per_class"]) == ["benign", "malignant", "unknown"]
    assert s["per_class"]["benign"]["dice"]["mean"] == pytest.approx(0.8)
    assert s["per_class"]["malignant"]["dice"]["mean"] == pytest.approx(0.4)
    assert s["per_class"]["malignant"]["n_images"] == 3
    assert s["per_class"]["unknown"]["dice"]["std"] is None  # one image: no sample std


def test_empty_case_counts_and_pooled_dice():
    rows = [
        {"id": "a", "class": "benign", "dice": 0.9, "tp": 45, "fp": 5, "fn": 5, "empty_case": "none"},
        {"id": "b", "class": "normal", "dice": 1.0, "tp": 0, "fp": 0, "fn": 0, "empty_case": "both_empty"},
        {"id": "c", "class": "normal", "dice": 0.0, "tp": 0, "fp": 20, "fn": 0, "empty_case": "empty_gt"},
        {"id": "d", "class": "malignant", "dice": 0.0, "tp": 0, "fp": 0, "fn": 30, "empty_case": "empty_pred"},
        {"id": "e", "class": "malignant", "dice": 0.0, "tp": 0, "fp": 0, "fn": 10, "empty_case": "empty_pred"},
    ]
    s = summarize(rows)
    assert s["empty_cases"] == {"both_empty": 1, "empty_gt": 1, "empty_pred": 2}
    # 2*45 / (2*45 + (5+20) + (5+30+10)) = 90 / 160
    assert s["pooled_dice"] == pytest.approx(90 / 160)
    assert s["per_class"]["normal"]["empty_cases"] == {"both_empty": 1, "empty_gt": 1, "empty_pred": 0}
    assert s["per_class"]["malignant"]["pooled_dice"] == pytest.approx(0.0)


def test_summary_is_strict_json():
    rows = make_rows([0.5, 0.7])
    rows[0]["hd95"] = float("nan")
    json.dumps(summarize(rows), allow_nan=False)  # no NaN leaks into summary.json
    assert summarize([])["n_images"] == 0
