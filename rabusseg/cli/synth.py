"""CLI verb: data synth (filled in by the module's owner)."""

from __future__ import annotations

from rabusseg.cli.app import data_app  # noqa: F401
