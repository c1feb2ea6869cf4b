"""The console entry point: environment it sets before torch is imported."""

from __future__ import annotations

import os

import pytest

from rabusseg.cli import main


def test_main_lets_idle_openmp_threads_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "placeholder")  # restored after the test
    monkeypatch.delenv("OMP_WAIT_POLICY")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_main_keeps_an_explicit_openmp_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
