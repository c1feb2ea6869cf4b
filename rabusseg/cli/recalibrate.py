"""CLI verb ``recalibrate``: a checkpoint's BatchNorm statistics re-estimated on a dataset's images.

A thin wrapper over :func:`rabusseg.inference.recalibrate.recalibrate_checkpoint`; torch is
imported inside the verb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rabusseg.cli.app import app
from rabusseg.cli.predict import RESIZE_HELP, SIZE_HELP, inference_size_arg, resize_arg


@app.command()
def recalibrate(
    checkpoint: Annotated[Path, typer.Argument(help="A rabusseg checkpoint (.pt); it is never modified.")],
    data_dir: Annotated[str, typer.Argument(help="Dataset folder, or its name inside $RABUSSEG_DATASETS.")],
    out: Annotated[Path, typer.Option("--out", help="The new checkpoint (.pt).")],
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split", help="Split list(s) under splits/ whose images to use (repeatable); default: every image."
        ),
    ] = None,
    max_images: Annotated[
        int | None, typer.Option("--max-images", min=1, help="Use at most this many (seeded subset).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the --max-images subset; default: the run's train.seed, as training."),
    ] = None,
    size: Annotated[int | None, typer.Option("--size", help=SIZE_HELP)] = None,
    resize: Annotated[str | None, typer.Option("--resize", help=RESIZE_HELP)] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
) -> None:
    """Write a copy of CHECKPOINT whose BatchNorm statistics come from images of DATA_DIR.

    For a model trained without train.precise_bn (give its training lists), or to adapt the statistics
    to another scanner's unlabelled images (AdaBN).  No mask is read; the learned weights are unchanged.
    """
    from rich.console import Console

    from rabusseg.devices import resolve_device
    from rabusseg.inference.recalibrate import recalibrate_checkpoint

    result = recalibrate_checkpoint(checkpoint, data_dir, split or [], out, max_images=max_images,
                                    size=inference_size_arg(size), resize=resize_arg(resize),
                                    device=str(resolve_device(device)), overwrite=overwrite, seed=seed)  # fmt: skip
    Console().print(
        f"re-estimated the BatchNorm statistics of the {' and '.join(result.networks)} on "
        f"{result.images} images at {result.size} px ({result.resize}) in {result.seconds:.1f} s; "
        f"wrote {result.path}"
    )
