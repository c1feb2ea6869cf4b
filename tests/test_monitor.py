"""Pseudo-label diagnostics: hand-computed scores, fixed ids, and a training run the monitor cannot change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_helpers import make_tiny_dataset, read_metrics, tiny_config

from rabusseg.checkpoint import load_checkpoint
from rabusseg.engine.monitor import QUALITY_METRICS, monitor_ids, pseudo_label_quality, summarize_quality
from rabusseg.engine.trainer import train


def test_quality_scores_by_hand() -> None:
    # One 2x4 image.  Truth: lesion in the left half.  Pseudo-label: lesion in the first three
    # columns of row 0 and the first column of row 1 -> TP 3, FP 1 (0,2), FN 1 (1,1).
    truth = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0]]], dtype=torch.bool)
    pseudo = torch.tensor([[[1, 1, 1, 0], [1, 0, 0, 0]]])
    filtered = torch.tensor([[[1, 1, 255, 0], [1, 255, 0, 0]]])  # the two wrong pixels dropped
    q = summarize_quality(pseudo_label_quality(pseudo, filtered, truth))
    assert q["pl_dice"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert q["pl_precision"] == pytest.approx(3 / 4) and q["pl_recall"] == pytest.approx(3 / 4)
    assert q["kept_share"] == pytest.approx(6 / 8)
    assert q["kept_accuracy"] == pytest.approx(1.0) and q["dropped_accuracy"] == pytest.approx(0.0)
    assert q["lesion_share"] == pytest.approx(4 / 8) and q["kept_lesion_share"] == pytest.approx(3 / 6)
    assert set(summarize_quality(pseudo_label_quality(pseudo, filtered, truth),
                                 pseudo_label_quality(pseudo, pseudo, truth))) == set(QUALITY_METRICS)  # fmt: skip
    lesion_dropped = torch.tensor([[[255, 255, 255, 0], [255, 0, 0, 0]]])  # every lesion pixel dropped
    q = summarize_quality(pseudo_label_quality(pseudo, lesion_dropped, truth))
    assert q["lesion_share"] == pytest.approx(4 / 8) and q["kept_lesion_share"] == 0.0
    empty = summarize_quality(pseudo_label_quality(torch.zeros(1, 2, 2, dtype=torch.long),
                                                   torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2)))  # fmt: skip
    assert empty["pl_dice"] == 1.0  # nothing to find, nothing found: the evaluation's rule
    assert empty["dropped_accuracy"] != empty["dropped_accuracy"]  # NaN: nothing was dropped


def test_monitored_ids_are_fixed_and_cover_both_classes() -> None:
    ids = [f"b{i}" for i in range(10)] + [f"m{i}" for i in range(4)]
    classes = ["benign"] * 10 + ["malignant"] * 4
    picked = monitor_ids(ids[::-1], 4, classes[::-1])
    assert picked == monitor_ids(ids[::-1], 4, classes[::-1]) and len(picked) == 4
    assert {p[0] for p in picked} == {"b", "m"}
    assert monitor_ids(ids, 0) == [] and len(monitor_ids(ids, 50)) == len(ids)


@pytest.mark.slow
def test_the_monitor_leaves_training_exactly_as_it_was(tmp_path: Path) -> None:
    """Same seed with and without the monitor: identical weights and losses; the pseudo rows are logged."""
    root = make_tiny_dataset(tmp_path / "ds", val=2)
    runs = {}
    for n in (0, 3):
        cfg = tiny_config(root, data={"val": "tiny/val"}, train={"epochs": 3, "warmup_epochs": 1, "monitor_unlabeled": n})
        train(cfg, tmp_path / f"run{n}")
        runs[n] = load_checkpoint(tmp_path / f"run{n}" / "checkpoints" / "last.pt")
    for key in ("student", "teacher"):
        for name, tensor in runs[0][key].items():
            assert torch.equal(tensor, runs[3][key][name]), (key, name)
    losses = [[r["loss/total"] for r in read_metrics(tmp_path / f"run{n}")] for n in (0, 3)]
    assert losses[0] == losses[1]
    pseudo = [r for r in read_metrics(tmp_path / "run3", "eval") if r["split"] == "pseudo"]
    assert [r["epoch"] for r in pseudo] == [1, 2]  # after warm-up only
    for row in pseudo:
        assert {"pl_dice", "pl_precision", "pl_recall", "kept_share", "kept_accuracy", "student_dice", "lesion_share",
                "kept_lesion_share"} <= set(row)
        assert 0.0 <= row["pl_dice"] <= 1.0 and 0.5 < row["kept_share"] <= 1.0
    assert not [r for r in read_metrics(tmp_path / "run0", "eval") if r["split"] == "pseudo"]
    val = [r for r in read_metrics(tmp_path / "run3", "eval") if r["split"] == "val"]
    assert "teacher_dice" in val[-1] and "student_dice" in val[-1] and "teacher_dice" not in val[0]
    from rabusseg.evaluation.report import render_run_report

    page = render_run_report(tmp_path / "run3").read_text()
    assert "pseudo-labels" in page and (tmp_path / "run3" / "report" / "pseudo-labels.png").stat().st_size > 1000
    render_run_report(tmp_path / "run0")
    assert (tmp_path / "run0" / "report" / "losses.png").is_file()
    assert not (tmp_path / "run0" / "report" / "pseudo-labels.png").exists()
