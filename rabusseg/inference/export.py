"""ONNX export of the inference graph, and an ONNX Runtime engine with the ``Segmenter`` interface.

The exported graph takes a normalised image batch ``input`` (B, 3, H, W) and returns ``logits``
(B, K, H, W): class logits already upsampled to the input size (bilinear, ``align_corners=True``),
*before* the softmax.  Logits rather than probabilities keep the torch-vs-ORT check sensitive (a
softmax saturates and hides differences) and let the shared TTA code apply the softmax itself, so
both engines give the same probabilities.  Only the inference path is exported: ARP/CRA are
training-time relations and never run in eval mode.  The batch axis is always dynamic; ``dynamic``
also frees height and width (needed for multi-scale TTA).  With scaled TTA views the ORT engine
resizes logits twice (view size inside the graph, then input size) where torch resizes once from
the quarter-resolution grid: probabilities then differ by about 1e-3; without TTA or with flips
only they agree to float precision.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rabusseg.checkpoint import (
    FROM_CHECKPOINT,
    choose_tta,
    inference_geometry,
    inference_tta,
    load_checkpoint,
    model_from_checkpoint,
)
from rabusseg.constants import DEFAULT_INFERENCE_SIZE
from rabusseg.errors import CheckpointError, RabussegError, refuse_existing
from rabusseg.inference.segmenter import BaseSegmenter
from rabusseg.inference.tta import logits_of, predict_probabilities_with_variance
from rabusseg.models.resize import upsample_logits


class InferenceGraph(nn.Module):
    """The model in eval mode, returning a plain tensor: input-size logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, K, H, W)
        return upsample_logits(logits_of(self.model(x)), x.shape[-2:])


