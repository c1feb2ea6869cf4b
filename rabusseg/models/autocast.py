"""One rule for the parts of the network that stay float32 under bf16 autocast."""

from __future__ import annotations

import contextlib

import torch


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Switch autocast off on ``device`` (nothing to switch on devices without it, e.g. meta)."""
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)
