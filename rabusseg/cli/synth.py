"""CLI verb ``rabusseg data synth``: write the synthetic ultrasound phantom dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from rabusseg.cli.app import data_app


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output dataset folder (must be empty unless --overwrite)."),
    n: int = typer.Option(200, "--n", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives bit-identical files."),
    size: int = typer.Option(256, "--size", min=64, help="Image height and width in pixels."),
    test_fraction: float = typer.Option(
        0.2, "--test-fraction", min=0.0, max=0.95, help="Fraction of each class listed in splits/test.txt."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace images/, masks/, splits/ and metadata.csv in OUT."
    ),
) -> None:
    """Synthesise B-mode breast-ultrasound phantoms (benign and malignant lesions) with exact masks."""
    import time

    from rich.console import Console

    from rabusseg.data.phantoms import synthesize_dataset

    start = time.perf_counter()
    rows = synthesize_dataset(out, n=n, seed=seed, size=(size, size), test_fraction=test_fraction, overwrite=overwrite)
    classes = Counter(str(r["class"]) for r in rows)
    n_test = len((Path(out) / "splits" / "test.txt").read_text(encoding="utf-8").split())
    fractions = sorted(float(r["lesion_area_fraction"]) for r in rows)
    Console().print(
        f"wrote {len(rows)} phantoms ({size}x{size}) to {out} in {time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{c} {k}" for c, k in sorted(classes.items()))
        + f"; test split {n_test}; median lesion area {100 * fractions[len(fractions) // 2]:.1f}% of the image",
        highlight=False,
    )
