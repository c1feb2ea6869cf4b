"""How fast the workbench answers a predict request for a 512 px image (target <= 0.5 s on 2 CPU cores).

    python benchmarks/serve_latency.py                          # cpu_small, random weights, 10 requests
    python benchmarks/serve_latency.py --checkpoint runs/x/checkpoints/last.pt

A live server (uvicorn in a thread, as ``rabusseg serve`` runs it) on localhost; each round uploads
a fresh 512 x 512 grey image (predictions are cached per upload) and times what the Segment page
does: ``POST .../predict`` (inference at the checkpoint's own size, probability and entropy maps at
the original size) and the two map PNGs it then loads.  Round 0 warms up.  Writes
``benchmarks/results/serve_latency.json``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR,
    command_line,
    environment,
    load_average,
    median,
    passive_openmp,
    print_table,
    write_json,
)

TARGET_S = 0.5


def random_checkpoint(path: Path, preset: str = "cpu_small") -> Path:
    """The preset's network with random weights, saved as the trainer saves one."""
    import torch

    from rabusseg.checkpoint import save_checkpoint
    from rabusseg.config import load_config
    from rabusseg.models import build_model

    config = load_config(preset, ["model.encoder_weights=null"])
    torch.manual_seed(0)
    model = build_model(config.model)
    return save_checkpoint({"config": config.to_dict(), "student": model.state_dict(), "teacher": None,
                            "inference_weights": "student", "step": 0, "epoch": 0}, path)  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "serve_latency.json")
    args = parser.parse_args(argv)
    import httpx
    import numpy as np
    from PIL import Image

    from rabusseg.app.serve.app import ServeSettings
    from rabusseg.app.serve.testing import running_server

    env = environment("cpu")
    with tempfile.TemporaryDirectory(prefix="rabusseg-serve-bench-") as tmp:
        checkpoint = args.checkpoint or random_checkpoint(Path(tmp) / "cpu_small.pt")
        rows = []
        with running_server(ServeSettings(checkpoints=[checkpoint])) as url, httpx.Client(base_url=url, timeout=60) as client:
            rng = np.random.default_rng(0)
            for round_ in range(args.rounds + 1):
                buffer = io.BytesIO()
                Image.fromarray((rng.random((args.size, args.size)) * 255).astype(np.uint8)).save(buffer, format="PNG")
                up = client.post("/api/uploads", files={"file": ("scan.png", buffer.getvalue())}).json()
                started = time.perf_counter()
                pred = client.post(f"/api/uploads/{up['id']}/frames/0/predict")
                pred.raise_for_status()
                predicted = time.perf_counter()
                for key in ("probabilities", "entropy"):
                    client.get(pred.json()["maps"][key]).raise_for_status()
                done = time.perf_counter()
                if round_:
                    rows.append({"round": round_, "predict_s": predicted - started, "with_maps_s": done - started})
        seg = {"size": pred.json()["upload"]["width"]}
    result = {"benchmark": "serve_latency", "command": command_line(), "environment": env,
              "checkpoint": str(args.checkpoint) if args.checkpoint else "cpu_small, random weights",
              "image_px": args.size, "rounds": rows, "median_predict_s": median([r["predict_s"] for r in rows]),
              "median_with_maps_s": median([r["with_maps_s"] for r in rows]), "target_s": TARGET_S}  # fmt: skip
    result["met"] = bool(result["median_with_maps_s"] <= TARGET_S)
    env["load_average_end"] = load_average()
    print_table(f"predict request, {args.size} px image ({result['checkpoint']})", rows, ["round", "predict_s", "with_maps_s"])
    print(f"median {result['median_predict_s']:.3f} s (predict), {result['median_with_maps_s']:.3f} s with both maps; "
          f"target <= {TARGET_S} s: {'met' if result['met'] else 'MISSED'} ({seg})")  # fmt: skip
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    passive_openmp()
    main()
