"""One rule for turning ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a device (training, evaluation, inference)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rabusseg.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device, *, local_rank: int = 0, key: str = "--device") -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; bare ``cuda`` -> ``cuda:<local_rank>``.

    An unknown name or CUDA asked for without CUDA is a :class:`ConfigError` naming ``key`` (the
    setting or option the name came from).
    """
    import torch

    text = str(name)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        text = f"cuda:{local_rank}"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}: unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: '{name}' was asked for but CUDA is not available (use cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}: unknown device '{name}' (use auto, cpu, cuda or cuda:N)")
    return device
