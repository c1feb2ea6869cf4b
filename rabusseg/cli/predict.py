"""CLI verbs: ``predict`` (segment files, folders, DICOM), ``rank-unlabeled`` (what to label next)
and ``export`` (ONNX).  Thin wrappers over :mod:`rabusseg.inference`; torch is imported inside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rabusseg.cli.app import app, data_app, prepare_app  # noqa: F401
from rabusseg.errors import RabussegError

SIZE_HELP = "Inference size in pixels (default: the checkpoint's own data.eval_size); 0 runs the full image."
RESIZE_HELP = "square (stretch) or longest (keep the aspect ratio, pad); default: the checkpoint's data.eval_resize."


def inference_size_arg(size: int | None) -> int | None | str:
    """``--size``: absent -> the checkpoint's own size, 0 -> the full image, else at least 8 pixels."""
    from rabusseg.checkpoint import FROM_CHECKPOINT

    if size is None:
        return FROM_CHECKPOINT
    if size != 0 and size < 8:
        raise RabussegError(f"--size must be at least 8 pixels, or 0 for the full image; got {size}")
    return None if size == 0 else size


def resize_arg(resize: str | None) -> str:
    from rabusseg.checkpoint import FROM_CHECKPOINT
    from rabusseg.data.transforms import EVAL_RESIZE_MODES

    if resize is None:
        return FROM_CHECKPOINT
    if resize not in EVAL_RESIZE_MODES:
        raise RabussegError(f"--resize must be one of {', '.join(EVAL_RESIZE_MODES)}, got '{resize}'")
    return resize


TTA_HELP = ("Test-time augmentation (horizontal flip x scales 0.75, 1, 1.25): on or off; "
            "default: what the checkpoint's run evaluated with (train.eval_tta).")


def tta_arg(tta: bool | None) -> bool | str:
    """``--tta/--no-tta``: absent -> the checkpoint's own choice."""
    from rabusseg.checkpoint import FROM_CHECKPOINT

    return FROM_CHECKPOINT if tta is None else tta


def weights_arg(weights: str) -> str:
    if weights not in ("auto", "student", "teacher"):
        raise RabussegError(f"--weights must be auto, student or teacher, got '{weights}'")
    return weights


