"""Atomic file writes: a reader, a re-run after a crash, or another process writing the same file sees either
the old file or a complete new one, never a half-written one.

Everything is written to a hidden temporary file beside the target, named after the writing process
(``.NAME.tmpPID``: two processes writing the same file, e.g. two torchrun ranks filling one cache, never share
a temporary file), and renamed onto the target. Standard library only, so torch-free modules can use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: str | Path) -> Path:
    """The hidden temporary file beside ``path`` this process writes it to (``.NAME.tmpPID``; a writer that must
    rename it itself, later, names it with this too, so that a killed run's leftovers are told apart the same way)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write; on a clean exit it is renamed onto ``path``, and it is removed in any case.

    Writers that append a suffix to a bare file name (``np.save``, ``np.savez``) should be given an open file
    (``open(tmp, "wb")``), not the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:  # name the file being written, not its hidden temporary (".photo.png.tmp31858")
        if e.filename is not None and os.fspath(e.filename) == os.fspath(tmp):
            e.filename = os.fspath(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(text: str, path: str | Path, encoding: str = "utf-8") -> None:
    atomic_write_bytes(text.encode(encoding), path)
