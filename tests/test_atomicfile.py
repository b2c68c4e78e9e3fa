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