def _engine(checkpoint: Path, engine: str, *, device: str, weights: str, size: int | None, resize: str | None,
            tta: bool | str) -> Any:  # fmt: skip
    weights, inference_size, mode = weights_arg(weights), inference_size_arg(size), resize_arg(resize)
    if engine == "torch":
        from rabusseg.inference.segmenter import Segmenter

        return Segmenter.from_checkpoint(checkpoint, device=device, weights=weights, size=inference_size, tta=tta,
                                         resize=mode)  # fmt: skip
    if engine == "onnxruntime":
        from rabusseg.inference.export import OnnxSegmenter

        if device not in ("cpu", "auto"):
            raise RabussegError("--engine onnxruntime runs on the CPU; drop --device or use --device cpu")
        return OnnxSegmenter(checkpoint, size=inference_size, tta=tta, resize=mode)
    raise RabussegError(f"--engine must be torch or onnxruntime, got '{engine}'")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A rabusseg checkpoint (.pt), or an .onnx file with --engine onnxruntime.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders (searched recursively) and DICOM files.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for masks, maps and predictions.csv.")],
    overlay: Annotated[bool, typer.Option("--overlay", help="Also write the image with the lesion contour.")] = False,
    probs: Annotated[bool, typer.Option("--probs", help="Also write the lesion probability map (8-bit PNG).")] = False,
    uncertainty: Annotated[bool, typer.Option("--uncertainty", help="Also write the entropy map (and the TTA variance when TTA runs).")] = False,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help=TTA_HELP, show_default=False)] = None,
    size: Annotated[int | None, typer.Option("--size", help=SIZE_HELP)] = None,
    resize: Annotated[str | None, typer.Option("--resize", help=RESIZE_HELP)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 4,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")] = "cpu",
    engine: Annotated[str, typer.Option("--engine", help="torch, or onnxruntime for an exported .onnx model.")] = "torch",
    weights: Annotated[str, typer.Option("--weights", help="student, teacher or auto (the checkpoint's choice).")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
) -> None:
    """Segment breast-ultrasound images with CHECKPOINT: one mask per image or DICOM frame, plus a CSV."""
    from rich.console import Console

    from rabusseg.inference.predict import predict_inputs

    segmenter = _engine(checkpoint, engine, device=device, weights=weights, size=size, resize=resize, tta=tta_arg(tta))
    summary = predict_inputs(segmenter, inputs, out, overlay=overlay, probs=probs, uncertainty=uncertainty,
                             tta=segmenter.tta, overwrite=overwrite, batch_size=batch_size)
    console, errors = Console(), Console(stderr=True)
    for failure in summary.failures:
        errors.print(f"[bold red]skipped[/] {failure.path}: {failure.reason}", highlight=False, soft_wrap=True)
    found = sum(1 for row in summary.rows if row["lesion_area_px"] > 0)
    console.print(f"segmented {len(summary.rows)} image(s)/frame(s), lesion found in {found}; "
                  f"wrote {summary.csv_path}", highlight=False)
    if summary.failures:
        errors.print(f"[bold red]{len(summary.failures)} input(s) failed[/]", highlight=False)
        raise typer.Exit(code=1)


@app.command("rank-unlabeled")
def rank_unlabeled(
    checkpoint: Annotated[Path, typer.Argument(help="A rabusseg checkpoint (.pt).")],
    data_dir: Annotated[str, typer.Argument(help="Dataset folder, or its name inside $RABUSSEG_DATASETS.")],
    split: Annotated[str, typer.Option("--split", help="Split list of unlabelled images under splits/ (without .txt).")] = "1_8/unlabeled",
    top: Annotated[int, typer.Option("--top", min=0, help="How many images to list; 0 lists all.")] = 20,
    out: Annotated[Path, typer.Option("--out", help="Where to write the ranking CSV.")] = Path("ranking.csv"),
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="Include TTA disagreement in the score (slower).")] = True,
    size: Annotated[int | None, typer.Option("--size", help=SIZE_HELP)] = None,
    resize: Annotated[str | None, typer.Option("--resize", help=RESIZE_HELP)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 4,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")] = "cpu",
    weights: Annotated[str, typer.Option("--weights", help="student, teacher or auto (the checkpoint's choice).")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing ranking file.")] = False,
) -> None:
    """Rank the unlabelled images of DATA_DIR by model uncertainty: label the top ones next."""
    from rich.console import Console
    from rich.table import Table

    from rabusseg.data.folder import DatasetFolder
    from rabusseg.errors import refuse_existing
    from rabusseg.inference.ranking import rank_unlabeled as rank
    from rabusseg.paths import resolve_data_root

    refuse_existing(out, overwrite)
    folder = DatasetFolder(resolve_data_root(data_dir))
    ids = folder.split(split)
    segmenter = _engine(checkpoint, "torch", device=device, weights=weights, size=size, resize=resize, tta=tta)
    rows = rank(segmenter, folder, ids, top=top, tta=tta, out=out, overwrite=overwrite, batch_size=batch_size)
    table = Table(title=f"most uncertain of {len(ids)} images in {split}")
    for column in ("rank", "id", "score", "entropy", "disagreement", "lesion px"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for row in rows[:20]:
        table.add_row(str(row["rank"]), row["id"], f"{row['score']:.4f}", f"{row['entropy']:.4f}",
                      f"{row['disagreement']:.4f}", str(row["lesion_area_px"]))
    Console().print(table)
    Console().print(f"wrote {out}", highlight=False)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A rabusseg checkpoint (.pt).")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Output .onnx file.")],
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Allow any input height/width (needed for multi-scale TTA).")] = False,
    size: Annotated[int | None, typer.Option("--size", min=8, help="Input size of the traced graph, the fixed size without --dynamic (default: the checkpoint's data.eval_size, or 512).")] = None,
    opset: Annotated[int, typer.Option("--opset", min=11, help="ONNX opset version.")] = 17,
    weights: Annotated[str, typer.Option("--weights", help="student, teacher or auto (the checkpoint's choice).")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing .onnx file.")] = False,
) -> None:
    """Export the inference graph (normalised image -> input-size logits) to ONNX and check it against torch."""
    from rich.console import Console

    from rabusseg.checkpoint import inference_geometry, load_checkpoint
    from rabusseg.inference.export import export_onnx, max_logit_difference, random_images

    weights_arg(weights)
    if size is None:
        size = inference_geometry(load_checkpoint(checkpoint))[0] or 512
    path = export_onnx(checkpoint, onnx, dynamic=dynamic, size=size, opset=opset, weights=weights, overwrite=overwrite)
    diff = max_logit_difference(checkpoint, path, random_images(1, size), weights=weights)
    Console().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {'dynamic' if dynamic else f'{size}x{size}'} input); "
                    f"max |torch - onnxruntime| logit difference on a random image: {diff:.2e}", highlight=False)
    if diff > 1e-3:
        raise RabussegError(f"ONNX Runtime output differs from torch by {diff:.2e} (> 1e-3); do not use {path}")
