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
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from rabusseg.errors import CheckpointError

CHECKPOINT_FORMAT = "rabusseg-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain types "
            f"(loading it could run code). Details: {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or not a PyTorch file: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a rabusseg checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    version = payload.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this rabusseg reads {CHECKPOINT_VERSION}")
    for key in ("config", "student"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks its '{key}' entry")
    return payload


def inference_state_dict(payload: dict[str, Any], which: str = "auto") -> dict[str, torch.Tensor]:
    """The weights to run: ``student``, ``teacher``, or ``auto`` (the checkpoint's own choice)."""
    if which == "auto":
        which = payload.get("inference_weights", "student")
    state = payload.get(which)
    if state is None:
        raise CheckpointError(f"checkpoint has no '{which}' weights (available: student"
                              f"{', teacher' if payload.get('teacher') is not None else ''})")
    return state
