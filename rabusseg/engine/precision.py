"""Numeric settings of a training step: bf16 autocast, memory format, denormal flushing.

Why a module: the loop asks one question per setting ("autocast here?", "which memory
format?") and the answers depend on the hardware.  bf16 autocast runs on CUDA and on CPUs
with native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than
float32, so ``train.amp`` falls back to float32 there and :func:`describe` says so in the log.
Flushing denormals matters on CPU: CRA's softmax over raw dot products produces gradients
below 1e-38, and x86 arithmetic on such numbers is up to a hundred times slower (measured in
docs/speed.md: the CRA backward took 4.6x longer without flushing).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (Linux ``/proc/cpuinfo`` flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


@dataclass(frozen=True)
class StepPrecision:
    """What a training step on ``device`` runs with."""

    device: torch.device
    bf16: bool
    """bf16 autocast for the forward passes (losses and relation terms stay float32)."""
    channels_last: bool
    flush_denormal: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of a forward pass (a no-op context when bf16 is off)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def describe(self, amp_requested: bool, pool_flushes: bool = True) -> str:
        """One log line; says plainly when bf16 was asked for and is not used."""
        parts = ["bf16 autocast" if self.bf16 else "float32"]
        if amp_requested and not self.bf16:
            parts[0] += f" (train.amp: this {self.device.type.upper()} has no native bf16, so float32)"
        parts.append("channels-last" if self.channels_last else "contiguous NCHW")
        if self.flush_denormal:
            parts.append("denormals flushed to zero" + ("" if pool_flushes else
                         " on the main thread only (the thread pool started earlier; run `rabusseg train` for all threads)"))
        return "precision: " + ", ".join(parts)


def resolve_precision(device: torch.device, *, amp: bool, channels_last: bool, flush_denormal: bool) -> StepPrecision:
    """The settings a run on ``device`` actually uses (bf16 only where the hardware has it)."""
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return StepPrecision(device, bf16=amp and native, channels_last=channels_last,
                         flush_denormal=flush_denormal and device.type == "cpu")  # fmt: skip


def flush_denormals() -> bool:
    """Flush denormal floats to zero in this process; ``True`` when the intra-op threads do too.

    x86 keeps the setting per thread and a new thread inherits its creator's, so it reaches
    torch's OpenMP threads only when set before they exist: ``rabusseg train`` calls this before
    the first tensor operation.  In a process that has already computed, only the calling
    thread flushes, and the return value says so.  The setting stays for the process: values
    below 1.2e-38 never matter to a segmentation network.
    """
    torch.set_flush_denormal(True)
    probe = torch.full((1 << 18,), 1e-40)  # denormal; 2**18 elements are split over the threads
    return bool(((probe * 1.5) == 0).all())
