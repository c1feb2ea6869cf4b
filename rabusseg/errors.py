"""Exceptions that carry a message meant for the user.

Library code raises these for bad input (a missing file, an unreadable image, an invalid
config key).  The CLI prints the message without a traceback and exits non-zero; Python
callers can catch them by type.
"""

from __future__ import annotations


class RabussegError(Exception):
    """Base class: the message names the file or key and says what is wrong."""


class DataError(RabussegError):
    """A dataset, image, mask or split file is missing or malformed."""


class ConfigError(RabussegError):
    """A configuration file or override is invalid."""


class CheckpointError(RabussegError):
    """A checkpoint is missing, truncated, unsafe or of another architecture."""


class OutputExistsError(RabussegError):
    """An output folder or file already exists and overwriting was not asked for."""


def refuse_existing(path: object, overwrite: bool) -> None:
    """The one "it exists and --overwrite was not given" rule for output files."""
    from pathlib import Path

    if Path(str(path)).exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
