"""Run report from a synthetic run directory; evaluation tables rendered from fake rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rabusseg.cli import main
from rabusseg.errors import DataError
from rabusseg.evaluation.aggregate import summarize
from rabusseg.evaluation.report import metrics_table, per_class_table, render_run_report


def fake_rows() -> list[dict]:
    return [
        {"id": "a", "class": "benign", "dice": 0.9, "iou": 0.82, "hd95": 3.0, "tp": 9, "fp": 1, "fn": 1,
         "empty_case": "none"},
        {"id": "b", "class": "malignant", "dice": 0.5, "iou": 0.33, "hd95": 12.0, "tp": 5, "fp": 5, "fn": 5,
         "empty_case": "none"},
        {"id": "c", "class": "malignant", "dice": 0.0, "iou": 0.0, "hd95": float("nan"), "tp": 0, "fp": 0,
         "fn": 7, "empty_case": "empty_pred"},
    ]


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    lines = []
    for step in range(0, 50, 10):
        lines.append({"kind": "train", "step": step, "epoch": step // 20, "lr": 0.003 * (1 - step / 60) ** 0.9,
                      "loss/total": 1.0 / (1 + step), "loss/sup": 0.6 / (1 + step), "loss/arp": 0.2,
                      "keep_ratio": 0.8 + step / 500})
    lines += [{"kind": "eval", "split": "val", "step": 20, "epoch": 1, "dice": 0.5, "iou": 0.4},
              {"kind": "eval", "split": "val", "step": 40, "epoch": 2, "dice": 0.6, "iou": 0.5}]
    run.mkdir()
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"kind": "train", "st'  # last line cut by a crash
    (run / "metrics.jsonl").write_text(text)
    (run / "config.yaml").write_text("model:\n  encoder: resnet18\n")
    ev = run / "eval" / "test_last"
    ev.mkdir(parents=True)
    summary = {**summarize(fake_rows(), n_bootstrap=50), "context": {"split": "test", "distance_unit": "px"}}
    (ev / "summary.json").write_text(json.dumps(summary))
    return run


def test_run_report_html_and_figures(tmp_path):
    run = make_run(tmp_path)
    out = render_run_report(run)
    assert out == run / "report.html"
    text = out.read_text()
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert {"report/losses.png", "report/schedule.png", "report/validation.png"} <= set(srcs)
    for src in srcs:
        assert (run / src).is_file() and (run / src).stat().st_size > 1000
    assert "<table>" in text and "hd95 (px)" in text and "pooled dice" in text
    assert "0.4667" in text  # mean Dice of the test_last rows
    assert "1 unreadable line" in text
    assert "resnet18" in text  # the config is shown
    assert "eval/test_last/report.html" in text


def test_run_report_without_evaluation_or_metrics(tmp_path):
    run = make_run(tmp_path)
    (run / "eval" / "test_last" / "summary.json").unlink()
    assert "No evaluation yet" in render_run_report(run).read_text()
    (run / "metrics.jsonl").unlink()
    with pytest.raises(DataError, match="neither metrics.jsonl"):
        render_run_report(run)
    with pytest.raises(DataError, match="does not exist"):
        render_run_report(tmp_path / "missing")


def test_tables_from_fake_rows():
    summary = summarize(fake_rows(), n_bootstrap=50)
    table = metrics_table(summary, unit="mm")
    assert "hd95 (mm)" in table and "7.5000" in table  # mean of 3 and 12, NaN skipped
    classes = per_class_table(summary)
    assert "benign" in classes and "malignant" in classes and "0.2500 (0.3536)" in classes


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_report_cli(tmp_path, capsys):
    run = make_run(tmp_path)
    assert run_cli(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert run_cli(["report", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
