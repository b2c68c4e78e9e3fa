"""Every output path is built and checked here: the one place all writers (``restore``, ``degrade``, the web
app, the cluster engines) go through.

A name that comes from a user (a ``--suffix``, an ``--ext``, a stem derived from an input file name) must be a
*plain name*: one path component, no separators, no ``..``, no control characters, not hidden. The joined path
must then resolve inside the output folder, symlinks included.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["UnsafePathError", "plain_name", "output_path", "is_inside"]

_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


class UnsafePathError(ValueError):
    """A name or path that would leave the output folder (or is not a usable file name)."""


def plain_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a usable single file-name component, else raise :class:`UnsafePathError`."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} must be a non-empty plain name, got {name!r}")
    if _BAD.search(name) or name in (".", "..") or name.startswith(".") or (os.altsep and os.altsep in name):
        raise UnsafePathError(f"{what} must be a plain name (no path separators, '..', control characters or leading '.'), got {name!r}")
    if len(name.encode("utf-8", "surrogateescape")) > 240:
        raise UnsafePathError(f"{what} is too long ({len(name)} characters): {name[:40]!r}...")
    return name


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` (resolved) is ``folder`` (resolved) or lies below it."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def output_path(out: str | Path, *parts: str) -> Path:
    """``out/part/part/...`` after checking each part with :func:`plain_name` and the result (resolved, following
    symlinks) against ``out``. Raises :class:`UnsafePathError` for anything that would escape ``out``."""
    out = Path(out)
    if not parts:
        raise UnsafePathError("an output path needs at least one name below the output folder")
    for part in parts:
        plain_name(part, "output name")
    path = out.joinpath(*parts)
    if not is_inside(path, out) or path.resolve() == out.resolve():
        raise UnsafePathError(f"output path {path} resolves outside the output folder {out}")
    return path
