"""Smoke tests of the benchmark scripts: they run on tiny settings and write the JSON the README
section is generated from.  Numbers are not checked (benchmarks are never timed tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (not a package) as a module."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_speed_quick_writes_every_section(tmp_path: Path) -> None:
    speed = load_script("speed")
    out = tmp_path / "speed.json"
    speed.main(["--quick", "--train-sizes", "32", "--infer-sizes", "32", "--throughput-sizes", "32", "--no-memory",
                "--output", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert {"command", "environment", "settings", "targets", "training", "training_overhead", "inference",
            "inference_target", "memory", "wall_s"} <= data.keys()  # fmt: skip
    assert {"cpu", "cpu_cores", "torch", "torch_threads", "date", "load_average_start"} <= data["environment"].keys()
    assert {r["method"] for r in data["training"]} == {"supervised", "mean_teacher", "ra_busseg"}
    assert all(r["step_ms"] > 0 and r["tflop_per_step"] > 0 for r in data["training"])
    overhead = data["training_overhead"][0]
    assert overhead["ra_over_mean_teacher"] == pytest.approx(overhead["ra_busseg_ms"] / overhead["mean_teacher_ms"])
    assert {r["engine"] for r in data["inference"]} == {"eager", "channels_last", "onnxruntime"}
    assert all(r["batch1_ms"] > 0 and r["images_per_s"] > 0 and r["gflop_per_image"] > 0 for r in data["inference"])
    assert data["inference_target"] == [{"model": "cpu_small", "size": 512, "measured": False, "target_s": 0.5, "met": None}]
    assert data["memory"] == []


def test_speed_memory_child_reports_every_method(tmp_path: Path) -> None:
    speed = load_script("speed")
    spec = {"model": "cpu_small", "train": [32], "infer": [32], "batch": 2, "device": "cpu", "work": str(tmp_path)}
    rows = speed.memory_in_child(spec)
    assert [(r["kind"], r["method"]) for r in rows] == [("train", "supervised"), ("train", "mean_teacher"),
                                                          ("train", "ra_busseg"), ("infer", "eager")]  # fmt: skip
    assert all(r["peak_mib"] >= 0 for r in rows)
    assert rows[1]["weights_mib"] == pytest.approx(2 * rows[0]["weights_mib"])  # student + teacher


def _tiny_busi(root: Path) -> Path:
    """Phantoms with a test list and a 1/2 split named like the paper's (``splits/1_2``)."""
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split

    synthesize_dataset(root, n=16, seed=0, size=64, test_fraction=0.25)
    make_split(root, "1/2", seed=0, name="1_2")
    return root


