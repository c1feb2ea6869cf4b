"""Smoke tests of the benchmark scripts: they run on tiny settings and write the JSON the README
section is generated from.  Numbers are not checked (benchmarks are never timed tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # end-to-end training: still run in CI

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
    assert {"cpu", "cpu_cores", "cpu_native_bf16", "torch", "torch_threads", "date",
            "load_average_start"} <= data["environment"].keys()  # fmt: skip
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


def test_quality_run_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quality = load_script("quality")
    root, runs, out = _tiny_busi(tmp_path / "data"), tmp_path / "runs", tmp_path / "quality.json"
    tiny = ["model.encoder_weights=null", "model.aspp_channels=8", "model.decoder_channels=8", "model.low_level_channels=8",
            "model.proj_channels=8", "data.resize_to=null", "data.crop_size=64", "data.eval_size=64", "data.num_workers=0",
            "train.epochs=2", "train.warmup_epochs=1", "train.max_steps=4", "train.batch_size=2", "train.steps_per_epoch=2",
            "model.classifier_init_std=1.0"]  # fmt: skip  (random foreground after a few steps: HD95 is defined)
    sets = [a for o in tiny for a in ("--set", o)]
    for method in ("supervised", "mean_teacher"):
        hide = ["--hide-test"] if method == "mean_teacher" else []
        run_dir = quality.main(["run", "--method", method, "--ratio", "1_2", "--seed", "0", "--root", str(root),
                                "--runs", str(runs), "--val", "2", "--monitor", "2", *hide, *sets])  # fmt: skip
        assert run_dir == runs / "1_2" / f"{method}_s0" and (run_dir / "checkpoints" / "best.pt").is_file()
        shown = capsys.readouterr().out.splitlines()[-1].split("test Dice (last) ")[1]
        assert shown == "not shown (--hide-test)" if hide else 0.0 <= float(shown) <= 1.0
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["method"] == "mean_teacher" and bench["wall_s"] > 0 and "environment" in bench
    assert "train.monitor_unlabeled=2" in bench["overrides"]

    data = quality.main(["table", "--runs", str(runs), "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert data["figure"] == str(out.with_suffix(".png").resolve()) and out.with_suffix(".png").stat().st_size > 1000
    assert [(r["variant"], r["seeds"]) for r in data["rows"]] == [("supervised", [0]), ("mean_teacher", [0])]
    assert data["rows"][1]["pseudo_pl_dice"] is not None and data["rows"][0]["pseudo_pl_dice"] is None
    (pair,) = data["pairs"]
    sup, mt = (quality.per_image(runs / "1_2" / f"{m}_s0") for m in ("supervised", "mean_teacher"))
    assert (pair["variant"], pair["baseline"], pair["n_images"]) == ("mean_teacher", "supervised", len(sup))
    assert pair["mean_diff"] == pytest.approx(sum(mt[i] - sup[i] for i in sup) / len(sup))
    assert {v["ratio"]: v["met"] for v in data["verdicts"]} == {"1_8": None, "1_2": None}  # no RA-BUSSeg run yet
    planned = {(m["ratio"], m["variant"], m["seed"]) for m in data["missing"]}
    assert ("1_2", "supervised", 0) not in planned and ("1_8", "ra_busseg", 2) in planned
    assert {("1_8", "fixmatch", 0), ("1_8", "ra_busseg-no_arp", 0), ("1_8", "ra_busseg-no_cra", 0)} <= planned
    assert data["missing"][-1]["ratio"] == "1_4" and ("1_4", "mean_teacher", 1) in planned  # 1/4 last, as time allows
    assert data["recipe_differences"] == {}  # one recipe: only lists, method and seed differ


def test_quality_table_names_recipe_settings_the_runs_disagree_on(tmp_path: Path) -> None:
    import yaml

    quality = load_script("quality")
    records = []
    for name, data, method in (("old", {}, "supervised"), ("a", {"pad_label": "ignore"}, "ra_busseg"),
                               ("b", {"pad_label": "background", "labeled": "1_8/labeled"}, "mean_teacher")):  # fmt: skip
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"data": data, "method": {"name": method}, "train": {"seed": 1}}))
        records.append({"path": str(run)})
    # "old" predates the setting: it ran with the default, ignore; lists, method and seed are per run
    assert quality.recipe_differences(records) == {"data.pad_label": {'"ignore"': 2, '"background"': 1}}


def test_quality_table_allows_per_method_settings_but_not_within_a_method(tmp_path: Path) -> None:
    """cpu_small trains the supervised method 40 epochs, the others 20: that is the recipe, not a mix-up."""
    import yaml

    quality = load_script("quality")

    def records(runs: list[tuple[str, str, int]]) -> list[dict[str, str]]:
        out = []
        for name, method, epochs in runs:
            run = tmp_path / name
            run.mkdir()
            tree = {"method": {"name": method}, "train": {"epochs": epochs, "warmup_epochs": 4}}
            (run / "config.yaml").write_text(yaml.safe_dump(tree))
            out.append({"path": str(run)})
        return out

    assert quality.recipe_differences(records([("s", "supervised", 40), ("r", "ra_busseg", 20)])) == {}
    mixed = quality.recipe_differences(records([("s0", "supervised", 40), ("s1", "supervised", 20),
                                                 ("r0", "ra_busseg", 20)]))
    assert mixed == {"train.epochs": {"supervised: 40": 1, "supervised: 20": 1, "ra_busseg: 20": 1}}


def _fake_run(runs: Path, variant: str, seed: int, dice: dict[str, float]) -> None:
    run = runs / "1_8" / f"{variant}_s{seed}"
    (run / "eval" / "test_last").mkdir(parents=True)
    rows = "".join(f"{i},{d}\n" for i, d in dice.items())
    (run / "eval" / "test_last" / "per_image.csv").write_text("id,dice\n" + rows)
    (run / "summary.json").write_text(json.dumps({"step": 1, "test_last": {"n_images": len(dice),
                                                 "dice": {"mean": sum(dice.values()) / len(dice)}}}))  # fmt: skip


def test_quality_paired_difference_by_hand(tmp_path: Path) -> None:
    """Two seeds, three images: per-image differences averaged over seeds, then over images."""
    quality = load_script("quality")
    runs = tmp_path / "runs"
    _fake_run(runs, "supervised", 0, {"a": 0.5, "b": 0.6, "c": 0.7})
    _fake_run(runs, "supervised", 1, {"a": 0.4, "b": 0.6, "c": 0.8})
    _fake_run(runs, "ra_busseg", 0, {"a": 0.6, "b": 0.6, "c": 0.9})  # +0.1, 0, +0.2
    _fake_run(runs, "ra_busseg", 1, {"a": 0.6, "b": 0.5, "c": 0.8})  # +0.2, -0.1, 0
    _fake_run(runs, "ra_busseg", 2, {"a": 0.0, "b": 0.0, "c": 0.0})  # no supervised seed 2: not paired
    records = quality.collect_runs(runs)
    p = quality.paired_difference(records, "1_8", "ra_busseg", "supervised")
    assert p["seeds"] == [0, 1] and p["n_images"] == 3
    assert p["mean_diff"] == pytest.approx((0.15 - 0.05 + 0.1) / 3)
    assert p["per_seed_diff"] == pytest.approx([0.1, 1 / 30], abs=1e-4)
    assert p["ci_low"] <= p["mean_diff"] <= p["ci_high"] and p["ci_low"] >= -0.05 and p["ci_high"] <= 0.15
    assert (p["wins"], p["losses"]) == (2, 1)
    assert quality.paired_difference(records, "1_8", "ra_busseg", "mean_teacher") is None
    (v8,) = [v for v in quality.verdicts([p], []) if v["ratio"] == "1_8"]
    assert v8["met"] is False and v8["seeds_complete"] is False  # +0.067 but only 2 seeds and CI below 0


@pytest.mark.parametrize(("dice", "seeds", "wall_min", "met"), [
    (0.73, [0, 1, 2], 7.5, True), (0.71, [0, 1, 2], 7.5, False),  # below the floor
    (0.73, [0, 1], 7.5, False), (0.73, [0, 1, 2], 16.0, False),  # too few seeds; over the budget
    (0.73, [0, 1, 2], None, False),  # wall time not recorded: the budget is not shown to be kept
])  # fmt: skip
def test_quality_supervised_floor_verdict(dice: float, seeds: list[int], wall_min: float | None, met: bool) -> None:
    quality = load_script("quality")
    row = {"ratio": "1_2", "variant": "supervised", "dice": dice, "seeds": seeds, "wall_min": wall_min}
    (floor,) = [v for v in quality.verdicts([], [row]) if v["target"].startswith("supervised")]
    assert floor["met"] is met and floor["measured"].startswith(f"{dice:.3f}")
    assert quality.verdicts([], [])[0]["met"] is None  # nothing measured yet


def test_quality_from_scored_checkpoints_by_hand(tmp_path: Path) -> None:
    """Checkpoints scored by shift.py (run folders gone) give the same table: seeds pair by position."""
    scores = {"sup_a": [0.5, 0.6, 0.7], "sup_b": [0.4, 0.5, 0.8],  # supervised, seeds 0-1
              "ra_a": [0.6, 0.6, 0.9], "ra_b": [0.6, 0.5, 0.8],  # RA-BUSSeg: +0.1, 0, +0.2 and +0.2, 0, 0
              "mt_a": [0.5, 0.5, 0.5]}  # mean teacher, one seed  # fmt: skip
    source = tmp_path / "test_scores.json"
    source.write_text(json.dumps({"environment": {"date": "2026-12-07", "cpu": "test CPU", "cpu_cores": 2},
                                  "checkpoints": {"ra_a": "runs/ra_s0/last.pt"},
                                  "per_image": {"ids": ["x", "y", "z"],
                                                "dice": {k: {"none": v} for k, v in scores.items()}}}))  # fmt: skip
    out = tmp_path / "results" / "quality_scored.json"
    result = load_script("quality_scored").main([
        "--scores", str(source), "--group", "supervised:1_8=sup_a,sup_b", "--group", "ra_busseg:1_8=ra_a,ra_b",
        "--group", "mean_teacher:1_8=mt_a", "--wall", "supervised:1_8=10,12.5", "--note", "a note",
        "--output", str(out)])  # fmt: skip
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["supervised"]["wall_min"] == pytest.approx(11.25) and rows["ra_busseg"]["wall_min"] is None
    assert rows["supervised"]["dice"] == pytest.approx(3.5 / 6) and rows["ra_busseg"]["dice"] == pytest.approx(4 / 6)
    assert rows["ra_busseg"]["dice_seed_std"] == pytest.approx(np.std([0.7, 1.9 / 3], ddof=1))
    assert rows["mean_teacher"]["dice_seed_std"] is None and rows["ra_busseg"]["iou"] is None
    pairs = {(p["variant"], p["baseline"]): p for p in result["pairs"]}
    assert set(pairs) == {("ra_busseg", "supervised"), ("ra_busseg", "mean_teacher"), ("mean_teacher", "supervised")}
    p = pairs[("ra_busseg", "supervised")]
    assert p["mean_diff"] == pytest.approx((0.15 + 0 + 0.1) / 3) and (p["wins"], p["losses"]) == (2, 0)
    assert p["per_seed_diff"] == pytest.approx([0.1, 0.2 / 3], abs=1e-4)  # seed 0 with seed 0, 1 with 1
    assert pairs[("ra_busseg", "mean_teacher")]["seeds"] == [0]  # only as many seeds as both have
    assert pairs[("ra_busseg", "mean_teacher")]["mean_diff"] == pytest.approx((0.1 + 0.1 + 0.4) / 3)
    assert result["checkpoints"]["ra_busseg:1_8"] == ["runs/ra_s0/last.pt", "ra_b"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = load_script("make_results").render(out.parent)  # rendered beside (here: without) quality.json
    assert "`quality_scored.json`" in section and "a note." in section and "quality_scored.png" in section
    assert "- RA-BUSSeg (`quality_scored.json`) at 1/8: target +0.030" in section
    assert "(`quality_scored.json`) at 1/2" not in section  # a 1/8-only table says nothing of 1/2
    with pytest.raises(SystemExit, match="one time per checkpoint"):
        load_script("quality_scored").main(["--scores", str(source), "--group", "supervised:1_8=sup_a,sup_b",
                                            "--wall", "supervised:1_8=10", "--output", str(out)])  # fmt: skip
    with pytest.raises(SystemExit, match="not scored"):
        load_script("quality_scored").main(["--scores", str(source), "--group", "supervised:1_8=nope",
                                            "--output", str(out)])  # fmt: skip


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
    eighth, quarter = (set((work / "splits" / r / "labeled.txt").read_text().split()) for r in ("1_8", "1_4"))
    assert eighth < quarter  # one seed: the 1/8 labelled set is inside the 1/4 one


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


def test_shift_transforms_by_hand() -> None:
    shift = load_script("shift")
    rng = np.random.default_rng(0)
    image = np.full((4, 6, 3), 128, np.uint8)
    image[0, 0] = 255
    mask = np.zeros((4, 6), bool)
    mask[1, 2] = True
    dark, m = shift.SHIFTS["darker_gamma_1.6"](image, mask, rng)
    assert m is mask and dark[1, 1, 0] == round(255 * (128 / 255) ** 1.6) and dark[0, 0, 0] == 255
    low, _ = shift.SHIFTS["low_contrast_0.5"](image, mask, rng)
    mean = image.mean()
    assert low[0, 0, 0] == int((255 - mean) * 0.5 + mean + 0.5) and low[1, 1, 0] == int((128 - mean) * 0.5 + mean + 0.5)
    wide, wide_mask = shift.SHIFTS["side_margins_30%"](image, mask, rng)
    assert wide.shape == (4, 10, 3) and wide_mask.shape == (4, 10)  # round(6 * 0.3) = 2 black columns a side
    assert (wide[:, :2] == 0).all() and (wide[:, 2:8] == image).all() and wide_mask[1, 4] and wide_mask.sum() == 1
    big, big_mask = shift.SHIFTS["zoom_out_25%"](image, mask, rng)
    assert big.shape == (6, 10, 3) and big_mask[2, 4] and big_mask.sum() == 1
    a, _ = shift.SHIFTS["speckle_0.25"](image, mask, np.random.default_rng(1))
    b, _ = shift.SHIFTS["speckle_0.25"](image, mask, np.random.default_rng(1))
    assert np.array_equal(a, b) and not np.array_equal(a, image)  # seeded: the same noise for every model


def test_shift_scores_checkpoints_paired(tmp_path: Path) -> None:
    from _tiny_checkpoint import save_tiny_checkpoint

    from rabusseg.data.phantoms import synthesize_dataset

    root = tmp_path / "ds"
    synthesize_dataset(root, n=4, seed=0, size=64)
    (tmp_path / "ids.txt").write_text("\n".join(sorted(p.stem for p in (root / "images").iterdir())[:3]) + "\n")
    a = save_tiny_checkpoint(tmp_path / "a.pt", seed=0)
    b = save_tiny_checkpoint(tmp_path / "b.pt", seed=1)
    out = tmp_path / "shift.json"
    argv = ["--root", str(root), "--ids", str(tmp_path / "ids.txt"), "--checkpoint", f"a={a}", "--checkpoint",
            f"same={a}", "--checkpoint", f"b={b}@longest", "--checkpoint", f"big={a}@size96", "--shifts", "none",
            "zoom_out_25%", "--output", str(out)]  # fmt: skip
    assert load_script("shift").main(argv) == 0
    result = json.loads(out.read_text())
    dice = result["per_image"]["dice"]
    assert len(dice["a"]["none"]) == 3 and dice["same"] == dice["a"]  # a checkpoint against itself: no difference
    assert result["resize"] == {"a": "square", "same": "square", "b": "longest", "big": "square"}  # or @RESIZE
    assert result["size"]["big"] == 96 and result["size"]["a"] == result["size"]["b"] != 96  # or @sizeN
    assert dice["big"]["none"] != dice["a"]["none"]  # the same weights at another size score differently
    assert result["mean_of_shifted"]["same-a"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    rows = {r["shift"]: r for r in result["rows"]}
    assert rows["none"]["b"] == pytest.approx(np.mean(dice["b"]["none"]))
    assert set(rows) == {"none", "zoom_out_25%", "mean of shifted"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = load_script("make_results").render(tmp_path)  # the README's robustness table, from the JSON
    assert "### Robustness to scanner-like image changes" in section and "| shift | a | same | b | big |" in section
    assert "| mean of shifted |" in section and "shift.png" in section
    assert f"big = `{a}` (square resize, 96 px)" in section  # the inference settings each column was scored at


def test_throughput_variants_and_verdicts_by_hand() -> None:
    throughput = load_script("throughput")
    from rabusseg.config import load_config

    cpu = throughput.variant_overrides("cpu_small")
    assert list(cpu) == ["off", "on", "on_mobilenet_v2_320"]
    off = load_config("cpu_small", cpu["off"])
    assert (off.train.amp, off.train.channels_last, off.model.dilated_rewrites) == (False, False, False)
    assert load_config("cpu_small", cpu["on_mobilenet_v2_320"]).model.encoder == "mobilenet_v2_320"
    assert "data.cache=false" in throughput.variant_overrides("cpu_small", pipeline=True)["off"]
    assert list(throughput.variant_overrides("busi_1-2")) == ["off", "on"]
    rows = [{"model": "cpu_small", "size": 160, "variant": v, "step_ms": ms}
            for v, ms in (("off", 900.0), ("on", 600.0), ("on_mobilenet_v2_320", 450.0))]  # fmt: skip
    (verdict,) = throughput.step_verdicts(rows)
    # The target counts the preset only; the network option is reported beside it.
    assert verdict["speedup_on_over_off"] == pytest.approx(1.5) and verdict["met"] is False
    assert verdict["speedup_network_options"] == {"on_mobilenet_v2_320": pytest.approx(2.0)}


def test_throughput_warms_up_until_the_steps_agree() -> None:
    throughput = load_script("throughput")
    assert throughput.settled([1.0, 1.1, 1.15])  # slowest 15% above the fastest: agreed
    assert not throughput.settled([1.0, 1.1, 1.16])
    assert not throughput.settled([3.4, 0.6, 0.6])  # a stall inside the window
    assert not throughput.settled([0.6, 0.6])  # too few steps yet
    assert throughput.settled([3.4, 1.2, 0.61, 0.6, 0.62])  # only the last three count


def test_pool_shift_pools_pairs_per_image_list_by_hand(tmp_path: Path) -> None:
    pool = load_script("pool_shift")
    first = {"a": {"none": [1.0, 0.5]}, "b": {"none": [0.5, 0.5]}, "a2": {"none": [0.8, 0.6]}, "b2": {"none": [0.6, 0.6]}}
    second = {"c": {"none": [0.2]}, "d": {"none": [0.4]}}
    paths = []
    for name, dice in (("one", first), ("two", second)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"per_image": {"ids": [], "dice": dice}}))
    groups = [pool.read_pairs(paths[0], ["a=b", "a2=b2"]), pool.read_pairs(paths[1], ["c=d"])]
    (row,) = pool.pooled_rows(groups)
    # per image: file one (0.5 + 0.2) / 2 = 0.35 and 0; file two -0.2; mean 0.05
    assert row["images"] == 3 and row["mean_diff"] == pytest.approx(0.05)
    assert row["variant"] == pytest.approx(0.55) and row["baseline"] == pytest.approx(0.5)
    assert row["pairs_better"] == "2 of 3" and row["ci95"][0] <= 0.05 <= row["ci95"][1]
    with pytest.raises(SystemExit, match="missing"):
        pool.read_pairs(paths[0], ["a=zz"])


def test_pool_shift_pools_the_mean_of_the_shifted_conditions_by_hand(tmp_path: Path) -> None:
    pool = load_script("pool_shift")
    dice = {"a": {"none": [0.9, 0.9], "gain": [0.5, 0.1], "blur": [0.3, 0.5]},
            "b": {"none": [0.8, 0.8], "gain": [0.4, 0.4], "blur": [0.2, 0.2]}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"per_image": {"ids": ["x", "y"], "dice": dice}}))
    rows = {r["shift"]: r for r in pool.pooled_rows([pool.read_pairs(path, ["a=b"])])}
    assert list(rows) == ["none", "gain", "blur", "mean of shifted"]
    # per image, a's shifted mean is 0.4 and 0.3, b's 0.3 and 0.3: differences 0.1 and 0.0
    shifted = rows["mean of shifted"]
    assert shifted["mean_diff"] == pytest.approx(0.05) and shifted["variant"] == pytest.approx(0.35)
    assert shifted["baseline"] == pytest.approx(0.3) and shifted["images"] == 2
    only_none = tmp_path / "n.json"
    plain = {"a": {"none": [1.0]}, "b": {"none": [0.0]}}
    only_none.write_text(json.dumps({"per_image": {"ids": ["x"], "dice": plain}}))
    assert [r["shift"] for r in pool.pooled_rows([pool.read_pairs(only_none, ["a=b"])])] == ["none"]


def test_pool_shift_merges_results_of_one_image_list(tmp_path: Path) -> None:
    pool = load_script("pool_shift")
    files = {"old": ({"base": {"none": [0.5, 0.7]}}, ["x", "y"]),
             "new": ({"long": {"none": [0.9, 0.6], "speckle": [0.1, 0.1]}}, ["x", "y"]),
             "other": ({"long2": {"none": [0.9, 0.6]}}, ["y", "x"]),
             "clash": ({"base": {"none": [0.1, 0.1]}}, ["x", "y"])}
    for name, (dice, ids) in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"per_image": {"ids": ids, "dice": dice}}))
    (row,) = pool.pooled_rows([pool.read_pairs(f"{tmp_path / 'new.json'},{tmp_path / 'old.json'}", ["long=base"])])
    # per image 0.9 - 0.5 = 0.4 and 0.6 - 0.7 = -0.1: mean 0.15; "speckle" has no baseline, so no row
    assert row["shift"] == "none" and row["images"] == 2 and row["pairs_better"] == "1 of 1"
    assert row["mean_diff"] == pytest.approx(0.15)
    with pytest.raises(SystemExit, match="other images"):
        pool.read_pairs(f"{tmp_path / 'old.json'},{tmp_path / 'other.json'}", ["long2=base"])
    with pytest.raises(SystemExit, match="already in"):
        pool.read_pairs(f"{tmp_path / 'old.json'},{tmp_path / 'clash.json'}", ["base=base"])


def test_hardware_line_says_whether_the_cpu_trained_in_bf16() -> None:
    hardware = load_script("make_results").hardware
    env = {"cpu": "AMD EPYC", "cpu_cores_usable": 2, "torch": "2.13.0+cpu", "torch_threads": 2, "date": "d"}
    assert hardware(env).startswith("AMD EPYC (2 cores), torch")
    no_bf16 = hardware({**env, "cpu_native_bf16": False})
    assert no_bf16.startswith("AMD EPYC (2 cores), no native bf16 (float32 training), torch")
    assert hardware({**env, "cpu_native_bf16": True}).startswith("AMD EPYC (2 cores), native bf16, torch")
    assert "bf16" not in hardware({**env, "cpu_native_bf16": False, "cuda_device": "NVIDIA H200"})
