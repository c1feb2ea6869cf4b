"""Self-describing checkpoints, written atomically and read without unpickling code.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only) so that
``torch.load(weights_only=True)`` can read it; a crafted pickle that would run code is refused.
The resolved config travels inside it, so a model can be rebuilt from the file alone.

Layout (``format_version`` 1)::

    {"format": "rabusseg-checkpoint", "format_version": 1,
     "config": Config.to_dict(), "step": int, "epoch": int,
     "student": state_dict, "teacher": state_dict | None,
     "inference_weights": "student" | "teacher",
     ... anything else the trainer needs to resume (optimizer, rng, metrics) ...}
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rabusseg.constants import DEFAULT_INFERENCE_SIZE
from rabusseg.errors import CheckpointError
from rabusseg.files import atomic_write

if TYPE_CHECKING:
    from torch import nn

CHECKPOINT_FORMAT = "rabusseg-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def _refusal_reason(err: Exception) -> str:
    """The one informative line of torch's long weights-only message (``Unsupported global: ...``)."""
    match = re.search(r"(Unsupported [^\n]*?)(?:\. Please|\n|$)", str(err))
    return match.group(1).strip() if match else str(err).strip().splitlines()[0]


def _read_payload(path: Path, map_location: str | torch.device) -> Any:
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO)):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it starts with {head!r}, not a zip or pickle header)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain types, "
            f"and loading it could run code ({_refusal_reason(err)})"
        ) from None
    except Exception as err:  # noqa: BLE001  torch raises many types for damaged archives
        text = str(err).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or damaged: {first}") from None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = _read_payload(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a rabusseg checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    version = payload.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this rabusseg reads {CHECKPOINT_VERSION}")
    for key in ("config", "student"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks its '{key}' entry")
    if not isinstance(payload["config"], dict):
        raise CheckpointError(f"checkpoint {path}: 'config' is a {type(payload['config']).__name__}, not a mapping")
    return payload


def inference_state_dict(payload: dict[str, Any], which: str = "auto") -> dict[str, torch.Tensor]:
    """The weights to run: ``student``, ``teacher``, or ``auto`` (the checkpoint's own choice)."""
    if which == "auto":
        which = payload.get("inference_weights", "student")
    if which not in ("student", "teacher"):
        raise CheckpointError(f"weights must be 'auto', 'student' or 'teacher', got '{which}'")
    state = payload.get(which)
    if not isinstance(state, dict):
        available = [k for k in ("student", "teacher") if isinstance(payload.get(k), dict)]
        raise CheckpointError(f"checkpoint has no '{which}' weights (available: {', '.join(available) or 'none'})")
    return state


def load_model_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> None:
    """``load_state_dict(strict=True)`` with a message naming the keys/shapes that do not fit.

    Never ``strict=False``: silently ignoring mismatched weights would run a half-random model.
    """
    from rabusseg.models.weights import state_dict_mismatch

    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"checkpoint {source} does not fit the architecture it is being loaded into (another "
                              f"encoder, output stride or class count?):{mismatch}")  # fmt: skip
    model.load_state_dict(state, strict=True)


def model_from_checkpoint(
    payload: dict[str, Any], which: str = "auto", source: str | os.PathLike[str] = "<checkpoint>"
) -> nn.Module:
    """Rebuild the network from the checkpoint's own config and load the chosen weights (eval mode)."""
    from rabusseg.config import config_from_dict
    from rabusseg.models import build_model

    config = config_from_dict(payload["config"], source=f"{source} (stored config)")
    model = build_model(config.model)
    load_model_weights(model, inference_state_dict(payload, which), source)
    return model.eval()


FROM_CHECKPOINT = "checkpoint"
"""Inference size/resize argument meaning "what the checkpoint's run evaluated with"."""


def inference_geometry(payload: dict[str, Any], size: int | None | str = FROM_CHECKPOINT,
                       resize: str = FROM_CHECKPOINT) -> tuple[int | None, str]:  # fmt: skip
    """The (inference size, resize mode) to run a checkpoint at: the given ones, or its run's own.

    Why: a model trained on 192 px images and evaluated at 512 px scores far worse (a cpu_small
    checkpoint: Dice 0.51 at 512 against 0.62 at its own 192), so the default is the size the
    run validated with (``data.eval_size``, ``None`` = full image) and its ``data.eval_resize``.
    Checkpoints written before ``eval_resize`` existed evaluated ``square``.
    """
    data = (payload.get("config") or {}).get("data") or {}
    if size == FROM_CHECKPOINT:
        size = data.get("eval_size", DEFAULT_INFERENCE_SIZE)
    if resize == FROM_CHECKPOINT:
        resize = data.get("eval_resize", "square")
    if size is not None and (not isinstance(size, int) or size < 8):
        raise CheckpointError(f"inference size must be at least 8 pixels (or the full image), got {size!r}")
    return size, str(resize)


def inference_tta(payload: dict[str, Any], tta: bool | str = FROM_CHECKPOINT) -> bool:
    """Whether to run a checkpoint with test-time augmentation: the given choice, or its run's own.

    Why: TTA is part of how a recipe was validated (``train.eval_tta``: cpu_small sets it, measured
    +0.014 Dice in-domain and +0.018 under scanner-like shifts, docs/choices.md), so ``evaluate``,
    ``predict`` and :class:`~rabusseg.inference.segmenter.Segmenter` follow the checkpoint unless
    told otherwise.  Checkpoints whose config does not say ran without it.
    """
    return choose_tta(tta, bool(((payload.get("config") or {}).get("train") or {}).get("eval_tta", False)))


def choose_tta(tta: bool | str, stored: bool) -> bool:
    """``tta`` itself, or ``stored`` (what the model's run evaluated with) for ``FROM_CHECKPOINT``."""
    if tta == FROM_CHECKPOINT:
        return stored
    if not isinstance(tta, bool):
        raise CheckpointError(f"tta must be true, false or {FROM_CHECKPOINT!r}, got {tta!r}")
    return tta