def test_quality_run_and_table(tmp_path: Path) -> None:
    quality = load_script("quality")
    root, runs, out = _tiny_busi(tmp_path / "data"), tmp_path / "runs", tmp_path / "quality.json"
    tiny = ["model.encoder_weights=null", "model.aspp_channels=8", "model.decoder_channels=8", "model.low_level_channels=8",
            "model.proj_channels=8", "data.resize_to=null", "data.crop_size=64", "data.eval_size=64", "data.num_workers=0",
            "train.epochs=2", "train.warmup_epochs=1", "train.max_steps=2", "train.batch_size=2",
            "model.classifier_init_std=1.0"]  # fmt: skip  (random foreground after 2 steps: HD95 is defined)
    sets = [a for o in tiny for a in ("--set", o)]
    run_dir = quality.main(["run", "--method", "supervised", "--ratio", "1_2", "--seed", "0", "--root", str(root),
                            "--runs", str(runs), *sets])  # fmt: skip
    assert run_dir == runs / "1_2" / "supervised_s0"
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["method"] == "supervised" and bench["wall_s"] > 0 and "environment" in bench
    assert any(o.startswith("train.steps_per_epoch=") for o in bench["overrides"])

    data = quality.main(["table", "--runs", str(runs), "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert data["figure"] == str(out.with_suffix(".png").resolve()) and out.with_suffix(".png").stat().st_size > 1000
    row = data["rows"][0]
    assert (row["ratio"], row["variant"], row["seeds"]) == ("1_2", "supervised", [0])
    assert {"dice_last", "iou_last", "hd95_last"} <= row.keys()
    assert row["dice_last_std_over"] == "images"
    planned = {(m["ratio"], m["variant"]) for m in data["missing"]}
    assert ("1_2", "supervised") not in planned and ("1_2", "supervised+val30") in planned  # --val 30 by default
    assert {("1_8", "fixmatch"), ("1_2", "ra_busseg-no_arp"), ("1_2", "ra_busseg-no_cra")} <= planned

    # With a validation list: a second row, its own run directory, a best-on-validation Dice.
    val_dir = quality.main(["run", "--method", "supervised", "--ratio", "1_2", "--seed", "0", "--val", "2",
                            "--root", str(root), "--runs", str(runs), *sets])  # fmt: skip
    assert val_dir == runs / "1_2" / "supervised+val2_s0" and (val_dir / "checkpoints" / "best.pt").is_file()
    assert json.loads((val_dir / "bench.json").read_text())["val"] == 2
    data = quality.main(["table", "--runs", str(runs), "--output", str(out), "--val", "2"])
    assert [r["variant"] for r in data["rows"]] == ["supervised", "supervised+val2"]
    assert data["rows"][0].get("dice_best") is None and 0.0 <= data["rows"][1]["dice_best"] <= 1.0
    assert "python benchmarks/quality.py run --method ra_busseg --ratio 1_8 --seed 0 --val 2" in [
        m["command"] for m in data["missing"]]


def test_quality_validation_is_held_out_of_the_unlabelled_list(tmp_path: Path) -> None:
    quality = load_script("quality")
    root = _tiny_busi(tmp_path / "data")
    splits = root / "splits" / "1_2"
    labeled_before = (splits / "labeled.txt").read_text()
    unlabeled = (splits / "unlabeled.txt").read_text().split()
    unl_path, val_path = quality.carve_validation(root, "1_2", 2, tmp_path / "lists")
    kept, val = Path(unl_path).read_text().split(), Path(val_path).read_text().split()
    assert len(val) == 2 and len(set(val)) == 2 and not set(val) & set(kept)
    n = len(unlabeled)
    assert [unlabeled.index(i) for i in val] == [0, n // 2]  # spread over the whole (class-sorted) list
    assert sorted(kept + val) == sorted(unlabeled)
    assert (splits / "labeled.txt").read_text() == labeled_before  # the labelled set keeps its size
    with pytest.raises(ValueError, match="unlabelled list has"):
        quality.carve_validation(root, "1_2", len(unlabeled), tmp_path / "lists")


def test_quality_prepare_links_and_copies(tmp_path: Path) -> None:
    quality = load_script("quality")
    source = _tiny_busi(tmp_path / "shared")
    work = quality.prepare_data(source, tmp_path / "work" / "busi")
    assert (work / "images").is_symlink() and (work / "masks").is_symlink()
    assert not (work / "splits").is_symlink() and (work / "splits" / "1_8" / "labeled.txt").is_file()
    assert not (source / "splits" / "1_8").exists()  # the source is never written to


SPEED_FIXTURE = {
    "command": "python benchmarks/speed.py", "wall_s": 500.0,
    "environment": {"date": "2026-01-01 00:00:00 +0000", "cpu": "Test CPU", "cpu_cores": 2, "cpu_cores_usable": 2,
                    "torch": "2.x", "torch_threads": 2, "device": "cpu", "cuda_device": None,
                    "load_average_start": [1.0, 1.0, 1.0], "load_average_end": [1.2, 1.1, 1.0]},
    "settings": {"infer_batch": 8}, "targets": {"ra_over_mean_teacher_max": 1.15, "cpu_512px_s_per_image_max": 0.5},
    "training": [{"model": "cpu_small", "encoder": "mobilenet_v2", "size": 128, "batch": 2, "method": m, "step_ms": t,
                  "images_per_s": 4.0, "achieved_tflops": 0.01} for m, t in (("mean_teacher", 100.0), ("ra_busseg", 130.0))],
    "training_overhead": [{"model": "cpu_small", "size": 128, "mean_teacher_ms": 100.0, "ra_busseg_ms": 130.0,
                           "ra_over_mean_teacher": 1.3, "paired_ratio": 1.3, "target": 1.15, "met": False}],
    "inference": [{"model": "cpu_small", "size": 512, "engine": "onnxruntime", "gflop_per_image": 28.0,
                   "batch1_ms": 400.0, "images_per_s": 3.0}],
    "inference_target": [{"model": "cpu_small", "size": 512, "measured": True, "best_engine": "onnxruntime",
                          "best_mode": "batch 8", "best_s_per_image": 0.33, "target_s": 0.5, "met": True}],
    "memory": [{"model": "cpu_small", "kind": "train", "method": "ra_busseg", "size": 128, "batch": 2, "peak_mib": 80.0,
                "weights_mib": 70.0}],
}  # fmt: skip


def test_make_results_renders_and_replaces_only_the_section(tmp_path: Path) -> None:
    make_results = load_script("make_results")
    results = tmp_path / "results"
    results.mkdir()
    (results / "speed.json").write_text(json.dumps(SPEED_FIXTURE))
    section = make_results.render(results)
    assert section.startswith("## Results")
    assert "1.30x a mean-teacher step (MISSED" in section
    assert "0.33 s per image with onnxruntime (batch 8) (reached" in section
    assert "Test CPU (2 cores)" in section and "2026-01-01" in section
    assert "No ImageNet ResNet-50 weights were available here" in section
    assert "Quality: not run." in section and "not run (no GPU lent)" in section

    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nIntro.\n")
    make_results.update_readme(readme, section)
    text = readme.read_text()
    assert text.startswith("# Title\n\nIntro.\n") and text.rstrip().endswith(make_results.END)
    readme.write_text(text.replace("Intro.", "Intro, edited.") + "\n## After\n")
    make_results.update_readme(readme, "## Results\n\nnew\n")
    text = readme.read_text()
    assert "Intro, edited." in text and text.endswith("\n## After\n") and text.count(make_results.START) == 1
    assert "new" in text and "1.30x" not in text


def test_gpu_quality_dry_run_budget() -> None:
    gpu = load_script("gpu_quality")
    assert gpu.train_minutes(7.5, 2) == pytest.approx(2.5)
    out = gpu.main(["--dry-run", "--device", "cpu"])
    cmds = out["commands"]
    assert set(cmds) == {"paper", "mobilenet"}
    assert cmds["paper"][cmds["paper"].index("--config") + 1] == "busi_1-2"
    assert "train.epochs=6" in cmds["mobilenet"]


def test_quality_verdicts_compare_each_variant_with_supervised() -> None:
    make_results = load_script("make_results")
    row = {"ratio": "1_2", "dice_last_std": 0.3, "dice_last_std_over": "images", "n_images": 100}
    rows = [{**row, "variant": "supervised", "dice_last": 0.60},
            {**row, "variant": "ra_busseg", "dice_last": 0.65},  # +0.05 < 1.96 * 0.3 / 10 = 0.0588
            {**row, "variant": "mean_teacher", "dice_last": 0.50},  # -0.10: worse
            {**row, "ratio": "1_8", "variant": "ra_busseg", "dice_last": 0.4}]  # no baseline at 1/8: no line
    lines = make_results.against_supervised(rows)
    assert lines == ["Test Dice at 1/2 against supervised 0.600: ra_busseg 0.650 (+0.050, within noise); "
                     "mean_teacher 0.500 (-0.100, worse)."]
    # Runs with a validation list are compared among themselves, on the best-on-validation model.
    rows += [{**row, "variant": "supervised+val30", "dice_last": 0.9, "dice_best": 0.55, "dice_best_std": 0.3,
              "dice_best_std_over": "images"},
             {**row, "variant": "ra_busseg+val30", "dice_last": 0.1, "dice_best": 0.70, "dice_best_std": 0.3,
              "dice_best_std_over": "images"}]  # fmt: skip
    lines = make_results.against_supervised(rows)
    assert lines[0].startswith("Test Dice at 1/2 against supervised 0.600")
    assert lines[1] == ("Test Dice of the best-on-validation model (30 images held out) at 1/2 against "
                        "supervised+val30 0.550: ra_busseg+val30 0.700 (+0.150, better).")
    assert make_results.held_out_pairs(rows) == [
        "Same run less the held-out validation images (test Dice of the last model; supervised runs train on "
        "identical data): supervised at 1/2 0.600 -> 0.900; ra_busseg at 1/2 0.650 -> 0.100."]
