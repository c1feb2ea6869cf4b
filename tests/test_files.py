"""atomic_write: the target is either the old file or the complete new one, and no temporary file is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from rabusseg.files import atomic_write


def test_writes_the_whole_file_into_new_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "mask.png"
    assert atomic_write(target, lambda handle: handle.write(b"new")) == target
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["mask.png"]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "labeled.txt"
    target.write_bytes(b"old\n")

    def half_then_crash(handle) -> None:  # noqa: ANN001
        handle.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old\n" and [p.name for p in tmp_path.iterdir()] == ["labeled.txt"]
