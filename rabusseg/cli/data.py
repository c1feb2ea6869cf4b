"""CLI verbs: data (filled in by the module's owner)."""

from __future__ import annotations

from rabusseg.cli.app import app, data_app, prepare_app  # noqa: F401
