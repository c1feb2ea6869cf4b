"""Who may talk to the server, and which files a request may reach.

* Bound to a loopback address, the server needs no token.  On any other host it refuses every
  request without the access token (header ``Authorization: Bearer <token>``, header
  ``X-Rabusseg-Token``, query ``?token=`` or the cookie a page sets after its first ``?token=``).
* Requests never carry paths.  Run names, image ids and checkpoint names are looked up in what the
  command line gave; :func:`confined` is the one place a name becomes a path, and it refuses
  anything that leaves its base folder, symbolic links included.
"""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path

from rabusseg.errors import RabussegError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
COOKIE = "rabusseg_token"
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
"""A single path component: no separators, no leading dot (so never ``..``)."""
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)?$")
"""A split list name like ``1_8`` or ``mine/1_8``: one or two safe components."""


class Forbidden(RabussegError):
    """A name that would leave its folder (403)."""


class NotFound(RabussegError):
    """A name that is not one of the server's runs, images or checkpoints (404)."""


def needs_token(host: str) -> bool:
    return host not in LOOPBACK


def new_token() -> str:
    return secrets.token_urlsafe(18)


def token_ok(expected: str | None, offered: str | None) -> bool:
    """Constant-time comparison; no token configured means every request is fine."""
    if expected is None:
        return True
    return offered is not None and hmac.compare_digest(expected.encode(), offered.encode())


def confined(base: Path, name: str, *, kind: str = "run", depth: int = 3) -> Path:
    """``base / name`` when ``name`` is up to ``depth`` safe components (``a/b``) and the result,
    symlinks resolved, stays inside ``base``; 404 for a malformed or unknown name, 403 for an escape."""
    parts = (name or "").split("/")
    if not 0 < len(parts) <= depth or not all(NAME.match(p) for p in parts):
        raise NotFound(f"no {kind} named {name!r}")
    root = base.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(root):
        raise Forbidden(f"{kind} {name!r} points outside {base}")
    if not path.exists():
        raise NotFound(f"no {kind} named {name!r}")
    return path
