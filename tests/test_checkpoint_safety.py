"""Checkpoints are read without running code, and every broken file fails with a clear message."""

from __future__ import annotations

import pathlib
import pickle
from pathlib import Path

import pytest
import torch
from _tiny_checkpoint import save_tiny_checkpoint, tiny_checkpoint  # noqa: F401  (fixture)

from rabusseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from rabusseg.errors import CheckpointError


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: the side effect proves code would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    evil = {"format": "rabusseg-checkpoint", "format_version": 1, "config": {}, "student": _Payload(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    # Sanity: the file really is dangerous when unpickled without the weights-only guard.
    if writer == "pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> None:  # noqa: F811
    cut = tmp_path / "cut.pt"
    data = tiny_checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is truncated or damaged"):
        load_checkpoint(cut)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"name,dice\nx,0.5\n", "not a PyTorch checkpoint"), (b"\x89PNG\r\n\x1a\n", "not a PyTorch")],
)
def test_non_checkpoint_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "thing.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_plain_torch_file_and_missing_file(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a rabusseg checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_other_architecture_names_the_mismatch(tmp_path: Path, tiny_checkpoint: Path) -> None:  # noqa: F811
    payload = load_checkpoint(tiny_checkpoint)
    payload["config"]["model"]["encoder"] = "resnet18"  # mobilenet_v2 weights, resnet18 claimed
    forged = save_checkpoint({k: v for k, v in payload.items() if k not in ("format", "format_version")},
                             tmp_path / "forged.pt")
    with pytest.raises(CheckpointError, match=r"(?s)forged\.pt does not fit.*missing keys \(\d+\): encoder\."):
        model_from_checkpoint(load_checkpoint(forged), source=forged)


def test_weights_choice(tmp_path: Path) -> None:
    path = save_tiny_checkpoint(tmp_path / "t.pt", teacher=True)
    payload = load_checkpoint(path)
    student = model_from_checkpoint(payload, "student")
    teacher = model_from_checkpoint(payload, "auto")  # the checkpoint chose the teacher
    first = next(iter(payload["teacher"]))
    torch.testing.assert_close(teacher.state_dict()[first], payload["teacher"][first])
    assert not torch.equal(student.state_dict()[first], teacher.state_dict()[first])
    payload["teacher"] = None
    with pytest.raises(CheckpointError, match="no 'teacher' weights"):
        model_from_checkpoint(payload, "teacher")
