"""dynface.atomicfile: the one way files are written (a reader never sees half a file; writers never share a temporary)."""

import os

import pytest

from dynface.atomicfile import atomic_path, atomic_write_text


def test_atomic_path_renames_on_success_and_names_the_temporary_after_the_process(tmp_path):
    dst = tmp_path / "sub" / "out.json"
    with atomic_path(dst) as tmp:
        assert tmp.parent == dst.parent and tmp.name == f".out.json.tmp{os.getpid()}"
        tmp.write_text("new")
        assert not dst.exists()  # nothing at the target until the rename
    assert dst.read_text() == "new" and sorted(p.name for p in dst.parent.iterdir()) == ["out.json"]


def test_the_data_reach_the_disk_before_the_rename_and_the_rename_before_the_return(tmp_path, monkeypatch):
    """fsync of the temporary, the rename, fsync of the folder, in that order: a machine's crash right after a run
    cannot leave an output or record named but empty."""
    import dynface.atomicfile as af

    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(af.os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or fsync(fd))
    monkeypatch.setattr(af.os, "replace", lambda a, b: calls.append(("replace", str(a), str(b))) or replace(a, b))
    dst = tmp_path / "rec.json"
    atomic_write_text("{}", dst)
    tmp = str(af.temp_path(dst))
    assert calls == [("fsync", tmp), ("replace", tmp, str(dst)), ("fsync", str(tmp_path))]
    assert dst.read_text() == "{}"


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    dst = tmp_path / "out.txt"
    atomic_write_text("old", dst)
    with pytest.raises(RuntimeError), atomic_path(dst) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert dst.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_cleans_up_when_nothing_was_written(tmp_path):
    dst = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError), atomic_path(dst):
        pass  # the writer wrote nothing: the rename fails loudly, no empty file appears
    assert list(tmp_path.iterdir()) == []


def test_a_jpeg_cut_off_by_a_file_size_limit_fails_and_leaves_nothing(tmp_path):
    """Pillow's JPEG encoder ignores a short write to a file: under a file-size limit (or on a full disk) a cut-off
    JPEG was renamed into place and recorded as done (failure audit). Encoded in memory, the write raises EFBIG and
    nothing is left. Run in a child with RLIMIT_FSIZE 30 KB (Python ignores SIGXFSZ, so the write fails instead)."""
    import subprocess
    import sys

    code = r"""
import errno, resource, sys
import numpy as np
from dynface.imaging import atomic_save_image
rng = np.random.default_rng(0)
img = rng.integers(0, 256, (180, 180, 3), dtype=np.uint8)  # noise: a 41-KB JPEG, one write of Pillow's buffer
resource.setrlimit(resource.RLIMIT_FSIZE, (30 * 1024, resource.RLIM_INFINITY))
try:
    atomic_save_image(img, sys.argv[1], quality=95)
except OSError as e:
    print("raised", e.errno == errno.EFBIG)
"""
    target = tmp_path / "out.jpg"
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "raised True", r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_names_the_file_not_its_temporary(tmp_path):
    """A permission error named the hidden temporary (".photo.png.tmp31858"), which the user never sees."""
    target = tmp_path / "photo.png"
    with pytest.raises(OSError) as e, atomic_path(target) as tmp:
        raise PermissionError(13, "Permission denied", str(tmp))
    assert e.value.filename == str(target) and "tmp" not in str(e.value).rsplit("/", 1)[-1]
