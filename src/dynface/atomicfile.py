"""Atomic file writes: a reader, a re-run after a crash, or another process writing the same file sees either
the old file or a complete new one, never a half-written one.

Everything is written to a hidden temporary file beside the target, named after the writing process
(``.NAME.tmpPID``: two processes writing the same file, e.g. two torchrun ranks filling one cache, never share
a temporary file), and renamed onto the target. Standard library only, so torch-free modules can use it.

The rename is durable (:func:`durable_replace`): the file's data reach the disk before it is renamed, and the rename
before the call returns. Without that, a power cut or a crash of the machine soon after a run (not of the run: the
kernel still holds its writes) can leave an output or record named but empty, as ext4 and XFS allow: a record then
says an input is done whose files hold nothing. Cost: a few milliseconds a file on a local disk.
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
        durable_replace(tmp, path)
    except OSError as e:  # name the file being written, not its hidden temporary (".photo.png.tmp31858")
        if e.filename is not None and os.fspath(e.filename) == os.fspath(tmp):
            e.filename = os.fspath(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: str | Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # a folder that cannot be opened (Windows): its entries are as durable as the system makes them
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some file systems cannot sync a folder; a file that cannot be synced is an error
            raise
    finally:
        os.close(fd)


def durable_replace(src: str | Path, dst: str | Path) -> None:
    """``os.replace(src, dst)``, with ``src``'s data on the disk first and the rename itself after (``fsync`` of the
    file, then of ``dst``'s folder)."""
    _fsync(src)
    os.replace(src, dst)
    _fsync(Path(dst).parent, directory=True)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(text: str, path: str | Path, encoding: str = "utf-8") -> None:
    atomic_write_bytes(text.encode(encoding), path)
