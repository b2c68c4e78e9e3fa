"""``torchrun --nproc_per_node 2 -m dynface.cli restore ...`` on CPU (gloo): disjoint shares, one manifest.

The restorer is the random ``tiny`` preset (4 steps) through ``DYNFACE_RESTORER_FACTORY=test_torchrun:make_tiny_restorer``;
``DYNFACE_TEST_LOG`` gets one line per restored face (pid and seed), which tells which rank restored which file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from _helpers import LoggedRestorer, astronaut_crops, read_face_log, tiny_restorer

from dynface import jobs
from dynface.engines.torchrun import merge_parts, part_path, rank_of

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
    seed_to_stem = {jobs.face_seed(0, s, 0): s for s in stems}
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
