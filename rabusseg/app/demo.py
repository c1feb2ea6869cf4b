"""``rabusseg demo``: the whole pipeline at small scale, on the CPU, in a few minutes.

phantoms (or ``--data``) -> 1/4 split (seed 0) -> RA-BUSSeg training (``configs/demo.yaml``)
-> test evaluation -> predictions with overlays for a few test images -> ``summary.json`` and
``report.html`` in the output folder.  Everything a user needs to look at is printed at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rabusseg.errors import OutputExistsError

PHANTOMS = {"n": 160, "seed": 0, "size": 128}
"""The demo dataset: 160 phantoms of 128 px (32 test; of the 128 left, 1/4 labelled)."""
SPLIT = {"fraction": "1/4", "seed": 0, "val": 8, "name": "1_4"}
N_PREDICTIONS = 6


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs and its headline score."""

    out_dir: Path
    data_dir: Path
    run_dir: Path
    report: Path | None
    predictions: Path
    summary: dict[str, Any]


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} is not empty: pass --overwrite (the old demo is moved aside) or another --out")
        moved = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(moved)
        print(f"previous demo moved to {moved}")
    out.mkdir(parents=True, exist_ok=True)


def _dataset(out: Path, data: Path | None) -> Path:
    """The phantoms (written under OUT) or the user's folder, with a 1/4 split drawn if missing."""
    from rabusseg.data.phantoms import synthesize_dataset
    from rabusseg.data.splits import make_split
    from rabusseg.paths import resolve_data_root

    if data is None:
        root = out / "data"
        synthesize_dataset(root, n=PHANTOMS["n"], seed=PHANTOMS["seed"], size=PHANTOMS["size"])
    else:
        root = resolve_data_root(data)
    if not (root / "splits" / SPLIT["name"] / "labeled.txt").is_file():
        make_split(root, SPLIT["fraction"], seed=SPLIT["seed"], val=SPLIT["val"], name=SPLIT["name"])
    return root


def run_demo(out: str | Path = "rabusseg-demo", *, data: str | Path | None = None, overwrite: bool = False,
             overrides: list[str] | None = None, console: Any = None) -> DemoResult:  # fmt: skip
    """Run the demo into ``out``; ``overrides`` are ``--set`` strings applied to ``demo.yaml``."""
    from rich.console import Console

    from rabusseg.config import load_config
    from rabusseg.data.folder import DatasetFolder
    from rabusseg.engine.trainer import train
    from rabusseg.evaluation import render_run_report
    from rabusseg.inference.predict import predict_inputs
    from rabusseg.inference.segmenter import Segmenter

    console = console or Console()
    started = time.perf_counter()
    out = Path(out)
    _prepare(out, overwrite)
    root = _dataset(out, Path(data) if data is not None else None)
    console.print(f"[bold]1/4[/] dataset {root} (split splits/{SPLIT['name']}/, seed {SPLIT['seed']})", highlight=False)
    has_val = (root / "splits" / SPLIT["name"] / "val.txt").is_file()
    config = load_config("demo", [f"data.root={root}", *([] if has_val else ["data.val=null"]), *(overrides or [])])

    console.print(f"[bold]2/4[/] training {config.method.name} ({config.model.encoder}) on the CPU", highlight=False)
    run_dir = out / "run"
    result = train(config, run_dir)

    console.print("[bold]3/4[/] predicting a few test images with overlays", highlight=False)
    folder = DatasetFolder(root)
    test_ids = folder.split(config.data.test)
    segmenter = Segmenter.from_checkpoint(result.last_checkpoint, size=config.data.eval_size)
    predictions = out / "predictions"
    predict_inputs(segmenter, [folder.image_path(i) for i in test_ids[:N_PREDICTIONS]], predictions, overlay=True,
                   progress=False)  # fmt: skip

    console.print("[bold]4/4[/] report", highlight=False)
    report = render_run_report(run_dir)
    test = result.summary.get("test_last") or {}
    summary = {
        **{k: v for k, v in test.items() if isinstance(v, dict) and "mean" in v},
        "test_last": test,
        "test_best": result.summary.get("test_best"),
        "data": str(root),
        "run_dir": str(run_dir),
        "report": str(report),
        "predictions": str(predictions),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    dice = test.get("dice", {})
    console.print(
        f"\n[bold green]done[/] in {summary['seconds']:.0f} s: test Dice {dice.get('mean', float('nan')):.3f} "
        f"+- {dice.get('std', float('nan')):.3f} on {len(test_ids)} images\n"
        f"  summary      {out / 'summary.json'}\n  report       {report}\n  predictions  {predictions}\n"
        f"  checkpoint   {result.last_checkpoint}\n  data         {root}",
        highlight=False,
    )
    return DemoResult(out, root, run_dir, report, predictions, summary)
