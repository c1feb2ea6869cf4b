"""Shared fixtures: where the real datasets are, small deterministic helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests are many small tensors: one thread per process avoids oversubscribing 2-core CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from rabusseg.paths import DATASETS_ENV, datasets_dir  # noqa: E402


def _shared_dataset(name: str) -> Path:
    base = datasets_dir()
    if base is None or not (base / name).is_dir():
        pytest.skip(
            f"real dataset '{name}' not found: expected ../shared/datasets/{name} or ${DATASETS_ENV}/{name}"
        )
    return base / name


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    """The prepared BUSI dataset (read-only: copy before writing)."""
    return _shared_dataset("busi")


@pytest.fixture(scope="session")
def busi_raw_sample_dir() -> Path:
    """A few files in the public BUSI download layout (read-only)."""
    return _shared_dataset("busi_raw_sample")


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)