def export_onnx(checkpoint: str | os.PathLike[str], out_path: str | os.PathLike[str], *, dynamic: bool = False,
                size: int = DEFAULT_INFERENCE_SIZE, opset: int = 17, weights: str = "auto", overwrite: bool = False) -> Path:
    """Write the checkpoint's inference graph to ``out_path`` (ONNX, legacy TorchScript exporter).

    A dynamic export is run once more at another size and compared with torch, because a size
    baked in by the tracer would otherwise only show up on the user's first odd-sized image.
    """
    import onnx

    out = Path(out_path)
    refuse_existing(out, overwrite)
    payload = load_checkpoint(checkpoint)
    graph = InferenceGraph(model_from_checkpoint(payload, weights, source=checkpoint))
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: intended
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter needs no onnxscript
        torch.onnx.export(graph, (torch.zeros(1, 3, size, size),), str(out), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": axes, "logits": axes},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    eval_size, eval_resize = inference_geometry(payload)
    meta = {"producer": "rabusseg", "checkpoint": Path(checkpoint).name, "output": "logits at input size",
            "num_classes": str(payload["config"].get("model", {}).get("num_classes", 2)),
            "size": "dynamic" if dynamic else str(size),
            "eval_size": "full" if eval_size is None else str(eval_size), "eval_resize": eval_resize,
            "eval_tta": str(inference_tta(payload)).lower()}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    if dynamic:
        _check_dynamic(graph, out, (size // 2 + 8, size + 24))
    return out


def _check_dynamic(graph: InferenceGraph, path: Path, hw: tuple[int, int]) -> None:
    x = random_images(1, hw, seed=1)
    graph.eval()  # the exporter restores the wrapper's mode; be explicit
    with torch.inference_mode():
        expected = graph(x)
    try:
        diff = float((expected - OrtModule(_session(path, None))(x)).abs().max())
    except Exception as err:  # noqa: BLE001  ORT shape errors
        raise RabussegError(f"{path}: the dynamic graph fails at {hw[0]}x{hw[1]} ({str(err).splitlines()[0]})") from None
    if diff > 1e-3:
        raise RabussegError(f"{path}: the dynamic graph differs from torch by {diff:.2e} at {hw[0]}x{hw[1]}")


def _session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RabussegError("the onnxruntime engine needs onnxruntime: pip install 'rabusseg[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001  ORT raises its own exception types
        raise CheckpointError(f"{path} is not a loadable ONNX model: {str(err).splitlines()[0]}") from None


class OrtModule(nn.Module):
    """An ONNX Runtime session behind an ``nn.Module`` face, so the shared TTA code can drive it."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().numpy().astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feed)[0])


class OnnxSegmenter(BaseSegmenter):
    """Same ``.predict`` / ``.predict_batch`` as :class:`~rabusseg.inference.segmenter.Segmenter`, on ORT."""

    def __init__(self, path: str | os.PathLike[str], *, size: int | None | str = FROM_CHECKPOINT,
                 tta: bool | str = FROM_CHECKPOINT, threads: int | None = None, resize: str = FROM_CHECKPOINT,
                 **kwargs: Any) -> None:  # fmt: skip
        """``size``/``resize``/``tta`` default to the checkpoint's evaluation settings, stored in the
        file's metadata at export (files exported before that: the traced size, or 512, ``square``
        and no TTA).  A fixed-size file cannot run the multi-scale TTA its checkpoint asks for: it
        runs without, and says so in a warning."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model {path} does not exist")
        self.module = OrtModule(_session(path, threads))
        shape = self.module.session.get_inputs()[0].shape  # [batch, 3, H, W]; names where dynamic
        self.fixed_size = shape[2] if isinstance(shape[2], int) and isinstance(shape[3], int) else None
        meta = self.module.session.get_modelmeta().custom_metadata_map
        if size == FROM_CHECKPOINT:
            stored = meta.get("eval_size")
            size = self.fixed_size or (None if stored == "full" else int(stored) if stored else 512)
        if resize == FROM_CHECKPOINT:
            resize = meta.get("eval_resize", "square")
        stored_tta = meta.get("eval_tta") == "true"
        if tta == FROM_CHECKPOINT and stored_tta and self.fixed_size is not None:
            warnings.warn(f"{path} was exported at a fixed size, so the multi-scale TTA of its checkpoint "
                          "cannot run; predicting without TTA (export with --dynamic to keep it)", stacklevel=2)
            stored_tta = False
        tta = choose_tta(tta, stored_tta)
        if self.fixed_size is not None and size != self.fixed_size:
            raise RabussegError(f"{path} was exported for {self.fixed_size}x{self.fixed_size} inputs, not {size}; "
                                f"use --size {self.fixed_size} or export again with --dynamic")
        super().__init__(size=size, tta=tta, source=str(path), resize=resize, **kwargs)  # type: ignore[arg-type]
        self._check_tta(tta)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str], **kwargs: Any) -> OnnxSegmenter:
        return cls(path, **kwargs)

    def _check_tta(self, tta: bool) -> None:
        if tta and self.fixed_size is not None and any(s != 1.0 for s in self.scales):
            raise RabussegError(f"{self.source} has a fixed input size, so multi-scale TTA cannot run on it; "
                                "export again with --dynamic")

    def _probabilities(self, batch: torch.Tensor, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_tta(tta)
        return predict_probabilities_with_variance(self.module, batch, tta=tta, flip=self.flip, scales=self.scales)


def max_logit_difference(checkpoint: str | os.PathLike[str], onnx_path: str | os.PathLike[str],
                         images: torch.Tensor, weights: str = "auto") -> float:
    """Largest |torch - ORT| over the input-size logits of ``images`` (normalised (B, 3, H, W))."""
    graph = InferenceGraph(model_from_checkpoint(load_checkpoint(checkpoint), weights, source=checkpoint))
    with torch.inference_mode():
        expected = graph(images)
    got = OrtModule(_session(Path(onnx_path), None))(images)
    return float((expected - got).abs().max())


def random_images(batch: int, size: int | Sequence[int], seed: int = 0) -> torch.Tensor:
    """Normalised-looking random inputs for a quick export check."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
