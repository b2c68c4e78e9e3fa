"""``torchrun --nproc_per_node 2 -m dynface.cli restore ...`` on CPU (gloo): disjoint shares, one manifest.

The restorer is the random ``tiny`` preset (4 steps) through ``DYNFACE_RESTORER_FACTORY=test_torchrun:make_tiny_restorer``;
``DYNFACE_TEST_LOG`` gets one line per restored face (pid and seed), which tells which rank restored which file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from _helpers import LoggedRestorer, astronaut_crops, read_face_log, tiny_restorer
from _helpers import seed_to_stem as seed_of_file

from dynface import jobs
from dynface.engines.torchrun import merge_parts, part_path, rank_of, run_torchrun_job

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
FACTORY = "test_torchrun:make_tiny_restorer"


def make_tiny_restorer(name_or_path="embedded-64", device="cpu", mode="full", steps=None, precision="auto", **kw):
    return LoggedRestorer(tiny_restorer(mode, steps))


def test_shares_are_stable_disjoint_and_balanced():
    stems = [f"img_{k:05d}" for k in range(2000)]
    for world in (2, 3, 8):
        ranks = [rank_of(s, world) for s in stems]
        assert ranks == [rank_of(s, world) for s in stems]  # deterministic (no per-process hash seed)
        counts = Counter(ranks)
        assert set(counts) == set(range(world))
        assert max(counts.values()) < 1.25 * len(stems) / world


def test_merge_parts_appends_every_rank_once_and_removes_the_parts(tmp_path):
    for r in (1, 0):
        jobs.Manifest(part_path(tmp_path, r)).append(jobs.FileResult(f"x{r}.png", f"x{r}", "done"))
    merged = merge_parts(tmp_path)
    assert [d["stem"] for d in merged] == ["x0", "x1"]
    assert [d["stem"] for d in jobs.Manifest(tmp_path / "manifest.jsonl").lines()] == ["x0", "x1"]
    assert not list(tmp_path.glob("manifest.rank*"))
    assert merge_parts(tmp_path) == []


def test_merge_parts_appends_under_the_manifest_lock(tmp_path):
    """merge_parts appends through Manifest's locked write: while another writer holds the manifest's flock (taken
    here on a second open file description, which flock treats as another writer even in this process) the merge
    waits, and it completes once the lock is released. The old unlocked merge finished at once."""
    fcntl = pytest.importorskip("fcntl")
    jobs.Manifest(part_path(tmp_path, 0)).append(jobs.FileResult("x0.png", "x0", "done"))
    path = tmp_path / jobs.MANIFEST_NAME
    with open(path, "ab") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        t = threading.Thread(target=merge_parts, args=(tmp_path,), daemon=True)
        t.start()
        t.join(1.0)
        blocked = t.is_alive()
        size_while_locked = path.stat().st_size
    t.join(30)
    assert blocked and size_while_locked == 0
    assert not t.is_alive() and [d["stem"] for d in jobs.Manifest(path).lines()] == ["x0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_skip_existing_reads_the_manifest_once_on_rank_0(tmp_path, monkeypatch):
    """One rank in this process (gloo, world size 1): with --skip-existing rank 0's skip check reads
    OUT/manifest.jsonl once (it used to read it twice: for the whole job's skipped count, then again for its share;
    planning the inputs reads it once more, for the names earlier runs gave), and it still restores an input whose
    output was lost and adds the line a killed run did not write (through its part)."""
    d = tmp_path / "in"
    stems = astronaut_crops(d, 4)
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)
    if str(HERE) not in sys.path:
        monkeypatch.syspath_prepend(str(HERE))
    out = tmp_path / "out"
    assert jobs.run_job([d], out, jobs.RestoreSettings(aligned=True, threads=1)).exit_code == 0
    (out / "restored_faces" / f"{stems[0]}.png").unlink()  # an output lost: restored again
    man = out / jobs.MANIFEST_NAME
    man.write_text("".join(ln + "\n" for ln in man.read_text().splitlines() if f'"stem":"{stems[1]}"' not in ln))

    reads = []
    lines = jobs.Manifest.lines

    def counting_lines(self):
        if self.path == man:
            reads.append(1)
        return lines(self)

    monkeypatch.setattr(jobs.Manifest, "lines", counting_lines)
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port()), "GLOO_SOCKET_IFNAME": "lo"}.items():
        monkeypatch.setenv(k, v)
    s = run_torchrun_job([d], out, jobs.RestoreSettings(aligned=True, threads=1, skip_existing=True))
    monkeypatch.setattr(jobs.Manifest, "lines", lines)
    assert len(reads) == 2  # planning + the skip check
    assert [r.stem for r in s.results] == [stems[0]] and s.results[0].status == "done"
    assert sorted(r.stem for r in s.skipped) == stems[1:] and s.exit_code == 0
    last = jobs.Manifest(man).load()
    assert sorted(last) == stems and all(v["status"] == "done" for v in last.values())
    assert not list(out.glob("manifest.rank*"))


def test_torchrun_two_cpu_ranks_restore_disjoint_shares_into_one_manifest(tmp_path, monkeypatch):
    d = tmp_path / "in"
    stems = astronaut_crops(d, 9)
    (d / "bad.png").write_bytes(b"not an image")
    # the single-process run, for the bytes
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)
    if str(HERE) not in sys.path:
        monkeypatch.syspath_prepend(str(HERE))
    single = jobs.run_job([d], tmp_path / "single", jobs.RestoreSettings(aligned=True, threads=1))
    assert single.exit_code == 1

    out, log = tmp_path / "out", tmp_path / "log.txt"
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join([str(HERE), str(SRC)]), "DYNFACE_RESTORER_FACTORY": FACTORY,
                "DYNFACE_TEST_LOG": str(log), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dynface.cli", "restore", "-q", "--aligned", "-i", str(d), "-o", str(out), "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, "the corrupt file fails the job"
    assert proc.stdout.count("dynface restore:") == 1, proc.stdout  # rank 0 reports the whole job
    assert "10 input(s): 9 restored, 0 skipped (complete), 1 failed" in proc.stdout, proc.stdout + proc.stderr[-1500:]

    # each rank restored exactly its share
    seed_to_stem = seed_of_file(d, stems)  # faces are seeded by their file's bytes
    by_pid: dict[int, list[str]] = {}
    for pid, seed in read_face_log(log):
        by_pid.setdefault(pid, []).append(seed_to_stem[seed])
    shares = {r: sorted(s for s in stems if rank_of(s, 2) == r) for r in (0, 1)}
    assert len(by_pid) == 2 and sorted(sorted(v) for v in by_pid.values()) == sorted(shares.values())

    # one merged manifest, no parts; the same bytes as one process
    lines = jobs.Manifest(out / "manifest.jsonl").lines()
    assert sorted(ln["stem"] for ln in lines) == sorted(stems + ["bad"])
    assert {ln["stem"]: ln["status"] for ln in lines}["bad"] == "failed"
    assert not list(out.glob("manifest.rank*"))
    for s in stems:
        assert (out / "restored_faces" / f"{s}.png").read_bytes() == (tmp_path / "single" / "restored_faces" / f"{s}.png").read_bytes()

    # --skip-existing after damage: rank 1 lost an output (a), rank 0's part of a killed launch says a later attempt
    # failed (x: merged before the skip check, so restored again), both ranks lost a manifest line (b0, b1: skipped,
    # their lines added)
    (a,), (x, b0), (b1,) = shares[1][:1], shares[0][:2], shares[1][1:2]
    (out / "restored_faces" / f"{a}.png").unlink()
    man = out / "manifest.jsonl"
    man.write_text("".join(ln + "\n" for ln in man.read_text().splitlines() if f'"stem":"{b0}"' not in ln and f'"stem":"{b1}"' not in ln))
    jobs.Manifest(part_path(out, 0)).append(jobs.FileResult(str(d / f"{x}.png"), x, "failed", "killed"))
    log2 = tmp_path / "log2.txt"
    env["DYNFACE_TEST_LOG"] = str(log2)
    proc = subprocess.run([*cmd, "--skip-existing"], env=env, capture_output=True, text=True, timeout=300)
    assert "10 input(s): 2 restored, 7 skipped (complete), 1 failed" in proc.stdout, proc.stdout + proc.stderr[-1500:]
    assert sorted(seed_to_stem[seed] for _, seed in read_face_log(log2)) == sorted([a, x])
    last = jobs.Manifest(man).load()
    assert all(last[s]["status"] == "done" for s in stems) and not list(out.glob("manifest.rank*"))
    assert (out / "restored_faces" / f"{a}.png").read_bytes() == (tmp_path / "single" / "restored_faces" / f"{a}.png").read_bytes()
